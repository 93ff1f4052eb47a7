"""Deterministic, resumable sampling: where each image's augmentation randomness comes from.

timm's `RepeatAugSampler` decides which images an epoch sees (repeated augmentation ×3, in single-process
runs too, unlike the official code). On top of it, two small pieces (none of the libraries has them):
- `ResumableSampler` yields (image index, seed) pairs, the seed a function of (run seed, rank, epoch,
  position), and can start mid-epoch: a resumed run sees exactly the images it had not seen yet;
- `SeededItems` seeds Python, NumPy and torch with that seed before the transform, so an image's crop,
  RandAugment ops and erasing depend only on its position, not on which worker loaded it or when.
The copies of one image made by repeated augmentation sit at different positions, so they differ.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, Sampler

from reproduce.models import seed_everything


def step_seed(seed: int, rank: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one (run, rank, epoch, position): splitmix64 steps over the four numbers, so neighbouring
    positions get unrelated seeds (a few µs; NumPy's SeedSequence costs 10 µs per image)."""
    state = 0
    for part in (seed, rank, epoch, position):
        state = (state ^ (part & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        state ^= state >> 31
    return state >> 1


_MASK = (1 << 64) - 1


class ResumableSampler(Sampler):
    def __init__(self, inner: Sampler, *, seed: int, rank: int) -> None:
        self.inner, self.seed, self.rank = inner, seed, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch `epoch`, skipping its first `start` positions (the images a checkpointed run already used)."""
        self.epoch, self.start = epoch, start
        # the run seed enters the shuffle too (timm's sampler seeds with the epoch alone)
        self.inner.set_epoch(self.seed * 100_003 + epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.inner):
            if position >= self.start:
                yield index, step_seed(self.seed, self.rank, self.epoch, 1_000_000_000 + position)

    def __len__(self) -> int:
        return len(self.inner) - self.start


class SeededItems(Dataset):
    """`dataset[index]` with every RNG seeded first; indexed by the (index, seed) pairs above."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        seed_everything(seed)
        return self.dataset[index]
