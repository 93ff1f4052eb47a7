"""The training configuration: one frozen dataclass, every field a knob of the recipe (paper Table 9).

Experiments (reproduce/experiments.py) are functions returning a `TrainConfig`; `--set key=value` overrides any
field and is checked here: unknown keys and values that do not parse or make no sense are `ConfigError`s. What each
field accepts is declared once, in `ACCEPTS`; `check()` enforces it on every resolved config.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, fields

from bench.errors import plain_number
from bench.processes import MAX_WORKERS, enough_open_files
from bench.protocols import compile_switched_off
from bench.record import PATH_FIELDS  # the files and folders a run reads
from reproduce.accepts import (
    AUGMENTATION,
    BLOCKS,
    CROP_SCALE,
    EVAL_PROTOCOL,
    FLAG,
    OPTIMIZER,
    PARAMETER_NAMES,
    PATH,
    PROBABILITY,
    Accepts,
    Number,  # noqa: F401 (the tests probe each numeric field's bounds through it)
    number,
    one_of,
)

MODES = ("none", "soft", "hard")  # distillation modes (reproduce/distill.py)
KL_NORMS = ("batchmean", "official")


class ConfigError(ValueError):
    """A configuration that cannot run, naming the field and what would be accepted."""


class CommandLineError(ConfigError):
    """A mistake in the command line alone (an experiment's name, a setting's value), which every rank of a torchrun
    job makes alike: rank 0 says it, not each rank (a hostile pass)."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf: the run stops; the message says which checkpoint, if any, is kept."""


class Interrupted(RuntimeError):
    """Ctrl-C during training; the message says which checkpoint, if any, is kept."""


class PeerLost(RuntimeError):
    """Under torchrun, another process of the run ended (killed, or failed) during a collective; the message says
    which checkpoint, if any, is kept."""


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
    # both at warmup_lr, epoch e >= 1 at lr(e - 1); github.com/facebookresearch/deit/issues/145); "start" = before
    # each epoch (epoch e at lr(e); what the committed mini, CIFAR and debug results were trained with)
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
    # attention distillation (not the paper's method): KL(teacher ‖ student) between the class token's
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
    # 0.3.2, which the released code pins); "timm" = N(0, 1e-6), timm >= 0.9's VisionTransformer
    cls_token_init: str = "official"
    fused_attn: bool = True  # False: attention as explicit matmuls, not SDPA (2.3x faster small ViTs, bf16 on CPU)
    channels_last: bool = False  # student weights and inputs NHWC (convnets: ~1.5x on CPU, faster on GPU too)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    eval_protocol: str = "official"  # bench's preprocessing protocols
    eval_batch_size: int = 256
    log_every: int = 50  # steps between step lines in log.jsonl
    device: str = "auto"

    def peak_lr(self) -> float:
        """The learning rate after warm-up: lr × batch_size / 512 with lr_scale_batch (official scaling), else lr."""
        return self.lr * self.batch_size / 512 if self.lr_scale_batch else self.lr

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
# timm's schedules that the loop can drive (schedule.epoch_lr / step_update): `plateau` needs a validation metric the
# loop does not pass, `none` gives no scheduler, `wsd`/`rsqrt` refuse short runs; tested over epochs and warm-ups
SCHEDULERS = ("cosine", "tanh", "step", "constant", "multistep", "poly")
NO_MIN_LR = ("step", "constant", "multistep")  # timm's create_scheduler_v2 gives these no lr_min
# timm's create_transform takes box, hamming and lanczos too, but RandAugment's affine ops (PIL) then fail mid-epoch
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
SEED_MAX = 2**32 - 1  # NumPy's seeds


# ---- what each field accepts (the rules: reproduce/accepts.py): declared once, here, and enforced by `check()` on
# every resolved config (`--set`, experiments, suites) before any work; `reproduce ls --fields` prints it. A field
# without an entry fails tests/reproduce/test_config_constraints.py. ----

