"""Baselines for `bench check`: making them from records, writing them atomically, and reading them back checked
field by field, so the gate never decides on a file it cannot read (bench/check.py compares; docs/regression-gate.md).

A baseline folder (results/baselines/) holds `exact.json` (size, and accuracy with the precision it was evaluated in:
machine-independent) and `speed/<fingerprint id>.json`, one file per machine fingerprint. A single file also works.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.check import (
    BASELINE_SCHEMA,
    EXACT_FILE,
    SPEED_FOLDER,
    SPEED_SETTINGS,
    Tolerances,
    _check_ratios,
    _clean_ratios,
    _latest,
    fingerprint_problem,
    record_fingerprint,
    record_key,
)
from bench.jsontypes import type_problem
from bench.record import Record, other_file, read_regular_text
from bench.store import write_text_atomic

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
            if metric in ("top1", "top5"):  # accuracy is compared only in its precision, on its images and weights
                entries[key]["accuracy_precision"] = r.accuracy_precision
                entries[key]["evaluated"] = r.evaluation
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
    """Same machine fingerprint, settings, reference workload and clock: runs that may be pooled into one baseline."""
    return (record_fingerprint(a) == record_fingerprint(b) and a.metrics.relspeed_reference == b.metrics.relspeed_reference
            and a.metrics.relspeed_clock == b.metrics.relspeed_clock
            and all(a.settings.get(k) == b.settings.get(k) for k in SPEED_SETTINGS))


def write_baselines(records: list[Record], path: Path, tolerances: Tolerances) -> list[str]:
    """Write the baseline(s) and return a line per file. A folder gets `exact.json` (rewritten only when its
    gated values change) and `speed/<fingerprint id>.json`; any other path gets one file with everything."""
    if not is_folder(path):
        baseline = make_baseline(records, path.stem, tolerances)
        write_baseline(baseline, path)
        return [f"{path}: {_entries(len(baseline['entries']))}"]
    lines = []
    has = {m for r in records for m, value in r.metrics.items() if value is not None}
    if has & {"params", "gmacs", "top1", "top5"}:
        exact = make_baseline(records, "exact", tolerances, speed=False)
        target = path / EXACT_FILE
        try:
            old = load_baseline(target) if target.exists() else None
        except ValueError:  # unreadable or malformed: re-baselining replaces it
            old = None
        kept = _keep_uncovered(exact, old)
        kept_line = f"; kept {_entries(kept)} these records do not cover" if kept else ""
        if old is not None and old["entries"] == exact["entries"]:
            lines.append(f"{target}: unchanged ({_entries(len(exact['entries']))})")
        else:
            write_baseline(exact, target)
            lines.append(f"{target}: {_entries(len(exact['entries']))}{kept_line}")
    if "relspeed_ratios" in has:
        speed = make_baseline(records, "speed", tolerances, exact=False)
        target = path / SPEED_FOLDER / f"{speed['fingerprint']['id']}.json"
        speed["name"] = target.stem
        replaced = _speed_changes(target, speed)  # it said nothing when 20 % slower records replaced a baseline
        write_baseline(speed, target)  # (a hostile pass)
        lines.append(f"{target}: speed of {', '.join(speed['entries'])} on this machine" + replaced)
    elif has & {"params", "gmacs", "top1", "top5"}:  # the docs promised this hint; it was not given (a hostile pass)
        variants = ",".join(sorted({r.variant for r in records}))
        lines.append(f"no speed baseline: these records hold no relspeed measurement; time one first with `bench run "
                     f"--variant {variants} --metrics relspeed --results-dir DIR` and write the baseline from DIR")
    if not lines:
        raise ValueError("the records hold none of params, gmacs, top1, top5 or relspeed; nothing to baseline")
    return lines


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _speed_changes(target: Path, new: dict[str, Any]) -> str:
    """'; replaces the earlier baseline: deit_ti@224 median ratio 1.0044 -> 1.2052 (+20.0 %)' where `target`
    held one (unreadable: 'replaces an unreadable file')."""
    if not target.exists():
        return ""
    try:
        old = load_baseline(target)
    except ValueError:
        return "; replaces an unreadable file"
    changes = []
    for key, entry in new["entries"].items():
        before = old["entries"].get(key, {}).get("speed")
        if before:
            a, b = statistics.median(before["ratios"]), statistics.median(entry["speed"]["ratios"])
            changes.append(f"{key} median ratio {a:.4f} -> {b:.4f} ({(b / a - 1) * 100:+.1f} %)")
    return "; replaces the earlier baseline" + (": " + ", ".join(changes) if changes else "")


def _keep_uncovered(exact: dict[str, Any], old: dict[str, Any] | None) -> int:
    """Carry into `exact` the old folder baseline's entries (and their sources) for models these records do not
    cover: re-baselining deit_ti replaces deit_ti's entry, never the other nine models' (a user who followed
    `bench check`'s advice with one size record lost them). Returns how many were kept."""
    if old is None:
        return 0
    kept = {k: v for k, v in old["entries"].items() if k not in exact["entries"]}
    exact["entries"] = dict(sorted({**exact["entries"], **kept}.items()))
    kept_variants = {k.split("@")[0] for k in kept}
    exact["sources"] += [src for src in old.get("sources", []) if src.get("variant") in kept_variants]
    return len(kept)


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
        if isinstance(data, dict) and {"kind", "settings", "metrics", "env"} <= set(data):  # a hostile pass
            raise ValueError(f"baseline {path} is a run record, not a baseline: give it as --current, or make a "
                             "baseline from records with --write-baseline")
        if other_file(data):
            raise ValueError(f"baseline {path} is {other_file(data)}, not a baseline")
        hint = (" (schema 1 held one machine's speed without its fingerprint; re-baseline with --write-baseline)"
                if found == 1 else "")
        raise ValueError(f"baseline {path} is not a schema-{BASELINE_SCHEMA} baseline file{hint}")
    if data["entries"] == {}:  # a gate of nothing passed, "all 0 gates pass" (a hostile pass)
        raise ValueError(f"baseline {path} has no entries, so it gates nothing; make one with --write-baseline")
    try:
        _check_baseline(data)
    except ValueError as exc:  # a hand edit gone wrong: say where, never a traceback read as "regression"
        raise ValueError(f"baseline {path}: {exc}; fix it or re-baseline with --write-baseline") from None
    data["source"] = str(path)
    return data


# What a baseline may hold, with types: what `make_baseline` writes and `compare` reads.
ENTRY_TYPES = {"params": int, "gmacs": float, "top1": float, "top5": float, "accuracy_precision": str | None,
               "evaluated": dict, "speed": dict}
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
        variant, _, size = key.partition("@")  # "deit_ti" alone matched no record and read as a regression (MISSING)
        if not (variant and size.isdigit()):
            raise ValueError(f"entries.{key}: a key is VARIANT@IMAGE_SIZE, e.g. deit_ti@224; this one can match no "
                             "record")
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
