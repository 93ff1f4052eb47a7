"""Inference timing: one function with a fixed discipline, used for CPU and CUDA alike.

Discipline (timm's benchmark.py, plus per-iteration samples so spread can be reported):
synthetic input made once on the device, `torch.inference_mode`, `warmup` untimed forwards, then `iters`
timed forwards, each timed on the device (CUDA events) or with `perf_counter` on CPU, where ops are
synchronous. Peak memory is read for the whole run (warm-up included).
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

from bench.protocols import PRECISIONS, Precision


def check_precision(name: str, device: str) -> Precision:
    """The precision called `name`, or ValueError if it is unknown or unusable on `device`."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; accepted: {', '.join(PRECISIONS)}")
    if device == "cpu" and name in ("fp16", "amp_fp16", "tf32"):
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


def time_forward(model: nn.Module, *, batch_size: int, img_size: int, device: str,
                 precision: Precision, warmup: int, iters: int,
                 monitor: contextlib.AbstractContextManager | None = None) -> Timing:
    """Time `iters` forward passes of a synthetic batch after `warmup` untimed ones.

    Args:
        model: already on `device`, in eval mode, with weights in `precision.dtype`.
        monitor: entered around the timed iterations only (e.g. GPU energy counters).
    """
    if iters < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need iters >= 1, warmup >= 0, batch_size >= 1 (got {iters}, {warmup}, {batch_size})")
    cuda = device.startswith("cuda")
    example = torch.randn(batch_size, 3, img_size, img_size, device=device, dtype=precision.dtype)
    _reset_peak_memory(cuda)
    with torch.inference_mode(), precision_mode(precision, device.split(":")[0]):
        for _ in range(warmup):
            model(example)
        if cuda:
            torch.cuda.synchronize()
        with monitor or contextlib.nullcontext():
            samples = _timed_cuda(model, example, iters) if cuda else _timed_cpu(model, example, iters)
    peak, kind = _peak_memory(cuda)
    return Timing(batch_size, tuple(samples), "cuda_event" if cuda else "perf_counter", peak, kind)


def _timed_cuda(model: nn.Module, example: torch.Tensor, iters: int) -> list[float]:
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        model(example)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def _timed_cpu(model: nn.Module, example: torch.Tensor, iters: int) -> list[float]:
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        model(example)
        samples.append(time.perf_counter() - start)
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
            with torch.inference_mode(), precision_mode(precision, "cuda"):
                model(example)
            torch.cuda.synchronize()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            example = None  # drop the batch before emptying the cache
            torch.cuda.empty_cache()

    return fits


class ReferenceMatmul(nn.Module):
    """A fixed workload timed beside the model, so a slower or busier machine is not a regression.

    `reps` float32 matrix products of n×n; the input batch is ignored. Independent of timm, so a change in
    the model code is not cancelled out. On CPU, 2048² (16 MiB operands, beyond the caches, ~90 ms on
    2 cores) tracked the model's run-to-run drift better than cache-resident 512² or 1024² products
    (ratio range over 4 runs: ±3.2 % against ±5 % and ±3.3 %; issue #6 note).
    """

    SIZES = {"cpu": (2048, 1), "cuda": (4096, 40)}

    def __init__(self, device: str) -> None:
        super().__init__()
        self.n, self.reps = self.SIZES[device.split(":")[0]]
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("a", torch.randn(self.n, self.n, generator=generator) / self.n**0.5)
        self.register_buffer("b", torch.randn(self.n, self.n, generator=generator) / self.n**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.a
        for _ in range(self.reps):
            out = out @ self.b
        return out

    def describe(self) -> str:
        return f"{self.reps} x fp32 matmul {self.n}x{self.n}"


@dataclass(frozen=True)
class RelativeTiming:
    """Per-round median batch times of the model and of the reference workload, timed alternately."""

    model_s: tuple[float, ...]
    reference_s: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(m / r for m, r in zip(self.model_s, self.reference_s))


def time_interleaved(model: nn.Module, reference: nn.Module, *, rounds: int, per_round: int = 3,
                     batch_size: int, img_size: int, device: str, precision: Precision,
                     warmup: int) -> RelativeTiming:
    """Alternate `rounds` times between the reference and the model, `per_round` timed calls each.

    Each round's ratio model/reference cancels what slows both alike (clock, load, a slower machine of the
    same kind); the gate in bench/check.py scores the spread of those ratios.
    """
    reference = reference.to(device)
    time_forward(reference, batch_size=1, img_size=1, device=device, precision=PRECISIONS["fp32"],
                 warmup=warmup, iters=1)
    time_forward(model, batch_size=batch_size, img_size=img_size, device=device, precision=precision,
                 warmup=warmup, iters=1)
    model_s, reference_s = [], []
    for _ in range(rounds):
        ref = time_forward(reference, batch_size=1, img_size=1, device=device, precision=PRECISIONS["fp32"],
                           warmup=0, iters=per_round)
        mod = time_forward(model, batch_size=batch_size, img_size=img_size, device=device, precision=precision,
                           warmup=0, iters=per_round)
        reference_s.append(ref.median_s)
        model_s.append(mod.median_s)
    return RelativeTiming(tuple(model_s), tuple(reference_s))
