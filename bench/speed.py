"""Inference timing: one function with a fixed discipline, used for CPU and CUDA alike.

Discipline (timm's benchmark.py, plus per-iteration samples so spread can be reported):
synthetic input made once on the device, `torch.inference_mode`, cuDNN's autotuner on (GPU; as benchmark.py and the
official main.py set it), `warmup` untimed forwards, then `iters` timed forwards, each timed on the device (CUDA
events) or with `perf_counter` on CPU, where ops are synchronous. Peak memory is read over the timed forwards (reset
after the warm-up).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.load import MachineLoad, is_contended
from bench.protocols import GPU_ONLY_PRECISIONS, PRECISIONS, Precision


def check_precision(name: str, device: str) -> Precision:
    """The precision called `name`, or ValueError if it is unknown or unusable on `device`."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; accepted: {', '.join(PRECISIONS)}")
    if device == "cpu" and name in GPU_ONLY_PRECISIONS:
        raise ValueError(f"precision {name!r} needs a CUDA GPU; on cpu use fp32, bf16 or amp_bf16")
    return PRECISIONS[name]


@contextlib.contextmanager
def precision_mode(precision: Precision, device: str) -> Iterator[None]:
    """Set TF32 on or off for the block (strict fp32 really is fp32) and autocast when asked for."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision.tf32
    autocast = (torch.autocast(device_type=device, dtype=precision.autocast)
                if precision.autocast is not None else contextlib.nullcontext())
    try:
        with autocast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class Timing:
    """Per-iteration wall times of `iters` forwards of one batch, and what the run used."""

    batch_size: int
    samples_s: tuple[float, ...]
    timer: str  # "cuda_event" or "perf_counter"
    peak_mem_mib: float | None
    peak_mem_kind: str | None  # "cuda_max_allocated" or "process_peak_rss"
    other_cores: float | None = None  # cores other processes kept busy while timing (bench/load.py)
    steal: float | None = None  # share of the machine the hypervisor took while timing

    @property
    def busy(self) -> bool | None:
        """A CPU timing made while something else used the machine: its figure is a busy machine's (bench/load.py's
        rule; a multi-threaded forward's own share of a core says nothing, so only others and steal count). A GPU
        timing is not judged by the CPUs' load: other jobs' data loaders would mark it busy; `other_cores` is kept.
        None: a CPU timing where /proc/stat could not be read, so nobody knows."""
        if self.timer != "perf_counter":
            return False
        return None if self.other_cores is None else is_contended(self.other_cores, self.steal or 0.0, 1.0, cuda=False)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.samples_s)

    def quantile_s(self, q: float) -> float:
        """Linear-interpolated quantile of the per-batch times (q in [0, 1])."""
        ordered = sorted(self.samples_s)
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    def img_per_s(self, stat: str) -> float:
        """Throughput from the median or the mean batch time."""
        return self.batch_size / (self.median_s if stat == "median" else self.mean_s)


@dataclass(frozen=True)
class Batch:
    """The synthetic batch a timing runs on: its size, resolution, device and precision."""

    size: int
    img_size: int
    device: str
    precision: Precision

    def make(self) -> torch.Tensor:
        return torch.randn(self.size, 3, self.img_size, self.img_size, device=self.device, dtype=self.precision.dtype)


@contextlib.contextmanager
def cudnn_autotuned(cuda: bool) -> Iterator[None]:
    """cuDNN picks the fastest convolution algorithm for the fixed shapes in the warm-up (`cudnn.benchmark`), as
    timm's benchmark.py and the official main.py set it: without it the convnets of Tables 2 and 5 were timed with
    cuDNN's heuristic choice (a hostile pass). Restored after the block."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda or saved
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def time_forward(model: nn.Module, batch: Batch, *, warmup: int, iters: int,
                 monitor: contextlib.AbstractContextManager | None = None,
                 progress: Callable[[], None] | None = None) -> Timing:
    """Time `iters` forward passes of a synthetic batch after `warmup` untimed ones.

    Args:
        model: already on `batch.device`, in eval mode, with weights in `batch.precision.dtype`.
        monitor: entered around the timed iterations only (e.g. GPU energy counters); its `sample()`, if it has
            one, runs once while they run (CUDA).
        progress: called after each forward, outside the timed span (CPU; CUDA forwards are queued, not waited on).
    """
    tick = progress or (lambda: None)
    if iters < 1 or warmup < 0 or batch.size < 1:
        raise ValueError(f"need iters >= 1, warmup >= 0, batch_size >= 1 (got {iters}, {warmup}, {batch.size})")
    cuda = batch.device.startswith("cuda")
    example = batch.make()
    sample = getattr(monitor, "sample", lambda: None)
    # events, synchronize and memory statistics on the batch's GPU, not the current one (cuda:1 without set_device)
    with (torch.cuda.device(batch.device) if cuda else contextlib.nullcontext()), torch.inference_mode(), \
            precision_mode(batch.precision, batch.device.split(":")[0]), cudnn_autotuned(cuda):
        for _ in range(warmup):
            model(example)
            tick()
        if cuda:
            torch.cuda.synchronize()
        _reset_peak_memory(cuda)  # after the warm-up: a compiler's or autotuner's workspace is not the model's peak
        with monitor or contextlib.nullcontext():
            load = MachineLoad.now()
            samples = _timed_cuda(model, example, iters, sample) if cuda else _timed_cpu(model, example, iters, tick)
            others, steal, _ = MachineLoad.now().since(load)
        peak, kind = _peak_memory(cuda)
    return Timing(batch.size, tuple(samples), "cuda_event" if cuda else "perf_counter", peak, kind, others, steal)


