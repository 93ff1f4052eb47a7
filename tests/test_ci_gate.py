"""`.ci/gate`'s exit codes, with a stand-in `bench` that answers each call with a given exit code: the gate's
decisions are the script's, not bench's."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gate(tmp_path, codes):
    """Run .ci/gate with `bench` answering its calls with `codes` in turn; its exit code and bench's calls."""
    calls = tmp_path / "calls"
    (tmp_path / "codes").write_text("\n".join(map(str, codes)) + "\n")
    fake = tmp_path / "bin" / "bench"
    fake.parent.mkdir()
    fake.write_text(f"""#!/usr/bin/env bash
echo "$1" >> {calls}
code=$(head -n 1 {tmp_path / 'codes'}); sed -i 1d {tmp_path / 'codes'}
exit "$code"
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO / ".ci" / "gate")], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, calls.read_text().split()


@pytest.mark.parametrize("codes, expected, calls", [
    ([0, 0, 0], 0, ["run", "check", "check"]),
    ([2], 2, ["run"]),
    ([130], 130, ["run"]),  # a Ctrl-C of the first step read as a usage error, 2 (a hostile pass)
    ([143], 143, ["run"]),
    ([1], 2, ["run"]),  # the size step crashed: no verdict, never the gate's "regression" (a review)
    ([0, 1], 1, ["run", "check"]),  # an exact quantity changed: no speed A/B
    ([0, 0, 1, 1], 1, ["run", "check", "check", "check"]),  # a slowdown confirmed
    ([0, 0, 1, 0], 0, ["run", "check", "check", "check"]),  # not confirmed
    ([0, 0, 3, 3], 0, ["run", "check", "check", "check"]),  # inconclusive twice: not gated
    ([0, 0, 130], 130, ["run", "check", "check"]),
    ([0, 0, 1, 130], 130, ["run", "check", "check", "check"]),  # Ctrl-C in the second measurement: exit 0 before
    ([0, 0, 3, 2], 2, ["run", "check", "check", "check"]),
])
def test_the_gate_passes_on_verdicts_and_stops_with_any_other_exit_code(tmp_path, codes, expected, calls):
    assert gate(tmp_path, codes) == (expected, calls)
