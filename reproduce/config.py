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
    dataset: str = "folder"  # folder (ImageNet train/ + val/), cifar10, cifar100, flowers102, stanford_cars, synthetic
    data: str = ""  # dataset root; cifar10 without a root uses ../shared/datasets or torchvision's download
    train_subset: int = 0  # >0: a class-balanced subset of this many training images (fixed by subset_seed)
    subset_seed: int = 0
    val_subset: int = 0  # >0: evaluate on N validation images, an equal share per class, the same for every run
    workers: int = 8  # data-loading processes per rank
    preload: bool = False  # decode every image once and keep it in memory (small-image sets: CIFAR scales)
    # decode once into one uint8 tensor on the training device and augment whole batches there (CIFAR scales on a
    # GPU; reproduce/device_data.py): no RandAugment or colour jitter, refused rather than silently left out
    device_data: bool = False
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
    # when the per-epoch schedule steps: "official" = after each epoch, as the released main.py does (epochs 0 and 1
    # both at warmup_lr, epoch e >= 1 at lr(e - 1); official repo issue #145); "start" = before each epoch (epoch e
    # at lr(e); what this project did until issue #20, kept by the mini, CIFAR and debug rows)
    sched_timing: str = "official"
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
    # attention distillation (not the paper's method; issue #23): KL(teacher ‖ student) between the class token's
    # attention over the patches in `attn_blocks`, from a ViT teacher, added to the teacher terms (weight α)
    attn_distill: bool = False
    attn_blocks: tuple[int, ...] = (-1,)  # block indices (negative from the end): the last block by default
    attn_per_head: bool = False  # match head by head when the head counts agree; else the head-averaged maps
    teacher: str = "regnety_160"  # registry alias of the CNN teacher; "labels": the ground truth stands in (a control)
    teacher_checkpoint: str = ""  # local weights (official: regnety_160-a5fe301d.pth); unused with teacher=labels
    teacher_memo: bool = False  # remember the teacher's logits per exact batch beside its checkpoint (CIFAR scales)
    # run
    seed: int = 0
    amp: str = "auto"  # auto (bf16 where native: GPU, avx512_bf16/AMX CPU; else none) | none | bf16 | fp16 (scaler)
    compile: bool = False
    # the class token's initial values: "official" = truncated normal, std 0.02, like the distillation token (timm
    # 0.3.2, which the released code pins); "timm" = N(0, 1e-6), timm >= 0.9's VisionTransformer (issue #20)
    cls_token_init: str = "official"
    fused_attn: bool = True  # False: attention as explicit matmuls, not SDPA (2.3x faster small ViTs, bf16 on CPU)
    channels_last: bool = False  # student weights and inputs NHWC (convnets: ~1.5x on CPU, faster on GPU too)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    eval_protocol: str = "official"  # bench's preprocessing protocols
    eval_batch_size: int = 256
    log_every: int = 50  # steps between step lines in log.jsonl
    device: str = "auto"

    def teacher_signals(self) -> str:
        """The teacher's signals in words, as the training banner names them."""
        token = ", token" if self.distill_token else ""
        words = [f"{self.distillation} distillation{token}"] if self.distillation != "none" else []
        words += [f"attention distillation, blocks {list(self.attn_blocks)}"] if self.attn_distill else []
        return "; ".join(words) or "no distillation"


AMP_MODES = ("auto", "none", "bf16", "fp16")
SCHED_TIMINGS = ("official", "start")
CLS_TOKEN_INITS = ("official", "timm")
LABEL_TEACHER = "labels"  # `teacher=labels`: the true labels in the teacher's place (reproduce.distill.LabelTeacher)
DATASETS = ("folder", "cifar10", "cifar100", "flowers102", "stanford_cars", "synthetic")


def check(cfg: TrainConfig) -> TrainConfig:
    """Raise ConfigError for values that cannot train; return cfg unchanged otherwise."""
    rules = [
        (cfg.distillation in MODES, "distillation", f"one of {', '.join(MODES)}"),
        (cfg.kl_norm in KL_NORMS, "kl_norm", f"one of {', '.join(KL_NORMS)}"),
        (cfg.amp in AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}"),
        (cfg.sched_timing in SCHED_TIMINGS, "sched_timing", f"one of {', '.join(SCHED_TIMINGS)}"),
        (cfg.cls_token_init in CLS_TOKEN_INITS, "cls_token_init", f"one of {', '.join(CLS_TOKEN_INITS)}"),
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
        (not (cfg.attn_distill and cfg.teacher_memo), "teacher_memo",
         "false with attn_distill (the memo keeps the teacher's logits, not its attention maps)"),
        (not (cfg.attn_distill and cfg.teacher == LABEL_TEACHER), "teacher",
         "a ViT with attn_distill (the labels have no attention maps)"),
        (len(cfg.attn_blocks) > 0, "attn_blocks", "at least one block index"),
        (valid_device(cfg.device), "device", "auto, cpu, cuda or cuda:N"),
    ]
    for ok, name, accepted in rules:
        if not ok:
            raise ConfigError(f"{name}={getattr(cfg, name, None)!r} is not accepted: must be {accepted}")
    return cfg


def valid_device(device: str) -> bool:
    return device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())


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
        raise ConfigError(f"--set {key}={text!r}: not a valid {_accepted(hint)}") from None


