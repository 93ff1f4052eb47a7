"""Rows of trained seeds, for the tables and figures that set one row against another.

A row is the seeds of one experiment's newest configuration trained in one kind (`train_kind`: the precision it
ran in, the device type, torch's minor version); `arms` lays a table's rows out by kind, and `compare` gives each
row's difference to its control of the same kind with Welch's test and Holm's correction (`bench.stats`), or says
why there is none. Pure functions of records, like the tables.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench import machine, stats
from bench.record import Record, portable_paths
from bench.schema import CONFIG_BEFORE_FIELD


def machine_of(r: Record) -> str:
    """The record's machine as tables and figures name it: the CPU's name alone does not tell machines apart."""
    return machine.label(r.env.fingerprint, r.env.device_name)


def amp_of(r: Record) -> str:
    """The precision a training run used (older records say only what was asked)."""
    return r.settings.amp or r.settings.config["amp"]


def train_kind(r: Record) -> str:
    """What two training rows must share for their difference to be tested: the precision the run used,
    the device type and torch's minor version. The CPU's model, its vector units and the thread count are not part
    of it: with the same precision on the same device type they change only the order in which sums are rounded,
    as the seed already does; the tables name them beside each row and mark a comparison across them."""
    amp = amp_of(r)
    torch_minor = ".".join(str(r.env.torch).split("+")[0].split(".")[:2])
    return f"{'fp32' if amp == 'none' else amp}, {str(r.settings.device).split(':')[0]}, torch {torch_minor}"


def train_runs(records: list[Record], experiment: str, teacher: str | None = None,
               metric: str = "final_val_top1", kind: str | None = None) -> list[Record]:
    """The seeds of one experiment's newest configuration, in the `train_kind` of its newest run or in `kind`.
    Runs whose config differs other than by `seed` and `amp` (a `--set` change, an older recipe) are another
    experiment in all but name and are never averaged in; nor are runs of another kind (`amp=auto` is bf16 on one
    machine and fp32 on the next): those are rows of their own."""
    runs = _current(records, experiment, metric, teacher)
    kind = kind or (train_kind(runs[-1]) if runs else None)
    return [r for r in runs if train_kind(r) == kind]


def runs_of(records: list[Record], experiment: str, kinds: tuple[str, ...] = ("train",)) -> list[Record]:
    """The records of one experiment, oldest first, each run once. Every table and figure finds an experiment's
    records here, so `tests/test_table_names.py` can check each name they ask for against the registry of
    experiments. Copies of one run's record (`--resume` of a finished run with another --results-dir writes one; so
    does a copied folder) share its creation time, run folder and seed: counted twice, a seed weighed double in a
    mean."""
    unique: dict[tuple, Record] = {}
    for r in sorted((r for r in records if r.kind in kinds and r.settings.experiment == experiment),
                    key=lambda r: r.created):
        seed = (r.settings.get("config") or {}).get("seed")
        unique.setdefault((r.kind, r.env.get("created"), r.settings.get("output"), seed), r)
    return list(unique.values())


def _current(records: list[Record], experiment: str, metric: str, teacher: str | None = None) -> list[Record]:
    """An experiment's runs (with `metric`) in its newest configuration, oldest first; a seed trained again counts
    once, by its newest run (a second run of a seed is no second sample: a copy with another `created` made Table 3
    say "6 seeds" and move its p-value from 0.042 to 0.028, a hostile pass; `repeated_seeds` names them)."""
    runs = [r for r in runs_of(records, experiment) if r.metrics.get(metric) is not None
            and (teacher is None or r.settings.config["teacher"] == teacher)]
    newest = {_seed_key(r): r for r in runs if _config_key(r) == _config_key(runs[-1])} if runs else {}
    one_each = {_checkpoint_key(r): r for r in sorted(newest.values(), key=lambda r: r.created)}
    return sorted(one_each.values(), key=lambda r: r.created)


def _checkpoint_key(r: Record) -> object:
    """What one training run wrote: its last checkpoint's sha256. A record copied with another seed names the same
    checkpoint and is the same run: five such copies turned Table 3's "no" into "yes" (p 0.209 to 0.047 after Holm,
    a hostile pass); `copied_runs` names them. Records without the hash are told apart by their own identity."""
    return r.metrics.get("checkpoint_sha256") or id(r)


def copied_runs(found: list[tuple[Path, Record]]) -> list[str]:
    """'a.json and b.json name one checkpoint (sha256 …) under seeds 0 and 10: one run, counted once' for every
    checkpoint more than one training record names."""
    named: dict[str, list[tuple[Path, Record]]] = {}
    for path, r in found:
        if r.kind == "train" and r.metrics.get("checkpoint_sha256"):
            named.setdefault(r.metrics["checkpoint_sha256"], []).append((path, r))
    return [f"{', '.join(str(p) for p, _ in same)} name one checkpoint (sha256 {sha[:12]}…) under seeds "
            f"{', '.join(str(r.settings.config.get('seed')) for _, r in same)}: one run, which a table counts once"
            for sha, same in named.items()
            if len({(r.settings.config.get("seed"), r.created) for _, r in same}) > 1]


def _seed_key(r: Record) -> tuple:
    return r.settings.experiment, _config_key(r), r.settings.config.get("seed"), train_kind(r)


def repeated_seeds(found: list[tuple[Path, Record]]) -> list[str]:
    """'experiment E, seed S: trained 2 times (a.json, b.json); …' for every seed of one
    configuration with more than one run (copies of one run's record are one run)."""
    runs: dict[tuple, list[tuple[Path, Record]]] = {}
    files = {id(r): path for path, r in found}
    records = [r for _, r in found]
    for experiment in sorted({r.settings.experiment for r in records if r.kind == "train"}):
        for r in runs_of(records, experiment):
            runs.setdefault(_seed_key(r), []).append((files[id(r)], r))
    return [f"experiment {key[0]}, seed {key[2]}: trained {len(same)} times in one configuration "
            f"({', '.join(str(p) for p, _ in same)}); a table counts its newest run at most once"
            for key, same in runs.items() if len(same) > 1]


def _config_key(r: Record) -> str:
    """A training run's config less its seed and the precision it asked for (`train_kind` has what it got), its
    paths as `portable_paths` reads them."""
    config = portable_paths({**CONFIG_BEFORE_FIELD, **r.settings.config})  # a field added since: what the older run did
    return json.dumps({k: v for k, v in config.items() if k not in ("seed", "amp")}, sort_keys=True)


@dataclass(frozen=True)
class Arm:
    """One row of a training table: the seeds of one experiment's newest configuration in one `train_kind`."""

    label: str
    experiment: str
    metric: str
    kind: str | None  # None: no runs at all
    runs: tuple[Record, ...]

    @property
    def values(self) -> list[float]:
        return [r.metrics[self.metric] for r in self.runs]


def _kinds(records: list[Record], experiment: str, metric: str) -> list[str]:
    """The kinds an experiment's newest configuration was trained in, the first trained first."""
    return list(dict.fromkeys(train_kind(r) for r in _current(records, experiment, metric)))


def arms(records: list[Record], rows: Iterable[tuple[str, str, str]], every_kind: bool) -> list[Arm]:
    """The arms of (label, experiment, metric) rows: in the table's main kind (the one that covers most rows, then
    the newest), followed, when `every_kind`, by one arm for each other kind a row was trained in."""
    rows = list(rows)
    coverage: dict[str, list] = {}
    for _, experiment, metric in rows:
        for kind in _kinds(records, experiment, metric):
            newest = max(r.created for r in train_runs(records, experiment, metric=metric, kind=kind))
            coverage.setdefault(kind, []).append(newest)
    main = max(coverage, key=lambda k: (len(coverage[k]), max(coverage[k])), default=None)
    found = [Arm(label, experiment, metric, main, tuple(train_runs(records, experiment, metric=metric, kind=main)))
             for label, experiment, metric in rows]
    found = [a if a.runs else dataclasses.replace(a, kind=None) for a in found]
    if every_kind:  # a row trained in other kinds only shows those, not a 'not run' in the main kind beside them
        found = [a for a in found if a.runs or not _kinds(records, a.experiment, a.metric)]
        found += [Arm(label, experiment, metric, kind, tuple(train_runs(records, experiment, metric=metric, kind=kind)))
                  for label, experiment, metric in rows for kind in _kinds(records, experiment, metric)
                  if kind != main]
    return found


def compare(pairs: list[tuple[Arm, Arm | None] | None]) -> list[dict[str, str]]:
    """Δ, p and the verdict for each (arm, its control) pair, Holm-corrected over the table's tested pairs; None
    for a row that is compared with nothing (a control, a teacher). A pair of different kinds, or an arm without
    a control of its own kind, gets the reason and no verdict (`stats.RULE`)."""
    tests = [_test(pair) if pair else None for pair in pairs]
    tested = [t for t in tests if isinstance(t, stats.Difference)]
    adjusted = iter(stats.holm([t.p for t in tested]))
    cells = []
    for pair, test in zip(pairs, tests):
        if pair is None or not pair[0].runs:
            cells.append({"Δ [95 % CI]": "", "p Welch; Holm": "", "finding": ""})
        elif isinstance(test, str):
            cells.append({"Δ [95 % CI]": test, "p Welch; Holm": "", "finding": "not tested"})
        elif test is None:
            diff = statistics.mean(pair[0].values) - statistics.mean(pair[1].values)
            cells.append({"Δ [95 % CI]": f"{diff:+.2f}" + _other_cpu(*pair), "p Welch; Holm": "",
                          "finding": "one seed: no test"})
        else:
            p_holm = next(adjusted)
            cells.append({"Δ [95 % CI]": f"{test.diff:+.2f} [{test.low:+.2f}, {test.high:+.2f}]" + _other_cpu(*pair),
                          "p Welch; Holm": f"{_p(test.p)}; {_p(p_holm)}", "finding": stats.finding(p_holm)})
    return cells


def _test(pair: tuple[Arm, Arm | None]) -> stats.Difference | str | None:
    arm, control = pair
    if control is None or not control.runs:
        return f"no control trained in {arm.kind}"
    if arm.kind != control.kind:
        return f"not compared: {arm.kind} against {control.kind}"
    return stats.welch(arm.values, control.values)


def _other_cpu(arm: Arm, control: Arm) -> str:
    """‡ where the control ran on another CPU of the same kind (`train_kind`)."""
    return " ‡" if trained_on(list(arm.runs)) != trained_on(list(control.runs)) else ""


OTHER_CPU_NOTE = ("‡ the control ran on another machine of the same kind: the same precision and torch, another "
                  "machine or thread count as each row's 'trained on' names them.")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def control_of(found: list[Arm], control: str) -> dict[str | None, Arm]:
    return {a.kind: a for a in found if a.experiment == control and a.runs}


def trained_on(runs: list[Record]) -> str:
    """The machines and threads of a row's runs."""
    def threads(n: int | None) -> str:
        return "threads not recorded" if not n else f"{n} thread{'s' if n > 1 else ''}"
    return "; ".join(sorted({f"{machine_of(r)}, {threads(r.env.num_threads)}" for r in runs}))


def stat_notes(cells: list[dict[str, str]]) -> tuple[str, ...]:
    return (stats.RULE,) + ((OTHER_CPU_NOTE,) if any("‡" in c["Δ [95 % CI]"] for c in cells) else ())
