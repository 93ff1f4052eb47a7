import json
import os
from pathlib import Path

import pytest

from bench.record import SCHEMA_VERSION, Record, collect_env, load_records, write_record
from bench.registry import VARIANTS
from bench.run import measure, resolve_settings

ENV_KEYS = {"git_sha", "git_dirty", "python", "torch", "torchvision", "timm", "fvcore", "cuda",
            "device_name", "cpu", "num_threads", "created", "command", "fingerprint"}


@pytest.fixture(scope="module")
def record():
    settings = resolve_settings(VARIANTS["debug"], device="cpu", batch_size=4, warmup=1, iters=3)
    return measure(VARIANTS["debug"], settings, log=lambda msg: None)


def test_a_bench_record_carries_the_keys_other_tools_read(record):
    data = json.loads(record.to_json())
    assert data["schema_version"] == SCHEMA_VERSION and data["kind"] == "bench"
    assert data["variant"] == "debug" and data["model"] == "deit_tiny_patch16_224"
    assert {"device", "precision", "batch_size", "img_size", "protocol", "compile", "warmup", "iters",
            "stat", "batch_policy", "threads", "precision_requested", "precision_why"} <= set(data["settings"])
    assert {"params", "gmacs", "infer_img_per_s", "infer_batch_size", "latency_ms_p50", "latency_ms_p99",
            "peak_mem_mib", "timer", "batch_ms_samples"} <= set(data["metrics"])
    assert ENV_KEYS <= set(data["env"])
    assert data["settings"]["batch_size"] == data["metrics"]["infer_batch_size"] == 4
    assert len(data["metrics"]["batch_ms_samples"]) == 3


def test_the_record_names_its_machine_and_why_its_precision_was_chosen(record):
    from bench import machine

    fingerprint = record.env["fingerprint"]
    here = machine.detect("cpu", record.settings["threads"])
    assert fingerprint["id"] == here.id() and fingerprint["isa"] == list(here.isa)
    assert record.settings["precision_requested"] == "auto"
    expected = "amp_bf16" if here.native_bf16 else "fp32"
    assert record.settings["precision"] == expected and record.settings["precision_why"].startswith("auto:")


def test_records_round_trip_and_are_never_overwritten(record, tmp_path):
    first, second = write_record(record, tmp_path), write_record(record, tmp_path)
    assert first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])
    assert load_records(tmp_path) == [record, record]


