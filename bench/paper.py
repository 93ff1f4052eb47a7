"""The paper's numbers, defined once (Touvron et al., ICML 2021; arXiv 2012.12877 v2, as transcribed in
../shared/reference/paper.md), each cited by table and row. The registry, the experiments and the tables read
them from here. Plain data: no torch, no timm.

Only what the paper prints is here. It gives parameters rounded to millions and no FLOPs; the exact counts of
timm's implementation (86,567,656 parameters and 17.583 GMACs for DeiT-B) are not the paper's and live in the
registry as `Variant.reference_params` / `reference_gmacs` (a "paper" column held them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRef:
    """What the paper reports for one model. `None` where the paper has no number."""

    table: str  # where the row comes from, e.g. "Table 5"
    label: str  # the paper's own name for the row, e.g. "DeiT-B⚗"
    params_m: float | None  # the paper's "params" column: whole millions (params_rounding says how it rounds)
    img_per_s: float | None = None  # one 16 GB V100, fp32, largest batch, mean of 30 runs
    top1: float | None = None
    real: float | None = None
    v2: float | None = None


def params_rounding(count: int, params_m: float) -> str | None:
    """How the paper's `params_m` (whole millions) follows from an exact parameter count: "truncated", "rounded", or
    None when neither gives it (then the two disagree; finer agreement cannot be read from the paper).

    The paper does not say how it rounds, and does both: DeiT-B's 86,567,656 is printed 86M (truncated), DeiT-Ti⚗'s
    5,910,800 is printed 6M (rounded).
    """
    millions = count / 1e6
    if params_m == math.floor(millions):
        return "truncated"
    return "rounded" if params_m == math.floor(millions + 0.5) else None


# Table 1/5 (params, V100 im/s, ImageNet / ReaL / V2 top-1) by registry alias; RegNetY-12GF appears in Table 2 only.
MODELS: dict[str, PaperRef] = {
    "deit_ti": PaperRef("Table 5", "DeiT-Ti", 5, 2536.5, 72.2, 80.1, 60.4),
    "deit_s": PaperRef("Table 5", "DeiT-S", 22, 940.4, 79.8, 85.7, 68.5),
    "deit_b": PaperRef("Table 5", "DeiT-B", 86, 292.3, 81.8, 86.7, 71.5),
    "deit_b_384": PaperRef("Table 5", "DeiT-B↑384", 86, 85.9, 83.1, 87.7, 72.4),
    "deit_ti_dist": PaperRef("Table 5", "DeiT-Ti⚗", 6, 2529.5, 74.5, 82.1, 62.9),
    "deit_s_dist": PaperRef("Table 5", "DeiT-S⚗", 22, 936.2, 81.2, 86.8, 70.0),
    "deit_b_dist": PaperRef("Table 5", "DeiT-B⚗", 87, 290.9, 83.4, 88.3, 73.2),
    "deit_b_dist_384": PaperRef("Table 5", "DeiT-B⚗↑384", 87, 85.8, 84.5, 89.0, 74.8),
    "regnety_040": PaperRef("Table 5", "RegNetY-4GF", 21, 1156.7, 80.0, 86.4, 69.4),
    "regnety_080": PaperRef("Table 5", "RegNetY-8GF", 39, 591.6, 81.7, 87.4, 70.8),
    "regnety_120": PaperRef("Table 2", "RegNetY-12GF", None, top1=82.4),
    "regnety_160": PaperRef("Table 5", "RegNetY-16GF", 84, 334.7, 82.9, 88.1, 72.4),
    # Table 5's comparison rows (the paper copies their accuracies from their own papers; throughput is its V100)
    "resnet18": PaperRef("Table 5", "ResNet-18", 12, 4458.4, 69.8, 77.3, 57.1),
    "resnet50": PaperRef("Table 5", "ResNet-50", 25, 1226.1, 76.2, 82.5, 63.3),
    "resnet101": PaperRef("Table 5", "ResNet-101", 45, 753.6, 77.4, 83.7, 65.7),
    "resnet152": PaperRef("Table 5", "ResNet-152", 60, 526.4, 78.3, 84.1, 67.0),
    "efficientnet_b0": PaperRef("Table 5", "EfficientNet-B0", 5, 2694.3, 77.1, 83.5, 64.3),
    "efficientnet_b3": PaperRef("Table 5", "EfficientNet-B3", 12, 732.1, 81.6, 86.8, 70.6),
    "efficientnet_b4": PaperRef("Table 5", "EfficientNet-B4", 19, 349.4, 82.9, 88.0, 72.3),
    "efficientnet_b7": PaperRef("Table 5", "EfficientNet-B7", 66, 55.1, 84.3),
    "vit_b_384": PaperRef("Table 5", "ViT-B/16", 86, 85.9, 77.9, 83.6),
    "vit_l_384": PaperRef("Table 5", "ViT-L/16", 307, 27.3, 76.5, 82.2),
}

# Table 5's rows that are not DeiT, in the paper's order (the DeiT rows: bench/tables.py DEIT).
TABLE5_COMPARISON = ("resnet18", "resnet50", "resnet101", "resnet152", "regnety_040", "regnety_080", "regnety_160",
                     "efficientnet_b0", "efficientnet_b3", "efficientnet_b4", "efficientnet_b7", "vit_b_384",
                     "vit_l_384")

# Figure 1: the families the paper draws as lines, each in order of throughput.
FIGURE1_FAMILIES: dict[str, tuple[str, ...]] = {
    "EfficientNet": ("efficientnet_b0", "efficientnet_b3", "efficientnet_b4", "efficientnet_b7"),
    "ViT": ("vit_b_384", "vit_l_384"),
    "DeiT": ("deit_ti", "deit_s", "deit_b", "deit_b_384"),
    "DeiT⚗": ("deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384"),
}

# Table 1: the DeiT variants' architecture (all: patch 16, 12 layers, MLP ratio 4, head dim 64, trained at 224).
TABLE1: dict[str, tuple[int, int, int]] = {"deit_ti": (192, 3, 12), "deit_s": (384, 6, 12), "deit_b": (768, 12, 12)}

# Table 2: the DeiT-B⚗ student's top-1 with each teacher, at 224 and fine-tuned at 384.
TABLE2_STUDENTS: dict[str, tuple[float, float]] = {
    "regnety_040": (82.7, 83.6), "regnety_080": (82.7, 83.8), "regnety_120": (83.1, 84.1), "regnety_160": (83.1, 84.2)}

# Table 3: top-1 of rows 1–6 (no distillation; usual distillation; hard distillation; DeiT⚗ class, distillation and
# class+distillation embeddings) per size. Row 2 repeats row 1's number for each size, as the paper prints it.
TABLE3: dict[str, tuple[float, float, float, float, float, float]] = {
    "Ti": (72.2, 72.2, 74.3, 73.9, 74.6, 74.5),
    "S": (79.8, 79.8, 80.9, 80.9, 81.1, 81.2),
    "B": (81.8, 81.8, 83.0, 83.0, 83.1, 83.4),
}

# Table 4: the fraction of ImageNet val images two models classify differently (symmetric, RegNetY teacher).
TABLE4_MODELS = ("ground truth", "convnet", "DeiT", "DeiT⚗ class", "DeiT⚗ distil", "DeiT⚗ class+distil")
TABLE4 = ((0.000, 0.171, 0.182, 0.170, 0.169, 0.166), (0.171, 0.000, 0.133, 0.112, 0.100, 0.102),
          (0.182, 0.133, 0.000, 0.109, 0.110, 0.107), (0.170, 0.112, 0.109, 0.000, 0.050, 0.033),
          (0.169, 0.100, 0.110, 0.050, 0.000, 0.019), (0.166, 0.102, 0.107, 0.033, 0.019, 0.000))

# Tables 6/7: transfer of an ImageNet model, fine-tuned on each dataset, top-1 (keys: registry alias, dataset).
TRANSFER_DATASETS = ("cifar10", "cifar100", "flowers102", "stanford_cars", "inat2018", "inat2019")
TABLE7: dict[str, tuple[float, float, float, float, float, float]] = {  # in TRANSFER_DATASETS order
    "deit_b": (99.1, 90.8, 98.4, 92.1, 73.2, 77.7),
    "deit_b_384": (99.1, 90.8, 98.5, 93.3, 79.5, 81.4),
    "deit_b_dist": (99.1, 91.3, 98.8, 92.9, 73.7, 78.4),
    "deit_b_dist_384": (99.2, 91.4, 98.9, 93.9, 80.1, 83.0),
}
# CIFAR-10 from scratch (no ImageNet), images upscaled to 224, "long schedules" (the paper gives no epoch count).
TABLE7_SCRATCH: dict[str, float] = {"regnety_160": 98.0, "deit_b": 97.5, "deit_b_dist": 98.5}

# Table 8: DeiT-B with one change to the recipe, top-1 at 224; keyed by our experiment suffix (deit_b_<key>).
TABLE8: dict[str, tuple[str, float]] = {
    "default": ("default", 81.8),
    "sgd": ("pre-train with SGD", 74.5),
    "no_randaug": ("no RandAugment", 79.6),
    "autoaug": ("AutoAugment instead of RandAugment", 81.2),
    "no_mixup": ("no Mixup", 78.7),
    "no_cutmix": ("no CutMix", 80.0),
    "no_mixup_cutmix": ("no Mixup and no CutMix", 75.8),
    "no_erasing": ("no random erasing", 4.3),
    "no_drop_path": ("no stochastic depth", 3.4),
    "no_repeated_aug": ("no repeated augmentation", 76.5),
    "dropout": ("+ dropout", 81.3),
    "ema": ("+ EMA", 81.9),
}

# Table 9: DeiT-B's hyper-parameters as the paper prints them, by TrainConfig field.
TABLE9: dict[str, tuple[str, str]] = {
    "epochs": ("epochs", "300"), "batch_size": ("batch size (global)", "1024"), "opt": ("optimizer", "AdamW"),
    "lr": ("learning rate (× batch/512)", "0.0005"), "sched": ("schedule", "cosine"),
    "weight_decay": ("weight decay", "0.05"), "warmup_epochs": ("warm-up epochs", "5"),
    "smoothing": ("label smoothing", "0.1"), "dropout": ("dropout", "none"), "drop_path": ("stochastic depth", "0.1"),
    "repeated_aug": ("repeated augmentation", "yes"), "clip_grad": ("gradient clipping", "no"),
    "auto_augment": ("RandAugment", "9/0.5"), "mixup": ("Mixup α", "0.8"), "cutmix": ("CutMix α", "1.0"),
    "reprob": ("random erasing", "0.25"),
}

# Table 10: DeiT-B trained at 224 and fine-tuned to each test resolution: V100 im/s and top-1.
TABLE10: dict[int, tuple[float, float]] = {160: (609.31, 79.9), 224: (291.05, 81.8), 320: (134.13, 82.7),
                                           384: (85.87, 83.1)}
