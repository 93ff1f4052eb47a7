"""Per-image predictions as saved by `bench run --save-predictions` and by training runs: read by `bench disagree`
and the gallery figure, which need torch to load them but none of the model or data code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.errors import CheckpointError, UsageError
from bench.store import write_atomic

FLAT_PREFIX = "ILSVRC2012_val_"  # the released validation files' names (bench/data.py's imagenet-flat layout)


def image_key(name: str) -> str:
    """How an image is known across prediction files: "class/file" in a class tree, whose file names repeat from
    class to class; the bare file name of an ILSVRC2012 val image, unique whatever folder holds it (a hostile pass:
    two copies of one val folder under other names "shared no image" in `bench disagree`)."""
    base = name.rsplit("/", 1)[-1]
    return base if base.startswith(FLAT_PREFIX) else name


def check_destination(path: Path, flag: str = "--save-predictions") -> None:
    """Raise UsageError when `path` cannot take a predictions file, before anything is measured (an
    existing folder would otherwise fail only after the whole evaluation, losing its record)."""
    if Path(path).is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name, e.g. {Path(path) / 'predictions.pt'}")
    if Path(path).exists():  # an earlier record names it: replacing it would change what that record points at
        raise UsageError(f"{flag} {path} exists; predictions files are never replaced (an earlier record may name "
                         "it): give a new file name, or remove that file first")


def how_made(model: str, img_size: int, precision: str, preprocess: Any) -> dict[str, Any]:
    """`Predictions.made`, from the timm model name, the input size, the precision's name and the preprocessing
    (bench/data.py's Preprocess): what `bench run --save-predictions` and training runs both write."""
    return {"model": model, "img_size": img_size, "precision": precision,
            "preprocess": dataclasses.asdict(preprocess) if dataclasses.is_dataclass(preprocess) else preprocess}


@dataclass(frozen=True)
class Predictions:
    """Per-image results in dataset order: enough to score any head, ReaL, or disagreement later."""

    names: list[str]
    targets: Tensor  # [N] int64
    top5: dict[str, Tensor]  # head -> [N, k] int64, best first
    loss_sum: float  # cross-entropy of the official head, summed over images
    # how they were made: `model`, `img_size`, `precision`, `preprocess` (bench/data.py's Preprocess as a dict);
    # None in files written before 2026-12-06. `bench disagree` names what differs between its files.
    made: dict[str, Any] | None = None

    def save(self, path: Path) -> None:
        """Atomically, as a weights_only-loadable torch file; never over an existing file (FileExistsError)."""
        blob = {"names": self.names, "targets": self.targets, "top5": self.top5, "loss_sum": self.loss_sum}
        if self.made is not None:
            blob["made"] = self.made
        write_atomic(path, lambda tmp: torch.save(blob, tmp), replace=False)

    @classmethod
    def load(cls, path: Path) -> Predictions:
        """Raises CheckpointError (a ValueError) naming the file when it is not one of ours."""
        from bench.checkpoint import load_torch_file  # late: the hash and state-dict code is not needed here

        data = load_torch_file(path, "predictions file")
        if not isinstance(data, dict) or not {"names", "targets", "top5", "loss_sum"} <= set(data):
            found = ", ".join(sorted(map(str, data))[:6]) if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{path} is not a predictions file (found {found}; expected names, targets, top5, "
                                  "loss_sum as `bench run --save-predictions FILE` writes them)")
        made = data.get("made")
        return cls(data["names"], data["targets"], data["top5"], data["loss_sum"], made if isinstance(made, dict) else None)
