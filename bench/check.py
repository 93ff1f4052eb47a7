"""`bench check`: compare result records with a committed baseline and give each metric a verdict.

Scoring only; measuring is `bench run`'s job. Exact where the quantity is exact (params, GMACs), a stated
tolerance for accuracy, and for speed a statistical test on the model/reference time ratios that
`bench run --metrics relspeed` records (see bench/speed.py: time_interleaved).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.record import Record

BASELINE_SCHEMA = 1
SPEED_SETTINGS = ("device", "precision", "batch_size", "img_size", "compile")  # must match to compare speed


@dataclass(frozen=True)
class Tolerances:
    """What a baseline tolerates; stored in the baseline file, where it can be edited by hand."""

    accuracy_points: float = 0.1  # |Δ top-1/top-5| in percentage points
    speed_floor: float = 0.10  # a relative slowdown below this always passes
    speed_sigmas: float = 3.0  # ... and so does one within this many standard errors of the ratio medians


@dataclass(frozen=True)
class Row:
    key: str
    metric: str
    baseline: Any
    current: Any
    change: str
    verdict: str  # pass | improved | regression | changed | missing | skipped
    why: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("regression", "changed", "missing")


def record_key(record: Record) -> str:
    return f"{record.variant}@{record.settings['img_size']}"


def _latest(records: list[Record], metric: str) -> dict[str, Record]:
    """Per key, the newest record that measured `metric`."""
    chosen: dict[str, Record] = {}
    for r in sorted(records, key=lambda r: r.env["created"]):
        if metric in r.metrics:
            chosen[record_key(r)] = r
    return chosen


def make_baseline(records: list[Record], name: str, tolerances: Tolerances) -> dict[str, Any]:
    """A baseline from the newest record per variant and metric family."""
    entries: dict[str, dict[str, Any]] = {}
    machine: dict[str, Any] = {}
    used: dict[str, Record] = {}
    for metric in ("params", "gmacs", "top1", "top5"):
        for key, r in _latest(records, metric).items():
            entries.setdefault(key, {})[metric] = r.metrics[metric]
            used[r.env["created"] + r.variant] = r
    for key, r in _latest(records, "relspeed_ratios").items():
        used[r.env["created"] + r.variant] = r
        entries.setdefault(key, {})["speed"] = {
            **{k: r.settings[k] for k in SPEED_SETTINGS}, "reference": r.metrics["relspeed_reference"],
            "ratios": r.metrics["relspeed_ratios"], "record_created": r.env["created"]}
        machine = {k: r.env[k] for k in ("device_name", "num_threads", "torch", "timm", "cpu")}
    if not entries:
        raise ValueError("the records hold none of params, gmacs, top1, top5 or relspeed; nothing to baseline")
    return {"schema_version": BASELINE_SCHEMA, "name": name,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine, "tolerances": asdict(tolerances), "entries": dict(sorted(entries.items())),
            "sources": [{k: r.env.get(k) for k in ("created", "git_sha", "git_dirty", "command")} | {"variant": r.variant}
                        for _, r in sorted(used.items())]}


def write_baseline(baseline: dict[str, Any], path: Path) -> None:
    """Atomically replace `path` (re-baselining is meant to replace the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(baseline, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and check a baseline file. Raises ValueError with what is wrong."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"baseline {path} does not exist; make one with --write-baseline") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != BASELINE_SCHEMA or "entries" not in data:
        raise ValueError(f"baseline {path} is not a schema-{BASELINE_SCHEMA} baseline file")
    return data


def median_rel_se(values: list[float]) -> float:
    """Relative standard error of the median, from the median absolute deviation (robust to outliers).

    σ ≈ 1.4826·MAD for normal data, and the median's standard error is ≈ 1.2533·σ/√n.
    """
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    return 1.2533 * 1.4826 * mad / math.sqrt(len(values)) / med


def speed_verdict(baseline: list[float], current: list[float], tol: Tolerances) -> tuple[float, float, str]:
    """(relative change of the median ratio, threshold, verdict). Positive change = slower."""
    change = statistics.median(current) / statistics.median(baseline) - 1
    noise = math.hypot(median_rel_se(baseline), median_rel_se(current))
    threshold = max(tol.speed_floor, tol.speed_sigmas * noise)
    verdict = "regression" if change > threshold else "improved" if change < -threshold else "pass"
    return change, threshold, verdict


def compare(baseline: dict[str, Any], records: list[Record]) -> list[Row]:
    """One row per baseline metric: its verdict against the newest matching current record."""
    tol = Tolerances(**baseline["tolerances"])
    latest = {m: _latest(records, m) for m in ("params", "gmacs", "top1", "top5", "relspeed_ratios")}
    rows: list[Row] = []
    for key, entry in baseline["entries"].items():
        for metric in ("params", "gmacs"):
            if metric in entry:
                rows.append(_exact(key, metric, entry[metric], latest[metric].get(key)))
        for metric in ("top1", "top5"):
            if metric in entry:
                rows.append(_accuracy(key, metric, entry[metric], latest[metric].get(key), tol))
        if "speed" in entry:
            rows.append(_speed(key, entry["speed"], baseline["machine"], latest["relspeed_ratios"].get(key), tol))
    return rows


def _exact(key: str, metric: str, base: Any, current: Record | None) -> Row:
    if current is None:
        return Row(key, metric, base, None, "", "missing", "no current record measured it")
    value = current.metrics[metric]
    same = value == base
    change = "" if same else f"{value - base:+,}" if metric == "params" else f"{value - base:+.6f}"
    return Row(key, metric, base, value, change, "pass" if same else "changed",
               "" if same else "exact gate: a regression, or an intended change to re-baseline")


def _accuracy(key: str, metric: str, base: float, current: Record | None, tol: Tolerances) -> Row:
    if current is None:
        return Row(key, metric, base, None, "", "missing", "no current record measured it")
    value = current.metrics[metric]
    delta = value - base
    verdict = "pass" if abs(delta) <= tol.accuracy_points else "regression" if delta < 0 else "changed"
    return Row(key, metric, base, value, f"{delta:+.3f} pt", verdict, f"tolerance ±{tol.accuracy_points} pt")


def _speed(key: str, entry: dict[str, Any], machine: dict[str, Any], current: Record | None, tol: Tolerances) -> Row:
    base_ratio = statistics.median(entry["ratios"])
    if current is None:
        return Row(key, "speed (model/reference)", base_ratio, None, "", "missing", "no current relspeed record")
    env = current.env
    if (env["device_name"], env["num_threads"]) != (machine["device_name"], machine["num_threads"]):
        return Row(key, "speed (model/reference)", base_ratio, None, "", "skipped",
                   f"baseline machine {machine['device_name']} x{machine['num_threads']} threads, "
                   f"current {env['device_name']} x{env['num_threads']}")
    differ = [k for k in SPEED_SETTINGS if current.settings[k] != entry[k]]
    if differ or current.metrics["relspeed_reference"] != entry["reference"]:
        return Row(key, "speed (model/reference)", base_ratio, None, "", "skipped",
                   f"settings differ: {', '.join(differ) or 'reference workload'}")
    ratios = current.metrics["relspeed_ratios"]
    change, threshold, verdict = speed_verdict(entry["ratios"], ratios, tol)
    return Row(key, "speed (model/reference)", round(base_ratio, 4), round(statistics.median(ratios), 4),
               f"{100 * change:+.1f} %", verdict, f"threshold ±{100 * threshold:.1f} % (slower is +)")


def _show(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.10g}" if isinstance(value, float) else str(value)


def format_rows(rows: list[Row]) -> str:
    table = pd.DataFrame([{"model": r.key, "metric": r.metric, "baseline": _show(r.baseline),
                           "current": _show(r.current),
                           "change": r.change, "verdict": r.verdict.upper() if r.failed else r.verdict,
                           "note": r.why} for r in rows])
    return table.to_markdown(index=False, disable_numparse=True)
