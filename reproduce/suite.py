"""Suites: a paper table as a list of registered experiments, run idempotently over seeds.

`reproduce suite table3 --scale mini --seeds 3` trains the scale's CNN teacher once (it is reused by every
row and seed), then each Table-3 row per seed. A finished row (result.json present) is skipped, an interrupted
one resumed from its checkpoint, so re-running the command after a crash or Ctrl-C finishes the job.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.record import Record, write_record
from reproduce import experiments
from reproduce.config import ConfigError, override
from reproduce.train import train

SCALES = ("mini", "cifar10", "imagenet")
TABLE3_ROWS = ("none", "soft_cls", "hard_cls", "hard")  # `hard` is rows 4–6 (one model, three heads)


@dataclass(frozen=True)
class Suite:
    name: str  # e.g. "table3-mini": the folder under the suite root and under results/runs
    teacher: str | None  # experiment that trains the teacher first, None when its weights are given
    rows: tuple[str, ...]  # experiments, in order


def table3(scale: str, variants: tuple[str, ...] = ("ti",)) -> Suite:
    """Table 3's four trainings (six rows) at a scale; at imagenet scale one set per DeiT size."""
    if scale not in SCALES:
        raise ConfigError(f"unknown --scale {scale!r}; accepted: {', '.join(SCALES)}")
    if scale == "imagenet":
        rows = tuple(f"deit_{v}{'' if r == 'none' else '_' + r}" for v in variants for r in TABLE3_ROWS)
        return Suite("table3-imagenet", None, rows)
    prefix = "mini" if scale == "mini" else "cifar"
    return Suite(f"table3-{scale}", f"{prefix}_teacher", tuple(f"{prefix}_{r}" for r in TABLE3_ROWS))


SUITES: dict[str, Callable[..., Suite]] = {"table3": table3}


@dataclass(frozen=True)
class RowOutcome:
    experiment: str
    seed: int
    status: str  # "trained", "resumed", "skipped"
    wall_s: float
    record: Path | None


def run_suite(suite: Suite, root: Path, *, seeds: int, sets: list[str], data: str | None, results_dir: Path,
              log=print) -> list[RowOutcome]:
    """Train what is missing: the teacher (once), then every row for seeds 0 … seeds-1."""
    base = root / suite.name
    outcomes = []
    teacher_sets = list(sets)
    if suite.teacher is not None:
        outcome = _run_one(suite.teacher, base / "teacher", sets, data, seed=0, results_dir=results_dir, log=log)
        outcomes.append(outcome)
        teacher_sets.append(f"teacher_checkpoint={base / 'teacher' / 'checkpoint.pth'}")
    for seed in range(seeds):
        for name in suite.rows:
            outcomes.append(_run_one(name, base / f"seed{seed}" / name, teacher_sets, data, seed=seed,
                                     results_dir=results_dir, log=log))
    return outcomes


def _run_one(name: str, output: Path, sets: list[str], data: str | None, *, seed: int, results_dir: Path,
             log) -> RowOutcome:
    cfg = experiments.get(name).build()
    if data:
        cfg = dataclasses.replace(cfg, data=data)
    usable = [s for s in sets if s.partition("=")[0] != "teacher_checkpoint" or cfg.distillation != "none"]
    cfg = override(cfg, [*usable, f"seed={seed}"])
    if (output / "result.json").exists():
        log(f"[{name} seed {seed}] finished already: {output / 'result.json'}")
        return RowOutcome(name, seed, "skipped", 0.0, None)
    status = "resumed" if (output / "checkpoint.pth").exists() else "trained"
    log(f"[{name} seed {seed}] {status} in {output}")
    start = time.perf_counter()
    record: Record | None = train(cfg, output, experiment=name, resume=True, log=log)
    path = write_record(record, results_dir) if record is not None else None
    return RowOutcome(name, seed, status, time.perf_counter() - start, path)
