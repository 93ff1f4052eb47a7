"""One epoch's numbers: the mean losses (and teacher agreement) over every rank's steps, carried across a resume,
and the training speed with how busy other processes kept the machine meanwhile."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import torch
import torch.distributed as dist

from bench.load import MachineLoad, family_cpu_s, is_contended
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
        self.load = _load_now()

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
        """The epoch's mean losses over every rank's steps (under torchrun, collective), all ranks' images/s, and
        the cores other processes kept busy meanwhile (`train_other_cores`, the most any rank's machine saw; None
        where not known) with bench's rule on it (`train_busy`; never on a GPU, as `reproduce step-speed`)."""
        elapsed = time.perf_counter() - self.start
        end = _load_now()
        sums, steps = self._over_ranks(procs)
        others, steal = (None, None) if self.load is None or end is None else end.since(self.load)[:2]
        others, steal = _worst_over_ranks(procs, others, steal)
        busy = None if others is None else (not procs.device.startswith("cuda")
                                            and is_contended(others, steal, 1.0, cuda=False))
        return {**{k: v / max(steps, 1) for k, v in sums.items()},
                "train_img_per_s": self.images * procs.world / elapsed if elapsed > 0 else None,
                "train_other_cores": None if others is None else round(others, 3), "train_busy": busy}

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


def _load_now() -> MachineLoad | None:
    """The machine's counters now, with this run's own CPU time: this process and its data-loading workers, and
    under torchrun every local rank (the agent's family). None where that is not known: off Linux, or ranks that
    some other launcher started (their siblings would read as other processes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        root = os.getpid()
    elif "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun, whose agent is every local rank's parent
        root = os.getppid()
    else:
        return None
    own = family_cpu_s(root)
    return None if own is None else MachineLoad.now(own)


def _worst_over_ranks(procs: Processes, others: float | None, steal: float | None) -> tuple[float | None, float]:
    """The most busy cores and stolen share any rank saw (collective under torchrun); None if a rank could not
    tell."""
    if procs.world == 1:
        return others, steal or 0.0
    unknown = others is None
    values = torch.tensor([float(unknown), others or 0.0, steal or 0.0], dtype=torch.float64, device=procs.device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    unknown, others, steal = values.tolist()
    return (None if unknown else others), steal
