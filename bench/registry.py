"""The one registry: DeiT variants, CNN teachers and a tiny debug model, with the paper's numbers as data.

Keys are the short aliases people type (`deit_b`); the full timm model name of a registered entry is
accepted too. Paper numbers are those of ../shared/reference/paper.md (arXiv 2012.12877 v2), each
tagged with the table it comes from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PaperRef:
    """What the paper reports for one model. `None` where the paper has no number."""

    table: str  # where the row comes from, e.g. "Table 5"
    label: str  # the paper's own name for the row, e.g. "DeiT-B⚗"
    params_m: float | None  # the paper's rounded "params" column, millions
    img_per_s: float | None = None  # one 16 GB V100, fp32, largest batch, mean of 30 runs
    top1: float | None = None
    real: float | None = None
    v2: float | None = None
    params: int | None = None  # exact count of the timm implementation ("reference" in paper.md)
    gmacs: float | None = None  # batch 1, head included, attention matmuls included


@dataclass(frozen=True)
class Variant:
    """One registered model: how to build it and what the paper says about it."""

    name: str
    model: str  # timm model name
    img_size: int
    distilled: bool
    role: str  # "student", "teacher" or "debug"
    num_classes: int = 1000
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides passed to timm.create_model
    paper: PaperRef | None = None

    def build(self, **overrides: Any) -> nn.Module:
        """Build the model with random weights (weights are loaded elsewhere)."""
        kwargs = {**self.model_kwargs, **overrides}
        import timm  # here, not at the top: `bench tables` and `bench ls` read the registry without torch/timm

        from bench import models as _models  # noqa: F401  (registers cifar_resnet10 with timm)

        return timm.create_model(self.model, pretrained=False, **kwargs)


def _deit(name, model, img_size, distilled, paper) -> Variant:
    return Variant(name, model, img_size, distilled, "student", paper=paper)


def _teacher(name, model, img_size=224, paper=None, **kwargs) -> Variant:
    num_classes = kwargs.get("num_classes", 1000)
    return Variant(name, model, img_size, False, "teacher", num_classes, dict(kwargs), paper)


_DEBUG_KWARGS = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, num_classes=10)
_CIFAR_VIT_KWARGS = dict(img_size=32, patch_size=4, embed_dim=96, depth=6, num_heads=3, num_classes=10)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        # Table 1/5 rows (Table 5 carries params, V100 im/s, ImageNet / ReaL / V2 top-1).
        _deit("deit_ti", "deit_tiny_patch16_224", 224, False,
              PaperRef("Table 5", "DeiT-Ti", 5, 2536.5, 72.2, 80.1, 60.4, 5_717_416, 1.258)),
        _deit("deit_s", "deit_small_patch16_224", 224, False,
              PaperRef("Table 5", "DeiT-S", 22, 940.4, 79.8, 85.7, 68.5, 22_050_664, 4.608)),
        _deit("deit_b", "deit_base_patch16_224", 224, False,
              PaperRef("Table 5", "DeiT-B", 86, 292.3, 81.8, 86.7, 71.5, 86_567_656, 17.583)),
        _deit("deit_b_384", "deit_base_patch16_384", 384, False,
              PaperRef("Table 5", "DeiT-B↑384", 86, 85.9, 83.1, 87.7, 72.4, 86_859_496, 55.540)),
        _deit("deit_ti_dist", "deit_tiny_distilled_patch16_224", 224, True,
              PaperRef("Table 5", "DeiT-Ti⚗", 6, 2529.5, 74.5, 82.1, 62.9, 5_910_800, 1.266)),
        _deit("deit_s_dist", "deit_small_distilled_patch16_224", 224, True,
              PaperRef("Table 5", "DeiT-S⚗", 22, 936.2, 81.2, 86.8, 70.0, 22_436_432, 4.634)),
        _deit("deit_b_dist", "deit_base_distilled_patch16_224", 224, True,
              PaperRef("Table 5", "DeiT-B⚗", 87, 290.9, 83.4, 88.3, 73.2, 87_338_192, 17.676)),
        _deit("deit_b_dist_384", "deit_base_distilled_patch16_384", 384, True,
              PaperRef("Table 5", "DeiT-B⚗↑384", 87, 85.8, 84.5, 89.0, 74.8, 87_630_032, 55.647)),
        # Teachers: the RegNetY sizes of Table 2 (their numbers from Table 5), and a CIFAR-scale CNN.
        _teacher("regnety_040", "regnety_040",
                 paper=PaperRef("Table 5", "RegNetY-4GF", 21, 1156.7, 80.0, 86.4, 69.4)),
        _teacher("regnety_080", "regnety_080",
                 paper=PaperRef("Table 5", "RegNetY-8GF", 39, 591.6, 81.7, 87.4, 70.8)),
        _teacher("regnety_120", "regnety_120", paper=PaperRef("Table 2", "RegNetY-12GF", None, top1=82.4)),
        _teacher("regnety_160", "regnety_160",
                 paper=PaperRef("Table 5", "RegNetY-16GF", 84, 334.7, 82.9, 88.1, 72.4)),
        _teacher("cifar_resnet10", "cifar_resnet10", img_size=32, num_classes=10),
        # CIFAR-scale students (issue #5's mini and cifar10 Table 3): DeiT-shaped, 6 blocks of width 96, 4 px patches.
        Variant("cifar_vit", "deit_tiny_patch16_224", 32, False, "student", 10, dict(_CIFAR_VIT_KWARGS)),
        Variant("cifar_vit_dist", "deit_tiny_distilled_patch16_224", 32, True, "student", 10, dict(_CIFAR_VIT_KWARGS)),
        # Tiny models every test and CI uses: 2 blocks, width 64, 4 px patches, 32 px, 10 classes.
        Variant("debug", "deit_tiny_patch16_224", 32, False, "debug", 10, dict(_DEBUG_KWARGS)),
        Variant("debug_dist", "deit_tiny_distilled_patch16_224", 32, True, "debug", 10, dict(_DEBUG_KWARGS)),
    ]
}


def resolve(name: str) -> Variant:
    """Look a variant up by alias or by the timm name of a registered (non-debug) entry.

    Raises:
        KeyError: with a message naming the accepted names and the closest match.
    """
    if name in VARIANTS:
        return VARIANTS[name]
    by_model = {v.model: v for v in VARIANTS.values() if v.role != "debug"}
    if name in by_model:
        return by_model[name]
    accepted = sorted(VARIANTS) + sorted(by_model)
    close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise KeyError(f"unknown variant {name!r}.{hint} Accepted: {', '.join(sorted(VARIANTS))} "
                   f"(or their timm names, e.g. deit_base_patch16_224); `bench ls` lists them.")
