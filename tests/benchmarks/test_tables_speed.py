"""Issue #5's target: `bench tables` over a few hundred records in <= 5 s (not part of the default run):

    pytest tests/benchmarks/test_tables_speed.py -m benchmark -s
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tables" / "records"


def test_bench_tables_over_three_hundred_records(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    files = sorted(FIXTURES.glob("*.json"))
    for copy in range(300 // len(files) + 1):  # the committed real records, copied under new names
        for f in files:
            shutil.copy(f, records / f"{copy:03d}-{f.name}")
    count = len(list(records.iterdir()))
    for label, extra in (("tables only", ["--no-figures"]), ("tables and figures", [])):
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "bench", "tables", "--records", str(records),
                              "--out", str(tmp_path / "t"), "--figures", str(tmp_path / "f"), *extra],
                             capture_output=True, text=True, timeout=120)
        wall = time.perf_counter() - start
        assert run.returncode == 0, run.stderr
        print(f"\nbench tables, {count} records, {label}: {wall:.2f} s wall (new process, imports included; "
              "target <= 5 s)")
        assert wall <= 5.0
