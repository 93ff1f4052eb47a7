"""Live check of the speed gate's power (issue #17), with the gate's own measurement and scoring:

- a 10 % real slowdown is flagged as a regression in at least 9 of 10 runs on a quiet machine;
- a 25 % one is flagged or reported inconclusive, never passed, in at least 9 of 10 runs while two CPU-bound
  processes compete for the cores; and an unchanged model is never called a regression there.

The slowdown is real work: after each forward, fp32 matrix products sized (calibrated once) to the fraction
of the model's own CPU time. Not part of the default run (~20 minutes on 2 cores). Run with:
    pytest tests/benchmarks/test_gate_power.py -m benchmark -s
"""

import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from bench import check
from bench.record import Record
from bench.registry import VARIANTS
from bench.speed import PRECISIONS, ReferenceEncoder, time_interleaved

pytestmark = pytest.mark.benchmark
TRIALS = 10
BATCH, ROUNDS, BUDGET_S = 4, 40, 60.0  # the gate's settings (.ci/gate)


class SlowedDown(nn.Module):
    """The model plus real extra work: `reps` 256² matmuls per call, `fraction` of the model's CPU time."""

    def __init__(self, model: nn.Module, fraction: float, example: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.a, self.b = torch.randn(256, 256), torch.randn(256, 256)
        model_s, product_s = cpu_time(lambda: model(example)), cpu_time(lambda: self.a @ self.b, calls=50)
        self.reps = round(fraction * model_s / product_s)

    def forward(self, x):
        out = self.model(x)
        for _ in range(self.reps):
            self.a @ self.b
        return out


def cpu_time(fn, calls=9) -> float:
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(calls):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return statistics.median(times)


def measure(model, budget_s=BUDGET_S) -> Record:
    timing = time_interleaved(model, ReferenceEncoder(BATCH), rounds=ROUNDS, batch_size=BATCH, img_size=224,
                              device="cpu", precision=PRECISIONS["fp32"], warmup=2, budget_s=budget_s)
    return Record("deit_ti", "m", {}, {"relspeed_ratios": list(timing.ratios),
                                       "relspeed_contended": list(timing.contended)}, {})


def verdict(baseline: Record, current: Record) -> tuple[float, str, bool]:
    tol = check.Tolerances()
    ratios, contended = check._clean_ratios(current, tol)
    change, _, outcome = check.speed_verdict(baseline.metrics["relspeed_ratios"], ratios, tol, contended)
    return change, outcome, contended


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


@pytest.fixture(scope="module")
def gate_models():
    torch.set_num_threads(1)  # as `bench run --metrics relspeed` on CPU
    model = VARIANTS["deit_ti"].build().eval()
    example = torch.randn(BATCH, 3, 224, 224)
    slowed = {f: SlowedDown(model, f, example) for f in (0.10, 0.25)}
    for fraction, m in slowed.items():  # what was injected, measured directly
        real = cpu_time(lambda m=m: m(example)) / cpu_time(lambda: model(example)) - 1
        print(f"\ninjected {fraction:.0%}: {m.reps} extra 256² matmuls per call, measured +{100 * real:.1f} % CPU time")
    return model, slowed, measure(model)


def test_a_10_percent_slowdown_is_flagged_in_9_of_10_quiet_runs(gate_models):
    model, slowed, baseline = gate_models
    outcomes = []
    for trial in range(TRIALS):
        change, outcome, contended = verdict(baseline, measure(slowed[0.10]))
        outcomes.append(outcome)
        print(f"quiet, +10 %: trial {trial}: {100 * change:+.1f} % -> {outcome}{' (busy)' if contended else ''}")
    assert outcomes.count("regression") >= 9


def test_under_two_competing_processes_25_percent_is_never_passed_and_no_change_never_a_regression(gate_models):
    model, slowed, baseline = gate_models
    slow, same = [], []
    with competing_processes():
        for trial in range(TRIALS):
            slow.append(verdict(baseline, measure(slowed[0.25])))
            same.append(verdict(baseline, measure(model, budget_s=0)))
            print(f"loaded, trial {trial}: +25 % {100 * slow[-1][0]:+.1f} % -> {slow[-1][1]}; "
                  f"unchanged {100 * same[-1][0]:+.1f} % -> {same[-1][1]}")
    assert sum(outcome in ("regression", "inconclusive") for _, outcome, _ in slow) >= 9
    assert "pass" not in [outcome for _, outcome, _ in slow]
    assert "regression" not in [outcome for _, outcome, _ in same]
