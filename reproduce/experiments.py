"""Experiments are code: each paper row is a function returning a TrainConfig derived from a base with
`dataclasses.replace`. The docstring says the row, the paper's number, the hardware and the command.

`reproduce ls` lists them; `reproduce train --experiment NAME` runs one. Table 3's rows 4–6 are ONE trained
model (distillation token, hard distillation) evaluated three ways, so they share one experiment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from bench import paper
from bench.scales import SCALE_PREFIX, experiment_name
from reproduce.config import TrainConfig


@dataclass(frozen=True)
class Experiment:
    name: str
    build: Callable[[], TrainConfig]
    table: str  # the paper's table and row, e.g. "Table 3, row 3 (B)"
    paper_top1: float | None  # the paper's number for that row (None: not a paper row)

    @property
    def doc(self) -> str:
        return " ".join((self.build.__doc__ or "").split())


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, table: str, paper_top1: float | None = None):
    def register(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, fn, table, paper_top1)
        return fn
    return register


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        import difflib
        close = difflib.get_close_matches(name, EXPERIMENTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `reproduce ls` lists them"
        raise KeyError(f"unknown experiment {name!r}{hint}")
    return EXPERIMENTS[name]


# ---- ImageNet, the paper's settings (Table 9). Hardware: DeiT-B 300 epochs = 53 h on 8 V100 (paper). ----

# The sizes of Table 3 (stochastic depth 0.1 for each, the official README's default).
_SIZES = {"ti": ("deit_ti", "Ti"), "s": ("deit_s", "S"), "b": ("deit_b", "B")}


def imagenet(variant: str) -> TrainConfig:
    """The paper's recipe on ImageNet-1k (global batch 1024, 300 epochs, lr 5e-4 × 1024/512)."""
    return TrainConfig(variant=variant)


def _register_imagenet_rows() -> None:
    for size, (variant, label) in _SIZES.items():
        none, soft_cls, hard_cls, tok_cls, tok_dist, tok_fused = paper.TABLE3[label]
        cmd = "torchrun --nproc_per_node 8 -m reproduce train --data /data/imagenet --experiment"

        def none_row(v=variant):
            return imagenet(v)
        none_row.__doc__ = (f"Table 3 row 1 / Table 5: DeiT-{label} without distillation, {none} % top-1. "
                            f"8 GPUs: `{cmd} deit_{size} --output runs/deit_{size}`.")
        experiment(f"deit_{size}", f"Table 3 row 1 ({label})", none)(none_row)

        def soft_cls_row(v=variant):
            return replace(imagenet(v), distillation="soft", distill_alpha=0.1, distill_tau=3.0, kl_norm="batchmean")
        soft_cls_row.__doc__ = (f"Table 3 row 2: usual (soft) distillation on the class token only, τ 3, λ 0.1, "
                                f"RegNetY-16GF teacher; paper {soft_cls} %. Needs teacher_checkpoint.")
        experiment(f"deit_{size}_soft_cls", f"Table 3 row 2 ({label})", soft_cls)(soft_cls_row)

        def hard_cls_row(v=variant):
            return replace(imagenet(v), distillation="hard")
        hard_cls_row.__doc__ = (f"Table 3 row 3: hard distillation on the class token only; paper {hard_cls} %. "
                                "Needs teacher_checkpoint.")
        experiment(f"deit_{size}_hard_cls", f"Table 3 row 3 ({label})", hard_cls)(hard_cls_row)

        def token_row(v=variant):
            return replace(imagenet(v + "_dist"), distillation="hard", distill_token=True)
        token_row.__doc__ = (f"Table 3 rows 4–6 / Table 5 DeiT-{label}⚗: distillation token, hard distillation; "
                             f"paper {tok_cls} / {tok_dist} / {tok_fused} % (class / distillation / fused). "
                             f"8 GPUs: `{cmd} deit_{size}_hard --output runs/deit_{size}_hard --set "
                             "teacher_checkpoint=regnety_160-a5fe301d.pth`.")
        experiment(f"deit_{size}_hard", f"Table 3 rows 4–6 ({label})", tok_fused)(token_row)


