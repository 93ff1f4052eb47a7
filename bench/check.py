"""`bench check`: compare result records with committed baselines and give each metric a verdict.

Scoring only; measuring is `bench run`'s job. Exact where the quantity is exact (params, GMACs: every machine),
a stated tolerance for accuracy, applied only against a baseline evaluated in the same precision, and
for speed a statistical test on the model/reference CPU-time ratios that `bench run --metrics relspeed` records
(bench/speed.py: time_interleaved), applied only against a baseline made on a machine with the same fingerprint
(bench/machine.py). The speed gate CI runs is the A/B form, bench/ab.py; this one keeps per-machine history.

Baselines (results/baselines/: `exact.json` and `speed/<fingerprint id>.json`) are made, written and read back
checked in bench/baselines.py.

Verdicts and exit codes (docs/regression-gate.md): pass, improved, skipped -> 0; regression, changed, missing
-> 1; inconclusive (slower than the floor, but within the noise or measured while the machine was busy) -> 3.

A gate must not decide on what it cannot read: records and baselines are checked field by field
(`check_record`, `baselines.load_baseline`), each machine's newest record is judged against that machine's baseline,
and two baselines that say different things about one model (on one machine) are refused, naming both files.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.jsontypes import type_problem
from bench.machine import Fingerprint
from bench.record import Record
from bench.schema import all_positive

BASELINE_SCHEMA = 2
SPEED_SETTINGS = ("device", "precision", "batch_size", "img_size", "compile")  # must match to compare speed
_SPEED_FLAGS = {"device": lambda v: f"--device {v}", "precision": lambda v: f"--precision {v}",
                "batch_size": lambda v: f"--batch-size {v}", "img_size": lambda v: f"--img-size {v}",
                "compile": lambda v: "--compile" if v else "(no --compile)"}  # how `bench run` is told each setting
SPEED_METRIC = "speed (model/reference)"
EXACT_METRICS, ACCURACY_METRICS = ("params", "gmacs"), ("top1", "top5")
EXACT_FILE, SPEED_FOLDER = "exact.json", "speed"
EXIT_PASS, EXIT_REGRESSION, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


@dataclass(frozen=True)
class Tolerances:
    """What a baseline tolerates; stored in the baseline file, where it can be edited by hand."""

    accuracy_points: float = 0.1  # |Δ top-1/top-5| in percentage points
    # A relative slowdown below the floor always passes (the A/B gate's too): 6 % sits above the run-to-run spread
    # of one machine (tests/fixtures/relspeed_deit_ti_cpu; results/REPORT.md) and below the 10 % that must be caught.
    speed_floor: float = 0.06
    speed_sigmas: float = 3.0  # a slowdown within this many standard errors of the two medians is not decided
    min_clean_share: float = 0.5  # fewer quiet rounds than this: the measurement is "contended"


@dataclass(frozen=True)
class Row:
    key: str
    metric: str
    baseline: Any
    current: Any
    change: str
    verdict: str  # pass | improved | regression | changed | missing | skipped | inconclusive
    why: str = ""
    machine: str = ""  # speed rows: the fingerprint id of the machine the current record ran on
    cause: str = ""  # skipped speed rows: "untimed machine" or "timed machine" (no baseline for it), else ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("regression", "changed", "missing")


@dataclass(frozen=True)
class SpeedBaseline:
    """One speed entry of one baseline file, with the machine it was measured on."""

    key: str
    entry: dict[str, Any]
    fingerprint: Fingerprint
    source: str  # the file it came from


def record_key(record: Record) -> str:
    return f"{record.variant}@{record.settings.img_size}"


def record_fingerprint(record: Record) -> Fingerprint | None:
    data = record.env.fingerprint
    return Fingerprint.from_dict(data) if data else None


def _latest(records: list[Record], metric: str) -> dict[str, Record]:
    """Per key, the newest record that measured `metric`."""
    chosen: dict[str, Record] = {}
    for r in sorted(records, key=lambda r: r.created):
        if r.metrics.get(metric) is not None:
            chosen[record_key(r)] = r
    return chosen


def _latest_per_machine(records: list[Record]) -> dict[str, dict[str, Record]]:
    """Per key, per machine (fingerprint id, "" when unrecorded), the newest relspeed record: a newer record of
    another machine must not stand in for this one's."""
    chosen: dict[str, dict[str, Record]] = {}
    for r in sorted(records, key=lambda r: r.created):
        if r.metrics.get("relspeed_ratios") is not None:  # training records have no such key at all
            fingerprint = record_fingerprint(r)
            chosen.setdefault(record_key(r), {})[fingerprint.id() if fingerprint else ""] = r
    return chosen


