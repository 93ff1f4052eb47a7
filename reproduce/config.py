"""The training configuration: one frozen dataclass, every field a knob of the recipe (paper Table 9).

Experiments (reproduce/experiments.py) are functions returning a `TrainConfig`; `--set key=value` overrides any
field and is checked here: unknown keys and values that do not parse or make no sense are `ConfigError`s. What each
field accepts is declared once, in `ACCEPTS`; `check()` enforces it on every resolved config.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

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
# timm's schedules that the loop can drive (train.epoch_lr / step_update): `plateau` needs a validation metric the
# loop does not pass, `none` gives no scheduler, `wsd`/`rsqrt` refuse short runs; tested over epochs and warm-ups
SCHEDULERS = ("cosine", "tanh", "step", "constant", "multistep", "poly")
# timm's create_transform takes box, hamming and lanczos too, but RandAugment's affine ops (PIL) then fail mid-epoch
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")
SEED_MAX = 2**32 - 1  # NumPy's seeds


# ---- what each field accepts: declared once, here, and enforced by `check()` on every resolved config
# (`--set`, experiments, suites) before any work; `reproduce ls --fields` prints it. A field without an entry fails
# tests/reproduce/test_config_constraints.py. ----

@dataclass(frozen=True)
class Accepts:
    """What one field accepts: `words` for messages and `reproduce ls --fields`; `reason(value)` is None for an
    accepted value, else the words that follow "is not accepted:" (by default "must be <words>")."""

    words: str
    test: Callable[[Any], bool | str]  # True: accepted; False: refused; a string: refused, saying why

    def reason(self, value: Any) -> str | None:
        verdict = self.test(value)
        if verdict is True:
            return None
        return verdict if isinstance(verdict, str) and verdict else f"must be {self.words}"


@dataclass(frozen=True)
class Number(Accepts):
    """A numeric field's rule, with its bounds kept for the tests that probe them."""

    kind: type = float
    low: float = 0
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False


def number(kind: type, low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False,
           optional: bool = False, note: str = "") -> Number:
    """An int or float field: finite (nan and inf never are), within [low, high] (ends open where asked)."""
    if high is not None:
        words = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    elif low == 0:
        words = "positive" if open_low else "non-negative"
    else:
        words = f"greater than {low}" if open_low else f"at least {low}"
    words += " and finite" if kind is float and high is None else ""
    words += " or None" if optional else ""
    words += f" ({note})" if note else ""

    def test(value) -> bool | str:
        if value is None:
            return optional
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            return f"must be {'an int' if kind is int else 'a number'}, {words}"
        return ((isinstance(value, int) or math.isfinite(value))  # an int is finite (and may not fit a float)
                and (value > low if open_low else value >= low)
                and (high is None or (value < high if open_high else value <= high)))
    return Number(words, test, kind, low, high, open_low, open_high, optional)


def one_of(*names: str, note: str = "") -> Accepts:
    return Accepts(f"one of {', '.join(names)}" + (f" ({note})" if note else ""), lambda value: value in names)


FLAG = Accepts("true or false", lambda value: isinstance(value, bool))
PATH = Accepts("a path, or '' for none", lambda value: isinstance(value, str) and "\0" not in value)
PROBABILITY = number(float, 0, 1)


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


def _optimizer(name) -> bool | str:
    """timm's `create_optimizer_v2` names, `lookahead_` prefix allowed, that can be built here (the apex `fused*` and
    bitsandbytes `bnb*` ones need CUDA and their package)."""
    if not isinstance(name, str):
        return False
    from timm.optim import get_optimizer_class, list_optimizers  # here: timm loads only where a config is checked

    base = name.lower().removeprefix("lookahead_")  # timm reads 'x_adamw' as adamw; only lookahead_ means something
    if base not in list_optimizers():
        close = difflib.get_close_matches(base, list_optimizers(), n=3)
        return f"must be {OPTIMIZER.words}" + (f"; did you mean {', '.join(close)}?" if close else "")
    if base == "adahessian":
        return "adahessian needs a backward pass with create_graph=True, which the training step does not do"
    try:
        get_optimizer_class(base, bind_defaults=False)
    except (ImportError, AssertionError) as exc:
        return f"timm's {base} cannot run here: {exc}"
    return True


