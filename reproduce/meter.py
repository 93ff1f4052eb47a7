"""One epoch's numbers: the mean losses (and teacher agreement) over every rank's steps, carried across a resume,
and the training speed."""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
import torch.distributed as dist

from bench.processes import Processes


class StepStats(NamedTuple):
    """One step's numbers for the logs, as floats."""
    loss: float
    base: float
    term: float | None
    teacher_agree: float | None


class EpochMeter:
    """Mean losses (and teacher agreement) over an epoch's steps and its training speed (all ranks' images per
    second)."""

    def __init__(self, carried: dict | None = None) -> None:
        """`carried`: `partial()` of the same epoch before a resume (its steps count in the means, not the speed)."""
        carried = carried or {}
        # teacher_agree joins with a teacher
        self.sums = {"loss": 0.0, "loss_base": 0.0, "loss_distill": 0.0, **carried.get("sums", {})}
        self.steps, self.images = carried.get("steps", 0), 0
        self.start = time.perf_counter()

    def partial(self, procs: Processes) -> dict:
        """The sums and steps so far, over every rank (collective under torchrun): rank 0 carries them on resume."""
        sums, steps = self._over_ranks(procs)
        return {"sums": sums, "steps": steps}

    def add(self, images: int, stats: StepStats) -> None:
        self.steps += 1
        self.images += images
        values = {"loss": stats.loss, "loss_base": stats.base, "loss_distill": stats.term or 0.0}
        if stats.teacher_agree is not None:
            values["teacher_agree"] = stats.teacher_agree
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self, procs: Processes) -> dict:
        """The epoch's mean losses over every rank's steps (under torchrun, collective), and all ranks' images/s."""
        elapsed = time.perf_counter() - self.start
        sums, steps = self._over_ranks(procs)
        return {**{k: v / max(steps, 1) for k, v in sums.items()},
                "train_img_per_s": self.images * procs.world / elapsed if elapsed > 0 else None}

    def _over_ranks(self, procs: Processes) -> tuple[dict, int]:
        if procs.world == 1:
            return dict(self.sums), self.steps
        # one fixed layout on every rank: a rank with no step left in a resumed epoch has no teacher_agree yet
        keys = ("loss", "loss_base", "loss_distill", "teacher_agree")
        values = [self.sums.get(k, 0.0) for k in keys] + [float("teacher_agree" in self.sums), float(self.steps)]
        total = torch.tensor(values, dtype=torch.float64, device=procs.device)
        dist.all_reduce(total)
        sums = dict(zip(keys, total[:4].tolist()))
        if not total[4].item():  # no rank has a teacher
            del sums["teacher_agree"]
        return sums, int(total[5].item())
