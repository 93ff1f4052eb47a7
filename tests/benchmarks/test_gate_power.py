"""Live check of the A/B speed gate's power, measured as CI runs it: `bench check --against BASE` in a clone of this
repository whose HEAD is a commit that adds real work on top of BASE (bench/ab.py; docs/regression-gate.md):

- a 10 % slowdown of DeiT-Ti's forward and of the training step: each reported as a regression in at least 9 of 10
  runs on a quiet machine;
- a 25 % one: reported as a regression or inconclusive, never passed, in at least 9 of 10 runs while two CPU-bound
  processes compete for both cores;
- an unchanged tree (HEAD = BASE): no regression in 10 runs while two CPU-bound processes compete.

The injected commit appends code to bench/registry.py (extra elementwise passes after every DeiT block: work inside
the model's blocks, no change of parameters or MACs) and to reproduce/train.py (extra 256² matrix products in every
training step), as many as make the given fraction of each workload's CPU time, calibrated here from the cost of one
pass and one product. Each gate run's verdicts and estimates go to $GATE_POWER_OUT/<scenario>.json when set.
Not part of the default run; one scenario takes 25-45 minutes on 2 cores:
    pytest tests/benchmarks/test_gate_power.py -m benchmark -s -k quiet
    pytest tests/benchmarks/test_gate_power.py -m benchmark -s -k "loaded and slowdown"
    pytest tests/benchmarks/test_gate_power.py -m benchmark -s -k "loaded and unchanged"
"""

import json
import math
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.benchmark
TRIALS = int(os.environ.get("GATE_POWER_TRIALS", 10))  # fewer only for a smoke run of this file
REPO = Path(__file__).resolve().parents[2]

BLOCKS = '''

def _heavier(build, passes={passes}):
    """Injected slowdown (tests/benchmarks/test_gate_power.py): extra elementwise passes after every DeiT block."""
    def built(self, **overrides):
        model = build(self, **overrides)
        for block in getattr(model, "blocks", []) if self.name.startswith("deit") else []:
            block.forward = _slowed(block.forward, passes)
        return model
    return built


def _slowed(forward, passes):
    import torch

    def slowed(x, *args, **kwargs):
        out = forward(x, *args, **kwargs)
        for _ in range(passes):
            out = out + 0.0 * torch.tanh(out)
        return out
    return slowed


Variant.build = _heavier(Variant.build)
'''

STEP = '''

def _burdened(step, products={products}):
    """Injected slowdown (tests/benchmarks/test_gate_power.py): extra 256² matrix products in every training step."""
    a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))

    def burdened(self, *args, **kwargs):
        for _ in range(products):
            a @ a
        return step(self, *args, **kwargs)
    return burdened


Recipe.step = _burdened(Recipe.step)
'''


@dataclass(frozen=True)
class Clone:
    root: Path
    base: str
    slowed: dict[float, str]  # fraction -> branch


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


