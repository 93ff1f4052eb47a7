import copy
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from bench import baselines, check, cli
from bench.machine import Fingerprint
from bench.record import AB_ROUNDS_FILE, OTHER_FILES, Record, load_records
from bench.registry import VARIANTS
from bench.run import measure, resolve_settings

ROOT = Path(__file__).resolve().parents[2]
EXACT = ROOT / "results" / "baselines" / "exact.json"
RUNS = ROOT / "results" / "runs" / "cpu-avx512"
# Real `bench run --variant deit_ti --metrics relspeed --batch-size 4 --iters 40` runs on one machine
# (2-core AMD EPYC, AVX2): quiet/ eight on a quiet machine, loaded/ three with two CPU-bound processes competing.
RECORDED = ROOT / "tests" / "fixtures" / "relspeed_deit_ti_cpu"


@pytest.fixture(scope="module")
def quiet_runs():
    return load_records(RECORDED / "quiet")


@pytest.fixture(scope="module")
def loaded_runs():
    return load_records(RECORDED / "loaded")


@pytest.fixture(scope="module")
def size_records():
    """Live size records (exact, deterministic) of every entry the committed exact baseline gates."""
    out = []
    for key in json.loads(EXACT.read_text())["entries"]:
        variant = VARIANTS[key.split("@")[0]]
        out.append(measure(variant, resolve_settings(variant, device="cpu", metrics="size"), log=lambda msg: None))
    return out


def verdicts(rows):
    return {(r.key, r.metric): r.verdict for r in rows}


def speed_row(rows):
    return next(r for r in rows if r.metric == check.SPEED_METRIC)


def with_fingerprint(record, **changes):
    fingerprint = dataclasses.replace(Fingerprint.from_dict(record.env["fingerprint"]), **changes)
    return dataclasses.replace(record, env={**record.env, "fingerprint": fingerprint.to_dict()})


def slowed(record, factor):
    return dataclasses.replace(record, metrics={**record.metrics,
                                                "relspeed_ratios": [r * factor for r in record.metrics["relspeed_ratios"]]})


def test_the_recorded_runs_come_from_one_machine_and_the_loaded_ones_say_so(quiet_runs, loaded_runs):
    assert len({r.env["fingerprint"]["id"] for r in quiet_runs + loaded_runs}) == 1
    assert all(sum(r.metrics["relspeed_contended"]) < len(r.metrics["relspeed_contended"]) / 2 for r in quiet_runs)
    assert all(all(r.metrics["relspeed_contended"]) for r in loaded_runs)


def test_the_committed_exact_baseline_passes_on_a_fresh_measurement(size_records):
    rows = check.compare(baselines.load_baseline(EXACT), size_records)
    assert {r.verdict for r in rows} == {"pass"}, check.format_rows(rows)
    assert {r.metric for r in rows} == {"params", "gmacs"} and len(rows) == 2 * len(size_records)


def test_the_committed_baseline_folder_gates_size_everywhere_and_speed_only_on_its_machines(size_records, quiet_runs):
    loaded = baselines.load_baselines(ROOT / "results" / "baselines")
    assert all(b["fingerprint"] for b in loaded if "/speed/" in b["source"])
    elsewhere = with_fingerprint(quiet_runs[0], cpu_model="999")
    rows = check.compare(loaded, size_records + [elsewhere])
    assert speed_row(rows).verdict == "skipped" and "cpu_model" in speed_row(rows).why
    assert check.exit_code(rows) == check.EXIT_PASS


def test_a_doctored_baseline_fails_with_the_right_verdicts(size_records, quiet_runs, tmp_path, capsys):
    baseline = baselines.make_baseline(size_records + [quiet_runs[0]], "doctored", check.Tolerances())
    doctored = copy.deepcopy(baseline)
    entry = doctored["entries"]["deit_ti@224"]
    entry["params"] += 1
    entry["gmacs"] *= 1.01
    entry["speed"]["ratios"] = [r / 2 for r in entry["speed"]["ratios"]]  # baseline throughput 2x higher
    path = tmp_path / "doctored.json"
    baselines.write_baseline(doctored, path)
    current = tmp_path / "runs"
    current.mkdir()
    for i, record in enumerate(size_records + [quiet_runs[1]]):
        (current / f"{i}.json").write_text(record.to_json())

    code = cli.main(["check", "--baseline", str(path), "--current", str(current)])
    out = capsys.readouterr().out
    assert code == 1 and "3 of" in out
    rows = verdicts(check.compare(doctored, size_records + [quiet_runs[1]]))
    assert rows[("deit_ti@224", "params")] == "changed"
    assert rows[("deit_ti@224", "gmacs")] == "changed"
    assert rows[("deit_ti@224", check.SPEED_METRIC)] == "regression"
    assert rows[("deit_b@224", "params")] == "pass"