def same_instant_conflict(files: list[tuple[Path, Record]]) -> str | None:
    """Two records of one model (of one machine, for speed) made at the same instant that disagree on what the gate
    reads, named; the newest record decides a verdict, and between these none is newest. Before, the file name
    decided: `zz-dup.json` failed the gate and `00-dup.json` passed it (a hostile pass; two concurrent `bench run`s
    wrote records of the same second)."""
    def when_and_where(r: Record, metric: str) -> tuple:
        fingerprint = record_fingerprint(r)
        machine = fingerprint.id() if metric == "relspeed_ratios" and fingerprint else ""
        return record_key(r), machine, metric, r.created

    found = _first_disagreement(files, (*EXACT_METRICS, *ACCURACY_METRICS, "relspeed_ratios"), when_and_where)
    if found is None:
        return None
    (first, _), (path, r) = found[1:]
    return (f"{first} and {path} are records of {record_key(r)} made at the same instant ({r.env.created}) with "
            f"different {found[0]}, so neither is the newest to judge by: move one of them out of --current")


def exact_disagreement(files: list[tuple[Path, Record]]) -> str | None:
    """Two records of one model whose parameters or GMACs differ, named: these are exact on every machine, so two
    values are two versions of the code (a folder reused across runs), and judging the newest alone passed a folder
    that also held a failing record without a word (a hostile pass). A checkpoint's head decides its size: records
    of other head sizes are other models."""
    found = _first_disagreement(files, EXACT_METRICS,
                                lambda r, metric: (record_key(r), metric, r.settings.get("num_classes")))
    if found is None:
        return None
    metric, (first, first_record), (path, r) = found
    return (f"{first} and {path} are records of {record_key(r)} with different {metric} "
            f"({first_record.metrics[metric]} and {r.metrics[metric]}), which is exact on every machine: --current "
            "holds records of two versions of the code; give it a folder of one run's records")


def _first_disagreement(files: list[tuple[Path, Record]], metrics: tuple[str, ...], key: Any
                        ) -> tuple[str, tuple[Path, Record], tuple[Path, Record]] | None:
    """(metric, first file, second file) of the first two records with one `key(record, metric)` and different
    values of that metric, or None."""
    seen: dict[tuple, tuple[Path, Record]] = {}
    for path, r in files:
        for metric in metrics:
            if r.metrics.get(metric) is None:
                continue
            what = key(r, metric)
            if what in seen and seen[what][1].metrics[metric] != r.metrics[metric]:
                return metric, seen[what], (path, r)
            seen.setdefault(what, (path, r))
    return None


# ---- what the gate reads, checked ----

def check_record(record: Record) -> None:
    """Raise ValueError naming the first field the gate would read that it cannot use. The declared types (and no
    null where a value is always written) are checked where every record is read (bench/record.py); this adds what
    the gate needs: ratios to take a median of, the settings that decide comparability, a whole fingerprint."""
    m, gated = record.metrics, [k for k in (*EXACT_METRICS, *ACCURACY_METRICS, "relspeed_ratios") if k in record.metrics]
    if gated and not isinstance(record.settings.img_size, int):
        raise ValueError("settings.img_size is missing or null; the gate keys models by variant and resolution")
    if "relspeed_ratio" in m and "relspeed_ratios" not in m:  # the gate then fell back to an older record and
        raise ValueError("metrics.relspeed_ratio without metrics.relspeed_ratios; the gate judges the rounds, and a "
                         "record without them is not one it can use")  # passed a 20 % slowdown (a hostile pass)
    if "relspeed_ratios" in gated:
        _check_ratios(m.relspeed_ratios, "metrics.relspeed_ratios")
        if m.relspeed_contended is not None and len(m.relspeed_contended) != len(m.relspeed_ratios):
            raise ValueError(f"metrics.relspeed_contended has {len(m.relspeed_contended)} flags for "
                             f"{len(m.relspeed_ratios)} ratios")
        if not isinstance(m.relspeed_reference, str):
            raise ValueError("metrics.relspeed_reference is missing or null; the gate compares only runs against "
                             "one reference workload")
        missing = [k for k in SPEED_SETTINGS if k not in record.settings]
        if missing:
            raise ValueError(f"settings.{', settings.'.join(missing)} missing; the gate compares speed only at the "
                             "same settings")
        if record.env.fingerprint is None:  # was "skipped", and the gate passed a 2x slowdown (a hostile pass)
            raise ValueError("env.fingerprint is missing or null; a speed record is compared only with a baseline of "
                             "the same machine, and this one does not say which machine it ran on")
    if record.env.fingerprint is not None:
        problem = fingerprint_problem(record.env.fingerprint)
        if problem:
            raise ValueError(f"env.fingerprint{problem}")


