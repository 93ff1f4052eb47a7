import copy
import dataclasses
import json
import random
from pathlib import Path

import pytest

from bench import check, cli
from bench.record import Record, load_records
from bench.registry import VARIANTS
from bench.run import measure, resolve_settings

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "results" / "baselines" / "cpu.json"
# Eight real `bench run --variant deit_ti --metrics relspeed --iters 15` runs on the development machine.
RECORDED = ROOT / "tests" / "fixtures" / "relspeed_deit_ti_cpu"


@pytest.fixture(scope="module")
def recorded_runs():
    return load_records(RECORDED)


@pytest.fixture(scope="module")
def size_records():
    """Live size records (exact, deterministic) of every entry the committed baseline gates."""
    keys = json.loads(BASELINE.read_text())["entries"]
    out = []
    for key in keys:
        variant = VARIANTS[key.split("@")[0]]
        settings = resolve_settings(variant, device="cpu", metrics="size")
        out.append(measure(variant, settings, log=lambda msg: None))
    return out


def verdicts(rows):
    return {(r.key, r.metric): r.verdict for r in rows}


def test_the_committed_baseline_passes_on_a_fresh_measurement(size_records, recorded_runs):
    baseline = check.load_baseline(BASELINE)
    speed_created = {e["speed"]["record_created"] for e in baseline["entries"].values() if "speed" in e}
    other_run = next(r for r in recorded_runs if r.env["created"] not in speed_created)
    rows = check.compare(baseline, size_records + [other_run])
    assert {r.verdict for r in rows} == {"pass"}, check.format_rows(rows)
    assert {r.metric for r in rows} == {"params", "gmacs", "speed (model/reference)"}


def test_a_doctored_baseline_fails_with_the_right_verdicts(size_records, recorded_runs, tmp_path, capsys):
    baseline = check.load_baseline(BASELINE)
    doctored = copy.deepcopy(baseline)
    entry = doctored["entries"]["deit_ti@224"]
    entry["params"] += 1
    entry["gmacs"] *= 1.01
    entry["speed"]["ratios"] = [r / 2 for r in entry["speed"]["ratios"]]  # baseline throughput 2x higher
    path = tmp_path / "doctored.json"
    check.write_baseline(doctored, path)
    current = tmp_path / "runs"
    current.mkdir()
    for i, record in enumerate(size_records + [recorded_runs[1]]):
        (current / f"{i}.json").write_text(record.to_json())

    code = cli.main(["check", "--baseline", str(path), "--current", str(current)])
    out = capsys.readouterr().out
    assert code == 1 and "3 of" in out
    rows = verdicts(check.compare(doctored, size_records + [recorded_runs[1]]))
    assert rows[("deit_ti@224", "params")] == "changed"
    assert rows[("deit_ti@224", "gmacs")] == "changed"
    assert rows[("deit_ti@224", "speed (model/reference)")] == "regression"
    assert rows[("deit_b@224", "params")] == "pass"


def trials(runs, n=20, slowdown=1.0, seed=0):
    """`n` simulated gate decisions, each between two different recorded runs."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(len(runs)) for b in range(len(runs)) if a != b]
    outcomes = []
    for a, b in rng.sample(pairs, n):
        base = runs[a].metrics["relspeed_ratios"]
        current = [r * slowdown for r in runs[b].metrics["relspeed_ratios"]]
        outcomes.append(check.speed_verdict(base, current, check.Tolerances())[2])
    return outcomes


def test_an_unchanged_model_passes_at_least_19_of_20_noisy_trials(recorded_runs):
    assert len(recorded_runs) >= 6
    assert trials(recorded_runs).count("pass") >= 19


def test_a_25_percent_slowdown_is_caught_in_at_least_19_of_20_trials(recorded_runs):
    assert trials(recorded_runs, slowdown=1.25).count("regression") >= 19


def test_speed_is_not_gated_on_another_machine(recorded_runs):
    baseline = check.load_baseline(BASELINE)
    elsewhere = dataclasses.replace(recorded_runs[1], env={**recorded_runs[1].env, "device_name": "Other CPU"})
    row = next(r for r in check.compare(baseline, [elsewhere]) if r.metric.startswith("speed"))
    assert row.verdict == "skipped" and "Other CPU" in row.why and not row.failed


def test_speed_is_not_gated_across_different_settings(recorded_runs):
    baseline = check.load_baseline(BASELINE)
    other = dataclasses.replace(recorded_runs[1], settings={**recorded_runs[1].settings, "precision": "bf16"})
    row = next(r for r in check.compare(baseline, [other]) if r.metric.startswith("speed"))
    assert row.verdict == "skipped" and "precision" in row.why


def accuracy_record(top1, created):
    env = {"created": created, "device_name": "cpu", "num_threads": 2}
    return Record("debug", "m", {"img_size": 32}, {"top1": top1, "top5": 99.0}, env)


def test_accuracy_moves_within_the_tolerance_pass_and_beyond_it_fail():
    baseline = check.make_baseline([accuracy_record(70.0, "2026-01-01")], "acc", check.Tolerances(accuracy_points=0.1))
    assert verdicts(check.compare(baseline, [accuracy_record(69.95, "2026-01-02")]))[("debug@32", "top1")] == "pass"
    assert verdicts(check.compare(baseline, [accuracy_record(69.8, "2026-01-02")]))[("debug@32", "top1")] == "regression"
    assert verdicts(check.compare(baseline, [accuracy_record(70.3, "2026-01-02")]))[("debug@32", "top1")] == "changed"


def test_a_baseline_entry_without_a_current_record_fails_as_missing():
    baseline = check.make_baseline([accuracy_record(70.0, "2026-01-01")], "acc", check.Tolerances())
    other = dataclasses.replace(accuracy_record(70.0, "2026-01-02"), variant="debug_dist")
    assert {r.verdict for r in check.compare(baseline, [other])} == {"missing"}


def test_write_baseline_then_check_round_trips(tmp_path, capsys, recorded_runs):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text(recorded_runs[0].to_json())
    path = tmp_path / "base.json"
    assert cli.main(["check", "--write-baseline", "--baseline", str(path), "--current", str(runs)]) == 0
    capsys.readouterr()
    assert cli.main(["check", "--baseline", str(path), "--current", str(runs), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["failed"] == 0 and [r["verdict"] for r in verdict["rows"]] == ["pass"]
    assert check.load_baseline(path)["entries"]["deit_ti@224"]["speed"]["ratios"] == recorded_runs[0].metrics["relspeed_ratios"]


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "does not exist; make one with --write-baseline"),
    (lambda d: (d / "base.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "base.json").write_text('{"schema_version": 99}'), "not a schema-1 baseline"),
])
def test_bad_baselines_are_usage_errors(tmp_path, capsys, recorded_runs, setup, message):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text(recorded_runs[0].to_json())
    setup(tmp_path)
    code = cli.main(["check", "--baseline", str(tmp_path / "base.json"), "--current", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_an_empty_or_absent_current_folder_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["check", "--baseline", str(BASELINE), "--current", str(tmp_path / "nope")]) == 2
    assert cli.main(["check", "--baseline", str(BASELINE), "--current", str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err