_register_imagenet_rows()


_TABLE8_CHANGES = {  # Table 8: each row changes one thing of DeiT-B's recipe (the paper's rows: bench/paper.py)
    "sgd": dict(opt="sgd", lr=0.1, weight_decay=1e-4),
    "no_randaug": dict(auto_augment=""),
    "autoaug": dict(auto_augment="original-mstd0.5"),
    "no_mixup": dict(mixup=0.0),
    "no_cutmix": dict(cutmix=0.0),
    "no_mixup_cutmix": dict(mixup=0.0, cutmix=0.0),
    "no_erasing": dict(reprob=0.0),  # the paper: did not train well
    "no_drop_path": dict(drop_path=0.0),  # the paper: did not train well
    "no_repeated_aug": dict(repeated_aug=1),
    "dropout": dict(dropout=0.1),
    "ema": dict(ema_decay=0.99996),  # evaluated, unlike the official code
}


def _register_table8() -> None:
    for key, changes in _TABLE8_CHANGES.items():
        what, top1 = paper.TABLE8[key]
        def row(changes=changes):
            return replace(imagenet("deit_b"), **changes)
        row.__doc__ = f"Table 8: DeiT-B, {what} ({changes}); paper {top1} % at 224. Same hardware as deit_b."
        experiment(f"deit_b_{key}", f"Table 8: {what}", top1)(row)


_register_table8()


def _finetune_384(base: TrainConfig, checkpoint: str) -> TrainConfig:
    # Paper: "fine-tuning at 384: 25 epochs"; lr/weight decay of the official README's fine-tune command.
    return replace(base, img_size=384, finetune=checkpoint, epochs=25, lr=5e-6, weight_decay=1e-8, min_lr=5e-6,
                   warmup_epochs=0, batch_size=512)


@experiment("deit_b_384", "Table 3 row 1 (B↑384) / Table 5 DeiT-B↑384", paper.MODELS["deit_b_384"].top1)
def deit_b_384() -> TrainConfig:
    """DeiT-B fine-tuned at 384 from a 224 checkpoint (pos_embed resized bicubically, head kept); paper 83.1 %.
    20 h on one 8-GPU node (paper). Set finetune=<your deit_b checkpoint>."""
    return _finetune_384(imagenet("deit_b_384"), "runs/deit_b/checkpoint.pth")


@experiment("deit_b_hard_384", "Table 3 rows 4–6 (B↑384) / Table 5 DeiT-B⚗↑384", paper.MODELS["deit_b_dist_384"].top1)
def deit_b_hard_384() -> TrainConfig:
    """DeiT-B⚗ fine-tuned at 384 with the teacher's signal kept (the authors' advice,
    https://github.com/facebookresearch/deit/issues/45); paper 84.5 %."""
    return replace(_finetune_384(imagenet("deit_b_dist_384"), "runs/deit_b_hard/checkpoint.pth"), distillation="hard",
                   distill_token=True)


# Tables 6/7: transfer. The authors' fine-tuning recipe (https://github.com/facebookresearch/deit/issues/45): 224
# or 384 px, batch 768, SGD lr 0.01, weight decay 1e-4, 1000 epochs, no random erasing, no stochastic depth, the
# rest as on ImageNet; a distilled model keeps its teacher signal (a teacher fine-tuned on the target dataset, given
# as teacher_checkpoint).
TRANSFER_CLASSES = {"cifar10": 10, "cifar100": 100, "flowers102": 102, "stanford_cars": 196, "inat2018": 8142,
                    "inat2019": 1010}
_TRANSFER_DATA = {"cifar10": "cifar10", "cifar100": "cifar100", "flowers102": "flowers102",
                  "stanford_cars": "stanford_cars", "inat2018": "folder", "inat2019": "folder"}