def _accepted(hint) -> str:
    """What `_parse` takes for a field type, in the words of an error message."""
    if hint is bool:
        return "bool (true/false, yes/no, 1/0)"
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0].__name__
        return f"tuple: {item}s separated by commas, no brackets (e.g. {'-1,-2' if item == 'int' else '0.08,1.0'})"
    return getattr(hint, "__name__", str(hint))


def as_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


@dataclass(frozen=True)
class Deviation:
    """One way our training can differ from the released code (facebookresearch/deit `main.py`, `engine.py`,
    `losses.py`, `models.py` with the timm 0.3.2 it pins), and the setting that selects the released behaviour.
    `docs/released-code.md` is generated from these rows and the config's defaults (`reproduce ls --released`)."""

    topic: str
    released: str  # what the released code does
    official: str  # `key=value[,key=value]` that selects it; "" where no setting does (a note says why)
    note: str = ""

    def settings(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.official.split(";") if item) if self.official else {}


RELEASED_CODE: tuple[Deviation, ...] = (
    Deviation("learning-rate schedule timing", "`lr_scheduler.step(epoch)` after each epoch: epochs 0 and 1 at "
              "warmup_lr, epoch e ≥ 1 at lr(e − 1) (official issue #145)", "sched_timing=official",
              "the mini, CIFAR and debug rows keep `start` (epoch e at lr(e)), what their committed results used"),
    Deviation("warm-up granularity", "one learning rate per epoch: the warm-up is a staircase",
              "sched_per_step=false"),
    Deviation("class-token initialisation", "truncated normal, std 0.02, like the distillation token (timm 0.3.2); "
              "timm ≥ 0.9 draws N(0, 1e-6)", "cls_token_init=official",
              "the mini, CIFAR and debug rows keep `timm`"),
    Deviation("repeated augmentation in one process", "3 copies per image only when distributed; a single "
              "process silently trains without it", "repeated_aug=1",
              "only for single-process runs; distributed runs match with the default 3"),
    Deviation("EMA of the weights", "kept (decay 0.99996) and saved, never evaluated: the reported number is the "
              "raw weights'", "ema_decay=0.99996",
              "we then evaluate the EMA weights too (`ema_val_*`); the reported number stays the raw weights'"),
    Deviation("precision", "fp16 autocast with a loss scaler, always (training and evaluation)", "amp=fp16",
              "our `auto` picks bf16 where it is native (no scaler needed), else fp32"),
    Deviation("soft-distillation KL normalisation", "KL summed, ÷ (batch × classes), × τ² (official issue #61)",
              "kl_norm=official", "the paper's formula is `batchmean` (Table 3 mini row 2 uses it)"),
    Deviation("distillation token weight decay", "decays (only pos_embed, cls_token, biases and norms are exempt)",
              "no_decay=pos_embed,cls_token",
              "with `layer_decay` set, timm's own groups exempt dist_token as well"),
    Deviation("evaluation preprocessing", "shorter side to int(size / 0.875), bicubic, center crop, ImageNet mean/std",
              "eval_protocol=official"),
    Deviation("color jitter", "0.4 in the original release (0.3 at HEAD); unused while RandAugment is on",
              "color_jitter=0.4", "no effect with `auto_augment` set: timm applies color jitter only without it"),
    Deviation("hard-label smoothing", "none: cross-entropy on the teacher's argmax", "distill_smoothing=0.0"),
    Deviation("reported accuracy", "prints the last epoch's and the maximum over epochs", "",
              "our records keep both: `final_*` and `best_*` with its epoch"),
)


def render_released() -> str:
    """docs/released-code.md: each deviation with our default, read from `TrainConfig`, and whether it matches."""
    default = TrainConfig()
    lines = ["# Our defaults against the released DeiT code", "",
             "<!-- generated by `reproduce ls --released > docs/released-code.md` from reproduce/config.py; "
             "do not edit -->", "",
             "The paper rows (`deit_*` experiments) train with `TrainConfig`'s defaults. Each row: what the released",
             "code does, our default (read from the config), whether they match, and the `--set` that selects the",
             "released behaviour. From the same initial weights and batches, 30 steps of the released",
             "`engine.train_one_epoch` (under timm 1.0, with timm 0.3.2's no-decay list) and of ours agree to 0.0 in",
             "fp32, with and without Mixup/CutMix; with `sched_timing=start` the loss differs by up to 0.8 (issue #20;",
             "`DEIT_OFFICIAL_DIR=/path/to/deit pytest tests/reproduce/test_against_released_code.py`).", "",
             "| topic | released code | our default | same? | select the released behaviour |",
             "|:--|:--|:--|:--|:--|"]
    for d in RELEASED_CODE:
        wanted = d.settings()
        ours = ", ".join(f"`{k}={_show(getattr(default, k))}`" for k in wanted) or "—"
        same = "—" if not wanted else "yes" if override(default, [f"{k}={v}" for k, v in wanted.items()]) == default else "no"
        select = f"`--set {d.official}`" if d.official else "—"
        lines.append(f"| {d.topic} | {d.released} | {ours} | {same} | {select}{'; ' + d.note if d.note else ''} |")
    return "\n".join(lines) + "\n"


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) \
        else str(value)