def _check_ratios(ratios: Any, where: str) -> None:
    problem = type_problem(ratios, list[float])
    if problem:
        raise ValueError(f"{where}: {problem}")
    if not ratios:
        raise ValueError(f"{where} is empty; a speed comparison needs rounds")
    problem = all_positive(ratios)
    if problem:
        raise ValueError(f"{where} {problem}")


def fingerprint_problem(data: Any) -> str | None:
    """'.torch: expected str, got int 2' (to follow the field's name) when `data` is not a whole fingerprint."""
    if not isinstance(data, dict):
        return f": expected an object, got {type(data).__name__}"
    hints = typing.get_type_hints(Fingerprint)
    for f in dataclasses.fields(Fingerprint):
        if f.name not in data:
            if f.default is dataclasses.MISSING:
                return f": missing {f.name}"
            continue
        problem = type_problem(data[f.name], hints[f.name])
        if problem:
            return f".{f.name}: {problem}"
    return None


# ---- comparing ----

def median_rel_se(values: list[float]) -> float:
    """Relative standard error of the median, from the median absolute deviation (robust to outliers).

    σ ≈ 1.4826·MAD for normal data, and the median's standard error is ≈ 1.2533·σ/√n.
    """
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    return 1.2533 * 1.4826 * mad / math.sqrt(len(values)) / med


def speed_verdict(baseline: list[float], current: list[float], tol: Tolerances,
                  contended: bool = False) -> tuple[float, float, str]:
    """(relative change of the median ratio, threshold, verdict). Positive change = slower.

    Within the floor: pass. Beyond the noise threshold: regression, or improved when faster. Slower than the
    floor but within the noise, or slower than the floor on a busy machine: inconclusive, never a regression.
    """
    change = statistics.median(current) / statistics.median(baseline) - 1
    noise = math.hypot(median_rel_se(baseline), median_rel_se(current))
    threshold = max(tol.speed_floor, tol.speed_sigmas * noise)
    if change < -threshold:
        return change, threshold, "improved"
    if change <= tol.speed_floor:
        return change, threshold, "pass"
    return change, threshold, "regression" if change > threshold and not contended else "inconclusive"


def _clean_ratios(record: Record, tol: Tolerances) -> tuple[list[float], bool]:
    """The ratios of the rounds taken on a quiet machine, or all of them (and True) when too few were."""
    ratios = record.metrics.relspeed_ratios
    flags = record.metrics.relspeed_contended or [False] * len(ratios)
    clean = [r for r, busy in zip(ratios, flags) if not busy]
    if len(clean) >= max(5, tol.min_clean_share * len(ratios)):
        return clean, False
    return ratios, True