def _registered(value, *, labels: bool = False) -> bool | str:
    from bench.registry import resolve  # no torch: the registry is data

    if labels and value == LABEL_TEACHER:
        return True
    try:
        resolve(value)
    except (KeyError, TypeError) as exc:
        also = f" ({LABEL_TEACHER}: the ground truth in the teacher's place)" if labels else ""
        return exc.args[0] + also if isinstance(exc, KeyError) else False
    return True


ACCEPTS: dict[str, Accepts] = {
    # model
    "variant": Accepts("a registered model (`bench ls`)", _registered),
    "img_size": number(int, 1, optional=True, note="None: the variant's; for a ViT a multiple of its patch size"),
    "num_classes": number(int, 2, note="one class would score 100 % with nothing learned"),
    "drop_path": number(float, 0, 1, open_high=True),
    "dropout": number(float, 0, 1, open_high=True),
    "finetune": PATH,
    # data
    "dataset": one_of(*DATASETS),
    "data": PATH,
    "train_subset": number(int, 0, note="0: all"),
    "subset_seed": number(int, 0, SEED_MAX),
    "val_subset": number(int, 0, note="0: all"),
    "workers": number(int, 0, MAX_WORKERS, note="data-loading processes per rank, each a fork of the run"),
    "preload": FLAG,
    "device_data": FLAG,
    # optimisation
    "epochs": number(int, 1, 100_000, note="the paper's longest run is 1000; an epoch count past any schedule is a typo"),
    "batch_size": number(int, 1),
    "lr": number(float, 0, open_low=True),
    "lr_scale_batch": FLAG,
    "weight_decay": number(float, 0),
    "no_decay": PARAMETER_NAMES,
    "opt": OPTIMIZER,
    "opt_eps": number(float, 0, open_low=True),
    "momentum": number(float, 0, 1, open_high=True),
    "layer_decay": number(float, 0, 1, open_low=True, optional=True),
    "clip_grad": number(float, 0, open_low=True, optional=True, note="None: no clipping"),
    "sched": one_of(*SCHEDULERS),
    "sched_per_step": FLAG,
    "sched_timing": one_of(*SCHED_TIMINGS),
    "warmup_epochs": number(int, 0),
    "warmup_lr": number(float, 0),
    "min_lr": number(float, 0),
    # augmentation and regularisation
    "train_interpolation": one_of(*INTERPOLATIONS),
    "train_crop_scale": CROP_SCALE,
    "hflip": PROBABILITY,
    "color_jitter": number(float, 0),
    "auto_augment": AUGMENTATION,
    "reprob": PROBABILITY,
    "mixup": number(float, 0, note="Beta(α, α); 0: off"),
    "cutmix": number(float, 0, note="Beta(α, α); 0: off"),
    "mixup_prob": PROBABILITY,
    "mixup_switch_prob": PROBABILITY,
    "smoothing": number(float, 0, 1, open_high=True),
    "repeated_aug": number(int, 1, note="1 = off"),
    "ema_decay": number(float, 0, 1, open_low=True, open_high=True, optional=True),
    # distillation
    "distillation": one_of(*MODES),
    "distill_token": FLAG,
    "distill_alpha": PROBABILITY,
    "distill_tau": number(float, 0, open_low=True),
    "kl_norm": one_of(*KL_NORMS),
    "distill_smoothing": number(float, 0, 1, open_high=True),
    "attn_distill": FLAG,
    "attn_blocks": BLOCKS,
    "attn_per_head": FLAG,
    "teacher": Accepts(f"a registered model (`bench ls`), or {LABEL_TEACHER}",
                       lambda value: _registered(value, labels=True)),
    "teacher_checkpoint": PATH,
    "teacher_memo": FLAG,
    # run
    "seed": number(int, 0, SEED_MAX),
    "amp": one_of(*AMP_MODES),
    "compile": FLAG,
    "cls_token_init": one_of(*CLS_TOKEN_INITS),
    "fused_attn": FLAG,
    "channels_last": FLAG,
    "eval_every": number(int, 1, note="evaluate every N epochs; the last epoch always is"),
    "eval_protocol": EVAL_PROTOCOL,
    "eval_batch_size": number(int, 1),
    "log_every": number(int, 1),
    "device": Accepts("auto, cpu, cuda or cuda:N", lambda value: isinstance(value, str) and valid_device(value)),
}


