"""Names of what `bench run` can measure, how it times, and in which precision: plain data, no torch, so the
CLI parses (and `bench tables`/`check`/`ls` run) without importing torch or timm."""

from __future__ import annotations

import math
from dataclasses import dataclass

# size: params and GMACs; speed: throughput/latency/memory; relspeed: model time relative to a reference
# workload timed alternately in the same run, for the regression gate (bench check); accuracy: top-1/top-5
# of every head (and ReaL) on --data.
METRICS = ("size", "speed", "relspeed", "accuracy")


# The A/B speed gate (`bench check --against`, bench/ab.py): paired rounds of one fresh process per side, timed calls
# per workload in each process after untimed warm-up calls, and the workloads (name -> the function the worker calls
# in each side's tree). Six rounds are the fewest that give a 95 % signed-rank interval at all (then it spans every
# round); eight leave out the 3 most extreme of the 36 pair averages on each side. A process spends ~3 s of CPU on
# imports and building, ~2 s timing: 2 x 8 processes take about 1.5 minutes on a quiet 2-core machine, about twice
# that with two CPU-bound processes competing.
AB_ROUNDS, AB_CALLS, AB_WARMUP = 8, 8, 1
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
    # Paper Table 1/5 caption + github.com/facebookresearch/deit/issues/38: fp32, largest batch that fits, mean of
    # 30 runs.
    # "Largest batch that fits" is a GPU-memory notion: on CPU the batch must be given.
    "paper": TimingProtocol("paper", "mean", {"cuda": "max", "cpu": None}, {"cuda": 10, "cpu": 2}, {"cuda": 30, "cpu": 30},
                      fixed_precision="fp32"),
}


MAX_IMG_SIZE = 2048  # the paper's largest is 384 (EfficientNet-B7 of Table 5: 600)


@dataclass(frozen=True)
class Request:
    """What `bench run` is asked for, before the protocol's and the device's defaults apply
    (`bench.run.resolve_settings`). The CLI's defaults are these; None: the protocol's, the variant's or torch's."""

    device: str = "auto"  # auto: cuda where torch sees one, else cpu
    precision: str | None = None
    batch_size: str | int | None = None
    img_size: int | None = None
    protocol: str = "timm"
    compile: bool = False
    compile_mode: str = "default"  # with compile: how (COMPILE_MODES)
    attention: str | None = None  # ATTENTIONS; None: sdpa, or both for --best
    warmup: int | None = None
    iters: int | None = None
    metrics: str = "size,speed"
    max_batch_cap: int = 4096
    threads: int | None = None
    budget_s: float = 60.0  # relspeed: seconds to keep re-measuring while rounds are contended
    best_s: float | None = None  # search this many seconds for the fastest setting that agrees (bench/best.py)

    def wanted(self) -> tuple[str, ...]:
        """The metrics asked for, each once (`size,size` measures size once)."""
        return tuple(dict.fromkeys(m.strip() for m in self.metrics.split(",") if m.strip()))

    def check(self) -> None:
        """What needs no torch: metric names and numeric bounds. Raises ValueError naming the value and what
        would be accepted; `resolve_settings` checks the rest (the protocol's rules, the device)."""
        unknown = [m for m in self.wanted() if m not in METRICS]
        if unknown or not self.wanted() or any(not m.strip() for m in self.metrics.split(",")):
            raise ValueError(f"unknown metrics {','.join(unknown) or self.metrics!r}; accepted: {','.join(METRICS)}")
        for label, value, low in (("--img-size", self.img_size, 1), ("--warmup", self.warmup, 0),
                                  ("--iters", self.iters, 1), ("--max-batch-cap", self.max_batch_cap, 1),
                                  ("--threads", self.threads, 1), ("--budget-s", self.budget_s, 0),
                                  ("--best", self.best_s, 1)):
            if value is not None and not (math.isfinite(value) and value >= low):
                kind = "a finite number" if label in ("--budget-s", "--best") else "an integer"
                raise ValueError(f"{label} must be {kind} >= {low}, got {value}")
        if self.compile and self.warmup == 0:
            raise ValueError("--compile compiles in the first forward, which must not be timed: --warmup must be at "
                             "least 1")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown --compile mode {self.compile_mode!r}; accepted: {', '.join(COMPILE_MODES)}")
        if self.attention is not None and self.attention not in ATTENTIONS:
            raise ValueError(f"unknown --attention {self.attention!r}; accepted: {', '.join(ATTENTIONS)}")
        if self.best_s is not None:
            self._check_best()
        if self.img_size is not None and self.img_size > MAX_IMG_SIZE:  # 100,000 px asks for 160 GB: refuse
            raise ValueError(f"--img-size must be at most {MAX_IMG_SIZE} px, got {self.img_size}")


    def _check_best(self) -> None:
        """--best chooses the precision, the compile mode and (without --batch-size) the batch itself."""
        if self.compile:
            raise ValueError("--best chooses how to compile; drop --compile (the record lists every mode it tried)")
        if self.protocol != "timm":
            raise ValueError(f"--best searches settings the --protocol {self.protocol} fixes; use --protocol timm")
        if "speed" not in self.wanted() or "relspeed" in self.wanted():
            raise ValueError(f"--best searches for speed: --metrics must include speed and not relspeed, "
                             f"got {self.metrics!r}")
        if self.batch_size == "max":
            raise ValueError("--best searches the batch itself; give --batch-size N to fix it, or leave it out")
        if self.best_s > MAX_BEST_S:
            raise ValueError(f"--best takes at most {MAX_BEST_S:g} seconds (a day), got {self.best_s:g}")
        if self.warmup == 0:
            raise ValueError("--best may choose a compiled setting, whose first forward compiles: --warmup must be "
                             "at least 1")