def compare(baselines: list[dict[str, Any]] | dict[str, Any], records: list[Record]) -> list[Row]:
    """One row per gated metric: its verdict against the newest current record that measured it; for speed, one
    row per machine, the newest record of each machine against that machine's baseline.

    Raises:
        ValueError: two baselines give one model different values (on one machine, for speed), naming both files.
    """
    baselines = [baselines] if isinstance(baselines, dict) else baselines
    latest = {m: _latest(records, m) for m in (*EXACT_METRICS, *ACCURACY_METRICS)}
    rows: list[Row] = []
    gated: dict[tuple, tuple[Any, str]] = {}  # what each (model, metric[, precision or machine]) is held to, and where
    speed: dict[str, list[SpeedBaseline]] = {}
    for baseline in baselines:
        tol = Tolerances(**baseline["tolerances"])
        source = baseline.get("source", baseline["name"])
        for key, entry in baseline["entries"].items():
            for metric in EXACT_METRICS:
                if metric in entry and _first(gated, (key, metric), entry[metric], source):
                    rows.append(_exact(key, metric, entry[metric], latest[metric].get(key)))
            for metric in ACCURACY_METRICS:
                precision = entry.get("accuracy_precision")
                if metric in entry and _first(gated, (key, metric, precision), (entry[metric], tol), source):
                    rows.append(_accuracy(key, metric, entry[metric], precision, latest[metric].get(key), tol,
                                          entry.get("evaluated")))
            if "speed" in entry:
                fingerprint = Fingerprint.from_dict(baseline["fingerprint"])
                if _first(gated, (key, "speed", fingerprint.id()), (entry["speed"], tol), source):
                    speed.setdefault(key, []).append(SpeedBaseline(key, entry["speed"] | {"tolerances": tol},
                                                                   fingerprint, source))
    current = _latest_per_machine(records)
    machines_now = {record_fingerprint(r) for r in records} - {None}
    for key in sorted(set(speed) | set(current)):
        if key not in current and machines_now and not any(c.fingerprint in machines_now for c in speed[key]):
            # no relspeed record, and the records' machines have no speed baseline: nothing here was to be timed
            rows.append(Row(key, SPEED_METRIC, None, None, "", "skipped",
                            f"no speed baseline for the records' machine(s) (baselined on {len(speed[key])} other)",
                            cause="untimed machine"))
        elif key not in current:
            rows.append(_speed(key, speed[key], None))
        for machine, record in sorted(current.get(key, {}).items()):
            rows.append(dataclasses.replace(_speed(key, speed.get(key, []), record), machine=machine))
    return rows


def _first(gated: dict[tuple, tuple[Any, str]], what: tuple, value: Any, source: str) -> bool:
    """True the first time `what` is gated; False for an identical second copy. Two baselines that hold one model
    to different values would make the verdict depend on the order of file names: refused."""
    if what not in gated:
        gated[what] = (value, source)
        return True
    earlier, where = gated[what]
    if earlier == value:
        return False
    machine = f" on machine {what[2]}" if what[1] == "speed" else ""
    raise ValueError(f"conflicting baselines: {where} and {source} give {what[0]} different {what[1]}{machine}; "
                     "keep one (re-baseline with --write-baseline) or move the other out of --baseline")


def _exact(key: str, metric: str, base: Any, current: Record | None) -> Row:
    if current is None:
        return Row(key, metric, base, None, "", "missing", "no current record measured it")
    value = current.metrics[metric]
    same = value == base
    change = "" if same else f"{value - base:+,}" if metric == "params" else f"{value - base:+.6f}"
    return Row(key, metric, base, value, change, "pass" if same else "changed",
               "" if same else "exact gate: a regression, or an intended change to re-baseline")


def _accuracy(key: str, metric: str, base: float, base_precision: str | None, current: Record | None,
              tol: Tolerances, evaluated: dict | None = None) -> Row:
    if current is None:
        return Row(key, metric, base, None, "", "missing", "no current record measured it")
    value = current.metrics[metric]
    differ = [f"{k} {evaluated.get(k)} → {v}" for k, v in current.evaluation.items()
              if evaluated is not None and evaluated.get(k) != v]
    if differ:  # other images or other weights: a difference of top-1 says nothing about a regression
        return Row(key, metric, base, value, "", "skipped",
                   f"evaluated otherwise: {'; '.join(differ)}; accuracy is compared only on the same images and "
                   "weights: evaluate them again, or re-baseline with --write-baseline")
    if current.accuracy_precision != base_precision:  # bf16 moved a top-1 by 2.7 points: no verdict
        then = (f"measure again with --precision {base_precision} or re-baseline" if base_precision else
                "the baseline does not say which: re-baseline with --write-baseline")
        return Row(key, metric, base, value, "", "skipped",
                   f"precisions differ: baseline {base_precision or 'unrecorded'}, current "
                   f"{current.accuracy_precision}; accuracy is compared only within one precision: {then}")
    delta = value - base
    verdict = "pass" if abs(delta) <= tol.accuracy_points else "regression" if delta < 0 else "changed"
    return Row(key, metric, base, value, f"{delta:+.3f} pt", verdict,
               f"tolerance ±{tol.accuracy_points} pt; both {base_precision or 'of unrecorded precision'}")