def check(cfg: TrainConfig) -> TrainConfig:
    """Raise ConfigError for values that cannot train; return cfg unchanged otherwise. Each field against its
    `ACCEPTS` entry first, then the rules that tie fields together."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        reason = ACCEPTS[f.name].reason(value)
        if reason is not None:
            raise ConfigError(f"{f.name}={value!r} is not accepted: {reason}")
    rules = [
        (cfg.distill_smoothing == 0 or cfg.distillation == "hard", "distill_smoothing",
         "0 unless distillation=hard (it smooths the teacher's hard label; the soft mode has none)"),
        (not cfg.distill_token or cfg.distillation != "none", "distill_token",
         "false when distillation=none (a distillation token needs a teacher signal)"),
        (not (cfg.attn_distill and cfg.teacher_memo), "teacher_memo",
         "false with attn_distill (the memo keeps the teacher's logits, not its attention maps)"),
        (not (cfg.attn_distill and cfg.teacher == LABEL_TEACHER), "teacher",
         "a ViT with attn_distill (the labels have no attention maps)"),
        (_fits_patches(cfg), "img_size", f"a multiple of {cfg.variant}'s patch size ({_patch(cfg)} px)"),
        (cfg.dataset != "synthetic" or not cfg.data, "data",
         "'' with dataset=synthetic (its images are generated, the folder would go unread; dataset=folder reads it)"),
        # a necessary condition whatever the world size (train.py checks the per-process batch): odd batches failed
        # only after the data and models were built
        (cfg.batch_size % 2 == 0 or not (cfg.mixup > 0 or cfg.cutmix > 0), "batch_size",
         f"even with mixup={cfg.mixup}, cutmix={cfg.cutmix}: Mixup/CutMix need an even batch per process"),
        # lr below min_lr made the cosine rise, below warmup_lr made the warm-up fall, without a word
        (cfg.sched in NO_MIN_LR or cfg.min_lr <= cfg.peak_lr() * (1 + 1e-9), "min_lr",
         f"at most the peak learning rate {_peak_words(cfg)}"),
        (cfg.warmup_lr <= cfg.peak_lr() * (1 + 1e-9), "warmup_lr", f"at most the peak learning rate {_peak_words(cfg)}"),
    ]
    for ok, name, accepted in rules:
        if not ok:
            raise ConfigError(f"{name}={getattr(cfg, name, None)!r} is not accepted: must be {accepted}")
    if cfg.device_data:  # the device path's own refusals (RandAugment, colour jitter), before any data is read
        from reproduce.device_data import check_supported

        check_supported(cfg)
    return cfg


TEACHER_FIELDS = ("teacher", "teacher_checkpoint", "teacher_memo", "distill_alpha", "distill_tau", "kl_norm")


def teacherless(cfg: TrainConfig) -> bool:
    """Whether the run distils from nothing (attention distillation has a teacher too)."""
    return cfg.distillation == "none" and not cfg.attn_distill


def _peak_words(cfg: TrainConfig) -> str:
    scaled = f"lr × batch_size / 512 = {cfg.lr:g} × {cfg.batch_size} / 512 = " if cfg.lr_scale_batch else "lr = "
    return f"({scaled}{cfg.peak_lr():g}); lower it or raise lr"


def _patch(cfg: TrainConfig) -> int | None:
    from bench.registry import resolve

    return resolve(cfg.variant).patch_size


def _fits_patches(cfg: TrainConfig) -> bool:
    return cfg.img_size is None or _patch(cfg) is None or cfg.img_size % _patch(cfg) == 0


def teacher_users(cfg: TrainConfig) -> str:
    """The settings that call for a teacher, in words: 'distillation=hard', 'attn_distill=true' or both."""
    users = [f"distillation={cfg.distillation}"] if cfg.distillation != "none" else []
    return " and ".join(users + ["attn_distill=true"] * cfg.attn_distill)


def check_compile(cfg: TrainConfig) -> None:
    """compile=true where the environment turns torch.compile off trained eager, its record saying compiled and its
    speed leaving out a first epoch "because it compiles" (a hostile pass)."""
    if cfg.compile and (off := compile_switched_off()) is not None:
        raise ConfigError(f"compile=true, but {off} in the environment turns torch.compile off: unset it, or drop "
                          "compile=true")


def check_ready(cfg: TrainConfig) -> TrainConfig:
    """What a checked config still needs before it trains, which an experiment may leave to the user: the teacher's
    weights. Issue #32: attention distillation without them was reported as 'distillation=none needs ...'."""
    check_compile(cfg)
    if cfg.workers > 0:  # before the run, not at its first loader (a review)
        try:
            enough_open_files(cfg.workers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if teacher_users(cfg) and cfg.teacher != LABEL_TEACHER and not cfg.teacher_checkpoint:
        control = "" if cfg.attn_distill else f", or teacher={LABEL_TEACHER} for the label control"
        raise ConfigError(f"{teacher_users(cfg)} needs the teacher's weights: --set teacher_checkpoint=FILE "
                          f"(a {cfg.teacher} checkpoint){control}")
    return cfg


def caveats(cfg: TrainConfig) -> list[str]:
    """What a valid config does that a user may not expect, said before the run and kept in its record's notes.
    A smoke run may want it (`--set epochs=1` of the debug experiment), so it is not refused."""
    if 0 < cfg.epochs <= cfg.warmup_epochs:
        return [f"warmup_epochs={cfg.warmup_epochs} >= epochs={cfg.epochs}: the whole run is warm-up, its learning "
                f"rate never reaches the peak {cfg.peak_lr():g}: a smoke run, not a result (set warmup_epochs below "
                "epochs for one)"]
    return []


def valid_device(device: str) -> bool:
    return device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())


