"""Distillation as a loss component (paper Section 4; official DeiT `losses.DistillationLoss`).

The training step calls one function and never asks which Table-3 row is running: the row is the
(mode, student head layout) pair in the config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn

from bench.checkpoint import load_torch_file
from bench.errors import CheckpointError, writable
from bench.store import write_atomic
from reproduce.config import KL_NORMS, MODES  # the accepted values live with the config (no torch there)


def distillation_loss(student_logits: Tensor | tuple[Tensor, Tensor], teacher_logits: Tensor | None,
                      target: Tensor, *, mode: str, alpha: float, tau: float, kl_norm: str,
                      hard_smoothing: float = 0.0) -> Tensor:
    """(1 − α)·base(class head, target) + α·distillation(distillation head, teacher).

    Args:
        student_logits: one tensor (class token only: Table 3 rows 1–3, both terms on it) or a
            `(cls, dist)` pair (distillation token: rows 4–6, label term on cls, teacher term on dist).
        teacher_logits: the teacher's logits on the same augmented, mixed batch; unused for `none`.
        target: class indices, or soft targets (Mixup/CutMix, label smoothing folded in).
        mode: `none` (base loss only), `soft` (KL at temperature τ) or `hard` (CE on the teacher's argmax).
        alpha: weight of the distillation term (paper: λ = 0.1 soft, ½ hard; official code default 0.5).
        tau: temperature of the soft mode (paper 3.0; official default 1.0).
        kl_norm: `batchmean`, the paper's / Hinton's KL averaged over the batch, × τ²; or `official`, the
            released code's KL summed and divided by batch × classes, × τ² (1000× smaller at 1000 classes;
            https://github.com/facebookresearch/deit/issues/61). The label loss is cross-entropy for index targets,
            soft-target cross-entropy for soft targets (what the official code picks under Mixup); the training
            step's own criterion goes to `distillation_terms`.
        hard_smoothing: label smoothing of the teacher's argmax in the hard mode (official code: 0).
    """
    base, teacher_term = distillation_terms(student_logits, teacher_logits, target, mode=mode, tau=tau,
                                            kl_norm=kl_norm, hard_smoothing=hard_smoothing)
    return weighted(base, teacher_term, alpha)


def weighted(base: Tensor, teacher_term: Tensor | None, alpha: float) -> Tensor:
    """(1 − α)·label term + α·teacher term; the label term alone without a teacher."""
    return base if teacher_term is None else (1 - alpha) * base + alpha * teacher_term


def distillation_terms(student_logits: Tensor | tuple[Tensor, Tensor], teacher_logits: Tensor | None,
                       target: Tensor, *, mode: str, tau: float, kl_norm: str,
                       base_criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
                       hard_smoothing: float = 0.0) -> tuple[Tensor, Tensor | None]:
    """The two unweighted terms of `distillation_loss` (label term, teacher term or None), for the logs."""
    if mode not in MODES:
        raise ValueError(f"unknown distillation mode {mode!r}; accepted: {', '.join(MODES)}")
    cls, dist = student_logits if isinstance(student_logits, tuple) else (student_logits, student_logits)
    if base_criterion is None:
        base_criterion = SoftTargetCrossEntropy() if target.is_floating_point() else F.cross_entropy
    base = base_criterion(cls, target)
    if mode == "none":
        return base, None
    if teacher_logits is None:
        raise ValueError(f"distillation mode {mode!r} needs the teacher's logits")
    teacher_logits = teacher_logits.detach()
    if mode == "soft":
        if kl_norm not in KL_NORMS:
            raise ValueError(f"unknown kl_norm {kl_norm!r}; accepted: {', '.join(KL_NORMS)}")
        kl = F.kl_div(F.log_softmax(dist / tau, dim=-1), F.log_softmax(teacher_logits / tau, dim=-1),
                      reduction="sum", log_target=True)
        divisor = dist.shape[0] if kl_norm == "batchmean" else dist.numel()
        return base, kl * tau * tau / divisor
    # hard: the teacher's decision on the very image the student saw, mixing included
    return base, F.cross_entropy(dist, teacher_logits.argmax(dim=-1), label_smoothing=hard_smoothing)


def teacher_logits(teacher: torch.nn.Module, images: Tensor) -> Tensor:
    """The frozen teacher's logits: eval mode, inference mode (no graph, no version counters; faster than the
    official `no_grad`), cloned out of inference mode so the loss may keep them for its backward pass."""
    teacher.eval()
    with torch.inference_mode():
        logits = teacher(images)
    return logits.clone()


class LabelTeacher(nn.Module):
    """The ground truth standing in for the teacher (`teacher=labels`), a control the paper does not run: what a
    distillation token (or the class token's teacher term) gets from the labels alone, with no teacher knowledge.

    Its logits are the log of the step's targets (one-hot class indices, or Mixup's smoothed mixture), so hard
    distillation gets the true label, the larger-weight one under Mixup, and soft distillation the targets."""

    def forward(self, target: Tensor, num_classes: int) -> Tensor:
        probs = target.float() if target.is_floating_point() else F.one_hot(target, num_classes).float()
        return probs.clamp_min(1e-6).log()


class MemoTeacher(nn.Module):
    """A frozen teacher whose logits are remembered per exact input batch, on disk.

    The teacher is a pure function of its input, and the rows of one seed feed it byte-identical batches
    (same sampler order, same per-image augmentation draws, Mixup included). So the first distillation row of a
    seed runs the teacher and every later row reads the logits back. The key is a digest of the batch's bytes,
    dtype and shape, never its position, so a batch that differs in any pixel misses and is computed. Worth it where
    the whole run's logits are small (CIFAR scales: 6 MB per seed), not on ImageNet.
    """

    def __init__(self, teacher: nn.Module, path: Path, *, log=print, start_from: Path | None = None):
        """`path` is where the memo is kept; `start_from`, a memo to begin with when `path` holds none yet."""
        super().__init__()
        self.teacher, self.path = teacher, Path(path)
        source = self.path if self.path.is_file() or start_from is None or not start_from.is_file() else start_from
        self.memo = self._read(source, log) if source.is_file() else {}
        self.hits = self.misses = 0
        self._unsaved = False

    @classmethod
    def beside(cls, teacher: nn.Module, teacher_checkpoint: str, teacher_sha256: str, amp: str, rank: int, world: int,
               *, run_folder: Path, log=print) -> MemoTeacher:
        """The memo of `teacher_checkpoint` (whose sha256 is given) where `memo_path` puts it, saying so when that is
        the run folder (then a memo beside the checkpoint, read-only, is where it starts)."""
        path, note = memo_path(teacher_checkpoint, teacher_sha256, amp, rank, world, run_folder=run_folder)
        if note:
            log(note)
        return cls(teacher, path, log=log, start_from=Path(teacher_checkpoint).parent / "teacher-logits" / path.name)

    @staticmethod
    def _read(path: Path, log) -> dict[str, Tensor]:
        """The memo in `path`, or an empty one, saying so, when the file is unreadable or not a memo: it only saves
        the teacher's forwards, so it is rebuilt (a message naming the file, not a traceback)."""
        try:
            memo = load_torch_file(path, "teacher-logit memo")
            if isinstance(memo, dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in memo.items()):
                return memo
            raise CheckpointError(f"teacher-logit memo {path} holds a {type(memo).__name__}, not logits by batch")
        except CheckpointError as exc:
            log(f"warning: {exc}; it is rebuilt (the teacher runs again on every batch)")
            return {}

    @staticmethod
    def digest(images: Tensor) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{images.dtype}{tuple(images.shape)}".encode())
        h.update(images.detach().cpu().contiguous().view(torch.uint8).numpy())  # hashed in place, not copied
        return h.hexdigest()

    def forward(self, images: Tensor) -> Tensor:
        key = self.digest(images)
        if key in self.memo:
            self.hits += 1
            return self.memo[key].to(images.device)
        self.misses += 1
        logits = self.teacher(images)
        self.memo[key] = logits.detach().cpu().clone()
        self._unsaved = True
        return logits

    def save(self) -> None:
        """Write the memo if it grew (atomically: a crash leaves the previous file or none)."""
        if not self._unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, lambda tmp: torch.save(self.memo, tmp))
        self._unsaved = False


