"""The training configuration: one frozen dataclass, every field a knob of the recipe (paper Table 9).

Experiments (reproduce/experiments.py) are functions returning a `TrainConfig`; `--set key=value` overrides any
field and is checked here: unknown keys and values that do not parse or make no sense are `ConfigError`s.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, fields

MODES = ("none", "soft", "hard")  # distillation modes (reproduce/distill.py)
KL_NORMS = ("batchmean", "official")


class ConfigError(ValueError):
    """A configuration that cannot run, naming the field and what would be accepted."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf: the run stops; the message says which checkpoint, if any, is kept."""


class Interrupted(RuntimeError):
    """Ctrl-C during training; the message says which checkpoint, if any, is kept."""


class Preempted(RuntimeError):
    """SIGTERM/SIGUSR1 arrived: a checkpoint was written at a step boundary; resume with --resume."""


@dataclass(frozen=True)
class TrainConfig:
    """DeiT's recipe (official code defaults; paper Table 9), for DeiT-B on ImageNet unless an experiment changes it."""

    # model
    variant: str = "deit_b"  # registry alias (bench ls); distilled variants have a distillation token
    img_size: int | None = None  # None: the variant's resolution
    num_classes: int = 1000
    drop_path: float = 0.1  # stochastic depth (Ti/S/B: 0.1 in the official code)
    dropout: float = 0.0  # DeiT: none (Table 8's "+ dropout" row)
    finetune: str = ""  # checkpoint to start from: pos_embed resized to img_size, head dropped if classes differ
    # data
    dataset: str = "folder"  # folder (ImageNet train/ + val/), cifar10, synthetic
    data: str = ""  # dataset root; cifar10 without a root uses ../shared/datasets or torchvision's download
    train_subset: int = 0  # >0: a class-balanced subset of this many training images (fixed by subset_seed)
    subset_seed: int = 0
    val_subset: int = 0  # >0: evaluate on N validation images, an equal share per class, the same for every run
    workers: int = 8  # data-loading processes per rank
    preload: bool = False  # decode every image once and keep it in memory (small-image sets: CIFAR scales)
    # optimisation
    epochs: int = 300
    batch_size: int = 1024  # GLOBAL batch: per-rank batch = batch_size / world size
    lr: float = 5e-4  # at a global batch of 512: lr = lr × batch_size / 512 (official scaling)
    lr_scale_batch: bool = True
    weight_decay: float = 0.05
    no_decay: tuple[str, ...] = ("pos_embed", "cls_token")  # + biases and norms; the distillation token decays (official)
    opt: str = "adamw"  # any timm optimizer name (Table 8's SGD row: "sgd")
    opt_eps: float = 1e-8
    momentum: float = 0.9  # SGD only
    layer_decay: float | None = None  # layer-wise lr decay (fine-tuning), not in DeiT's recipe
    clip_grad: float | None = None  # max gradient norm; None: no clipping (DeiT; ViT clips)
    sched: str = "cosine"
    sched_per_step: bool = False  # False: one lr per epoch, the warm-up a staircase (official); True: per step
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    # augmentation and regularisation
    train_interpolation: str = "bicubic"
    train_crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop scale range
    hflip: float = 0.5
    color_jitter: float = 0.3  # used only when auto_augment is empty (timm's rule); the release passed 0.4
    auto_augment: str = "rand-m9-mstd0.5-inc1"  # RandAugment 9/0.5; "" for none
    reprob: float = 0.25  # random erasing, pixel mode
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    repeated_aug: int = 3  # copies of each image per epoch, single process too (the official code: only distributed)
    ema_decay: float | None = None  # None: no EMA; when set the EMA weights are evaluated too
    # distillation (paper Section 4; Table 3)
    distillation: str = "none"  # none | soft | hard
    distill_token: bool = False  # True: teacher term on a distillation token (rows 4–6; needs a distilled variant)
    distill_alpha: float = 0.5  # weight of the teacher term (paper: 0.1 soft, 0.5 hard)
    distill_tau: float = 1.0  # soft mode temperature (paper: 3.0)
    kl_norm: str = "official"  # official (sum / (batch × classes)) | batchmean (paper / Hinton)
    distill_smoothing: float = 0.0  # label smoothing of the teacher's hard label (official: none; the paper
    # notes hard labels "can also be converted into soft labels with label smoothing")
    teacher: str = "regnety_160"  # registry alias of the CNN teacher; "labels": the ground truth stands in (a control)
    teacher_checkpoint: str = ""  # local weights (official: regnety_160-a5fe301d.pth); unused with teacher=labels
    teacher_memo: bool = False  # remember the teacher's logits per exact batch beside its checkpoint (CIFAR scales)
    # run
    seed: int = 0
    amp: str = "auto"  # auto (bf16 where native: GPU, avx512_bf16/AMX CPU; else none) | none | bf16 | fp16 (scaler)
    compile: bool = False
    fused_attn: bool = True  # False: attention as explicit matmuls, not SDPA (2.3x faster small ViTs, bf16 on CPU)
    channels_last: bool = False  # student weights and inputs NHWC (convnets: ~1.5x on CPU, faster on GPU too)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    eval_protocol: str = "official"  # bench's preprocessing protocols
    eval_batch_size: int = 256
    log_every: int = 50  # steps between step lines in log.jsonl
    device: str = "auto"


