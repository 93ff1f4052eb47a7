"""`reproduce train --tensorboard`: the run's log lines as TensorBoard scalars in its output folder, so a run can be
watched live (`tensorboard --logdir runs/`) as timm's `--log-wandb` lets one watch its runs, offline.

Every line `log.jsonl` gets (reproduce/checkpoints.py: `RunFiles.log`) is also written as scalars, on one x axis,
the optimiser steps done, so step and epoch curves line up:

- step lines (every `log_every` steps): `train/loss`, `train/loss_base`, `train/loss_distill`, `train/lr`;
- epoch lines, at the epoch's last step: `epoch/loss` and its parts, `epoch/lr`, `epoch/train_img_per_s`,
  `epoch/teacher_agree`, `epoch/epoch` (epochs done); `val/top1`, `val/top5`, `val/top1_cls`, … of every head and
  `ema_val/…` of the EMA weights, after each evaluation.

Only rank 0 writes (it alone writes the log). A resumed run appends a new event file; its first point is where the
checkpoint left off, given to TensorBoard as `purge_step`, so the steps a crashed run logged after its last
checkpoint, which the resumed run trains again, are dropped by TensorBoard's reader instead of drawn twice.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.errors import UsageError

INSTALL = 'pip install -e ".[tb]"'
STEP_KEYS = ("loss", "loss_base", "loss_distill", "lr")


class TensorBoardLog:
    """A sink of log entries (dicts, as `RunFiles.log` writes them) that writes them as TensorBoard scalars. The
    writer opens on the first entry, whose step is the purge step of a resumed run."""

    def __init__(self, folder: Path, writer_class: type) -> None:
        self.folder, self.writer_class = folder, writer_class
        self.writer = None
        self.steps_done = 0  # of the newest step line: the x of the epoch line that follows it

    def __call__(self, entry: dict[str, Any]) -> None:
        if entry.get("type") == "step":
            self.steps_done = entry["global_step"] + 1
            scalars = {f"train/{k}": entry.get(k) for k in STEP_KEYS}
        elif entry.get("type") == "epoch":
            scalars = {_epoch_tag(k): v for k, v in entry.items() if k not in ("type", "epoch")}
            scalars["epoch/epoch"] = entry["epoch"] + 1
        else:
            return
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.folder), purge_step=self.steps_done or None)
        for tag, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(tag, value, self.steps_done)
        self.writer.flush()  # a few lines per epoch: watched live, and nothing lost to a kill

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _epoch_tag(key: str) -> str:
    for prefix in ("ema_val_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key.removeprefix(prefix)}"
    return f"epoch/{key}"


@contextlib.contextmanager
def tensorboard(folder: Path, *, on: bool, main: bool) -> Iterator[list[Callable[[dict[str, Any]], None]]]:
    """The sinks a run's log lines go to besides `log.jsonl`: a `TensorBoardLog` of `folder` when `on` and this is
    rank 0 (`main`), else none; closed on leaving. Raises UsageError when `on` and tensorboard is not installed (on
    every rank, before any work)."""
    if not on:
        yield []
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UsageError(f"--tensorboard needs the tensorboard package ({exc}): {INSTALL}") from None
    sink = TensorBoardLog(folder, SummaryWriter) if main else None
    try:
        yield [sink] if sink else []
    finally:
        if sink:
            sink.close()