def _cpu_time(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _workload_times() -> tuple[float, float]:
    """Median CPU time per call of the two gate workloads, built now (so an injected slowdown applies)."""
    from bench.speed import gate_workload as inference
    from reproduce.stepspeed import gate_workload as step

    torch.set_num_threads(1)
    return _cpu_time(inference()[1], 15), _cpu_time(step()[1], 15)


def _injected_times(passes: int, products: int) -> tuple[float, float]:
    """The workloads' times with the injection's code applied in this process (the same text the commit appends)."""
    from bench import registry
    from reproduce import train

    build, step = registry.Variant.build, train.Recipe.step
    try:
        exec(BLOCKS.format(passes=passes), {"Variant": registry.Variant})
        exec(STEP.format(products=products), {"Recipe": train.Recipe, "torch": torch})
        return _workload_times()
    finally:
        registry.Variant.build, train.Recipe.step = build, step


def calibrate(fraction: float) -> tuple[int, int]:
    """(elementwise passes per DeiT block, 256² products per step) that add `fraction` to each workload's CPU time:
    first from the cost of one pass and one product, then scaled once by what the injection measured."""
    x, a = torch.randn(4, 197, 192), torch.randn(256, 256)
    torch.set_num_threads(1)
    with torch.inference_mode():
        per_pass = _cpu_time(lambda: x + 0.0 * torch.tanh(x), 201)
    per_product = _cpu_time(lambda: a @ a, 201)
    forward_s, step_s = _workload_times()
    passes = max(1, round(fraction * forward_s / (12 * per_pass)))  # DeiT-Ti has 12 blocks
    products = max(1, round(fraction * step_s / per_product))
    slow_forward, slow_step = _injected_times(passes, products)
    forward_gain, step_gain = slow_forward / forward_s - 1, slow_step / step_s - 1
    if fraction / 3 < forward_gain < 3 * fraction:  # else the machine was too noisy to correct the first estimate
        passes = max(1, round(passes * fraction / forward_gain))
    if fraction / 3 < step_gain < 3 * fraction:
        products = max(1, round(products * fraction / step_gain))
    slow_forward, slow_step = _injected_times(passes, products)
    print(f"\n+{fraction:.0%}: {passes} passes per block, {products} products per step; measured in this process "
          f"{100 * (slow_forward / forward_s - 1):+.1f} % and {100 * (slow_step / step_s - 1):+.1f} %")
    return passes, products


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Clone:
    root = tmp_path_factory.mktemp("power") / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    base, slowed = _git(root, "rev-parse", "HEAD"), {}
    for fraction in (0.10, 0.25):
        passes, products = calibrate(fraction)
        branch = f"slow{round(100 * fraction)}"
        _git(root, "checkout", "-q", "-b", branch, base)
        with open(root / "bench/registry.py", "a") as f:
            f.write(BLOCKS.format(passes=passes))
        with open(root / "reproduce/train.py", "a") as f:
            f.write(STEP.format(products=products))
        _git(root, "-c", "user.name=power", "-c", "user.email=power@test", "commit", "-qam", f"+{fraction:.0%} slower")
        slowed[fraction] = branch
    _git(root, "checkout", "-q", base)
    return Clone(root, base, slowed)


def gate(clone: Clone, head: str, trial: int) -> dict:
    """One `bench check --against BASE` with the clone at `head`: its exit code and per workload (verdict, estimate)."""
    _git(clone.root, "checkout", "-q", head)
    record = clone.root.parent / f"ab-{head}-{trial}.json"
    env = {**os.environ, "PYTHONPATH": str(clone.root)}
    done = subprocess.run([sys.executable, "-m", "bench", "check", "--against", clone.base, "--ab-record", str(record)],
                          cwd=clone.root, env=env, capture_output=True, text=True)
    assert done.returncode in (0, 1, 3), done.stderr
    data = json.loads(record.read_text())
    outcome = {w["workload"]: (w["verdict"], w["shift"]["estimate"], w["shift"]["low"], w["shift"]["high"],
                               sum(not c for c in w["contended"])) for w in data["workloads"]}
    print(f"{head} trial {trial}: exit {done.returncode}; " + "; ".join(
        f"{name} {v} ({100 * math.expm1(e):+.1f} %, {quiet} quiet)" for name, (v, e, _, _, quiet) in outcome.items())
        + f"; {data['seconds']:.0f} s", flush=True)
    return {"exit": done.returncode, "seconds": data["seconds"], "workloads": outcome}


@contextmanager
def competing_processes(n=2):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(1)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_trials(clone: Clone, head: str, scenario: str) -> dict[str, list[str]]:
    trials = [gate(clone, head, t) for t in range(TRIALS)]
    out = os.environ.get("GATE_POWER_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        summary = {"scenario": scenario, "head": head, "base": clone.base, "trials": trials,
                   "cpu": _cpu_name(), "competitors": 2 if "loaded" in scenario else 0}
        (Path(out) / f"{scenario}.json").write_text(json.dumps(summary, indent=1) + "\n")
    names = trials[0]["workloads"]
    return {name: [t["workloads"][name][0] for t in trials] for name in names}


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


def test_quiet_a_10_percent_slowdown_is_a_regression_in_9_of_10_runs(clone):
    verdicts = run_trials(clone, clone.slowed[0.10], "quiet-slowdown-10")
    for name, outcomes in verdicts.items():
        assert outcomes.count("regression") >= 0.9 * TRIALS, (name, outcomes)


def test_loaded_a_25_percent_slowdown_is_never_passed(clone):
    with competing_processes():
        verdicts = run_trials(clone, clone.slowed[0.25], "loaded-slowdown-25")
    for name, outcomes in verdicts.items():
        assert "pass" not in outcomes and "improved" not in outcomes, (name, outcomes)


def test_loaded_an_unchanged_tree_is_never_a_regression(clone):
    with competing_processes():
        verdicts = run_trials(clone, clone.base, "loaded-unchanged")
    for name, outcomes in verdicts.items():
        assert "regression" not in outcomes, (name, outcomes)


def power_table(folder: Path) -> str:
    """The Markdown power table of docs/regression-gate.md from the scenario files this test wrote to $GATE_POWER_OUT:
    python tests/benchmarks/test_gate_power.py FOLDER"""
    lines = ["| scenario | workload | median estimate | regression | inconclusive | pass | quiet rounds | minutes per run |",
             "|:--|:--|--:|--:|--:|--:|--:|--:|"]
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        trials = data["trials"]
        minutes = statistics.median(t["seconds"] for t in trials) / 60
        for name in trials[0]["workloads"]:
            runs = [t["workloads"][name] for t in trials]
            verdicts = [r[0] for r in runs]
            estimate = statistics.median(math.expm1(r[1]) for r in runs)
            quiet = statistics.median(r[4] for r in runs)
            lines.append(f"| {data['scenario']} | {name} | {100 * estimate:+.1f} % | {verdicts.count('regression')} | "
                         f"{verdicts.count('inconclusive')} | {verdicts.count('pass')} | {quiet:g} | {minutes:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(power_table(Path(sys.argv[1])))