def trials(base_runs, current_runs, n=20, slowdown=1.0, seed=0):
    """`n` simulated gate decisions, each between two different recorded runs."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in base_runs for b in current_runs if a is not b]
    outcomes = []
    for base, current in rng.sample(pairs, min(n, len(pairs))):
        baseline = baselines.make_baseline([base], "b", check.Tolerances())
        outcomes.append(speed_row(check.compare(baseline, [slowed(current, slowdown)])).verdict)
    return outcomes


def test_an_unchanged_model_passes_19_of_20_quiet_trials(quiet_runs):
    assert len(quiet_runs) >= 6
    assert trials(quiet_runs, quiet_runs).count("pass") >= 19


def test_a_10_percent_slowdown_is_flagged_in_19_of_20_quiet_trials(quiet_runs):
    assert trials(quiet_runs, quiet_runs, slowdown=1.10).count("regression") >= 19


def test_under_contention_no_trial_says_regression_and_a_25_percent_slowdown_never_passes(quiet_runs, loaded_runs):
    unchanged = trials(quiet_runs, loaded_runs)
    assert "regression" not in unchanged and unchanged.count("pass") >= 19
    assert set(trials(quiet_runs, loaded_runs, slowdown=1.25)) == {"inconclusive"}


def test_a_slowdown_within_the_noise_is_inconclusive_not_a_verdict():
    base = [1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.3, 0.7, 1.0, 1.05]  # ±20 % noise: 3 standard errors ~ 25 %
    change, threshold, verdict = check.speed_verdict(base, [r * 1.12 for r in base], check.Tolerances())
    assert check.Tolerances().speed_floor < change < threshold and verdict == "inconclusive"


def test_speed_is_skipped_against_another_fingerprint_naming_what_differs(quiet_runs):
    baseline = baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances())
    other = with_fingerprint(quiet_runs[1], isa=("avx", "avx2", "fma", "avx512f", "avx512_bf16"), torch="2.15.0+cu132")
    row = speed_row(check.compare(baseline, [other]))
    assert row.verdict == "skipped" and not row.failed
    assert "+avx512_bf16" in row.why and "+avx512f" in row.why and "2.15.0+cu132" in row.why


def test_speed_is_not_gated_across_different_settings(quiet_runs):
    baseline = baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances())
    other = dataclasses.replace(quiet_runs[1], settings={**quiet_runs[1].settings, "batch_size": 16})
    rows = check.compare(baseline, [other])
    row = speed_row(rows)  # the baseline's machine, timed otherwise: no verdict, and no pass (exit 3)
    base = quiet_runs[0].settings["batch_size"]
    assert row.verdict == "inconclusive" and not row.failed and check.exit_code(rows) == check.EXIT_INCONCLUSIVE
    assert f"batch_size 16 (baseline {base})" in row.why and f"measure again with --batch-size {base}" in row.why


def test_speed_is_not_gated_across_clocks(quiet_runs):
    """A hostile pass: a wall-clock relspeed record against a CPU-time baseline read as "+27.3 % REGRESSION"."""
    baseline = baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances())
    wall = dataclasses.replace(quiet_runs[1], metrics={**quiet_runs[1].metrics, "relspeed_clock": "perf_counter"})
    row = speed_row(check.compare(baseline, [wall]))
    assert row.verdict == "inconclusive" and "clock 'perf_counter' (baseline 'process_cpu_time')" in row.why
    same = speed_row(check.compare(baseline, [quiet_runs[1]]))
    assert same.verdict == "pass"
    # the change with its interval, and the standard error the threshold counts (a hostile pass: shown bare)
    estimate, low, high = (float(x) for x in same.change.replace("%", "").replace("[", "").replace("]", "")
                           .replace(",", "").split())
    assert low < estimate < high and "3 standard errors of " in same.why


def test_a_baseline_from_a_busy_machine_is_refused(loaded_runs):
    with pytest.raises(ValueError, match="busy machine"):
        baselines.make_baseline([loaded_runs[0]], "b", check.Tolerances())


def accuracy_record(top1, created, precision="fp32", **settings):
    env = {"created": created, "device_name": "cpu", "num_threads": 2}
    return Record("debug", "m", {"img_size": 32, "precision": "amp_bf16", "accuracy_precision": precision, **settings},
                  {"top1": top1, "top5": 99.0}, env)


def test_accuracy_moves_within_the_tolerance_pass_and_beyond_it_fail():
    baseline = baselines.make_baseline([accuracy_record(70.0, "2026-01-01")], "acc", check.Tolerances(accuracy_points=0.1))
    assert verdicts(check.compare(baseline, [accuracy_record(69.95, "2026-01-02")]))[("debug@32", "top1")] == "pass"
    assert verdicts(check.compare(baseline, [accuracy_record(69.8, "2026-01-02")]))[("debug@32", "top1")] == "regression"
    assert verdicts(check.compare(baseline, [accuracy_record(70.3, "2026-01-02")]))[("debug@32", "top1")] == "changed"


def test_accuracy_is_never_compared_across_precisions(capsys, tmp_path):
    """Issue #30: bf16 moved a top-1 by 2.7 points; a gate must say the precisions differ, not pass or fail."""
    baseline = baselines.make_baseline([accuracy_record(70.0, "2026-01-01")], "acc", check.Tolerances())
    assert baseline["entries"]["debug@32"]["accuracy_precision"] == "fp32"
    rows = check.compare(baseline, [accuracy_record(70.0, "2026-01-02", precision="amp_bf16")])
    assert {r.verdict for r in rows} == {"skipped"} and not any(r.failed for r in rows)
    assert all("precisions differ: baseline fp32, current amp_bf16" in r.why and "--precision fp32" in r.why
               for r in rows)
    assert check.exit_code(rows) == check.EXIT_PASS
    # same precision: a verdict, and the note names it
    [top1] = [r for r in check.compare(baseline, [accuracy_record(69.0, "2026-01-02")]) if r.metric == "top1"]
    assert top1.verdict == "regression" and "both fp32" in top1.why


