"""The one registry: DeiT variants, CNN teachers and a tiny debug model, with the paper's numbers as data.

Keys are the short aliases people type (`deit_b`); the full timm model name of a registered entry is
accepted too. The paper's numbers come from bench/paper.py (one place), each tagged with its table. The DeiT
entries also carry the exact size of their reference implementation, timm's model of that name (equal to the
official weights' tensors): numbers the paper does not print (it rounds params to millions and has no FLOPs).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.paper import MODELS, PaperRef

if TYPE_CHECKING:
    from torch import nn


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
    # Exact size of timm's `model` at `img_size` (ImageNet head, batch 1, attention matmuls counted), NOT the paper's:
    # the check that what we build is the reference implementation (../shared/reference/paper.md, "Not in the paper")
    reference_params: int | None = None
    reference_gmacs: float | None = None
    family: str = "vit"  # "vit": position embeddings built for the resolution, a patch grid; "cnn": any input size
    patch_size: int | None = 16  # ViTs only: the input size must be a multiple of it

    def build(self, **overrides: Any) -> nn.Module:
        """Build the model with random weights (weights are loaded elsewhere)."""
        kwargs = {**self.model_kwargs, **overrides}
        import timm  # here, not at the top: `bench tables` and `bench ls` read the registry without torch/timm

        from bench import models as _models  # noqa: F401  (registers cifar_resnet10 with timm)

        return timm.create_model(self.model, pretrained=False, **kwargs)


def _deit(name, model, img_size, distilled, params, gmacs) -> Variant:
    return Variant(name, model, img_size, distilled, "student", paper=MODELS[name], reference_params=params,
                   reference_gmacs=gmacs)


def _teacher(name, model, img_size=224, **kwargs) -> Variant:
    num_classes = kwargs.get("num_classes", 1000)
    return Variant(name, model, img_size, False, "teacher", num_classes, dict(kwargs), MODELS.get(name),
                   family="cnn", patch_size=None)


def _reference(name, model, img_size=224, family="cnn") -> Variant:
    return Variant(name, model, img_size, False, "reference", paper=MODELS[name], family=family,
                   patch_size=16 if family == "vit" else None)


_DEBUG_KWARGS = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, num_classes=10)
_CIFAR_VIT_KWARGS = dict(img_size=32, patch_size=4, embed_dim=96, depth=6, num_heads=3, num_classes=10)

_ENTRIES = [
    # Table 1/5 rows (Table 5 carries params, V100 im/s, ImageNet / ReaL / V2 top-1), with timm's exact params, GMACs.
    _deit("deit_ti", "deit_tiny_patch16_224", 224, False, 5_717_416, 1.258),
    _deit("deit_s", "deit_small_patch16_224", 224, False, 22_050_664, 4.608),
    _deit("deit_b", "deit_base_patch16_224", 224, False, 86_567_656, 17.583),
    _deit("deit_b_384", "deit_base_patch16_384", 384, False, 86_859_496, 55.540),
    _deit("deit_ti_dist", "deit_tiny_distilled_patch16_224", 224, True, 5_910_800, 1.266),
    _deit("deit_s_dist", "deit_small_distilled_patch16_224", 224, True, 22_436_432, 4.634),
    _deit("deit_b_dist", "deit_base_distilled_patch16_224", 224, True, 87_338_192, 17.676),
    _deit("deit_b_dist_384", "deit_base_distilled_patch16_384", 384, True, 87_630_032, 55.647),
    # Table 5's other networks, for size and speed beside the paper's (role "reference"): timm's implementations;
    # EfficientNets are the TensorFlow ports (SAME padding), at the resolution each was published with.
    _reference("resnet18", "resnet18"), _reference("resnet50", "resnet50"),
    _reference("resnet101", "resnet101"), _reference("resnet152", "resnet152"),
    _reference("efficientnet_b0", "tf_efficientnet_b0", 224), _reference("efficientnet_b3", "tf_efficientnet_b3", 300),
    _reference("efficientnet_b4", "tf_efficientnet_b4", 380), _reference("efficientnet_b7", "tf_efficientnet_b7", 600),
    _reference("vit_b_384", "vit_base_patch16_384", 384, family="vit"),
    _reference("vit_l_384", "vit_large_patch16_384", 384, family="vit"),
    # Teachers: the RegNetY sizes of Table 2 (their numbers from Table 5), and a CIFAR-scale CNN.
    _teacher("regnety_040", "regnety_040"),
    _teacher("regnety_080", "regnety_080"),
    _teacher("regnety_120", "regnety_120"),
    _teacher("regnety_160", "regnety_160"),
    _teacher("cifar_resnet10", "cifar_resnet10", img_size=32, num_classes=10),
    # CIFAR-scale students (Table 3 at the mini and cifar10 scales): DeiT-shaped, 6 blocks of width 96, 4 px patches.
    Variant("cifar_vit", "deit_tiny_patch16_224", 32, False, "student", 10, dict(_CIFAR_VIT_KWARGS), patch_size=4),
    Variant("cifar_vit_dist", "deit_tiny_distilled_patch16_224", 32, True, "student", 10, dict(_CIFAR_VIT_KWARGS),
            patch_size=4),
    # A transformer teacher at mini scale (the attention-distillation ablation): the CIFAR student 1.5x deeper.
    Variant("cifar_vit_deep", "deit_tiny_patch16_224", 32, False, "teacher", 10, dict(_CIFAR_VIT_KWARGS, depth=9),
            patch_size=4),
    # Tiny models every test and CI uses: 2 blocks, width 64, 4 px patches, 32 px, 10 classes.
    Variant("debug", "deit_tiny_patch16_224", 32, False, "debug", 10, dict(_DEBUG_KWARGS), patch_size=4),
    Variant("debug_dist", "deit_tiny_distilled_patch16_224", 32, True, "debug", 10, dict(_DEBUG_KWARGS), patch_size=4),
]


def _register(entries: list[Variant]) -> dict[str, Variant]:
    """The registry dict; a name registered twice is an error here, not a silent overwrite."""
    registry: dict[str, Variant] = {}
    for v in entries:
        if v.name in registry:
            raise ValueError(f"variant {v.name!r} is registered twice")
        if (v.family == "vit") != (v.patch_size is not None):
            raise ValueError(f"variant {v.name!r}: a ViT needs a patch size, a CNN has none")
        registry[v.name] = v
    return registry


VARIANTS: dict[str, Variant] = _register(_ENTRIES)


def resolve(name: str) -> Variant:
    """Look a variant up by alias or by the timm name of a registered (non-debug) entry.

    Raises:
        KeyError: with a message naming the accepted names and the closest match.
    """
    if name in VARIANTS:
        return VARIANTS[name]
    named = [v for v in VARIANTS.values() if v.model == name and v.role != "debug"]
    # a timm name means timm's own architecture: never an entry that changes it (cifar_vit_deep is a 9-block
    # deit_tiny_patch16_224 at 32 px; the last such entry used to win, so DeiT-Ti's timm name built it)
    plain = [v for v in named if not v.model_kwargs] or named
    if len(plain) == 1:
        return plain[0]
    if plain:
        raise KeyError(f"{name!r} is the timm model of several variants ({', '.join(v.name for v in plain)}); "
                       "give one of these names")
    accepted = sorted(VARIANTS) + sorted({v.model for v in VARIANTS.values() if v.role != "debug"})
    # matched as typed loosely: `DeiT-B` (the paper's label, bench ls's "paper" column) or `DEIT_B` got no
    # suggestion, and `DeiT_B` got deit_s (a hostile pass)
    folded = {_folded(a): a for a in accepted} | {_folded(v.paper.label): v.name for v in VARIANTS.values() if v.paper}
    close = difflib.get_close_matches(_folded(str(name)), folded, n=1, cutoff=0.5)
    hint = f" Did you mean {folded[close[0]]!r}?" if close else ""
    raise KeyError(f"unknown variant {name!r}.{hint} Accepted: {', '.join(sorted(VARIANTS))} "
                   f"(or their timm names, e.g. deit_base_patch16_224); `bench ls` lists them.")


def _folded(name: str) -> str:
    """A name as compared for suggestions: case, dashes and the paper's signs aside (DeiT-B⚗↑384 is deit_b_dist_384)."""
    return name.casefold().replace("-", "_").replace("⚗", "_dist").replace("↑", "_")


def at_resolution(variant: Variant, img_size: int) -> Variant | None:
    """The registered entry with the paper's numbers for `variant`'s architecture at `img_size` (deit_b at 384 is
    deit_b_384), or None where the paper has no such row: a comparison with the row of another resolution would be
    no comparison (deit_b at 384 px showed "+215.87 % GMACs" against the 224 px row)."""
    if img_size == variant.img_size:
        return variant if variant.paper else None
    stem = variant.model.rsplit("_", 1)[0]  # deit_base_patch16_224 -> deit_base_patch16
    return next((v for v in VARIANTS.values() if v.paper and v.img_size == img_size and v.distilled == variant.distilled
                 and v.model.rsplit("_", 1)[0] == stem and v.role == variant.role), None)
