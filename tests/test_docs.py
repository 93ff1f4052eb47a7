"""The worked examples of docs/extending.md run as they are, each in a fresh interpreter from the repository
root (they register things; a subprocess keeps that out of the other tests)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(), flags=re.S)


def test_the_extending_guide_has_an_example_for_a_variant_a_table_an_experiment_and_an_ablation():
    assert len(BLOCKS) == 4


@pytest.mark.parametrize("code", BLOCKS, ids=["variant", "table", "experiment", "ablation"])
def test_each_example_of_the_extending_guide_runs(code):
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


NAMED = r"`((?:deit|mini|cifar|vit)_\w+)`|--experiment[ =]([a-z][a-z0-9_]*)\b"  # a name in backticks, an experiment


def test_every_experiment_variant_or_model_the_docs_name_exists():
    """docs/training.md named `deit_b_cifar10_transfer`, which is registered as `deit_b_transfer_cifar10` (an audit):
    a reader typing it got "unknown experiment". Names in backticks or after --experiment must be registered (an
    experiment, a bench variant) or be timm's; the extending guide's own example registers one more."""
    import timm

    from bench.registry import VARIANTS
    from reproduce.experiments import EXPERIMENTS

    known = set(EXPERIMENTS) | set(VARIANTS) | set(timm.list_models()) | set(re.findall(
        r'@experiment\("(\w+)"', (ROOT / "docs" / "extending.md").read_text()))
    unknown = sorted({(doc.name, name) for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
                      for match in re.finditer(NAMED, doc.read_text())
                      if (name := match.group(1) or match.group(2)) not in known})
    assert not unknown