def memo_path(teacher_checkpoint: str, teacher_sha256: str, amp: str, rank: int, world: int, *,
              run_folder: Path) -> tuple[Path, str | None]:
    """Where the logits of a teacher checkpoint (identified by its sha256, which the caller took once as it read the
    file: hashing it here again would read it whole once more) under an autocast mode are kept, and a line
    to print when that is not the usual place.

    Beside the checkpoint, so every run distilling from it shares them; where that folder cannot be written (a
    read-only teacher store), in the run folder instead, decided before training (else the save
    fails with EROFS after epoch 1, and again on every resume)."""
    path = Path(teacher_checkpoint)
    name = f"{path.stem}-{teacher_sha256[:16]}-{amp}-rank{rank}of{world}.pt"
    shared = path.parent / "teacher-logits"
    if writable(shared):
        return shared / name, None
    own = Path(run_folder) / "teacher-logits"
    return own / name, (f"teacher_memo: {shared} cannot be written (a read-only disk, or not this user's), so this "
                        f"run keeps its teacher's logits in {own}: not shared with other runs")


class StepLoss(NamedTuple):
    total: Tensor
    base: Tensor  # the label term
    term: Tensor | None  # the teacher term, None without distillation
    teacher_agree: Tensor | None  # fraction of the batch whose teacher argmax is the label (under Mixup: the
    # label with the larger weight); how much the teacher's hard labels add to the true ones


