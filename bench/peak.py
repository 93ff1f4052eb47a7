"""The machine's measured dense-GEMM peak per precision: what an achieved FLOP/s is a fraction of (MFU against the
measured peak), on a CPU as on a GPU, where the datasheet's peak (bench/gpu.py) stays beside it.

A short calibration times square matrix products in each precision the hardware runs natively (fp32 always; bf16
where the fingerprint says native: avx512_bf16/AMX on a CPU, compute capability ≥ 8.0 on a GPU; tf32 and fp16 on a
GPU), with the measurement's own thread count, and keeps the best rate of its timed products: noise only slows a
product down, so the fastest one is the closest to what the hardware can do. The result is cached per machine
fingerprint (which names the threads and the torch version) under ~/.cache/deit-bench/peaks/, or $DEIT_BENCH_CACHE.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from bench.load import MachineLoad, is_contended
from bench.machine import Fingerprint
from bench.store import cache_root, write_text_atomic

SIZES = {"cpu": 1024, "cuda": 8192}  # square products large enough to reach the kernels' steady state
MIN_SECONDS = {"cpu": 0.5, "cuda": 0.2}  # timed per precision (after two warm-up products)
DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_UNCACHED: dict[str, dict[str, Peak]] = {}  # peaks kept in this process only (busy, or no cache folder), by file
_MEASURED_AGAIN: set[tuple[str, str]] = set()  # (fingerprint, column) a run beat, measured again (usable)


@dataclass(frozen=True)
class Peak:
    """One precision's measured dense-GEMM rate on this machine."""

    precision: str  # a peak column: fp32, tf32, bf16 or fp16 (bench/protocols.py: Precision.peak)
    tflops: float  # the best of `products` timed products
    median_tflops: float
    size: int  # n of the n×n @ n×n products
    products: int
    threads: int
    contended: bool = False  # others used the machine meanwhile: the rate is too low, so it is neither cached nor used


def columns(fingerprint: Fingerprint) -> tuple[str, ...]:
    """The peak columns this machine runs natively (emulated bf16 on an AVX2 CPU has no peak worth dividing by)."""
    if fingerprint.device == "cuda":
        ampere = fingerprint.native_bf16
        return ("fp32", "tf32", "bf16", "fp16") if ampere else ("fp32", "fp16")
    return ("fp32", "bf16") if fingerprint.native_bf16 else ("fp32",)