def _augmentation(spec) -> bool | str:
    """'' or a spec timm's create_transform builds, every section a key and a number: timm silently skips a section
    without a number ('rand-m9-foo' is plain 'rand-m9')."""
    if spec == "":
        return True
    if not isinstance(spec, str):
        return False
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    name, *sections = spec.split("-")
    for section in sections:
        if not any(c.isdigit() for c in section) and not (name == "rand" and section.startswith("t")):
            return f"section {section!r} has no number, so timm would skip it silently; must be {AUGMENTATION.words}"
    build = (rand_augment_transform if spec.startswith("rand") else
             augment_and_mix_transform if spec.startswith("augmix") else auto_augment_transform)
    try:
        build(spec, {"translate_const": 100, "img_mean": (124, 116, 104)})
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        return f"timm cannot build it ({exc or type(exc).__name__}); must be {AUGMENTATION.words}"
    return True


def _eval_protocol(value) -> bool:
    from bench.data import EVAL_PROTOCOLS  # bench's evaluation owns its preprocessing protocols

    return value in EVAL_PROTOCOLS


def _crop_scale(value) -> bool:
    return (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and 0 < value[0] <= value[1] <= 1)


def _parameter_names(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, str) and v.replace(".", "_").isidentifier() for v in value)


def _block_indices(value) -> bool | str:
    if not (isinstance(value, tuple) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return False
    twice = sorted({v for v in value if value.count(v) > 1})
    return f"block {', '.join(map(str, twice))} is given twice; must be {BLOCKS.words}" if twice else True


OPTIMIZER = Accepts("a timm optimizer name (timm.optim.list_optimizers(); lookahead_NAME wraps it) that runs here, "
                    "not adahessian", _optimizer)
AUGMENTATION = Accepts("'' (none) or a timm augmentation spec: rand-m9-mstd0.5-inc1 (RandAugment), "
                       "original-mstd0.5 (AutoAugment), augmix-m5", _augmentation)
BLOCKS = Accepts("distinct block indices separated by commas (negative from the end), at least one", _block_indices)

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
    "workers": number(int, 0),
    "preload": FLAG,
    "device_data": FLAG,
    # optimisation
    "epochs": number(int, 1, 100_000, note="the paper's longest run is 1000; an epoch count past any schedule is a typo"),
    "batch_size": number(int, 1),
    "lr": number(float, 0, open_low=True),
    "lr_scale_batch": FLAG,
    "weight_decay": number(float, 0),
    "no_decay": Accepts("parameter names separated by commas (e.g. pos_embed,cls_token), or empty", _parameter_names),
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
    "train_crop_scale": Accepts("two numbers low,high with 0 < low <= high <= 1", _crop_scale),
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
    "eval_protocol": Accepts("one of bench's evaluation protocols (official, timm)", _eval_protocol),
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
        (cfg.min_lr <= cfg.peak_lr() * (1 + 1e-9), "min_lr", f"at most the peak learning rate {_peak_words(cfg)}"),
        (cfg.warmup_lr <= cfg.peak_lr() * (1 + 1e-9), "warmup_lr", f"at most the peak learning rate {_peak_words(cfg)}"),
    ]
    for ok, name, accepted in rules:
        if not ok:
            raise ConfigError(f"{name}={getattr(cfg, name, None)!r} is not accepted: must be {accepted}")
    if cfg.device_data:  # the device path's own refusals (RandAugment, colour jitter), before any data is read
        from reproduce.device_data import check_supported

        check_supported(cfg)
    return cfg


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


def check_ready(cfg: TrainConfig) -> TrainConfig:
    """What a checked config still needs before it trains, which an experiment may leave to the user: the teacher's
    weights. Issue #32: attention distillation without them was reported as 'distillation=none needs ...'."""
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
                f"rate never reaches the peak {cfg.peak_lr():g}; set warmup_epochs below epochs for a result"]
    return []


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
            return tuple(item_type(part.strip()) for part in text.split(",") if part.strip())
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
              "warmup_lr, epoch e ≥ 1 at lr(e − 1) (github.com/facebookresearch/deit/issues/145)",
              "sched_timing=official",
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
    Deviation("soft-distillation KL normalisation",
              "KL summed, ÷ (batch × classes), × τ² (github.com/facebookresearch/deit/issues/61)",
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
             "fp32, with and without Mixup/CutMix; with `sched_timing=start` the loss differs by up to 0.8 (run",
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
