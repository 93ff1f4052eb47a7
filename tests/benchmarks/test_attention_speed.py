"""Why the mini scale sets `fused_attn=false`: one training step of its students (batch 64, bf16 autocast on CPU)
with timm's SDPA attention against explicit matmuls, alternated round by round in one process
(not part of the default run; ~1 minute):

    pytest tests/benchmarks/test_attention_speed.py -m benchmark -s
"""

import statistics
import time
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from reproduce import experiments, models

pytestmark = pytest.mark.benchmark


def _step_ms(model, optimizer, images, labels, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", torch.bfloat16):
            outputs = model(images)
            loss = sum(F.cross_entropy(o, labels) for o in (outputs if isinstance(outputs, tuple) else (outputs,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


@pytest.mark.parametrize("row", ["mini_none", "mini_hard"])
def test_matmul_attention_against_sdpa_in_a_mini_training_step(row):
    cfg = experiments.get(row).build()
    images, labels = torch.randn(cfg.batch_size, 3, 32, 32), torch.randint(0, 10, (cfg.batch_size,))
    runs = {}
    for fused in (True, False):
        torch.random.default_generator.manual_seed(0)
        model, _, _ = models.build_student(replace(cfg, fused_attn=fused))
        runs[fused] = (model.train(), torch.optim.AdamW(model.parameters(), cfg.lr))
        _step_ms(*runs[fused], images, labels, steps=3)  # warm-up
    times = {True: [], False: []}
    for _ in range(3):
        for fused in (True, False):
            times[fused].append(_step_ms(*runs[fused], images, labels, steps=10))
    sdpa, matmul = statistics.median(times[True]), statistics.median(times[False])
    print(f"\n{row}: SDPA {sdpa:.0f} ms/step, matmuls {matmul:.0f} ms/step, speed-up {sdpa / matmul:.2f}x "
          f"(rounds {[round(t) for t in times[True]]} / {[round(t) for t in times[False]]})")
    assert matmul < sdpa