def measure(column: str, device: str, threads: int) -> Peak:
    """Time n×n products in `column`'s precision for at least MIN_SECONDS; the best and the median rate."""
    import torch

    kind = device.split(":")[0]
    n, dtype = SIZES[kind], getattr(torch, DTYPES[column])
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = column == "tf32"
    start = MachineLoad.now()
    try:
        seconds = _timed_products(a, b, kind, MIN_SECONDS[kind])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    others, steal, _ = MachineLoad.now().since(start)  # our own share is moot: several threads, or a GPU
    rates = sorted(2 * n**3 / s / 1e12 for s in seconds)
    contended = others is not None and is_contended(others, steal, 1.0, cuda=kind == "cuda")
    return Peak(column, rates[-1], rates[len(rates) // 2], n, len(rates), threads, contended)


def _timed_products(a, b, kind: str, min_seconds: float) -> list[float]:
    import torch

    for _ in range(2):
        a @ b
    out, started = [], time.perf_counter()
    while time.perf_counter() - started < min_seconds or len(out) < 5:
        if kind == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            a @ b
            end.record()
            end.synchronize()
            out.append(begin.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            a @ b
            out.append(time.perf_counter() - start)
    return out


def cache_folder() -> Path | None:
    root = cache_root()
    return None if root is None else root / "peaks"


def measured_peaks(fingerprint: Fingerprint, device: str, *, folder: Path | None = None,
                   log=lambda message: None, fresh: bool = False) -> dict[str, Peak]:
    """Every native column's peak for this fingerprint: from the cache (unless `fresh`), or measured now (a few
    seconds) and cached. A peak measured while other processes used the machine comes back `contended` and is not
    cached. An unreadable cache file is measured again and replaced; a cache that cannot be written is only
    skipped."""
    folder = folder or cache_folder()  # None: no home to cache in, so measured once per process
    path = None if folder is None else folder / f"{fingerprint.id()}.json"
    key = str(path or fingerprint.id())
    if key in _UNCACHED and not fresh:  # not cached on disk, but one process measures it at most once
        return _UNCACHED[key]
    cached = {} if fresh or path is None else _read(path, device)
    wanted = columns(fingerprint)
    if all(c in cached for c in wanted):
        return {c: cached[c] for c in wanted}
    log(f"measuring this machine's GEMM peak ({', '.join(wanted)}; " + (f"cached in {path.parent})" if path else
        "not cached: HOME is unset and this user has no home; set DEIT_BENCH_CACHE=FOLDER to keep it)"))
    peaks = {c: cached.get(c) or measure(c, device, fingerprint.threads) for c in wanted}
    if any(p.contended for p in peaks.values()):
        _UNCACHED[key] = peaks
        log("the machine was busy while its GEMM peak was measured: not cached, and no MFU against it in this run")
        return peaks
    if path is None:
        _UNCACHED[key] = peaks
        return peaks
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"fingerprint": fingerprint.to_dict(), "peaks": {c: dataclasses.asdict(p) for c, p in peaks.items()}}
        write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    except OSError as exc:
        log(f"GEMM peak not cached ({exc}); it is measured again next time")
    return peaks


def usable(fingerprint: Fingerprint, device: str, column: str, achieved_tflops: float | None, *,
           folder: Path | None = None, log=lambda message: None) -> Peak | None:
    """The measured peak of `column` that `achieved_tflops` is a fraction of, or None (said in `log` where it is
    news) where there is none: no native peak, one measured busy, or one the run went faster than. A model cannot
    beat the dense GEMM it is made of: a cached peak below the achieved rate is stale or edited (a hostile pass
    printed "MFU 116.3 %"), so it is measured again now, and if the run still beat it, no MFU is given rather than
    one above 100 %."""
    measured = measured_peaks(fingerprint, device, folder=folder, log=log).get(column)
    if measured is None or measured.contended or achieved_tflops is None or achieved_tflops <= measured.tflops:
        return None if measured is None or measured.contended else measured
    if (fingerprint.id(), column) in _MEASURED_AGAIN:  # once per process: a list of variants re-measures no more
        log(f"no MFU: {achieved_tflops:.3g} TFLOP/s achieved is above the {column} GEMM peak measured in this run")
        return None
    _MEASURED_AGAIN.add((fingerprint.id(), column))
    log(f"{achieved_tflops:.3g} TFLOP/s achieved is above the cached {column} GEMM peak, {measured.tflops:.3g}: "
        "measuring the peak again")
    measured = measured_peaks(fingerprint, device, folder=folder, log=log, fresh=True).get(column)
    if measured is None or measured.contended:  # measured_peaks said why
        return None
    if achieved_tflops > measured.tflops:
        log(f"no MFU: {achieved_tflops:.3g} TFLOP/s achieved is above the {column} GEMM peak measured now, "
            f"{measured.tflops:.3g}")
        return None
    return measured


# Above these a cached rate is no measurement: AMX's bf16 peak is about 4 TFLOP/s per core at 4 GHz, the largest
# GPU's dense fp16 about 2,500 TFLOP/s. A cache edited to 4,379 TFLOP/s on 2 cores gave "MFU 0.0 %" (a hostile pass).
MAX_TFLOPS = {"cpu": 10.0, "cuda": 10_000.0}  # per thread on a CPU, per device on a GPU


def _read(path: Path, device: str = "cpu") -> dict[str, Peak]:
    """The cached peaks, or {} for a file that is missing, unreadable or not what `measured_peaks` writes: a rate
    given as a string or null crashed `bench run` after its timing (a hostile pass), so every field is checked, and
    a rate no such machine reaches (`MAX_TFLOPS`) is measured again."""
    try:
        peaks = {c: Peak(**p) for c, p in json.loads(path.read_text())["peaks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if not all(_whole(c, p) for c, p in peaks.items()):
        return {}
    kind = device.split(":")[0]
    bound = MAX_TFLOPS[kind] * (1 if kind == "cuda" else max(p.threads for p in peaks.values()) if peaks else 1)
    return peaks if all(p.tflops <= bound for p in peaks.values()) else {}


def _whole(column: str, p: Peak) -> bool:
    rates = (p.tflops, p.median_tflops)
    counts = (p.size, p.products, p.threads)
    return (p.precision == column and isinstance(p.contended, bool)
            and all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in rates)
            and p.median_tflops <= p.tflops
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts))


def fraction(gmacs_per_image: float, img_per_s: float, peak: Peak) -> float:
    """Achieved model FLOP/s (2 per MAC, forward only) over the measured peak."""
    return 2 * gmacs_per_image * 1e9 * img_per_s / (peak.tflops * 1e12)
