"""`bench run`'s summary as a pure function of a record: what each column claims (issue #30); and the notebook
frame of every record under a folder (docs/notebooks.md)."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.record import Record, RecordError, write_record
from bench.registry import VARIANTS
from bench.report import load_frame, summary

ROOT = Path(__file__).resolve().parents[2]

ENV = {"created": "2026-12-05T00:00:00+00:00", "device_name": "AMD EPYC", "num_threads": 2}


def cells(out: str) -> dict[str, dict[str, str]]:
    """The summary's Markdown table as {metric: {column: cell}}."""
    table = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    return {row[0]: dict(zip(table[0], row)) for row in table[2:]}


def test_a_count_beyond_the_papers_rounding_says_so_and_no_reference_column_is_invented():
    """timm's ViT-L/16 at 384 has 304.7 M parameters; the paper prints 307M. timm's ViTs are not registered with
    reference counts, so there is no reference column to compare with."""
    record = Record("vit_l_384", "vit_large_patch16_384", {"img_size": 384, "metrics": ["size"], "device": "cpu"},
                    {"params": 304_715_752, "gmacs": 191.4}, ENV)
    out = summary(record, VARIANTS["vit_l_384"])
    row = cells(out)["params"]
    assert row["paper (Table 5)"] == "307M (as printed)"
    assert row["delta"] == "-2.28 M, beyond the paper's rounding"
    assert list(row) == ["metric", "ours", "how", "paper (Table 5)", "delta"] and "reference" not in out


def test_a_model_without_a_paper_row_shows_no_paper_numbers():
    record = Record("debug", "deit_tiny_patch16_224", {"img_size": 32, "metrics": ["size"], "device": "cpu"},
                    {"params": 100_000, "gmacs": 0.01}, ENV)
    row = cells(summary(record, VARIANTS["debug"]))["params"]
    assert row["paper (no paper row at 32 px)"] == "" and row["delta"] == ""


def test_one_timed_batch_shows_no_spread_rather_than_a_spread_of_zero():
    """A hostile pass: `--iters 1` printed "IQR 0.0, min 10.1, max 10.1" and p50/p90/p99 all equal: one sample's
    spread is unknown, not zero."""
    import json

    record = Record.from_json((ROOT / "results/runs/cpu-avx512/20261205T110029-deit_b-cpu-18a410a9.json").read_text())
    m = json.loads(record.to_json())["metrics"]
    one = Record(record.variant, record.model, record.settings, {**m, "batch_ms_samples": [2002.2719]}, record.env)
    rows = cells(summary(one, VARIANTS["deit_b"]))
    assert rows["batch time, ms"]["how"] == "one timed batch: no spread to show"
    assert rows["latency p50/p90/p99, ms"]["ours"] == "2,002.3 / — / —"
    assert "IQR 82.0" in cells(summary(record, VARIANTS["deit_b"]))["batch time, ms"]["how"]


def test_an_accuracy_record_from_before_the_accuracy_precision_field_reads_as_its_precision():
    """Records written before issue #30 evaluated in `settings.precision` (amp_bf16 under auto on a bf16 CPU)."""
    settings = {"img_size": 32, "metrics": ["accuracy"], "device": "cpu", "precision": "amp_bf16",
                "precision_requested": "auto", "precision_why": "auto: native bf16 on this cpu",
                "eval": {"num_classes": 10, "dataset": "folder", "preprocess": {"protocol": "official", "crop_pct": 0.875}}}
    metrics = {"top1": 50.0, "top5": 90.0, "loss": 1.5, "images": 10, "eval_img_per_s": 100.0}
    record = Record("debug", "deit_tiny_patch16_224", settings, metrics, ENV)
    assert record.accuracy_precision == "amp_bf16"
    out = summary(record, VARIANTS["debug"])
    assert "accuracy in amp_bf16: the run's precision (records without accuracy_precision evaluated in it)" in out
    assert cells(out)["evaluated on"]["ours"].endswith(", amp_bf16")


@pytest.mark.parametrize("classes, label", [(3, "top-5 % (of 3 classes: every class, 100 by construction)"),
                                            (5, "top-5 %"), (10, "top-5 %")])
