"""`bench run`'s summary as a pure function of a record: what each column claims (issue #30)."""

from bench.record import Record
from bench.registry import VARIANTS
from bench.report import summary

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
    assert row["paper (Table 5)"] == "307M (rounded to millions)"
    assert row["delta"] == "-2.28 M, beyond the paper's rounding"
    assert list(row) == ["metric", "ours", "paper (Table 5)", "delta"] and "reference" not in out


def test_a_model_without_a_paper_row_shows_no_paper_numbers():
    record = Record("debug", "deit_tiny_patch16_224", {"img_size": 32, "metrics": ["size"], "device": "cpu"},
                    {"params": 100_000, "gmacs": 0.01}, ENV)
    row = cells(summary(record, VARIANTS["debug"]))["params"]
    assert row["paper (no paper row at 32 px)"] == "" and row["delta"] == ""


def test_an_accuracy_record_from_before_the_accuracy_precision_field_reads_as_its_precision():
    """Records written before issue #30 evaluated in `settings.precision` (amp_bf16 under auto on a bf16 CPU)."""
    settings = {"img_size": 32, "metrics": ["accuracy"], "device": "cpu", "precision": "amp_bf16",
                "precision_requested": "auto", "precision_why": "auto: native bf16 on this cpu",
                "eval": {"num_classes": 10, "dataset": "folder", "preprocess": {"protocol": "official", "crop_pct": 0.875}}}
    metrics = {"top1": 50.0, "top5": 90.0, "loss": 1.5, "images": 10, "eval_img_per_s": 100.0}
    record = Record("debug", "deit_tiny_patch16_224", settings, metrics, ENV)
    assert record.accuracy_precision == "amp_bf16"
    out = summary(record, VARIANTS["debug"])
    assert "accuracy in amp_bf16: the run's precision (records before issue #30 evaluated in it)" in out
    assert cells(out)["evaluated on"]["ours"].endswith(", amp_bf16")
