"""The record schema (bench/schema.py) against what the code writes and what is committed, and the docs
generated from it."""

import json
from pathlib import Path

import pytest

from bench import jsontypes, schema

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(ROOT.glob("results/runs/**/*.json")) + sorted(ROOT.glob("results/side-checks/**/*.json")) + \
    sorted(ROOT.glob("tests/fixtures/**/*.json"))


def records():
    for path in COMMITTED:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "kind" in data:
            yield path, data


def test_every_key_of_every_committed_record_is_in_the_schema():
    missing = {}
    for path, data in records():
        for section in ("settings", "metrics", "env"):
            unknown = schema.undocumented(data["kind"], section, list(data[section]))
            if unknown:
                missing[f"{path.relative_to(ROOT)}:{section}"] = unknown
    assert missing == {}
    assert len(list(records())) > 100


def test_a_fresh_bench_record_is_described_by_the_schema():
    from bench.registry import VARIANTS
    from bench.run import measure, resolve_settings

    record = measure(VARIANTS["debug"], resolve_settings(VARIANTS["debug"], device="cpu", batch_size=2, warmup=0,
                                                         iters=2), log=lambda msg: None)
    for section in ("settings", "metrics", "env"):
        assert schema.undocumented("bench", section, list(getattr(record, section))) == []


def test_an_unknown_key_is_reported():
    assert schema.undocumented("bench", "metrics", ["params", "flops"]) == ["flops"]


def test_docs_records_md_is_generated_from_the_schema():
    """Regenerate with: python -m bench.schema > docs/records.md"""
    assert (ROOT / "docs" / "records.md").read_text() == schema.render()


@pytest.mark.parametrize("kind", list(schema.KINDS))
def test_every_kind_has_its_keys_documented(kind):
    assert schema.section_class(kind, "settings").declared()


def test_sections_are_typed_views_of_exactly_the_json(tmp_path):
    """A record's sections read keys as attributes (None when absent: an older record), stay mappings of exactly
    the keys written, and a record survives the round trip through its file byte for byte."""
    from bench.record import Record, read_record, write_record

    settings = {"img_size": 32, "device": "cpu", "precision": "fp32", "protocol": "timm", "compile": False,
                "metrics": ["size"]}
    record = Record("debug", "deit_tiny_patch16_224", settings, {"params": 7, "top1_cls": 50.0}, {"created": "2026-12-01T00:00:00+00:00"})
    assert isinstance(record.metrics, schema.BenchMetrics) and record.metrics.params == 7
    assert record.metrics.gmacs is None and "gmacs" not in record.metrics and record.metrics["top1_cls"] == 50.0
    assert dict(record.settings) == settings and record.env.created.startswith("2026")
    path = write_record(record, tmp_path)
    assert read_record(path) == record and read_record(path).to_json() == path.read_text()
    train = Record("debug", "m", {"experiment": "debug"}, {}, {}, kind="train")
    assert isinstance(train.settings, schema.TrainSettings) and train.settings.experiment == "debug"


def test_an_unknown_kind_is_refused():
    from bench.record import Record

    with pytest.raises(ValueError, match="unknown record kind 'bogus'"):
        Record("debug", "m", {}, {}, {}, kind="bogus")


# ---- issue #32 row 8: every reader validates types, not only keys ----

@pytest.mark.parametrize("value,expected,problem", [
    (3, int, None), (True, int, "expected int, got bool True"), (3.0, int, "expected int, got float 3.0"),
    (3, float, None), (float("nan"), float, "finite"), ("five million", int, "expected int, got str 'five million'"),
    (None, int | None, None), ([1.0, 2], list[float], None), ([1.0, "x"], list[float], "item 1: expected float"),
    ("fast", list[float], "expected list"), ({"a": 1}, dict, None), ([], dict, "expected dict, got list"),
    ({"a": {"b": 0.5}}, dict[str, dict[str, float]], None),
    ({"a": {"b": "half"}}, dict[str, dict[str, float]], "['a']: ['b']: expected float, got str 'half'"),
    # a hostile pass: JSON's 1 followed by 400 zeros raised OverflowError here, and `bench check` exited 1
    (10**400, float, "expected a finite float, got int 1000"), (10**300, float, None),
    (10**400, int, "expected an int of at most 64 bits"), (10**400, float | None, "expected float | None"),
])
def test_type_problem_says_what_was_expected_and_what_was_found(value, expected, problem):
    found = jsontypes.type_problem(value, expected)
    assert found == problem if problem is None else problem in found


def test_a_sections_problems_name_the_key_and_null_reads_as_not_measured():
    metrics = schema.BenchMetrics({"params": "five million", "mfu": None, "relspeed_ratios": [1.0, None],
                                   "top1_cls": "high", "gpu_anything": "kept", "undeclared": object(), "top1": None})
    assert metrics.problems() == ["params: expected int, got str 'five million'",
                                  "relspeed_ratios: item 1: expected float, got null",
                                  "top1_cls: expected float, got str 'high'",
                                  "top1: null, where it always has a value (a key not measured is left out)"]


