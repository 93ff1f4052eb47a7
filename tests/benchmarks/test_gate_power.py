"""Live check of the speed gate's power: does it pass an unchanged model and catch a real 25 % slowdown?

Not part of the default run (it times for ~3 minutes). Run with:
    pytest tests/benchmarks/test_gate_power.py -m benchmark -s
"""

import statistics

import pytest
import torch
from torch import nn

from bench.check import Tolerances, speed_verdict
from bench.registry import VARIANTS
from bench.speed import PRECISIONS, ReferenceMatmul, time_interleaved

pytestmark = pytest.mark.benchmark


class MoreWork(nn.Module):
    """The same model doing `extra` more real work per call: it also runs on a slice of the batch again."""

    def __init__(self, model: nn.Module, extra: float) -> None:
        super().__init__()
        self.model, self.extra = model, extra

    def forward(self, x):
        return self.model(torch.cat([x, x[: round(self.extra * len(x))]]))


def ratios(model, rounds=15):
    timing = time_interleaved(model, ReferenceMatmul("cpu"), rounds=rounds, batch_size=16, img_size=224,
                              device="cpu", precision=PRECISIONS["fp32"], warmup=2)
    return list(timing.ratios)


def test_the_gate_passes_no_change_and_flags_an_injected_25_percent_slowdown():
    model = VARIANTS["deit_ti"].build().eval()
    slowed = MoreWork(model, 0.25)
    results = []
    for repeat in range(3):  # alternate baseline / unchanged / slowed, three times
        base, same, slow = ratios(model), ratios(model), ratios(slowed)
        results.append((speed_verdict(base, same, Tolerances()), speed_verdict(base, slow, Tolerances())))
        print(f"repeat {repeat}: baseline median ratio {statistics.median(base):.3f}; "
              f"unchanged {100 * results[-1][0][0]:+.1f} % ({results[-1][0][2]}, threshold {100 * results[-1][0][1]:.1f} %); "
              f"slowed {100 * results[-1][1][0]:+.1f} % ({results[-1][1][2]}, threshold {100 * results[-1][1][1]:.1f} %)")
    assert [same[2] for same, _ in results] == ["pass"] * 3
    assert [slow[2] for _, slow in results] == ["regression"] * 3