@pytest.mark.parametrize("where", ["os.fsync", "os.link"])
def test_an_interrupted_write_leaves_no_file_behind(record, tmp_path, monkeypatch, where):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_record(record, tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_folder_a_concurrent_failed_write_takes_back_before_our_file_is_made_again(record, tmp_path, monkeypatch):
    """A failed write takes back the empty folders it made; another writer's mkdir could fall between its mkdir and
    its removal, and that writer then failed (a review)."""
    import tempfile

    from bench import store

    real, calls = tempfile.mkstemp, []

    def other_writer_takes_the_folder_back(*args, dir, **kwargs):
        calls.append(dir)
        if len(calls) == 1:
            store.remove_if_empty([Path(dir), Path(dir).parent])
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(store.tempfile, "mkstemp", other_writer_takes_the_folder_back)
    written = write_record(record, tmp_path / "new" / "records")
    assert len(calls) == 2 and load_records(tmp_path / "new" / "records") == [record]
    assert written.parent == tmp_path / "new" / "records"


def test_a_record_of_another_schema_version_is_refused(record):
    data = json.loads(record.to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema"):
        Record.from_json(json.dumps(data))


def test_the_environment_names_code_libraries_hardware_and_command():
    env = collect_env("some device")
    assert ENV_KEYS <= set(env) and env["device_name"] == "some device"
    assert env["num_threads"] >= 1 and env["created"].endswith("+00:00")


def test_a_copy_without_git_history_names_its_commit_from_the_environment(monkeypatch):
    from bench import record

    monkeypatch.setattr(record, "_git", lambda *args: None)  # a lent GPU's copy of the working tree: no .git
    monkeypatch.setenv("DEIT_BENCH_GIT_SHA", "64c0236" * 5 + "ab")
    monkeypatch.setenv("DEIT_BENCH_GIT_DIRTY", "1")
    env = collect_env("cpu")
    assert (env["git_sha"], env["git_dirty"]) == ("64c0236" * 5 + "ab", True)
    monkeypatch.delenv("DEIT_BENCH_GIT_SHA")
    monkeypatch.delenv("DEIT_BENCH_GIT_DIRTY")
    assert (collect_env("cpu")["git_sha"], collect_env("cpu")["git_dirty"]) == (None, None)  # unknown, not guessed


@pytest.mark.parametrize("argv0, program", [("/site/bench/__main__.py", "bench"), ("/x/reproduce/__main__.py",
                                             "reproduce"), ("/venv/bin/bench", "bench")])
def test_the_recorded_command_can_be_typed_again(monkeypatch, argv0, program):
    """`python -m bench run …` was recorded as `__main__.py run …`."""
    monkeypatch.setattr("sys.argv", [argv0, "run", "--variant", "debug"])
    assert collect_env("cpu")["command"] == f"{program} run --variant debug"


# ---- issue #32: a record of the wrong types, or a file that is not a regular file, is named and left out ----

def doctored(record, tmp_path, name="bad.json", **changes):
    """`record` as a file with `section__key=value` changes (or a top-level `key=value`)."""
    data = json.loads(record.to_json())
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        (data[section] if section else data)[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("changes,field", [
    ({"metrics__params": "five million"}, "metrics.params"),
    ({"metrics__gmacs": [1.0]}, "metrics.gmacs"),
    ({"metrics__infer_img_per_s": True}, "metrics.infer_img_per_s"),
    ({"metrics__batch_ms_samples": None, "metrics__latency_ms_p50": "1 ms"}, "metrics.latency_ms_p50"),
    ({"settings__img_size": 224.5}, "settings.img_size"),
    ({"settings__compile": "no"}, "settings.compile"),
    ({"settings__metrics": ["size", 3]}, "settings.metrics"),
    ({"env__created": 20261201}, "env.created"),
    ({"env__created": "yesterday"}, "env.created: 'yesterday' is not an ISO 8601 time"),  # was compared as text
    # a hostile pass: a record dated 2099 hid every later one from the gate and the tables; one without a zone
    # was ordered as if it were UTC
    ({"env__created": "2099-01-01T00:00:00+00:00"}, "env.created: '2099-01-01T00:00:00+00:00' is in the future"),
    ({"env__created": "2026-12-05T12:00:00"}, "env.created: '2026-12-05T12:00:00' has no time zone"),
    ({"kind": "train"}, "settings.experiment: missing"),  # a bench record's settings: AttributeError in bench check
    ({"env__fingerprint": "this machine"}, "env.fingerprint"),
    ({"variant": 7}, "variant"),
    ({"notes": "a note"}, "notes"),
])
def test_a_record_of_the_wrong_types_is_refused_naming_the_file_and_the_field(record, tmp_path, changes, field):
    from bench.record import RecordError, read_record

    path = doctored(record, tmp_path, **changes)
    with pytest.raises(RecordError) as caught:
        read_record(path)
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_an_integer_beyond_pythons_digit_limit_is_named_without_pythons_advice(record, tmp_path):
    """A hostile pass: a 5000-digit integer was refused with "use sys.set_int_max_str_digits()"."""
    from bench.record import RecordError, read_record

    path = doctored(record, tmp_path)
    path.write_text(path.read_text().replace('"params": ', '"params": ' + "9" * 5000 + ", \"was\": ", 1))
    with pytest.raises(RecordError, match="an integer of more than 4,300 digits") as refused:
        read_record(path)
    assert "set_int_max_str_digits" not in str(refused.value)


def test_a_record_whose_fields_contradict_each_other_is_refused(record, tmp_path):
    """A hostile pass: `variant: deit_ti` with DeiT-B's model put DeiT-B's size and speed in the DeiT-Ti row; a
    record's threads under a column of another thread count; a fingerprint's ISA edited under its old id."""
    from bench.record import RecordError, read_record

    fingerprint = {**record.env["fingerprint"], "isa": ["avx2"]}
    for changes, said in (({"model": "deit_base_patch16_224"}, "model: 'deit_base_patch16_224' is deit_b's timm "
                                                                "model, not debug's"),
                          ({"settings__threads": record.env["num_threads"] + 1}, "is not env.num_threads"),
                          ({"env__fingerprint": fingerprint}, "env.fingerprint.id: "),
                          # a ninth hostile pass: each made a column of its own, or a cell of "not run", silently
                          ({"settings__precision": "fp16"}, "'fp16' runs only on a CUDA GPU, and settings.device is cpu"),
                          ({"settings__iters": len(record.metrics["batch_ms_samples"]) + 1}, "timed batches, where "
                                                                                             "settings.iters says"),
                          ({"env__torch": "2.99.0"}, "env.torch: '2.99.0' is not the fingerprint's torch")):
        with pytest.raises(RecordError, match=said):
            read_record(doctored(record, tmp_path, **changes))
    assert read_record(doctored(record, tmp_path, "same.json")) == record
    # what a later version may change stays readable (a review): a model name no variant has now, a fingerprint
    # written with another set of fields
    assert read_record(doctored(record, tmp_path, "renamed.json", model="deit_tiny_patch16_224.renamed")).variant
    older = {k: v for k, v in fingerprint.items() if k != "gpu_power_limit_w"}
    assert read_record(doctored(record, tmp_path, "older.json", env__fingerprint=older)).variant


def test_a_record_without_its_time_is_skipped_by_bench_tables_and_refused_by_bench_check(record, tmp_path, capsys):
    """A hostile pass: `bench tables` crashed comparing None with a time, and `bench check` on a record whose kind
    disagreed with its settings raised AttributeError."""
    from bench import cli

    runs = tmp_path / "runs"
    write_record(record, runs)
    data = json.loads(record.to_json())
    del data["env"]["created"]
    (runs / "no-time.json").write_text(json.dumps(data))
    code = cli.main(["tables", "--records", str(runs), "--out", str(tmp_path / "t"), "--no-figures"])
    out, err = capsys.readouterr()
    assert code == 0 and "1 records" in out and f"skipped {runs / 'no-time.json'}: env.created: missing" in err
    current = tmp_path / "current"
    current.mkdir()
    doctored(record, current, kind="train")
    assert cli.main(["check", "--baseline", "results/baselines/exact.json", "--current", str(current)]) == 2
    assert "settings.experiment: missing" in capsys.readouterr().err


def test_records_are_ordered_by_the_instant_they_name_not_by_their_text(record, tmp_path):
    """20:30 at UTC-2 is 22:30 UTC, after 21:00 UTC; as text it came first, and Table 5 showed the older run."""
    early = doctored(record, tmp_path, "early.json", env__created="2026-12-05T21:00:00+00:00", variant="early")
    late = doctored(record, tmp_path, "late.json", env__created="2026-12-05T20:30:00-02:00", variant="late")
    assert early and late and [r.variant for r in load_records(tmp_path)] == ["early", "late"]


def test_a_non_finite_number_is_refused(record, tmp_path):
    from bench.record import RecordError, read_record

    path = tmp_path / "nan.json"
    path.write_text(record.to_json().replace('"gmacs": ', '"gmacs": NaN, "x_gmacs": '))
    with pytest.raises(RecordError, match="metrics.gmacs: expected a finite float, got float nan"):
        read_record(path)


def test_json_nested_too_deeply_is_refused_not_a_recursion_error(tmp_path):
    from bench.record import RecordError, read_record

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RecordError, match="nested too deeply"):
        read_record(tmp_path / "deep.json")


def test_a_fifo_among_records_is_skipped_not_waited_on(record, tmp_path):
    """#32 row 15: `bench tables` hung on a FIFO named x.json."""
    import signal

    write_record(record, tmp_path)
    os.mkfifo(tmp_path / "x.json")
    (tmp_path / "folder.json").mkdir()
    skipped = []

    def hung(*args):
        raise TimeoutError("load_records waited on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)  # a hang fails the test instead of the session
    signal.alarm(10)
    try:
        assert load_records(tmp_path, skip_bad=skipped.append) == [record]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    # a folder named folder.json is a folder, whose records are read: no "unreadable record" (a hostile pass)
    assert [str(e) for e in skipped] == [f"{tmp_path / 'x.json'}: not a regular file"]


def test_bench_tables_skips_a_bad_record_with_a_warning_naming_file_and_field(record, tmp_path, capsys):
    """#32 row 8: one record of the wrong types blocked every table."""
    from bench import cli

    runs = tmp_path / "runs"
    write_record(record, runs)
    bad = doctored(record, runs, metrics__params="five million")
    code = cli.main(["tables", "--records", str(runs), "--out", str(tmp_path / "t"), "--no-figures"])
    out, err = capsys.readouterr()
    assert code == 0 and "1 records" in out and "Traceback" not in err
    assert f"skipped {bad}" in err and "metrics.params: expected int, got str 'five million'" in err


def test_load_records_applies_a_readers_own_check_naming_the_file(record, tmp_path):
    from bench.record import RecordError

    path = write_record(record, tmp_path)

    def refuse(r):
        raise ValueError("metrics.relspeed_ratios is missing")

    with pytest.raises(RecordError, match=f"{path}: metrics.relspeed_ratios is missing"):
        load_records(tmp_path, check=refuse)


def test_seeds_pool_whether_their_paths_were_kept_absolute_or_as_typed():
    """A review: a new seed, its teacher_checkpoint absolute (reproduce/config.py: absolute_paths), hid the five
    older seeds of the same configuration, whose path was relative to the repository root."""
    import dataclasses

    from bench.record import REPO_ROOT, portable_paths
    from bench.trained import train_runs

    records = load_records(REPO_ROOT / "results" / "runs")
    older = [r for r in records if r.kind == "train" and r.settings.experiment == "mini_none"]
    config = {**older[-1].settings.config, "seed": 99}
    config.update({k: str(REPO_ROOT / v) for k, v in config.items() if k in ("data", "teacher_checkpoint") and v})
    new = dataclasses.replace(older[-1], settings={**older[-1].settings, "config": config},
                              env={**older[-1].env, "created": "2027-01-01T00:00:00+00:00"},
                              metrics={**older[-1].metrics, "checkpoint_sha256": "9" * 64})  # a run of its own
    seeds = sorted(r.settings.config["seed"] for r in train_runs([*records, new], "mini_none"))
    assert seeds == sorted([*(r.settings.config["seed"] for r in train_runs(records, "mini_none")), 99])
    assert portable_paths({"data": "/elsewhere/ds", "lr": 1.0}) == {"data": "/elsewhere/ds", "lr": 1.0}


def test_the_projects_other_json_files_beside_records_are_passed_over_and_refused_when_named(record, tmp_path):
    """docs/regression-gate.md keeps the A/B rounds beside the size records (`--ab-record $now/ab.json`), and every
    later `bench check --current $now` was refused: "not a deit-bench record" (a hostile pass)."""
    import shutil

    from bench.record import RecordError

    repo = Path(__file__).resolve().parents[2]
    write_record(record, tmp_path)
    shutil.copy(repo / "results/side-checks/ab-gate-2026-12-05/dependency-ab.json", tmp_path / "ab.json")
    (tmp_path / "campaign.json").write_text(json.dumps({"device": "cuda", "dry_run": True, "outcomes": {}}))
    (record,) = load_records(tmp_path)
    with pytest.raises(RecordError, match="ab.json: bench check --ab-record's A/B rounds, not a run's record"):
        load_records(tmp_path / "ab.json")
    (tmp_path / "other.json").write_text(json.dumps({"reference": 1}))  # anything else is still named
    with pytest.raises(RecordError, match="other.json: not a deit-bench record"):
        load_records(tmp_path)


def test_git_variables_of_another_repository_do_not_name_its_commit(tmp_path, monkeypatch):
    """A hostile pass: run inside another repository's git hook (GIT_DIR set), a record named that repository's commit
    and dirty flag as the code that ran."""
    import subprocess

    from bench import record as records

    ours = records._commit()
    other = tmp_path / "other"
    other.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", "-C", str(other), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert records._commit() == ours


def test_a_huge_file_among_records_is_refused_by_its_size_unread(tmp_path):
    """A hostile pass: a 4 GB stray x.json took `bench tables` 40 s and 8.5 GB of memory before it was skipped."""
    from bench.record import MAX_JSON_BYTES, RecordError, load_records

    with open(tmp_path / "zz-big.json", "wb") as f:
        f.truncate(MAX_JSON_BYTES + 1)  # sparse: no disk used
    skipped = []
    assert load_records(tmp_path, skip_bad=skipped.append) == []
    assert "more than any JSON file of this project holds" in str(skipped[0])
    with pytest.raises(RecordError, match="zz-big.json"):
        load_records(tmp_path)
