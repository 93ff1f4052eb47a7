"""`bench check`: compare result records with committed baselines and give each metric a verdict.

Scoring only; measuring is `bench run`'s job. Exact where the quantity is exact (params, GMACs: every machine),
a stated tolerance for accuracy, applied only against a baseline evaluated in the same precision, and
for speed a statistical test on the model/reference CPU-time ratios that `bench run --metrics relspeed` records
(bench/speed.py: time_interleaved), applied only against a baseline made on a machine with the same fingerprint
(bench/machine.py). The speed gate CI runs is the A/B form, bench/ab.py; this one keeps per-machine history.

A baseline folder (results/baselines/) holds `exact.json` (size, and accuracy with the precision it was evaluated
in: machine-independent) and `speed/<fingerprint id>.json`, one file per machine fingerprint. A single baseline
file also works.

Verdicts and exit codes (docs/regression-gate.md): pass, improved, skipped -> 0; regression, changed, missing
-> 1; inconclusive (slower than the floor, but within the noise or measured while the machine was busy) -> 3.

A gate must not decide on what it cannot read: records and baselines are checked field by field
(`check_record`, `load_baseline`), each machine's newest record is judged against that machine's baseline, and two
baselines that say different things about one model (on one machine) are refused, naming both files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import statistics
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.machine import Fingerprint
from bench.record import Record, read_regular_text
from bench.schema import type_problem
from bench.store import write_text_atomic

BASELINE_SCHEMA = 2
SPEED_SETTINGS = ("device", "precision", "batch_size", "img_size", "compile")  # must match to compare speed
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


# ---- what the gate reads, checked ----

def check_record(record: Record) -> None:
    """Raise ValueError naming the first field the gate would read that it cannot use. The declared types (and no
    null where a value is always written) are checked where every record is read (bench/record.py); this adds what
    the gate needs: ratios to take a median of, the settings that decide comparability, a whole fingerprint."""
    m, gated = record.metrics, [k for k in (*EXACT_METRICS, *ACCURACY_METRICS, "relspeed_ratios") if k in record.metrics]
    if gated and not isinstance(record.settings.img_size, int):
        raise ValueError("settings.img_size is missing or null; the gate keys models by variant and resolution")
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
    if min(ratios) <= 0:
        raise ValueError(f"{where} holds {min(ratios)!r}; a ratio of two times is > 0")


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


# ---- writing baselines ----

def make_baseline(records: list[Record], name: str, tolerances: Tolerances, *,
                  exact: bool = True, speed: bool = True) -> dict[str, Any]:
    """A baseline from the newest record per variant and metric family (exact/accuracy and/or speed).

    Raises:
        ValueError: nothing to baseline, relspeed records from several machines, or mostly contended rounds.
    """
    entries: dict[str, dict[str, Any]] = {}
    used: dict[str, Record] = {}
    fingerprints = set()
    for metric in ("params", "gmacs", "top1", "top5") if exact else ():
        for key, r in _latest(records, metric).items():
            entries.setdefault(key, {})[metric] = r.metrics[metric]
            if metric in ("top1", "top5"):  # accuracy is compared only in the precision it was evaluated in
                entries[key]["accuracy_precision"] = r.accuracy_precision
            used[f"{r.env.created}{r.variant}"] = r
    for key, r in (_latest(records, "relspeed_ratios") if speed else {}).items():
        fingerprint = record_fingerprint(r)
        if fingerprint is None:
            raise ValueError(f"the relspeed record of {key} ({r.env.created}) has no machine fingerprint "
                             "(made before schema 2 of baselines); measure again with `bench run --metrics relspeed`")
        if _clean_ratios(r, tolerances)[1]:
            raise ValueError(f"the newest relspeed record of {key} ({r.env.created}) ran on a busy machine; "
                             "a baseline must come from a quiet one: measure again")
        # every quiet run of the same measurement is pooled: a process's own layout moves its median by ~1 %
        pooled = [p for p in records if p.metrics.relspeed_ratios is not None and record_key(p) == key
                  and _same_measurement(p, r) and not _clean_ratios(p, tolerances)[1]]
        fingerprints.add(fingerprint)
        used.update({f"{p.env.created}{p.variant}": p for p in pooled})
        entries.setdefault(key, {})["speed"] = {
            **{k: r.settings[k] for k in SPEED_SETTINGS}, "reference": r.metrics.relspeed_reference,
            "clock": r.metrics.relspeed_clock, "runs": len(pooled),
            "ratios": [x for p in sorted(pooled, key=lambda p: p.created) for x in _clean_ratios(p, tolerances)[0]],
            "record_created": r.env.created}
    if len(fingerprints) > 1:
        raise ValueError(f"relspeed records from {len(fingerprints)} machine fingerprints "
                         f"({', '.join(sorted(f.id() for f in fingerprints))}); a speed baseline is for one machine")
    if not entries:
        raise ValueError("the records hold none of params, gmacs, top1, top5 or relspeed; nothing to baseline")
    return {"schema_version": BASELINE_SCHEMA, "name": name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": next(iter(fingerprints)).to_dict() if fingerprints else None,
            "tolerances": asdict(tolerances), "entries": dict(sorted(entries.items())),
            "sources": [{k: r.env.get(k) for k in ("created", "git_sha", "git_dirty", "command")} | {"variant": r.variant}
                        for _, r in sorted(used.items())]}


def _same_measurement(a: Record, b: Record) -> bool:
    """Same machine fingerprint, settings and reference workload: runs that may be pooled into one baseline."""
    return (record_fingerprint(a) == record_fingerprint(b) and a.metrics.relspeed_reference == b.metrics.relspeed_reference
            and all(a.settings.get(k) == b.settings.get(k) for k in SPEED_SETTINGS))


def write_baselines(records: list[Record], path: Path, tolerances: Tolerances) -> list[str]:
    """Write the baseline(s) and return a line per file. A folder gets `exact.json` (rewritten only when its
    gated values change) and `speed/<fingerprint id>.json`; any other path gets one file with everything."""
    if not is_folder(path):
        baseline = make_baseline(records, path.stem, tolerances)
        write_baseline(baseline, path)
        return [f"{path}: {len(baseline['entries'])} entries"]
    lines = []
    has = {m for r in records for m, value in r.metrics.items() if value is not None}
    if has & {"params", "gmacs", "top1", "top5"}:
        exact = make_baseline(records, "exact", tolerances, speed=False)
        target = path / EXACT_FILE
        try:
            old = load_baseline(target) if target.exists() else None
        except ValueError:  # unreadable or malformed: re-baselining replaces it
            old = None
        if old is not None and old["entries"] == exact["entries"]:
            lines.append(f"{target}: unchanged ({len(exact['entries'])} entries)")
        else:
            write_baseline(exact, target)
            lines.append(f"{target}: {len(exact['entries'])} entries")
    if "relspeed_ratios" in has:
        speed = make_baseline(records, "speed", tolerances, exact=False)
        target = path / SPEED_FOLDER / f"{speed['fingerprint']['id']}.json"
        speed["name"] = target.stem
        write_baseline(speed, target)
        lines.append(f"{target}: speed of {', '.join(speed['entries'])} on this machine")
    if not lines:
        raise ValueError("the records hold none of params, gmacs, top1, top5 or relspeed; nothing to baseline")
    return lines


def write_baseline(baseline: dict[str, Any], path: Path) -> None:
    """Atomically replace `path` (re-baselining is meant to replace the old one, a malformed one included), but only
    a baseline: any other file there is the user's, and is refused rather than overwritten."""
    if path.exists() and not _looks_like_baseline(path):
        raise ValueError(f"--write-baseline would replace {path}, which is not a baseline (a JSON object with "
                         "'entries'); give a baselines folder or a new file")
    write_text_atomic(path, json.dumps(baseline, indent=2) + "\n", replace=True)