@dataclass(frozen=True)
class AttentionTerm:
    """Attention distillation (not the paper's method): taps on the student and the ViT teacher, and
    whether to match per head."""

    student: AttentionTap
    teacher: AttentionTap
    per_head: bool = False

    def __call__(self) -> Tensor:
        return attention_divergence(self.student.maps(), self.teacher.maps(), per_head=self.per_head)


@dataclass(frozen=True)
class Distiller:
    """The loss component of the training step: the step passes images, the student's outputs and targets,
    and never learns which Table-3 row is running. The teacher terms (logits: soft or hard; attention) add up and
    take the weight α: (1 − α)·label term + α·(teacher terms)."""

    mode: str
    alpha: float
    tau: float
    kl_norm: str
    teacher: nn.Module | None
    base_criterion: Callable[[Tensor, Tensor], Tensor] | None = None
    hard_smoothing: float = 0.0  # label smoothing of the teacher's hard label (official: 0)
    attention: AttentionTerm | None = None

    def __call__(self, images: Tensor, outputs: Tensor | tuple[Tensor, Tensor], target: Tensor) -> StepLoss:
        teacher_out = None
        if self.mode != "none" or self.attention is not None:
            classes = (outputs[0] if isinstance(outputs, tuple) else outputs).shape[-1]
            teacher_out = (self.teacher(target, classes) if isinstance(self.teacher, LabelTeacher)
                           else teacher_logits(self.teacher, images))
        base, term = distillation_terms(outputs, teacher_out if self.mode != "none" else None, target, mode=self.mode,
                                        tau=self.tau, kl_norm=self.kl_norm, base_criterion=self.base_criterion,
                                        hard_smoothing=self.hard_smoothing)
        if self.attention is not None:
            attention = self.attention()
            term = attention if term is None else term + attention
        if term is None:
            return StepLoss(base, base, None, None)
        labels = target.argmax(dim=-1) if target.is_floating_point() else target
        agree = (teacher_out.argmax(dim=-1) == labels).float().mean()
        return StepLoss(weighted(base, term, self.alpha), base, term, agree)