def _register_transfer() -> None:
    for model, top1s in paper.TABLE7.items():
        for i, target in enumerate(paper.TRANSFER_DATASETS):
            def row(model=model, target=target):
                distilled = "dist" in model
                cfg = replace(imagenet(model), dataset=_TRANSFER_DATA[target], num_classes=TRANSFER_CLASSES[target],
                              finetune=f"runs/{model}/checkpoint.pth", opt="sgd", lr=0.01, weight_decay=1e-4,
                              batch_size=768, epochs=1000, reprob=0.0, drop_path=0.0)
                return replace(cfg, distillation="hard", distill_token=True) if distilled else cfg
            where = ("torchvision's download under --data" if _TRANSFER_DATA[target] != "folder" else
                     "--data DIR with train/ and val/ class folders (the iNaturalist release re-arranged)")
            row.__doc__ = (f"Table 7: {model} fine-tuned on {target} (head replaced), the authors' recipe (see the "
                           f"comment above); paper {top1s[i]} %. Data: {where}. Set finetune=<ImageNet {model} checkpoint>"
                           + ("; a teacher fine-tuned on it as teacher_checkpoint." if "dist" in model else "."))
            experiment(f"{model}_transfer_{target}", f"Table 7, {target} ({paper.MODELS[model].label})",
                       top1s[i])(row)
    for model, top1 in paper.TABLE7_SCRATCH.items():
        def scratch(model=model):
            cfg = replace(imagenet(model), dataset="cifar10", num_classes=10, img_size=224)
            return replace(cfg, distillation="hard", distill_token=True) if "dist" in model else cfg
        scratch.__doc__ = (f"Table 7 footnote: {model} trained on CIFAR-10 from scratch, images upscaled to 224, the "
                           f"ImageNet recipe; paper {top1} % with a \"long schedule\" it does not state: set epochs.")
        experiment(f"{model}_scratch_cifar10", "Table 7, CIFAR-10 from scratch", top1)(scratch)


_register_transfer()


# ---- CIFAR scales: a DeiT-shaped student with 4 px patches and a CIFAR CNN teacher. ----

def cifar(variant: str = "cifar_vit") -> TrainConfig:
    """The DeiT recipe at 32 px on CIFAR-10: crops keep at least 35 % of the image (0.08 of 32 px is 9 px). The
    images are decoded once and kept in memory (150 MB for all 50,000), not re-read from JPEG every epoch."""
    # sched_timing and cls_token_init keep what the committed CIFAR-scale results were trained with
    return TrainConfig(variant=variant, dataset="cifar10", num_classes=10, batch_size=256, epochs=100, workers=2,
                       preload=True, train_interpolation="bicubic", train_crop_scale=(0.35, 1.0), drop_path=0.1,
                       teacher="cifar_resnet10", teacher_checkpoint="runs/cifar_teacher/checkpoint.pth",
                       eval_every=5, log_every=20, sched_timing="start", cls_token_init="timm")


def mini(variant: str = "cifar_vit") -> TrainConfig:
    """Mini scale: 5,000 CIFAR-10 training images (500 per class), 45 epochs, batch 64, on 2 CPU cores; one seed
    of the whole Table-3 suite, teacher included, took 28.5 min on the development machine of November 2026.

    The regime underfits, so DeiT's regularisers for 300 ImageNet epochs (RandAugment, Mixup/CutMix, random
    erasing, repeated augmentation, stochastic depth) are off and crops keep >= 60 % of the image. Attention runs
    as explicit matmuls (`fused_attn=False`: 2.3x faster than SDPA under bf16 on CPU, ~5 % in fp32), the images are
    decoded once and augmented in the training process (`preload`, `workers=0`), and the teacher's logits are
    remembered per batch. Precision is `auto`: bf16 only where it is native. How each choice was measured:
    results/REPORT.md, "Cost, and how the mini configuration was chosen".
    """
    return replace(cifar(variant), train_subset=5000, epochs=45, batch_size=64, lr=2e-3, lr_scale_batch=False,
                   warmup_epochs=3, mixup=0.0, cutmix=0.0, auto_augment="", color_jitter=0.0, reprob=0.0,
                   repeated_aug=1, drop_path=0.0, train_crop_scale=(0.6, 1.0), fused_attn=False,
                   workers=0, teacher_memo=True, eval_every=10, teacher_checkpoint="runs/mini_teacher/checkpoint.pth")