def test_every_committed_record_has_the_declared_types():
    bad = {}
    for path, data in records():
        for section in ("settings", "metrics", "env"):
            problems = schema.section_class(data["kind"], section)(data[section]).problems()
            if problems:
                bad[f"{path.relative_to(ROOT)}:{section}"] = problems
    assert bad == {}


@pytest.mark.parametrize("section, data, problem", [
    # a sixth hostile pass: each was read into a table or the gate without a word
    (schema.BenchSettings, {"device": "tpu"}, "device: 'tpu' is not cpu, cuda or cuda:N"),
    (schema.BenchSettings, {"device": "cuda:x"}, "device: 'cuda:x' is not cpu, cuda or cuda:N"),
    (schema.BenchSettings, {"batch_size": 0}, "batch_size: 0 must be positive"),
    (schema.BenchSettings, {"img_size": -224}, "img_size: -224 must be positive"),
    (schema.BenchSettings, {"iters": -8}, "iters: -8 must be positive"),
    (schema.BenchSettings, {"warmup": -1}, "warmup: -1 must be 0 or more"),
    (schema.BenchSettings, {"protocol": "TIMM"}, "protocol: 'TIMM' is not timm or paper"),
    (schema.BenchMetrics, {"relspeed_ratios": [1.0, -1.0]}, "relspeed_ratios: holds -1.0; a ratio of two times is > 0"),
    (schema.TrainMetrics, {"best_val_top1_cls": 101.0}, "best_val_top1_cls: 101.0 must be a percentage"),
    (schema.TrainSettings, {"history": [{"epoch": 1, "val_top1": "x"}]}, "history: item 0: val_top1: expected float"),
    (schema.ConfigSettings, {"lr_schedule": [[0, 1e-3], [-5, 1e-3]]}, "lr_schedule: item 1: [-5, 0.001] is not an epoch"),
    (schema.ConfigSettings, {"lr_schedule": [[0, float("nan")]]}, "lr_schedule: item 0: expected [epoch, learning rate]"),
    # a ninth hostile pass: each was read into a table without a word
    (schema.Env, {"num_threads": 0}, "num_threads: 0 must be positive"),
    (schema.BenchMetrics, {"peak_mem_mib": -100.0}, "peak_mem_mib: -100.0 is negative"),
    (schema.BenchMetrics, {"timed_other_cores": -3.0}, "timed_other_cores: -3.0 is negative"),
    (schema.TrainMetrics, {"timed_other_cores": -3.0}, "timed_other_cores: -3.0 is negative"),
    (schema.BenchMetrics, {"peak_tflops_measured": 0.0}, "peak_tflops_measured: 0.0 must be positive"),
    (schema.StepSpeedMetrics, {"ours_img_per_s": 10.0, "gflop_per_image": 40.0, "ours_mfu": 0.9,
                               "ours_peak_tflops_measured": 0.43}, "ours_mfu: 0.9 disagrees with"),
])
def test_values_no_run_writes_are_refused_naming_the_key(section, data, problem):
    assert any(problem in p for p in section(data).problems()), section(data).problems()


@pytest.mark.parametrize("section, data", [
    (schema.BenchSettings, {"device": "cuda:1", "batch_size": 1, "img_size": 32, "iters": 1, "warmup": 0,
                            "protocol": "paper"}),
    (schema.TrainMetrics, {"best_val_top1_epoch": 250.0, "final_val_loss": 250.0, "final_val_top5_dist": 100.0}),
    (schema.ConfigSettings, {"lr_schedule": [[0, 0.0], [0.5, 1e-3], [0.5, 2e-3]]}),
])
def test_the_edges_of_what_runs_write_pass(section, data):
    assert [p for p in section(data).problems() if "missing, where every record has it" not in p] == []


QUICK_START = ROOT / "results/runs/cpu-avx512/20261205T110029-deit_b-cpu-18a410a9.json"


@pytest.mark.parametrize("edit, problem", [
    ({"infer_img_per_s": 1e308}, "infer_img_per_s: 1e+308 is neither infer_img_per_s_median nor _mean"),
    ({"infer_img_per_s": 80.0, "infer_img_per_s_median": 80.0},
     "infer_img_per_s_median: 80.0 disagrees with infer_batch_size × 1000 / batch_ms_median, 7.99092"),
    ({"batch_ms_median": 200.0}, "batch_ms_median: 200.0 disagrees with the median of batch_ms_samples, 2002.27"),
    ({"achieved_tflops": 2.81}, "achieved_tflops: 2.81 disagrees with 2 × gmacs × infer_img_per_s / 1000, 0.281005"),
    ({"mfu_measured": 0.9}, "mfu_measured: 0.9 disagrees with achieved_tflops / peak_tflops_measured, 0.655513"),
    ({"peak_tflops_datasheet": 989.0, "mfu": 0.5}, "mfu: 0.5 disagrees with 2 × gmacs × infer_img_per_s / 1000 / "),
])
def test_a_speed_number_that_disagrees_with_what_it_is_computed_from_is_refused(edit, problem):
    metrics = json.loads(QUICK_START.read_text())["metrics"]
    assert schema.BenchMetrics(metrics).problems() == []
    problems = schema.BenchMetrics({**metrics, **edit}).problems()
    assert any(p.startswith(problem) for p in problems), problems