def _timed_cuda(model: nn.Module, example: torch.Tensor, iters: int, sample: Callable[[], None]) -> list[float]:
    """Each forward between two events; `sample` runs once all are queued, while the GPU still works through them."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        model(example)
        end.record()
    sample()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def _timed_cpu(model: nn.Module, example: torch.Tensor, iters: int, tick: Callable[[], None]) -> list[float]:
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        model(example)
        samples.append(time.perf_counter() - start)
        tick()
    return samples


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_memory(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:  # Linux: writing 5 resets the process's peak resident set size (VmHWM); see proc(5)
        with contextlib.suppress(OSError):
            _CLEAR_REFS.write_text("5")


def _peak_memory(cuda: bool) -> tuple[float | None, str | None]:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    with contextlib.suppress(OSError, ValueError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "process_peak_rss"
    return None, None


def find_max_batch(fits: Callable[[int], bool], *, cap: int) -> int:
    """Largest batch size b <= cap for which fits(b) holds: doubling from 1, then bisection.

    Assumes monotonicity (a batch that fits means every smaller one fits).

    Raises:
        RuntimeError: if not even batch 1 fits.
    """
    if not fits(1):
        raise RuntimeError("not even batch size 1 fits in memory")
    good, bad = 1, None
    while bad is None:
        trial = min(good * 2, cap)
        if trial == good:
            return good
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def cuda_batch_fits(model: nn.Module, *, img_size: int, device: str, precision: Precision) -> Callable[[int], bool]:
    """A `fits(b)` probe for find_max_batch: one forward at batch b, False on CUDA out-of-memory."""

    def fits(batch_size: int) -> bool:
        try:
            example = torch.randn(batch_size, 3, img_size, img_size, device=device, dtype=precision.dtype)
            with torch.inference_mode(), precision_mode(precision, "cuda"), cudnn_autotuned(True):  # the timing's
                model(example)  # algorithms and workspace: the probe finds the batch the timing will run (a review)
            torch.cuda.synchronize()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            example = None  # drop the batch before emptying the cache
            torch.cuda.empty_cache()

    return fits


class _ReferenceBlock(nn.Module):
    """A pre-norm transformer block in plain torch ops: layer norm, qkv linear, scaled_dot_product_attention,
    projection, layer norm, GELU MLP. Written here, not taken from timm, so that a change in timm or in this
    project's model code is not cancelled out by the reference."""

    def __init__(self, width: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class ReferenceEncoder(nn.Module):
    """A fixed workload timed beside the model, so a slower machine of the same fingerprint is not a regression.

    Twelve pre-norm transformer blocks of DeiT-Ti's shape (width 192, 3 heads, MLP 768; 5.3 M parameters) on
    `batch_size` x 197 tokens, in plain torch ops: the kernels and about the working set of DeiT-Ti's body, so
    what shifts their speed (clock, a neighbour's pressure on the shared cache) shifts both, yet independent of
    timm and of this project's model code, so a change there is not cancelled out. Why this depth and not a
    single large matmul: results/REPORT.md, "What the gate measures now, and how steady it is".
    """

    WIDTH, HEADS, MLP, DEPTH, TOKENS = 192, 3, 768, 12, 197

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.blocks = nn.Sequential(*[_ReferenceBlock(self.WIDTH, self.HEADS, self.MLP) for _ in range(self.DEPTH)])
        with torch.no_grad():
            for param in self.blocks.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        self.register_buffer("tokens", torch.randn(batch_size, self.TOKENS, self.WIDTH, generator=generator))
        self.batch_size = batch_size
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.tokens)

    @classmethod
    def describe(cls, batch_size: int) -> str:
        return (f"{cls.DEPTH} pre-norm blocks (width {cls.WIDTH}, {cls.HEADS} heads, MLP {cls.MLP}, plain torch) "
                f"on {batch_size}x{cls.TOKENS} tokens, fp32")