@experiment("cifar_teacher", "teacher for the cifar10 scale")
def cifar_teacher() -> TrainConfig:
    """The CNN teacher of the cifar10 scale: cifar_resnet10 on all 50,000 images, 100 epochs, same recipe minus
    stochastic depth. One GPU."""
    return replace(cifar("cifar_resnet10"), drop_path=0.0, lr=2e-3, teacher_checkpoint="")


@experiment("mini_teacher", "teacher for the mini scale")
def mini_teacher() -> TrainConfig:
    """The CNN teacher of the mini scale: cifar_resnet10 on the same 5,000 images and recipe, weights and inputs
    channels-last (1.5x faster convolutions on this CPU)."""
    return replace(mini("cifar_resnet10"), channels_last=True, teacher_memo=False, teacher_checkpoint="")


_TABLE3_CHANGES = {  # row key: (Table 3 rows, what changes from the scale's base, description)
    "none": ("row 1", {}, "no distillation"),
    "soft_cls": ("row 2", dict(distillation="soft", distill_alpha=0.1, distill_tau=3.0, kl_norm="batchmean"),
                 "usual soft distillation on the class token (τ 3, λ 0.1, batchmean KL)"),
    "hard_cls": ("row 3", dict(distillation="hard"), "hard distillation on the class token only"),
    "hard": ("rows 4–6", dict(distillation="hard", distill_token=True),
             "distillation token, hard distillation; evaluated on the class, distillation and fused heads"),
}


def _register_cifar_rows() -> None:
    for scale, base, where in (("mini", mini, "2 CPU cores"), ("cifar10", cifar, "one GPU")):
        for key, (rows, changes, what) in _TABLE3_CHANGES.items():
            def row(base=base, changes=changes, key=key):
                variant = "cifar_vit_dist" if key == "hard" else "cifar_vit"
                return replace(base(variant), **changes)
            row.__doc__ = (f"{scale} scale, Table 3 {rows}: {what}. {where}; run all rows with "
                           f"`reproduce suite table3 --scale {scale}`.")
            experiment(experiment_name(scale, key), f"Table 3 {rows}, {SCALE_PREFIX[scale]} scale")(row)


_register_cifar_rows()


# ---- attention distillation from a ViT teacher, an ablation users ask for (not the paper's method); its table,
# table_attention_mini, is declared in bench/ablations.py ----

@experiment("mini_vit_teacher", "teacher for the attention ablation")
def mini_vit_teacher() -> TrainConfig:
    """A transformer teacher at mini scale: the CIFAR ViT 1.5x deeper (9 blocks, width 96, 3 heads, as many as the
    student, so attention can be matched head by head), same 5,000 images and recipe."""
    return replace(mini("cifar_vit_deep"), teacher_memo=False, teacher_checkpoint="")


_ATTENTION_CHANGES = {  # name: (student, changes, description)
    "mini_attn": ("cifar_vit", dict(attn_distill=True), "attention distillation only (the class token's attention "
                  "over the patches in the last block, KL to the teacher's, weight α 0.5)"),
    "mini_vit_hard": ("cifar_vit_dist", dict(distillation="hard", distill_token=True),
                      "hard distillation on the distillation token from the ViT teacher"),
    "mini_attn_hard": ("cifar_vit_dist", dict(distillation="hard", distill_token=True, attn_distill=True),
                       "both: hard distillation on the distillation token and attention distillation"),
}