def test_accuracy_is_never_compared_across_images_or_weights():
    """A hostile pass: 30 CIFAR-10 images of one checkpoint were gated against 10 ImageNet images of another."""
    def evaluated(top1, created, images, dataset, sha):
        record = accuracy_record(top1, created, eval={"dataset": dataset, "label_space": "x"})
        return dataclasses.replace(record, metrics={**record.metrics, "images": images},
                                   notes=[f"checkpoint sha256 {sha}"])

    baseline = baselines.make_baseline([evaluated(0.0, "2026-01-01", 10, "imagenet-flat", "aa")], "acc",
                                       check.Tolerances())
    assert baseline["entries"]["debug@32"]["evaluated"]["weights"] == "aa"
    rows = check.compare(baseline, [evaluated(13.3, "2026-01-02", 30, "folder", "bb")])
    assert {r.verdict for r in rows} == {"skipped"} and check.exit_code(rows) == check.EXIT_PASS
    assert "images 10 → 30; dataset imagenet-flat → folder; weights aa → bb" in rows[0].why
    [top1] = [r for r in check.compare(baseline, [evaluated(5.0, "2026-01-02", 10, "imagenet-flat", "aa")])
              if r.metric == "top1"]
    assert top1.verdict == "changed"  # the same images and weights: a verdict


def test_a_record_from_before_the_accuracy_precision_field_counts_as_its_precision():
    old = accuracy_record(70.0, "2026-01-01", precision=None)
    old = dataclasses.replace(old, settings={k: v for k, v in old.settings.items() if k != "accuracy_precision"})
    assert old.accuracy_precision == "amp_bf16"  # before issue #30, accuracy ran in `precision`
    baseline = baselines.make_baseline([accuracy_record(70.0, "2026-01-01")], "acc", check.Tolerances())
    assert verdicts(check.compare(baseline, [old]))[("debug@32", "top1")] == "skipped"
    old_baseline = copy.deepcopy(baseline)
    del old_baseline["entries"]["debug@32"]["accuracy_precision"]  # a baseline written before issue #30
    row = next(r for r in check.compare(old_baseline, [accuracy_record(70.0, "2026-01-02")]) if r.metric == "top1")
    assert row.verdict == "skipped" and "re-baseline" in row.why and "unrecorded" in row.why


def test_a_baseline_entry_without_a_current_record_fails_as_missing(quiet_runs):
    baseline = baselines.make_baseline([accuracy_record(70.0, "2026-01-01"), quiet_runs[0]], "acc", check.Tolerances())
    other = dataclasses.replace(accuracy_record(70.0, "2026-01-02"), variant="debug_dist")
    assert {r.verdict for r in check.compare(baseline, [other])} == {"missing"}


