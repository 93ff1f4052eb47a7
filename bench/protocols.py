"""Names of what `bench run` can measure, how it times, and in which precision: plain data, no torch, so the
CLI parses (and `bench tables`/`check`/`ls` run) without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass

# size: params and GMACs; speed: throughput/latency/memory; relspeed: model time relative to a reference
# workload timed alternately in the same run, for the regression gate (bench check); accuracy: top-1/top-5
# of every head (and ReaL) on --data.
METRICS = ("size", "speed", "relspeed", "accuracy")


# The A/B speed gate (`bench check --against`, bench/ab.py): paired rounds of one fresh process per side, timed calls
# per workload in each process after untimed warm-up calls, and the workloads (name -> the function the worker calls
# in each side's tree). Six rounds are the fewest that give a 95 % signed-rank interval at all (then it spans every
# round); ten leave out the 8 most extreme of the 55 pair averages on each side. 2 x 10 processes take about
# 2.5 minutes on a quiet 2-core machine.
AB_ROUNDS, AB_CALLS, AB_WARMUP = 10, 10, 2
AB_WORKLOADS = {
    "deit_ti inference": "bench.speed:gate_workload",
    "train step (debug_hard)": "reproduce.stepspeed:gate_workload",
}


@dataclass(frozen=True)
class TimingProtocol:
    """A timing protocol: defaults per device type, and which statistic makes the throughput."""

    name: str
    stat: str  # "median" or "mean" of the per-batch times
    batch_size: dict[str, int | str | None]  # per device type; None: the user must give one
    warmup: dict[str, int]
    iters: dict[str, int]
    fixed_precision: str | None = None  # the protocol allows no other


TIMING_PROTOCOLS = {
    # timm's benchmark.py: batch 256, 10 warm-up + 40 timed steps on GPU. On CPU, smaller defaults keep
    # `bench run --variant deit_b` within a minute on 2 cores. Median, so one slow step does not count.
    "timm": TimingProtocol("timm", "median", {"cuda": 256, "cpu": 16}, {"cuda": 10, "cpu": 2}, {"cuda": 40, "cpu": 8}),
    # Paper Table 1/5 caption + official repo issue #38: fp32, largest batch that fits, mean of 30 runs.
    # "Largest batch that fits" is a GPU-memory notion: on CPU the batch must be given.
    "paper": TimingProtocol("paper", "mean", {"cuda": "max", "cpu": None}, {"cuda": 10, "cpu": 2}, {"cuda": 30, "cpu": 30},
                      fixed_precision="fp32"),
}


@dataclass(frozen=True)
class Precision:
    """How a precision name maps onto weights, autocast and TF32."""

    name: str
    dtype_name: str  # weights and input (a torch dtype name)
    autocast_name: str | None  # autocast dtype, weights stay float32
    tf32: bool  # TF32 tensor cores for float32 matmuls/convolutions (CUDA only)
    peak: str  # which column of the GPU peak table bounds it (for MFU)

    @property
    def dtype(self):
        import torch
        return getattr(torch, self.dtype_name)

    @property
    def autocast(self):
        import torch
        return None if self.autocast_name is None else getattr(torch, self.autocast_name)


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in [
        Precision("fp32", "float32", None, False, "fp32"),
        Precision("tf32", "float32", None, True, "tf32"),
        Precision("bf16", "bfloat16", None, False, "bf16"),
        Precision("fp16", "float16", None, False, "fp16"),
        Precision("amp_bf16", "float32", "bfloat16", False, "bf16"),
        Precision("amp_fp16", "float32", "float16", False, "fp16"),
    ]
}