# torch.compile modes `bench run --compile MODE` and the --best search know (bench/best.py says what each does); the
# GPU-only one is refused on a CPU when the device is known.
COMPILE_MODES = ("default", "freezing", "max-autotune", "reduce-overhead")


def compile_switched_off() -> str | None:
    """The environment variable that makes torch.compile return the model as it is, or None. Under either, a run with
    --compile or compile=true timed and recorded the eager model as compiled (a hostile pass): such a run is refused."""
    import os

    return next((f"{name}=1" for name in ("TORCH_COMPILE_DISABLE", "TORCHDYNAMO_DISABLE")
                 if os.environ.get(name, "") == "1"), None)
# How a ViT's attention runs (bench/best.py: set_attention): one fused SDPA call (timm's default) or explicit matmuls.
ATTENTIONS = ("sdpa", "matmul")
CUDA_GRAPH_WARMUP = 3  # CUDA graph trees run a new graph's first call as a warm-up, record on the second, replay after


def check_graph_warmup(compile_mode: str, best_s: float | None, dev_type: str, warmup: int) -> None:
    """On a GPU, reduce-overhead and max-autotune (and --best, which may choose them) replay CUDA graphs only from the
    third call: fewer warm-up forwards would time a graph's recording."""
    graphs = compile_mode in ("reduce-overhead", "max-autotune") or best_s is not None
    if dev_type == "cuda" and graphs and warmup < CUDA_GRAPH_WARMUP:
        what = "--best" if best_s is not None else f"--compile {compile_mode}"
        raise ValueError(f"{what} on a GPU runs CUDA graphs, which are recorded in the second forward and replayed "
                         f"from the third: --warmup must be at least {CUDA_GRAPH_WARMUP}, got {warmup}")


# what reads each timing option: given to a run that reads it not at all, it is refused, not recorded (a hostile pass:
# `--metrics size --precision bf16` was recorded "as asked"), as --compile already is
_TIMED, _RUN = {"speed", "relspeed"}, {"speed", "relspeed", "accuracy"}
READ_BY = {"--batch-size": _TIMED, "--warmup": _TIMED, "--iters": _TIMED, "--attention": _RUN, "--protocol": _TIMED,
           "--max-batch-cap": _TIMED, "--precision": _RUN, "--threads": _RUN, "--budget-s": {"relspeed"}}


def refuse_unread_timing(given: dict[str, object], wanted: tuple[str, ...]) -> None:
    """Raise ValueError naming the options in `given` (flag: value, None when not given) that `wanted` never reads."""
    unread = [flag for flag, value in given.items() if value not in (None, "auto") and not READ_BY[flag] & set(wanted)]
    if "--budget-s" in unread:
        raise ValueError(f"--budget-s bounds --metrics relspeed's rounds on a busy machine; --metrics "
                         f"{','.join(wanted)} takes none: add relspeed or leave it out")
    if unread and "accuracy" in wanted:
        raise ValueError(f"{', '.join(unread)} {_sets(unread)} how the model is timed; --metrics {','.join(wanted)} "
                         "times it not at all (accuracy has --eval-batch-size): add speed to --metrics, or leave "
                         "them out")
    if unread:
        raise ValueError(f"{', '.join(unread)} {_sets(unread)} how the model runs; --metrics {','.join(wanted)} runs "
                         "it not at all (size is counted): add speed (or accuracy) to --metrics, or leave them out")


def setting_label(precision: str, compile: str, batch_size: int, attention: str) -> str:
    """How `--best` names one setting, in its log, its record's agreement check and `bench run`'s summary."""
    return (f"{precision}, compile {compile}, batch {batch_size}"
            + ("" if attention in ("sdpa", "none") else f", {attention} attention"))


MAX_BEST_S = 86400.0
DEFAULT_BEST_S = 600.0  # --best's search budget: the DeiT-B search on a 2-core CPU takes about this long


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


GPU_ONLY_PRECISIONS = ("fp16", "amp_fp16", "tf32")  # no CPU kernels worth timing: bench/speed.py refuses them there


def _sets(options: list[str]) -> str:
    """'sets' after one option, 'set' after several."""
    return "sets" if len(options) == 1 else "set"