@dataclass(frozen=True)
class RelativeTiming:
    """Per round: the median call time of the model and of the reference workload, timed alternately, and how
    busy the machine was meanwhile. On CPU the times are this process's CPU time (`clock`), which a competing
    process does not stretch the way it stretches wall time; the wall times are kept beside them."""

    model_s: tuple[float, ...]
    reference_s: tuple[float, ...]
    model_wall_s: tuple[float, ...]
    reference_wall_s: tuple[float, ...]
    other_cores: tuple[float | None, ...]  # None: /proc/stat unreadable in that round
    steal: tuple[float | None, ...]
    cpu_share: tuple[float, ...]
    clock: str  # "process_cpu_time" (CPU) or "cuda_event" (GPU)

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(m / r for m, r in zip(self.model_s, self.reference_s))

    @classmethod
    def concat(cls, parts: list[RelativeTiming]) -> RelativeTiming:
        """The rounds of several processes' timings, in order."""
        fields = ("model_s", "reference_s", "model_wall_s", "reference_wall_s", "other_cores", "steal", "cpu_share")
        return cls(*(tuple(v for p in parts for v in getattr(p, f)) for f in fields), clock=parts[0].clock)

    @property
    def contended(self) -> tuple[bool, ...]:
        cuda = self.clock == "cuda_event"
        # where /proc/stat was unreadable, our own share of a core is all there is to judge a round by
        return tuple(is_contended(others or 0.0, steal or 0.0, share, cuda=cuda)
                     for others, steal, share in zip(self.other_cores, self.steal, self.cpu_share))


def time_interleaved(model: nn.Module, reference: nn.Module, batch: Batch, *, rounds: int, per_round: int = 1,
                     warmup: int, budget_s: float = 0.0) -> RelativeTiming:
    """Alternate between the reference and the model, `per_round` timed calls each, for `rounds` rounds.

    Each round's ratio model/reference cancels what slows both alike (clock, a slower machine of the same
    kind); timing CPU time rather than wall time keeps a competing process from stretching either. Rounds taken
    while the machine was busy are marked; while fewer than `rounds` rounds are clean and `budget_s` seconds
    (from the first round) are not spent, more rounds are taken. The gate (bench/check.py) scores the ratios.
    """
    device, precision = batch.device, batch.precision
    reference = reference.to(device)
    cuda = device.startswith("cuda")
    ref_input = torch.zeros(1, device=device)
    example = batch.make()
    calls = _timed_cuda_events if cuda else _timed_cpu_clock
    columns: dict[str, list[float]] = {k: [] for k in ("model", "ref", "model_wall", "ref_wall", "others", "steal", "share")}
    kind = device.split(":")[0]
    with torch.inference_mode(), cudnn_autotuned(cuda):  # as time_forward times (a review)
        for _ in range(max(warmup, 1)):
            with precision_mode(PRECISIONS["fp32"], kind):
                reference(ref_input)
            with precision_mode(precision, kind):
                model(example)
        start = time.perf_counter()
        clean = 0
        while len(columns["model"]) < rounds or (clean < rounds and time.perf_counter() - start < budget_s):
            load = MachineLoad.now()
            with precision_mode(PRECISIONS["fp32"], kind):
                ref, ref_wall = calls(reference, ref_input, per_round)
            with precision_mode(precision, kind):
                mod, mod_wall = calls(model, example, per_round)
            others, steal, share = MachineLoad.now().since(load)  # others and steal None: /proc/stat unreadable
            for key, value in zip(columns, (mod, ref, mod_wall, ref_wall, others, steal, share)):
                columns[key].append(value)
            clean += not is_contended(others or 0.0, steal or 0.0, share, cuda=cuda)
    return RelativeTiming(*(tuple(v) for v in columns.values()), clock="cuda_event" if cuda else "process_cpu_time")


def _timed_cpu_clock(fn: nn.Module, example: torch.Tensor, calls: int) -> tuple[float, float]:
    """Median CPU time and median wall time of `calls` calls (CPU ops are synchronous)."""
    cpu, wall = [], []
    for _ in range(calls):
        w0, c0 = time.perf_counter(), time.process_time()
        fn(example)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def _timed_cuda_events(fn: nn.Module, example: torch.Tensor, calls: int) -> tuple[float, float]:
    """Median device time of `calls` calls (CUDA events), twice: the device clock is the only one here."""
    times = _timed_cuda(fn, example, calls)
    return statistics.median(times), statistics.median(times)


# ---- what the A/B gate times (bench/ab.py) ----

GATE_BATCH = 4


def gate_workload() -> tuple[dict[str, object], Callable[[], None]]:
    """The A/B speed gate's inference workload: DeiT-Ti as `bench run` builds it, batch 4 at 224 px, fp32, eval mode,
    under `torch.inference_mode`. Returns what it is (both sides of an A/B must say the same) and one call of it.
    The A/B worker runs this in each tree it measures, so the model code is that tree's."""
    from bench.registry import VARIANTS

    model = VARIANTS["deit_ti"].build().eval()
    example = torch.randn(GATE_BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.inference_mode():
            model(example)

    return {"model": "deit_ti", "batch_size": GATE_BATCH, "img_size": 224, "precision": "fp32",
            "mode": "inference"}, forward