def _register_attention_rows() -> None:
    for name, (student, changes, what) in _ATTENTION_CHANGES.items():
        def row(student=student, changes=changes):
            return replace(mini(student), teacher="cifar_vit_deep", teacher_memo=False,
                           teacher_checkpoint="runs/mini_vit_teacher/checkpoint.pth", **changes)
        row.__doc__ = (f"Attention ablation, mini scale, not the paper's method: {what}. Train mini_vit_teacher first; "
                       "`bench tables` writes table_attention_mini beside Table 3's rows.")
        experiment(name, "ablation table_attention_mini: attention distillation, mini scale")(row)


_register_attention_rows()


# ---- does the released code's class-token initialisation move the token rows (4–6) at mini scale? Its table,
# table_cls_init_mini, is declared in bench/ablations.py ----

def _register_init_ablation() -> None:
    for init in ("timm", "official"):
        def row(init=init):
            return replace(mini("cifar_vit_dist"), distillation="hard", distill_token=True, cls_token_init=init)
        row.__doc__ = (f"mini_hard (Table 3 rows 4–6, mini scale) with cls_token_init={init}: the class token drawn "
                       f"{'from N(0, 1e-6), as timm >= 0.9 does' if init == 'timm' else 'from a truncated normal, std 0.02, as the released code does'}. "
                       "Needs the mini teacher; `bench tables` compares the two (table_cls_init_mini).")
        experiment(f"mini_hard_init_{init}", "ablation table_cls_init_mini: class-token init, mini scale")(row)


_register_init_ablation()


# ---- the debug experiment: seconds on a CPU, what tests and CI run ----

@experiment("debug", "none (tests, CI, smoke runs)")
def debug() -> TrainConfig:
    """The tiny debug model (2 blocks, width 64) on 256 synthetic 32 px images, 2 epochs, batch 32, no workers.
    `reproduce train --experiment debug --output /tmp/x` runs in seconds on a CPU."""
    # amp="none": fp32 on every machine, so the golden loss trace does not depend on the CPU's bf16 units
    # sched_timing="start": with the official timing a 2-epoch run would train both epochs at warmup_lr
    return TrainConfig(variant="debug", dataset="synthetic", num_classes=10, epochs=2, batch_size=32, lr=1e-3,
                       lr_scale_batch=False, warmup_epochs=1, workers=0, eval_every=1, log_every=1,
                       train_crop_scale=(0.35, 1.0), teacher="cifar_resnet10", eval_batch_size=64, amp="none",
                       sched_timing="start", cls_token_init="timm")


@experiment("debug_hard", "none (tests: distillation token + hard distillation)")
def debug_hard() -> TrainConfig:
    """The debug experiment with a distillation token and hard distillation from a cifar_resnet10 teacher."""
    return replace(debug(), variant="debug_dist", distillation="hard", distill_token=True)


def _register_debug_rows() -> None:
    """Table 3's other rows on the debug model (`reproduce suite table3 --scale debug`: the whole suite in seconds,
    what `bench campaign --dry-run` runs in place of the cifar10 scale)."""
    for key in ("none", "soft_cls", "hard_cls"):
        rows, changes, what = _TABLE3_CHANGES[key]
        def row(changes=changes):
            return replace(debug(), **changes)
        row.__doc__ = f"debug scale, Table 3 {rows}: {what}. Seconds on a CPU (synthetic data)."
        experiment(experiment_name("debug", key), "none (tests: the debug suite)")(row)


_register_debug_rows()


@experiment("debug_teacher", "none (tests: the debug suite's teacher)")
def debug_teacher() -> TrainConfig:
    """cifar_resnet10 for one debug epoch on the synthetic data: a teacher for tests of distillation and suites."""
    return replace(debug(), variant="cifar_resnet10", epochs=1)