def override(cfg: TrainConfig, assignments: list[str], *, refuse_unread: bool = True) -> TrainConfig:
    """Apply `key=value` strings; values parse by the field's type (None/none for optional fields,
    comma lists for tuples, true/false for booleans). A field given twice, or (unless not `refuse_unread`) one the
    new config never reads, is a ConfigError."""
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
        if key in changes:  # the last would win, silently
            raise ConfigError(f"--set {key} is given twice (the last, {text.strip()}, would win silently); give it once")
        changes[key] = _parse(key, text.strip(), hints[key])
    new = absolute_paths(check(dataclasses.replace(cfg, **changes)))
    changed = {k for k, v in changes.items() if v != getattr(cfg, k)}
    if refuse_unread and changed:
        from reproduce.reads import refuse_unread as refuse  # it imports this module

        refuse(new, cfg, changed)
    return new




def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its paths absolute and normalised (`…/imagenet/` is `…/imagenet`). A relative one was kept as
    typed, so a --resume from another folder read that folder's `ds` and trained on other images without a word,
    and the record could not say which (a hostile pass)."""
    return dataclasses.replace(cfg, **{k: os.path.abspath(getattr(cfg, k)) for k in PATH_FIELDS if getattr(cfg, k)})


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
            return tuple(plain_number(item_type, part.strip()) for part in text.split(",") if part.strip())
        return plain_number(hint, text)
    except ValueError:
        raise ConfigError(f"--set {key}={text!r}: not a valid {_accepted(hint)}") from None


def _accepted(hint) -> str:
    """What `_parse` takes for a field type, in the words of an error message."""
    if hint is bool:
        return "bool (true/false, yes/no, 1/0)"
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0].__name__
        return f"tuple: {item}s separated by commas, no brackets (e.g. {'-1,-2' if item == 'int' else '0.08,1.0'})"
    return getattr(hint, "__name__", str(hint)) + {int: " (plain ASCII digits)",
                                                   float: " (plain ASCII, e.g. 0.001 or 1e-3)"}.get(hint, "")


def as_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