AMP_MODES = ("auto", "none", "bf16", "fp16")
LABEL_TEACHER = "labels"  # `teacher=labels`: the true labels in the teacher's place (reproduce.distill.LabelTeacher)
DATASETS = ("folder", "cifar10", "synthetic")


def check(cfg: TrainConfig) -> TrainConfig:
    """Raise ConfigError for values that cannot train; return cfg unchanged otherwise."""
    rules = [
        (cfg.distillation in MODES, "distillation", f"one of {', '.join(MODES)}"),
        (cfg.kl_norm in KL_NORMS, "kl_norm", f"one of {', '.join(KL_NORMS)}"),
        (cfg.amp in AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}"),
        (cfg.dataset in DATASETS, "dataset", f"one of {', '.join(DATASETS)}"),
        (cfg.epochs >= 1, "epochs", "at least 1"),
        (cfg.batch_size >= 1, "batch_size", "at least 1"),
        (math.isfinite(cfg.lr) and cfg.lr > 0, "lr", "positive and finite"),
        (0 <= cfg.distill_alpha <= 1, "distill_alpha", "in [0, 1]"),
        (cfg.distill_tau > 0, "distill_tau", "positive"),
        (0 <= cfg.distill_smoothing < 1, "distill_smoothing", "in [0, 1)"),
        (cfg.distill_smoothing == 0 or cfg.distillation == "hard", "distill_smoothing",
         "0 unless distillation=hard (it smooths the teacher's hard label; the soft mode has none)"),
        (0 <= cfg.reprob <= 1, "reprob", "in [0, 1]"),
        (cfg.repeated_aug >= 1, "repeated_aug", "at least 1 (1 = off)"),
        (cfg.ema_decay is None or 0 < cfg.ema_decay < 1, "ema_decay", "in (0, 1) or None"),
        (0 < cfg.train_crop_scale[0] <= cfg.train_crop_scale[1] <= 1, "train_crop_scale", "0 < low <= high <= 1"),
        (cfg.eval_every >= 1, "eval_every", "at least 1 (evaluate every N epochs; the last epoch always is)"),
        (cfg.log_every >= 1, "log_every", "at least 1"),
        (cfg.warmup_epochs >= 0, "warmup_epochs", "non-negative"),
        (cfg.workers >= 0, "workers", "non-negative"),
        (not cfg.distill_token or cfg.distillation != "none", "distill_token",
         "false when distillation=none (a distillation token needs a teacher signal)"),
    ]
    for ok, name, accepted in rules:
        if not ok:
            raise ConfigError(f"{name}={getattr(cfg, name, None)!r} is not accepted: must be {accepted}")
    return cfg


def override(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply `key=value` strings; values parse by the field's type (None/none for optional fields,
    comma lists for tuples, true/false for booleans)."""
    known = {f.name: f for f in fields(cfg)}
    hints = typing.get_type_hints(TrainConfig)
    changes = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `reproduce ls --fields` lists them"
            raise ConfigError(f"--set {key}: no such config field{hint}")
        changes[key] = _parse(key, text.strip(), hints[key])
    return check(dataclasses.replace(cfg, **changes))


def _parse(key: str, text: str, hint):
    args = typing.get_args(hint)
    optional = type(None) in args and (typing.get_origin(hint) in (typing.Union, types.UnionType))
    if optional:
        if text.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if typing.get_origin(hint) is tuple:
            item_type = typing.get_args(hint)[0]
            return tuple(item_type(part) for part in text.split(",") if part.strip())
        return hint(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text!r}: not a valid {getattr(hint, '__name__', hint)}") from None


def as_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
