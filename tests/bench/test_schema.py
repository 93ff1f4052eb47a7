"""The record schema (bench/schema.py) against what the code writes and what is committed, and the docs
generated from it."""

import json
from pathlib import Path

import pytest

from bench import schema

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
    assert any(kind in k.kinds for k in schema.SCHEMA if k.section == "settings")
