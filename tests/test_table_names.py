"""Every experiment a table or figure reads is registered in `reproduce/experiments.py`: `bench` cannot import that
registry (tests/test_layers.py), so a renamed experiment would otherwise turn its row into "not run" unnoticed."""

from dataclasses import replace

import pytest

from bench import ablations, figures, tables, trained
from reproduce.experiments import EXPERIMENTS


def experiments_read(monkeypatch, tmp_path) -> set[str]:
    """The experiments every table and figure asks the records for (all go through `trained.runs_of`)."""
    asked: set[str] = set()
    runs_of = trained.runs_of

    def spy(records, experiment, kinds=("train",)):
        asked.add(experiment)
        return runs_of(records, experiment, kinds)
    monkeypatch.setattr(trained, "runs_of", spy)
    tables.build_all([])
    for scale in ("mini", "cifar10"):
        figures.table3_curves([], tmp_path, scale)
        figures.gallery([], tmp_path, scale)
    for spec in tables.ABLATIONS:
        if isinstance(spec, ablations.Versus) and spec.figure:
            figures.ablation_curves([], tmp_path, spec)
    return asked


def test_every_experiment_a_table_or_figure_reads_is_registered(monkeypatch, tmp_path):
    asked = experiments_read(monkeypatch, tmp_path)
    assert sorted(asked - set(EXPERIMENTS)) == []
    assert {"deit_b", "mini_none", "mini_attn", "deit_b_transfer_cifar10", "deit_b_sgd"} <= asked


@pytest.mark.parametrize("spec", ablations.ABLATIONS, ids=lambda spec: spec.name)
def test_each_ablation_names_registered_experiments_only(spec):
    assert [name for name in spec.experiments() if name not in EXPERIMENTS] == []


def test_a_table_that_names_an_unregistered_experiment_fails_the_check(monkeypatch, tmp_path):
    attention = ablations.get("table_attention_mini")
    renamed = replace(attention, rows=attention.rows + (ablations.Row("a renamed row", "mini_atn"),))
    monkeypatch.setattr(tables, "ABLATIONS", (renamed,))
    assert experiments_read(monkeypatch, tmp_path) - set(EXPERIMENTS) == {"mini_atn"}
