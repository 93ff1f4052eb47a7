import json
import os

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


def test_a_record_of_another_schema_version_is_refused(record):
    data = json.loads(record.to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema"):
        Record.from_json(json.dumps(data))


def test_the_environment_names_code_libraries_hardware_and_command():
    env = collect_env("some device")
    assert ENV_KEYS <= set(env) and env["device_name"] == "some device"
    assert env["num_threads"] >= 1 and env["created"].endswith("+00:00")