def write_runs(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    for i, record in enumerate(records):
        (folder / f"{i}.json").write_text(record.to_json())
    return folder


def test_write_baseline_into_a_folder_then_check_round_trips(tmp_path, capsys, quiet_runs, size_records):
    runs = write_runs(tmp_path / "runs", size_records[:2] + [quiet_runs[0]])
    folder = tmp_path / "baselines"
    assert cli.main(["check", "--write-baseline", "--baseline", str(folder), "--current", str(runs)]) == 0
    fingerprint = quiet_runs[0].env["fingerprint"]["id"]
    assert (folder / "exact.json").exists() and (folder / "speed" / f"{fingerprint}.json").exists()
    assert cli.main(["check", "--write-baseline", "--baseline", str(folder), "--current", str(runs)]) == 0
    assert "exact.json: unchanged" in capsys.readouterr().out
    assert cli.main(["check", "--baseline", str(folder), "--current", str(runs), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["failed"] == 0 and {r["verdict"] for r in verdict["rows"]} == {"pass"}
    speed = baselines.load_baseline(folder / "speed" / f"{fingerprint}.json")
    assert speed["entries"]["deit_ti@224"]["speed"]["ratios"] == quiet_runs[0].metrics["relspeed_ratios"]
    assert Fingerprint.from_dict(speed["fingerprint"]).id() == fingerprint


def test_on_a_machine_without_a_speed_baseline_the_gate_passes_and_prints_the_command(tmp_path, capsys, quiet_runs):
    folder = tmp_path / "baselines"
    baselines.write_baseline(baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances()), folder / "speed" / "x.json")
    runs = write_runs(tmp_path / "runs", [with_fingerprint(quiet_runs[1], cores=64)])
    assert cli.main(["check", "--baseline", str(folder), "--current", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "cores: 2 -> 64" in out
    assert f"bench check --write-baseline --baseline {folder} --current {runs}" in out


def test_a_busy_machine_gives_exit_3_inconclusive_for_a_real_slowdown(tmp_path, capsys, quiet_runs, loaded_runs):
    base = tmp_path / "b.json"
    baselines.write_baseline(baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances()), base)
    runs = write_runs(tmp_path / "runs", [slowed(loaded_runs[0], 1.25)])
    assert cli.main(["check", "--baseline", str(base), "--current", str(runs)]) == 3
    assert "inconclusive" in capsys.readouterr().out


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "does not exist; make one with --write-baseline"),
    (lambda d: (d / "base.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "base.json").write_text('{"schema_version": 1, "entries": {}}'), "re-baseline"),
    (lambda d: (d / "base.json").mkdir(), "neither exact.json nor speed/"),
    (lambda d: (d / "base.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000), "nested too deeply"),
    (lambda d: os.mkfifo(d / "base.json"), "not a regular file"),
    # a hostile pass: "all 0 gates pass", exit 0
    (lambda d: (d / "base.json").write_text(json.dumps({"schema_version": check.BASELINE_SCHEMA, "entries": {}})),
     "has no entries, so it gates nothing"),
    # a hostile pass: a run record was told to "re-baseline" as if it were an old baseline
    (lambda d: shutil.copy(next(RUNS.rglob("*.json")), d / "base.json"), "is a run record, not a baseline: give it as --current"),
    (lambda d: (d / "base.json").write_text(json.dumps(dict.fromkeys(OTHER_FILES[AB_ROUNDS_FILE], 1))),
     "is bench check --ab-record's A/B rounds, not a baseline"),
])
def test_bad_baselines_are_usage_errors(tmp_path, capsys, quiet_runs, setup, message):
    runs = write_runs(tmp_path / "runs", [quiet_runs[0]])
    setup(tmp_path)
    code = cli.main(["check", "--baseline", str(tmp_path / "base.json"), "--current", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_an_unwritable_baseline_is_a_usage_error_before_anything_is_written(tmp_path, capsys, quiet_runs):
    runs = write_runs(tmp_path / "runs", [quiet_runs[0]])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["check", "--write-baseline", "--baseline", str(blocker / "b.json"), "--current", str(runs)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_an_empty_or_absent_current_folder_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["check", "--baseline", str(EXACT), "--current", str(tmp_path / "nope")]) == 2
    assert cli.main(["check", "--baseline", str(EXACT), "--current", str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err


# ---- issue #32: each machine against its own baseline; conflicting baselines refused; bad files named (exit 2) ----

def test_each_machines_records_are_judged_against_that_machines_baseline(tmp_path, capsys, quiet_runs):
    """#32 row 6: the newest relspeed record of another machine hid a 3x slowdown of the baselined one."""
    base = tmp_path / "b.json"
    baselines.write_baseline(baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances()), base)
    here = slowed(quiet_runs[1], 3.0)
    elsewhere = with_fingerprint(quiet_runs[2], cores=64)  # newer than `here`
    assert elsewhere.created > here.created
    rows = [r for r in check.compare(baselines.load_baseline(base), [here, elsewhere]) if r.metric == check.SPEED_METRIC]
    assert sorted(r.verdict for r in rows) == ["regression", "skipped"]
    assert {r.machine for r in rows} == {quiet_runs[0].env["fingerprint"]["id"], elsewhere.env["fingerprint"]["id"]}
    runs = write_runs(tmp_path / "runs", [here, elsewhere])
    assert cli.main(["check", "--baseline", str(base), "--current", str(runs)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def speed_baselines(folder, quiet_runs, factor):
    one = baselines.make_baseline([quiet_runs[0]], "a", check.Tolerances())
    other = copy.deepcopy(one)
    other["entries"]["deit_ti@224"]["speed"]["ratios"] = [r * factor for r in one["entries"]["deit_ti@224"]["speed"]["ratios"]]
    baselines.write_baseline(one, folder / "speed" / "a.json")
    baselines.write_baseline(other, folder / "speed" / "b.json")
    return folder


def test_two_different_speed_baselines_for_one_machine_are_refused_naming_both(tmp_path, capsys, quiet_runs):
    """#32 row 7: the verdict depended on which file name sorted first."""
    folder = speed_baselines(tmp_path / "baselines", quiet_runs, 0.5)
    runs = write_runs(tmp_path / "runs", [quiet_runs[1]])
    assert cli.main(["check", "--baseline", str(folder), "--current", str(runs)]) == 2
    err = capsys.readouterr().err
    assert str(folder / "speed" / "a.json") in err and str(folder / "speed" / "b.json") in err
    assert "deit_ti@224" in err and "Traceback" not in err


def test_an_identical_copy_of_a_baseline_is_no_conflict(tmp_path, capsys, quiet_runs):
    folder = speed_baselines(tmp_path / "baselines", quiet_runs, 1.0)
    runs = write_runs(tmp_path / "runs", [quiet_runs[1]])
    assert cli.main(["check", "--baseline", str(folder), "--current", str(runs), "--json"]) == 0
    assert [r["verdict"] for r in json.loads(capsys.readouterr().out)["rows"]] == ["pass"]


def test_two_baselines_with_different_exact_values_for_one_model_are_refused(quiet_runs, size_records):
    one = baselines.make_baseline(size_records[:1], "a", check.Tolerances())
    other = copy.deepcopy(one)
    key = next(iter(other["entries"]))
    other["entries"][key]["params"] += 1
    with pytest.raises(ValueError, match=f"{key}.*params"):
        check.compare([one | {"source": "x.json"}, other | {"source": "y.json"}], size_records[:1])


def record_with(record, **changes):
    """`record` with `section__key=value` changes; a value of DELETE removes the key."""
    sections = {s: dict(getattr(record, s)) for s in ("settings", "metrics", "env")}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        if value is DELETE:
            del sections[section][key]
        else:
            sections[section][key] = value
    return dataclasses.replace(record, **sections)


DELETE = object()


@pytest.mark.parametrize("changes,message", [
    ({"metrics__params": "five million"}, "metrics.params: expected int, got str 'five million'"),
    ({"metrics__params": -5}, "params: -5 must be positive"),  # read as CHANGED, exit 1, where tables refused it
    ({"metrics__relspeed_ratios": None}, "metrics.relspeed_ratios: null"),
    ({"metrics__relspeed_ratios": []}, "metrics.relspeed_ratios is empty"),
    ({"metrics__relspeed_ratios": [-1.0] * 40}, "metrics.relspeed_ratios"),
    ({"metrics__relspeed_contended": [False]}, "metrics.relspeed_contended"),
    ({"metrics__relspeed_reference": None}, "metrics.relspeed_reference"),
    ({"settings__batch_size": DELETE}, "settings.batch_size"),
    ({"settings__img_size": None}, "settings.img_size"),
    ({"env__fingerprint": {"device": "cpu"}}, "env.fingerprint"),
    ({"env__fingerprint": None}, "env.fingerprint is missing or null"),  # was "skipped", and a 2x slowdown passed
    ({"env__fingerprint": {**{}, "device": "cpu", "isa": 5}}, "env.fingerprint"),
    # a hostile pass: the summary without its rounds made the gate judge an older record, and pass a 20 % slowdown
    ({"metrics__relspeed_ratios": DELETE}, "metrics.relspeed_ratio without metrics.relspeed_ratios"),
    ({"metrics__relspeed_ratio": -1.0}, "relspeed_ratio: -1.0 must be positive"),
    ({"metrics__gmacs": 10**400}, "gmacs: expected a finite float"),  # an OverflowError traceback, exit 1
])
def test_a_record_the_gate_cannot_read_is_a_usage_error_naming_file_and_field(tmp_path, capsys, quiet_runs, changes,
                                                                              message):
    """#32 row 8: such records were tracebacks with exit 1, which CI reads as a regression."""
    base = tmp_path / "b.json"
    baselines.write_baseline(baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances()), base)
    runs = write_runs(tmp_path / "runs", [quiet_runs[1], record_with(quiet_runs[2], **changes)])
    for argv in (["--baseline", str(base)], ["--write-baseline", "--baseline", str(tmp_path / "new")]):
        assert cli.main(["check", *argv, "--current", str(runs)]) == 2
        err = capsys.readouterr().err
        assert str(runs / "1.json") in err and message in err and "Traceback" not in err


def baseline_with(quiet_runs, tmp_path, edit):
    data = json.loads(json.dumps(baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances())))
    edit(data)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda b: b.pop("tolerances"), "tolerances"),
    (lambda b: b["tolerances"].update(speed_floor="6 %"), "tolerances.speed_floor"),
    (lambda b: b["tolerances"].update(speed_floor=-0.1), "tolerances.speed_floor"),
    (lambda b: b["tolerances"].update(noise=1), "tolerances: unknown noise"),
    (lambda b: b.update(entries=[]), "entries"),
    (lambda b: b.update(entries={"deit_ti": b["entries"]["deit_ti@224"]}), "entries.deit_ti: a key is VARIANT@"),
    (lambda b: b["entries"].update({"deit_s@224": "fast"}), "entries.deit_s@224"),
    (lambda b: b["entries"]["deit_ti@224"].update(param=5), "entries.deit_ti@224: unknown param"),
    (lambda b: b["entries"]["deit_ti@224"].update(params="5M"), "entries.deit_ti@224.params"),
    (lambda b: b["entries"]["deit_ti@224"]["speed"].update(ratios=None), "entries.deit_ti@224.speed.ratios"),
    (lambda b: b["entries"]["deit_ti@224"]["speed"].update(ratios=[]), "entries.deit_ti@224.speed.ratios"),
    (lambda b: b["entries"]["deit_ti@224"]["speed"].pop("batch_size"), "entries.deit_ti@224.speed: missing batch_size"),
    (lambda b: b.update(fingerprint=None), "fingerprint"),
    (lambda b: b["fingerprint"].pop("cores"), "fingerprint"),
    (lambda b: b["fingerprint"].update(torch=2), "fingerprint.torch"),
])
def test_a_baseline_of_the_wrong_shape_is_a_usage_error_naming_file_and_field(tmp_path, capsys, quiet_runs, edit,
                                                                             message):
    """#32 row 8: a baseline without `tolerances` was a KeyError traceback, exit 1."""
    path = baseline_with(quiet_runs, tmp_path, edit)
    runs = write_runs(tmp_path / "runs", [quiet_runs[1]])
    assert cli.main(["check", "--baseline", str(path), "--current", str(runs)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err and "Traceback" not in err


def test_write_baseline_refuses_a_folder_inside_the_records_it_reads(tmp_path, capsys, size_records):
    """A hostile pass: --baseline DIR --current DIR wrote DIR/exact.json, which every later check read as a record."""
    runs = write_runs(tmp_path / "runs", size_records[:1])
    for baseline in (runs, runs / "baselines"):
        assert cli.main(["check", "--write-baseline", "--baseline", str(baseline), "--current", str(runs)]) == 2
        assert "is inside --current" in capsys.readouterr().err
    assert sorted(p.name for p in runs.rglob("*")) == ["0.json"]


def test_write_baseline_into_a_folder_another_process_writes_is_refused_naming_it(tmp_path, capsys, size_records):
    """A hostile pass: two --write-baseline runs into one folder at once each read exact.json without the other's
    model, and the second rename dropped the first's; both said "1 entries", exit 0. One writer at a time now."""
    import multiprocessing

    runs = write_runs(tmp_path / "runs", size_records[:1])
    held, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold, args=(tmp_path / "base", held, release))
    holder.start()
    try:
        assert held.wait(30)
        assert cli.main(["check", "--write-baseline", "--baseline", str(tmp_path / "base"), "--current", str(runs)]) == 2
        assert "is being written by another process" in capsys.readouterr().err
    finally:
        release.set()
        holder.join(30)
    assert cli.main(["check", "--write-baseline", "--baseline", str(tmp_path / "base"), "--current", str(runs)]) == 0
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["exact.json"]  # the lock file went with its run


def _hold(folder, held, release):
    from bench.store import hold_folder

    with hold_folder(folder, log=lambda msg: None):
        held.set()
        release.wait(60)


def test_write_baseline_never_overwrites_a_file_that_is_not_a_baseline(tmp_path, capsys, size_records):
    """A hostile pass: --baseline notes.txt --write-baseline replaced the user's file with a baseline."""
    runs = write_runs(tmp_path / "runs", size_records[:2])
    notes = tmp_path / "notes.txt"
    notes.write_text("content")
    assert cli.main(["check", "--write-baseline", "--baseline", str(notes), "--current", str(runs)]) == 2
    assert "not a baseline" in capsys.readouterr().err and notes.read_text() == "content"
    broken = tmp_path / "broken.json"  # a baseline whose hand edit went wrong is what re-baselining is for
    broken.write_text(json.dumps({"schema_version": 2, "entries": {}}))
    assert cli.main(["check", "--write-baseline", "--baseline", str(broken), "--current", str(runs)]) == 0
    assert "tolerances" in json.loads(broken.read_text())


def test_training_records_in_current_are_no_speed_records(capsys):
    """A folder of training records has no relspeed key at all: the gate reports the sizes as missing, no crash."""
    code = cli.main(["check", "--baseline", str(EXACT), "--current", str(ROOT / "results" / "runs" / "mini-none-fp32")])
    out = capsys.readouterr().out
    assert code == 1 and "MISSING" in out and "no current record measured it" in out


def test_size_records_of_a_machine_without_a_speed_baseline_skip_speed_and_of_its_machine_miss_it(quiet_runs):
    """The README's `bench check --baseline results/baselines --current DIR` with size records only failed as
    'missing' on a machine the committed speed baseline does not cover."""
    baseline = baselines.make_baseline([quiet_runs[0]], "speed", check.Tolerances())
    here = dataclasses.replace(quiet_runs[0], metrics={"params": 1, "gmacs": 1.0})  # a size record, same machine
    elsewhere = with_fingerprint(here, cpu_model="999")
    assert {r.verdict for r in check.compare(baseline, [elsewhere]) if r.metric == check.SPEED_METRIC} == {"skipped"}
    assert {r.verdict for r in check.compare(baseline, [here]) if r.metric == check.SPEED_METRIC} == {"missing"}


def test_size_records_without_a_speed_baseline_are_told_to_measure_relspeed_first(tmp_path, capsys, quiet_runs):
    """The advice to `--write-baseline` from size records wrote a baseline with no speed in it."""
    folder = tmp_path / "baselines"
    baselines.write_baseline(baselines.make_baseline([quiet_runs[0]], "b", check.Tolerances()), folder / "speed" / "x.json")
    size_only = dataclasses.replace(quiet_runs[0], metrics={"params": 1, "gmacs": 1.0})
    runs = write_runs(tmp_path / "runs", [with_fingerprint(size_only, cores=64)])
    assert cli.main(["check", "--baseline", str(folder), "--current", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "these records hold no relspeed measurement, so speed is not gated" in out
    assert f"bench run --variant deit_ti --img-size 224 --metrics relspeed --results-dir {runs}" in out
    assert f"bench check --baseline {folder} --current {runs}" in out and "--write-baseline" not in out


def test_writing_a_baseline_folder_from_one_model_keeps_the_other_models_entries(tmp_path, capsys, size_records):
    """A hostile pass: `--write-baseline --baseline results/baselines` with one size record rewrote exact.json with
    that model alone, and nine models' gates silently disappeared."""
    folder = tmp_path / "baselines"
    baselines.write_baselines(size_records, folder, check.Tolerances())
    before = json.loads((folder / "exact.json").read_text())["entries"]
    one = next(r for r in size_records if r.variant == "deit_ti")
    changed = dataclasses.replace(one, metrics={**one.metrics, "params": one.metrics["params"] + 1})
    lines = baselines.write_baselines([changed], folder, check.Tolerances())
    after = json.loads((folder / "exact.json").read_text())
    assert len(before) > 1 and set(after["entries"]) == set(before)
    assert after["entries"]["deit_ti@224"]["params"] == one.metrics["params"] + 1
    assert {k: v for k, v in after["entries"].items() if k != "deit_ti@224"} == {
        k: v for k, v in before.items() if k != "deit_ti@224"}
    assert f"kept {len(before) - 1} entries these records do not cover" in lines[0]
    assert {s["variant"] for s in after["sources"]} >= {k.split("@")[0] for k in before}


def test_records_of_one_model_made_at_the_same_instant_that_disagree_are_refused_naming_both(tmp_path, capsys,
                                                                                              quiet_runs, size_records):
    """A hostile pass: two size records of deit_ti with the same `created` and params 1 apart: named zz-dup.json, the
    gate said CHANGED; renamed 00-dup.json, "all gates pass"; --write-baseline stored either. Two concurrent
    `bench run`s wrote records of the same second. An identical copy is no conflict."""
    base = tmp_path / "exact.json"
    record = next(r for r in size_records if r.variant == "deit_ti")
    baselines.write_baseline(baselines.make_baseline([record], "exact", check.Tolerances()), base)
    runs = tmp_path / "runs"
    runs.mkdir()
    for name, params in (("00-dup.json", record.metrics.params + 1), ("mine.json", record.metrics.params),
                         ("zz-copy.json", record.metrics.params)):
        (runs / name).write_text(record_with(record, metrics__params=params).to_json())
    for argv in (["--baseline", str(base)], ["--write-baseline", "--baseline", str(tmp_path / "new")]):
        assert cli.main(["check", *argv, "--current", str(runs)]) == 2
        err = capsys.readouterr().err
        assert f"{runs / '00-dup.json'} and {runs / 'mine.json'} are records of deit_ti@224 made at the same instant" \
            in err and "different params" in err
    (runs / "00-dup.json").unlink()
    assert cli.main(["check", "--baseline", str(base), "--current", str(runs)]) == 0  # the identical copy: fine


def test_an_older_record_whose_size_disagrees_with_the_newest_is_refused_not_passed_over(tmp_path, capsys,
                                                                                          size_records):
    """A hostile pass: --current held a correct deit_ti record and an older one with params 1; the gate judged the
    newest and said "all gates pass". Sizes are exact on every machine: two values are two versions of the code."""
    base = tmp_path / "exact.json"
    record = next(r for r in size_records if r.variant == "deit_ti")
    baselines.write_baseline(baselines.make_baseline([record], "exact", check.Tolerances()), base)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "new.json").write_text(record.to_json())
    (runs / "old.json").write_text(record_with(record, metrics__params=1,
                                               env__created="2020-01-01T00:00:00+00:00").to_json())
    assert cli.main(["check", "--baseline", str(base), "--current", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "are records of deit_ti@224 with different params" in err and "two versions of the code" in err
    (runs / "old.json").unlink()
    assert cli.main(["check", "--baseline", str(base), "--current", str(runs)]) == 0
    ten = record_with(record, metrics__params=record.metrics.params - 1000, settings__num_classes=10)
    assert check.exact_disagreement([(runs / "new.json", record), (runs / "ten.json", ten)]) is None  # another head


def test_write_baseline_says_what_a_new_speed_baseline_replaces_and_what_size_records_lack(tmp_path, capsys,
                                                                                          quiet_runs, size_records):
    """A hostile pass: records 20 % slower replaced a machine's speed baseline with no word of it (and the next
    check of the slow records passed); size records alone gave no hint of the relspeed run the docs promised."""
    folder = tmp_path / "baselines"
    first = write_runs(tmp_path / "first", [quiet_runs[0]])
    assert cli.main(["check", "--write-baseline", "--baseline", str(folder), "--current", str(first)]) == 0
    capsys.readouterr()
    slow = write_runs(tmp_path / "slow", [slowed(quiet_runs[0], 1.2)])
    assert cli.main(["check", "--write-baseline", "--baseline", str(folder), "--current", str(slow)]) == 0
    out = capsys.readouterr().out
    assert "replaces the earlier baseline: deit_ti@224 median ratio" in out and "(+20.0 %)" in out
    sizes = write_runs(tmp_path / "sizes", size_records[:1])
    assert cli.main(["check", "--write-baseline", "--baseline", str(tmp_path / "b2"), "--current", str(sizes)]) == 0
    out = capsys.readouterr().out
    assert f"--variant {size_records[0].variant} --metrics relspeed" in out


def test_a_record_no_baseline_gates_is_named_not_passed_over(tmp_path, capsys):
    """A hostile pass: a record with no baseline entry (deit_ti at 256 px) was passed over, "all 20 gates pass"."""
    from bench import cli

    for size in ([], ["--img-size", "64"]):
        assert cli.main(["run", "--variant", "debug", "--device", "cpu", "--metrics", "size", *size,
                         "--results-dir", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    args = ["check", "--baseline", "results/baselines/exact.json", "--current", str(tmp_path)]
    assert cli.main(args) == 1  # the other baselined models are missing
    assert "\nnot gated (no baseline entry): debug@64\n" in capsys.readouterr().out  # debug@32 is gated
    assert cli.main([*args, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["not_gated"] == ["debug@64"]