def test_top5_over_fewer_than_five_classes_says_it_counts_every_class(classes, label):
    """A 3-class checkpoint's top-5 is 100 % whatever the model does (timm's accuracy() takes top-min(5, classes))."""
    settings = {"img_size": 32, "metrics": ["accuracy"], "device": "cpu", "precision": "fp32",
                "eval": {"num_classes": classes, "dataset": "folder",
                         "preprocess": {"protocol": "official", "crop_pct": 0.875}}}
    metrics = {"top1": 50.0, "top5": 100.0, "loss": 1.5, "images": 10, "eval_img_per_s": 100.0}
    rows = cells(summary(Record("debug", "deit_tiny_patch16_224", settings, metrics, ENV), VARIANTS["debug"]))
    assert rows[label]["ours"] == "100.00"
    assert [r for r in rows if r.startswith("top-5")] == [label]


def test_the_frame_has_a_row_per_record_with_flattened_typed_columns(tmp_path):
    env = {**ENV, "git_sha": "abc", "git_dirty": False, "torch": "2.14.1"}
    speed = Record("deit_ti", "deit_tiny_patch16_224", {"img_size": 224, "device": "cpu", "batch_size": 16,
                                                        "precision": "fp32", "protocol": "timm", "compile": False,
                                                        "metrics": ["size", "speed"]},
                   {"params": 5_717_416, "infer_img_per_s": 57.0}, env)
    trained = Record("debug", "debug", {"experiment": "debug", "device": "cpu", "config": {"lr": 1e-3, "epochs": 2},
                                        "history": []},
                     {"final_val_top1": 12.5}, {**env, "created": "2026-12-06T00:00:00+00:00"}, kind="train")
    for r in (trained, speed):
        write_record(r, tmp_path / "sub")
    frame = load_frame(tmp_path)
    assert list(frame["kind"]) == ["bench", "train"]  # oldest first, whatever the file names
    assert frame["metrics.params"].dtype == "Int64" and frame["metrics.params"].isna().tolist() == [False, True]
    assert frame["settings.config.lr"].dtype == "Float64" and frame["settings.config.epochs"].dtype == "Int64"
    assert frame["env.git_dirty"].dtype == "boolean" and isinstance(frame["created"].dtype, pd.DatetimeTZDtype)
    assert all(Path(p).parent == tmp_path / "sub" for p in frame["path"])


def test_the_frame_of_a_folder_with_a_broken_record_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RecordError, match="bad.json"):
        load_frame(tmp_path)


def test_the_notebook_guide_example_runs_on_the_committed_records():
    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "notebooks.md").read_text(), flags=re.S)
    assert len(code) == 1
    run = subprocess.run([sys.executable, "-c", code[0]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "mini_none" in run.stdout and "fp32" in run.stdout


def test_the_paper_column_holds_only_what_the_paper_prints_and_how_we_measured_goes_beside_ours(tmp_path, capsys):
    """A hostile pass found our IQR, batch and GEMM peak under "paper (Table 5)"; the paper prints none of them."""
    from bench import cli

    assert cli.main(["run", "--variant", "deit_ti", "--metrics", "size,speed", "--device", "cpu", "--iters", "2",
                     "--warmup", "1", "--batch-size", "2", "--results-dir", str(tmp_path)]) == 0
    rows = cells(capsys.readouterr().out)
    paper = {metric: row["paper (Table 5)"] for metric, row in rows.items() if row["paper (Table 5)"]}
    assert set(paper) == {"params", "GMACs (batch 1)", "throughput, im/s (median)"}, paper
    assert "V100" in paper["throughput, im/s (median)"] and "not like with like" in rows[
        "throughput, im/s (median)"]["delta"]
    assert "IQR" in rows["batch time, ms"]["how"] and "per batch of 2" in rows["latency p50/p90/p99, ms"]["how"]


@pytest.mark.parametrize("dataset, evaluated, paper", [("imagenet-v2", "10,000 ImageNet-V2 matched frequency", "60.4"),
                                                      ("folder", "50,000 ImageNet val", "72.2")])
def test_the_paper_column_names_the_images_its_top1_was_measured_on(dataset, evaluated, paper):
    """A hostile pass: a V2 evaluation showed the paper's V2 top-1 (60.4) beside "50,000 ImageNet val"."""
    settings = {"img_size": 224, "metrics": ["accuracy"], "device": "cpu", "accuracy_precision": "fp32",
                "eval": {"num_classes": 1000, "dataset": dataset,
                         "preprocess": {"protocol": "official", "crop_pct": 0.875}}}
    metrics = {"top1": 60.0, "top5": 80.0, "loss": 1.5, "images": 10, "eval_img_per_s": 100.0}
    out = cells(summary(Record("deit_ti", "deit_tiny_patch16_224", settings, metrics, ENV), VARIANTS["deit_ti"]))
    column = next(c for c in out["top-1 %"] if c.startswith("paper"))
    assert out["evaluated on"][column] == evaluated and out["top-1 %"][column] == paper
