"""The scales Table 3 runs at and how their experiments are named: one table, read by the experiments, the
suite, the tables and the figures. Torch-free.

An experiment is `<prefix>_<row>` (`mini_hard_cls`, `cifar_none`), except the ImageNet rows, which carry the DeiT
size (`deit_ti_hard`) and whose row 1 is the bare variant (`deit_ti`).
"""

from __future__ import annotations

SCALE_PREFIX = {"mini": "mini", "cifar10": "cifar", "imagenet": "deit", "debug": "debug"}  # debug: seconds, synthetic
TABLE3_EXPERIMENTS = ("none", "soft_cls", "hard_cls", "hard")  # `hard` is rows 4–6: one model, three heads


def experiment_name(scale: str, row: str, size: str = "ti") -> str:
    """The experiment of Table 3's `row` (an entry of TABLE3_EXPERIMENTS) at `scale`."""
    if scale == "imagenet":
        return f"deit_{size}" if row == "none" else f"deit_{size}_{row}"
    return f"{SCALE_PREFIX[scale]}_{row}"


def teacher_experiment(scale: str) -> str | None:
    """The experiment that trains `scale`'s teacher; None at imagenet scale, whose teacher is given (RegNetY-16GF)."""
    return None if scale == "imagenet" else f"{SCALE_PREFIX[scale]}_teacher"