class AttentionTap:
    """The class token's attention over the patch tokens in chosen blocks of a timm ViT, read through the model's
    own `Attention` modules: a forward hook keeps each block's `qkv` output, and the map is computed from it as the
    block computes it (`q_norm`/`k_norm`, `scale`, softmax over all tokens), then restricted to the patch tokens and
    renormalised. The qkv projection runs on the SDPA and the matmul path alike, so both work; nothing is forked.
    For a model being trained the maps keep their graph; for a frozen teacher they are computed without one."""

    def __init__(self, model: nn.Module, blocks: tuple[int, ...]) -> None:
        if not hasattr(model, "blocks") or not all(hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in model.blocks):
            raise ValueError(f"{type(model).__name__} has no attention blocks (a convnet has no attention maps)")
        blocks = block_indices(blocks, len(model.blocks))
        self.prefix = model.num_prefix_tokens  # class (+ distillation) token(s) before the patches
        self.attns = [model.blocks[b].attn for b in blocks]
        self._qkv: list[Tensor | None] = [None] * len(blocks)
        self.handles = [attn.qkv.register_forward_hook(self._keeper(i)) for i, attn in enumerate(self.attns)]

    def _keeper(self, i: int):
        def keep(module, inputs, output):
            self._qkv[i] = output
        return keep

    def maps(self) -> list[Tensor]:
        """[batch, heads, patches] per chosen block, each row a distribution over the patches, from the last forward."""
        if any(q is None for q in self._qkv):
            raise RuntimeError("AttentionTap.maps() before a forward pass")
        out = []
        for attn, qkv in zip(self.attns, self._qkv):
            b, n, _ = qkv.shape
            q, k, _ = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = attn.q_norm(q), attn.k_norm(k)
            row = ((q[:, :, :1].float() * attn.scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)[:, :, 0]
            patches = row[:, :, self.prefix:]
            out.append(patches / patches.sum(dim=-1, keepdim=True))
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def block_indices(blocks: tuple[int, ...], depth: int, whose: str = "the model's") -> tuple[int, ...]:
    """`attn_blocks` as block numbers 0 … depth-1 of a model `depth` blocks deep (negative ones count from the end).
    Raises ValueError for a block out of range, or one named twice (-1,1 in a 2-block model tapped block 1
    twice, counting it double in the loss)."""
    given = ",".join(map(str, blocks))
    bad = [b for b in blocks if not -depth <= b < depth]
    if bad:
        raise ValueError(f"attn_blocks={given}: block {', '.join(map(str, bad))} is out of range for {whose} {depth} "
                         f"blocks; give blocks between {-depth} and {depth - 1}")
    numbers = tuple(b % depth for b in blocks)
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        raise ValueError(f"attn_blocks={given} name block {', '.join(map(str, twice))} twice in {whose} {depth} blocks "
                         f"(negative indices count from the end: -1 is block {depth - 1}); give distinct blocks")
    return numbers


def attention_divergence(student: list[Tensor], teacher: list[Tensor], *, per_head: bool) -> Tensor:
    """KL(teacher ‖ student) between the class token's attention over the patches, averaged over the chosen blocks
    and the batch: per head when asked and the head counts agree, else between the head-averaged maps."""
    terms = []
    for s, t in zip(student, teacher, strict=True):
        if s.shape[-1] != t.shape[-1]:
            raise ValueError(f"student and teacher attend over {s.shape[-1]} and {t.shape[-1]} patches: attention "
                             "distillation needs the same patch grid")
        if not per_head or s.shape[1] != t.shape[1]:
            s, t = s.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
        t = t.detach()
        kl = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(dim=-1)  # [batch, heads]
        terms.append(kl.mean())
    return torch.stack(terms).mean()