def _speed(key: str, candidates: list[SpeedBaseline], current: Record | None) -> Row:
    if current is None:
        return Row(key, SPEED_METRIC, None, None, "", "missing",
                   f"no current relspeed record (baselined on {len(candidates)} machine(s))")
    fingerprint = record_fingerprint(current)
    if fingerprint is None:
        return Row(key, SPEED_METRIC, None, None, "", "skipped", "the current record has no machine fingerprint")
    match = next((c for c in candidates if c.fingerprint == fingerprint), None)
    if match is None:
        nearest = min(candidates, key=lambda c: len(fingerprint.differences(c.fingerprint)), default=None)
        why = f"no speed baseline for this machine ({fingerprint.id()})"
        if nearest is not None:
            why += f"; nearest {Path(nearest.source).name} differs in " + "; ".join(nearest.fingerprint.differences(fingerprint))
        return Row(key, SPEED_METRIC, None, None, "", "skipped", why, cause="timed machine")
    entry, tol = match.entry, match.entry["tolerances"]
    base_ratio = statistics.median(entry["ratios"])
    differ = [k for k in SPEED_SETTINGS if current.settings.get(k) != entry[k]]
    # the clock too: a wall-clock ratio against CPU-time ratios read as "+27 % REGRESSION" (a hostile pass)
    clock = entry.get("clock") is not None and current.metrics.relspeed_clock != entry["clock"]
    if differ or clock or current.metrics.relspeed_reference != entry["reference"]:
        # timed on the baseline's machine, but not as the baseline was: no verdict, and not a pass either (a hostile
        # pass: the documented command timed batch 16 against a batch-4 baseline, "skipped", exit 0)
        named = [f"{k} {current.settings.get(k)!r} (baseline {entry[k]!r})" for k in differ]
        named += [f"clock {current.metrics.relspeed_clock!r} (baseline {entry['clock']!r})"] if clock else []
        named += ([f"reference workload {current.metrics.relspeed_reference!r} (baseline {entry['reference']!r})"]
                  if current.metrics.relspeed_reference != entry["reference"] else [])
        again = " ".join(_SPEED_FLAGS[k](entry[k]) for k in differ if k in _SPEED_FLAGS)
        return Row(key, SPEED_METRIC, base_ratio, None, "", "inconclusive",
                   f"timed otherwise than the baseline: {'; '.join(named)}"
                   + (f"; measure again with {again}" if again else "; re-baseline with --write-baseline"))
    ratios, contended = _clean_ratios(current, tol)
    change, threshold, verdict = speed_verdict(entry["ratios"], ratios, tol, contended)
    # the evidence beside the verdict (a hostile pass: the change was shown bare): an approximate 95 % interval from
    # the two medians' standard errors, the same errors the threshold counts
    se = math.hypot(median_rel_se(entry["ratios"]), median_rel_se(ratios))
    busy = f"; {len(ratios)} rounds, the machine was busy" if contended else f"; {len(ratios)} quiet rounds"
    return Row(key, SPEED_METRIC, round(base_ratio, 4), round(statistics.median(ratios), 4),
               f"{100 * change:+.1f} % [{100 * ((1 + change) * (1 - 1.96 * se) - 1):+.1f}, "
               f"{100 * ((1 + change) * (1 + 1.96 * se) - 1):+.1f}]", verdict,
               f"threshold {100 * threshold:.1f} % (the floor {100 * tol.speed_floor:.0f} % or 3 standard errors of "
               f"{100 * se:.1f} %; slower is +; the interval ±1.96 of them){busy}")


def exit_code(rows: list[Row]) -> int:
    if any(r.failed for r in rows):
        return EXIT_REGRESSION
    return EXIT_INCONCLUSIVE if any(r.verdict == "inconclusive" for r in rows) else EXIT_PASS


def unmatched_machines(rows: list[Row], *, timed: bool) -> bool:
    """Whether a speed gate was skipped for want of a baseline for the machine: with a relspeed record to make one
    from (`timed`), or without one (size records only: `bench run --metrics relspeed` has to come first)."""
    return any(r.cause == ("timed machine" if timed else "untimed machine") for r in rows)


def _show(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.10g}" if isinstance(value, float) else str(value)


def format_rows(rows: list[Row]) -> str:
    """A Markdown table; with a machine column when the speed rows come from more than one machine."""
    machines = len({r.machine for r in rows if r.machine}) > 1
    table = pd.DataFrame([{"model": r.key, "metric": r.metric, **({"machine": r.machine} if machines else {}),
                           "baseline": _show(r.baseline), "current": _show(r.current),
                           "change": r.change, "verdict": r.verdict.upper() if r.failed else r.verdict,
                           "note": r.why} for r in rows])
    return table.to_markdown(index=False, disable_numparse=True)