# ---- reading baselines ----

def _looks_like_baseline(path: Path) -> bool:
    """A file any version of `make_baseline` wrote, however edited since: a JSON object with its 'entries'."""
    try:
        data = json.loads(read_regular_text(path))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "entries" in data

def is_folder(path: Path) -> bool:
    return path.is_dir() or (not path.exists() and path.suffix != ".json")


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and check one baseline file. Raises ValueError with what is wrong."""
    try:
        data = json.loads(read_regular_text(path))
    except FileNotFoundError:
        raise ValueError(f"baseline {path} does not exist; make one with --write-baseline") from None
    except IsADirectoryError:
        raise ValueError(f"baseline {path} is a folder without {EXACT_FILE} or {SPEED_FOLDER}/") from None
    except OSError as exc:
        raise ValueError(f"cannot read baseline {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"baseline {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"baseline {path} is not a baseline: JSON nested too deeply") from None
    except ValueError as exc:  # a FIFO or device, which reading would wait on
        raise ValueError(f"baseline {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != BASELINE_SCHEMA or "entries" not in data:
        found = data.get("schema_version") if isinstance(data, dict) else None
        hint = (" (schema 1 held one machine's speed without its fingerprint; re-baseline with --write-baseline)"
                if found == 1 else "")
        raise ValueError(f"baseline {path} is not a schema-{BASELINE_SCHEMA} baseline file{hint}")
    try:
        _check_baseline(data)
    except ValueError as exc:  # a hand edit gone wrong: say where, never a traceback read as "regression"
        raise ValueError(f"baseline {path}: {exc}; fix it or re-baseline with --write-baseline") from None
    data["source"] = str(path)
    return data


# What a baseline may hold, with types: what `make_baseline` writes and `compare` reads.
ENTRY_TYPES = {"params": int, "gmacs": float, "top1": float, "top5": float, "accuracy_precision": str | None,
               "speed": dict}
SPEED_TYPES = {"device": str, "precision": str, "batch_size": int, "img_size": int, "compile": bool, "reference": str,
               "ratios": list[float], "clock": str | None, "runs": int, "record_created": str | None}
SPEED_REQUIRED = (*SPEED_SETTINGS, "reference", "ratios")
TOLERANCE_RANGES = {"accuracy_points": (0, math.inf), "speed_floor": (0, 1), "speed_sigmas": (0, math.inf),
                    "min_clean_share": (0, 1)}


def _check_baseline(data: dict[str, Any]) -> None:
    """Raise ValueError naming the first field of a baseline `compare` could not use."""
    tolerances = data.get("tolerances")
    if not isinstance(tolerances, dict):
        raise ValueError(f"tolerances: expected an object with {', '.join(TOLERANCE_RANGES)}, got "
                         f"{'nothing' if tolerances is None else type(tolerances).__name__}")
    _check_fields(tolerances, {k: float for k in TOLERANCE_RANGES}, "tolerances", required=())
    for name, value in tolerances.items():
        low, high = TOLERANCE_RANGES[name]
        if not low <= value <= high:
            raise ValueError(f"tolerances.{name}: {value!r} is outside [{low}, {high}]")
    if not isinstance(data["entries"], dict):
        raise ValueError(f"entries: expected an object of model -> gated values, got {type(data['entries']).__name__}")
    speed = False
    for key, entry in data["entries"].items():
        _check_fields(entry, ENTRY_TYPES, f"entries.{key}", required=())
        if "speed" in entry:
            _check_fields(entry["speed"], SPEED_TYPES, f"entries.{key}.speed", required=SPEED_REQUIRED)
            _check_ratios(entry["speed"]["ratios"], f"entries.{key}.speed.ratios")
            speed = True
    fingerprint = data.get("fingerprint")
    if speed and fingerprint is None:
        raise ValueError("fingerprint: missing; a speed baseline applies only to the machine it names")
    if fingerprint is not None:
        problem = fingerprint_problem(fingerprint)
        if problem:
            raise ValueError(f"fingerprint{problem}")
    if not isinstance(data.get("name", ""), str):
        raise ValueError(f"name: {type_problem(data['name'], str)}")


def _check_fields(data: Any, types: dict[str, Any], where: str, required: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {'null' if data is None else type(data).__name__}")
    unknown = sorted(set(data) - set(types))
    missing = [k for k in required if k not in data]
    if unknown or missing:
        raise ValueError(f"{where}: " + "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)} (known: {', '.join(types)})" if unknown else "") if part))
    for name, value in data.items():
        problem = type_problem(value, types[name])
        if problem:
            raise ValueError(f"{where}.{name}: {problem}")


def load_baselines(path: Path) -> list[dict[str, Any]]:
    """A baseline file, or every baseline of a folder (exact.json and speed/*.json)."""
    if not path.is_dir():
        return [load_baseline(path)]
    files = ([path / EXACT_FILE] if (path / EXACT_FILE).exists() else []) + sorted((path / SPEED_FOLDER).glob("*.json"))
    if not files:
        raise ValueError(f"baseline folder {path} holds neither {EXACT_FILE} nor {SPEED_FOLDER}/*.json; "
                         f"make them with --write-baseline --baseline {path}")
    return [load_baseline(f) for f in files]


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
                    rows.append(_accuracy(key, metric, entry[metric], precision, latest[metric].get(key), tol))
            if "speed" in entry:
                fingerprint = Fingerprint.from_dict(baseline["fingerprint"])
                if _first(gated, (key, "speed", fingerprint.id()), (entry["speed"], tol), source):
                    speed.setdefault(key, []).append(SpeedBaseline(key, entry["speed"] | {"tolerances": tol},
                                                                   fingerprint, source))
    current = _latest_per_machine(records)
    for key in sorted(set(speed) | set(current)):
        if key not in current:
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
              tol: Tolerances) -> Row:
    if current is None:
        return Row(key, metric, base, None, "", "missing", "no current record measured it")
    value = current.metrics[metric]
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
        return Row(key, SPEED_METRIC, None, None, "", "skipped", why)
    entry, tol = match.entry, match.entry["tolerances"]
    base_ratio = statistics.median(entry["ratios"])
    differ = [k for k in SPEED_SETTINGS if current.settings.get(k) != entry[k]]
    if differ or current.metrics.relspeed_reference != entry["reference"]:
        return Row(key, SPEED_METRIC, base_ratio, None, "", "skipped",
                   f"settings differ: {', '.join(differ) or 'reference workload'}")
    ratios, contended = _clean_ratios(current, tol)
    change, threshold, verdict = speed_verdict(entry["ratios"], ratios, tol, contended)
    busy = f"; {len(ratios)} rounds, the machine was busy" if contended else f"; {len(ratios)} quiet rounds"
    return Row(key, SPEED_METRIC, round(base_ratio, 4), round(statistics.median(ratios), 4),
               f"{100 * change:+.1f} %", verdict,
               f"threshold {100 * threshold:.1f} % (the floor {100 * tol.speed_floor:.0f} % or 3 standard errors; "
               f"slower is +){busy}")


def exit_code(rows: list[Row]) -> int:
    if any(r.failed for r in rows):
        return EXIT_REGRESSION
    return EXIT_INCONCLUSIVE if any(r.verdict == "inconclusive" for r in rows) else EXIT_PASS


def unmatched_machines(rows: list[Row]) -> bool:
    return any(r.metric == SPEED_METRIC and r.verdict == "skipped" and r.why.startswith("no speed baseline")
               for r in rows)


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
