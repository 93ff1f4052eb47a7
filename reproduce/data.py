"""Training data: ImageNet-style folders, CIFAR-10, and a synthetic set for smoke runs, with DeiT's augmentation.

Every dataset yields (image, label, index) like bench's evaluation data, so `bench.evaluate.predict` scores them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Dataset

from bench.cifar10 import cifar10_tree
from bench.data import DataError, ImageList, class_folders, find_samples
from reproduce.config import TrainConfig


class SyntheticImages(Dataset):
    """Deterministic learnable images: class k is a colour and stripe frequency of its own, plus noise."""

    def __init__(self, n: int, num_classes: int, size: int, seed: int, transform) -> None:
        self.n, self.num_classes, self.size, self.seed, self.transform = n, num_classes, size, seed, transform
        self.classes = None  # no names: the label is the class
        self.samples = [(Path(f"synthetic_{seed}_{i:06d}.png"), i % num_classes) for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def image(self, index: int) -> Image.Image:
        label = index % self.num_classes
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        hue = torch.tensor([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=torch.float32)
        stripes = torch.sin(torch.arange(self.size) * (label + 1) * 0.4)[None, :, None] * 60
        pixels = hue + stripes + torch.randn(self.size, self.size, 3, generator=g) * 40
        return Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy())

    def __getitem__(self, index: int):
        return self.transform(self.image(index)), self.samples[index][1], index


def train_transform(cfg: TrainConfig, img_size: int):
    """DeiT's training augmentation, by timm (RandomResizedCrop, flip, RandAugment, random erasing)."""
    return create_transform(input_size=(3, img_size, img_size), is_training=True, scale=cfg.train_crop_scale,
                            hflip=cfg.hflip, color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment or None,
                            interpolation=cfg.train_interpolation, re_prob=cfg.reprob, re_mode="pixel", re_count=1,
                            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


def datasets(cfg: TrainConfig, train_tf, val_tf) -> tuple[Dataset, Dataset]:
    """(train, val) for the config's dataset, with the train subset applied; DataError when a label does not fit
    the model's `num_classes` (a hostile pass: timm's one-hot raised 'index 7 is out of bounds' mid-epoch)."""
    train, val = _datasets(cfg, train_tf, val_tf)
    labels = [sample[1] for part in (train, val) for sample in getattr(part, "samples", ())]  # (path, label, …)
    classes = getattr(train, "classes", None)
    if classes is not None and len(classes) < 2:  # trained "100 %" with nothing learned (a hostile pass)
        raise DataError(f"{cfg.data or cfg.dataset} has {len(classes)} class folder{'s' * (len(classes) != 1)}"
                        f"{': ' + classes[0] if classes else ''}; a classifier needs at least 2 (with one, every "
                        "prediction is right)")
    if labels and max(labels) >= cfg.num_classes:
        found = f"{len(classes)} classes" if classes else f"labels up to {max(labels)}"
        raise DataError(f"{cfg.data or cfg.dataset} has {found}, but num_classes={cfg.num_classes}: give --set "
                        f"num_classes={max(labels) + 1}")
    if classes and len(classes) > cfg.num_classes:  # an empty class folder: its name in the checkpoint, no output
        empty = sorted(set(classes) - {classes[label] for label in labels if label < len(classes)})
        raise DataError(f"{cfg.data or cfg.dataset} has {len(classes)} class folders"
                        + (f" ({', '.join(empty)} without images)" if empty else "")
                        + f", but num_classes={cfg.num_classes}: give --set num_classes={len(classes)}, or remove "
                          "the folders that should not be classes")
    return train, val


def train_images(train: Dataset) -> dict[str, Any]:
    """How many training images there are and, for data read from files, a digest of their names and labels (the
    order `samples` lists them in): what a checkpoint keeps so that `--resume` can tell the data changed."""
    samples = getattr(train, "samples", None)
    digest = None
    if samples is not None:
        names = "\n".join(f"{Path(s[0]).parent.name}/{Path(s[0]).name}\t{s[1]}" for s in samples)
        digest = hashlib.sha256(names.encode()).hexdigest()
    return {"count": len(train), "sha256": digest}


def caveats(cfg: TrainConfig, train: Dataset, val: Dataset) -> list[str]:
    """What the data makes of the config that trains, but not as asked (a hostile pass found each silent)."""
    out = []
    classes = getattr(train, "classes", None)
    trained = {sample[1] for sample in getattr(train, "samples", ())}
    untrained = [name for label, name in enumerate(classes or ()) if label not in trained]
    if untrained and trained:  # it counts in top-1 and can never be learned
        out.append(f"class{'es' * (len(untrained) > 1)} {', '.join(untrained)} ha{'ve' if len(untrained) > 1 else 's'} "
                   "no training images: never learned, but counted in the validation top-1")
    if classes and len(classes) < cfg.num_classes:
        out.append(f"the data has {len(classes)} classes and num_classes={cfg.num_classes}: "
                   f"{cfg.num_classes - len(classes)} outputs are never a target (--set num_classes={len(classes)} "
                   "unless that is meant)")
    for name, part in (("train_subset", train), ("val_subset", val)):
        if getattr(cfg, name) and getattr(cfg, name) > len(part):
            out.append(f"{name}={getattr(cfg, name)}, but the data has {len(part)} images: all are used")
    return out


def _datasets(cfg: TrainConfig, train_tf, val_tf) -> tuple[Dataset, Dataset]:
    if cfg.dataset == "synthetic":
        size = cfg.img_size or 32
        train = SyntheticImages(cfg.train_subset or 256, cfg.num_classes, size, seed=1, transform=train_tf)
        val = SyntheticImages(cfg.val_subset or 128, cfg.num_classes, size, seed=2, transform=val_tf)
        return train, val
    root = Path(cfg.data) if cfg.data else None
    if cfg.dataset in TORCHVISION_SETS:
        if root is None:
            raise DataError(f"dataset={cfg.dataset} needs --data ROOT: the folder torchvision's "
                            f"{TORCHVISION_SETS[cfg.dataset][0]}(ROOT, download=True) filled on a machine with a network")
        train = TorchvisionSet(cfg.dataset, root, True, train_tf)
        train.samples = balanced_subset(train.samples, cfg.train_subset, cfg.subset_seed)
        val = TorchvisionSet(cfg.dataset, root, False, val_tf)
        val.samples = balanced_subset(val.samples, cfg.val_subset, VAL_SUBSET_SEED)
        return train, val
    if cfg.dataset == "cifar10" and root is not None and (root / "cifar-10-batches-py").is_dir():
        train = TorchvisionCifar10(root, True, train_tf)  # torchvision's download (download=False: no network here)
        train.samples = balanced_subset(train.samples, cfg.train_subset, cfg.subset_seed)
        val = TorchvisionCifar10(root, False, val_tf)
        val.samples = balanced_subset(val.samples, cfg.val_subset, VAL_SUBSET_SEED)
        return train, val
    if cfg.dataset == "cifar10":
        root = root or cifar10_tree()
        splits = ("train", "test")
    else:
        if root is None:
            raise DataError("dataset=folder needs --data PATH (a folder with train/ and val/ class folders)")
        splits = ("train", "val")
    for split in splits:
        if not (root / split).is_dir():
            if not root.exists():  # said first: "has no train/ folder" read as if the folder were there
                raise DataError(f"--data {root} does not exist; expected {root}/{splits[0]}/<class>/… and "
                                f"{root}/{splits[1]}/…")
            raise DataError(f"{root} has no {split}/ folder; expected {root}/{splits[0]}/<class>/… and {root}/{splits[1]}/…")
    train_samples, layout = find_samples(root / splits[0])
    # the label space is the training classes': val/ may lack a class (the others keep their labels), never add one
    classes = tuple(class_folders(root / splits[0])) if layout == "folder" else None
    val_samples, _ = find_samples(root / splits[1], layout, class_names=classes)
    train = ImageList(balanced_subset(train_samples, cfg.train_subset, cfg.subset_seed), train_tf, cfg.preload, classes)
    val = ImageList(balanced_subset(val_samples, cfg.val_subset, VAL_SUBSET_SEED), val_tf, cfg.preload, classes)
    return train, val


class TorchvisionCifar10(Dataset):
    """CIFAR-10 as torchvision downloads it (`torchvision.datasets.CIFAR10(root, download=True)` on a machine with a
    network, then `--data root`), with the same (image, label, index) items and `class/NNNNN.png` names."""

    def __init__(self, root: Path, train: bool, transform) -> None:
        from torchvision.datasets import CIFAR10

        self.base = CIFAR10(str(root), train=train, download=False)
        self.transform, self.classes = transform, tuple(self.base.classes)
        self.samples = [(Path(self.base.classes[label]) / f"{i:05d}.png", label, i)
                        for i, label in enumerate(self.base.targets)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        _, label, source = self.samples[index]
        return self.transform(Image.fromarray(self.base.data[source])), label, index


VAL_SUBSET_SEED = 0  # one validation subset for every run and seed, so that their scores compare


# Tables 6/7's datasets through torchvision's classes: (class, train split arguments, test split arguments).
# Flowers-102 trains on its train and val splits together, as the transfer literature does.
TORCHVISION_SETS = {
    "cifar100": ("CIFAR100", [{"train": True}], [{"train": False}]),
    "flowers102": ("Flowers102", [{"split": "train"}, {"split": "val"}], [{"split": "test"}]),
    "stanford_cars": ("StanfordCars", [{"split": "train"}], [{"split": "test"}]),
}


class TorchvisionSet(Dataset):
    """A torchvision dataset (already downloaded under `root`; no network is used) with the (image, label, index)
    items and sample list of the other datasets, so subsets, sampling and resume work the same."""

    def __init__(self, name: str, root: Path, train: bool, transform) -> None:
        import torchvision.datasets as tvd

        cls_name, train_args, test_args = TORCHVISION_SETS[name]
        try:
            self.parts = [getattr(tvd, cls_name)(str(root), download=False, **args)
                          for args in (train_args if train else test_args)]
        except (RuntimeError, FileNotFoundError) as exc:  # torchvision: "Dataset not found or corrupted"
            raise DataError(f"dataset={name}: {cls_name} not found under {root} ({exc}); download it on a machine "
                            f"with a network with torchvision.datasets.{cls_name}(ROOT, download=True)") from None
        self.transform = transform
        labels = [(p, label) for p, part in enumerate(self.parts) for label in _labels(part)]
        self.classes = tuple(getattr(self.parts[0], "classes", ())) or None
        self.samples = [(Path(f"{label}/{i:06d}"), label, i) for i, (_, label) in enumerate(labels)]
        self._where = [(p, j) for p, part in enumerate(self.parts) for j in range(len(part))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        _, label, source = self.samples[index]
        part, j = self._where[source]
        image, _ = self.parts[part][j]
        return self.transform(image.convert("RGB")), label, index


def _labels(part) -> list[int]:
    """The labels of a torchvision dataset without decoding its images."""
    for attribute in ("targets", "_labels"):
        if hasattr(part, attribute):
            return list(getattr(part, attribute))
    return [label for _, label in part._samples]  # StanfordCars


def balanced_subset(samples: list[tuple], n: int, seed: int) -> list[tuple]:
    """n samples, an equal share per class (the first classes take the remainder), fixed by seed, in their
    original order within each class. Issue #19: the first n validation images were nearly all of one class."""
    if not n or n >= len(samples):
        return samples
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    g = torch.Generator().manual_seed(seed)
    classes = sorted(by_class)
    chosen = []
    for i, label in enumerate(classes):
        take = n // len(classes) + (i < n % len(classes))
        order = torch.randperm(len(by_class[label]), generator=g)[:take].tolist()
        chosen += [by_class[label][j] for j in sorted(order)]
    return chosen
