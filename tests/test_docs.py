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
