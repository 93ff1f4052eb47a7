"""`bench run`: measure one registered model (size, speed, accuracy) and return its result record."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import functools
import gc
import multiprocessing
import signal
import statistics
import sys
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from bench import best, compiling, gpu, machine, peak, size, speed
from bench.accuracy import EvalOptions, build_model, find_eval_data, measure_accuracy
from bench.errors import plain_number
from bench.predictions import check_destination
from bench.processes import resolve_device
from bench.protocols import ATTENTIONS, TIMING_PROTOCOLS, Request, check_graph_warmup
from bench.record import Record, collect_env, cpu_model
from bench.registry import Variant


class BatchDoesNotFit(ValueError):
    """The batch the user asked for is too large for the GPU's memory."""


@dataclass(frozen=True)
class Settings:
    """Fully resolved settings of one run: every default already applied, stored in the record."""

    device: str
    precision: str
    batch_size: int | str  # an int, or "max" before the search
    img_size: int
    protocol: str
    stat: str
    compile: bool
    warmup: int
    iters: int
    metrics: tuple[str, ...]
    max_batch_cap: int = 4096
    threads: int = 0  # torch intra-op threads of the run (relspeed on CPU: 1 unless asked)
    precision_requested: str = "auto"
    precision_why: str = ""  # why `precision` was chosen (auto) or that a forced bf16 is emulated
    accuracy_precision: str | None = None  # what accuracy is evaluated in (None: accuracy not measured)
    budget_s: float = 0.0  # relspeed: seconds to keep re-measuring while rounds are contended
    compile_mode: str = "off"  # "off" or how torch.compile ran (protocols.COMPILE_MODES)
    best_s: float | None = None  # --best: the search's budget (None: no search)
    batch_fixed: bool = True  # the user or the protocol fixed the batch (--best then searches no batch)
    attention: str = "sdpa"  # how a ViT's attention runs (protocols.ATTENTIONS)
    attention_fixed: bool = False  # --attention was given (--best then searches no other)


def resolve_settings(variant: Variant, request: Request | None = None, /, **changes: Any) -> Settings:
    """Apply protocol and device defaults to `request` (with `changes`, fields of `Request`) and check every value.

    Raises:
        ValueError: naming the bad value and what would be accepted.
        TypeError: a change that is no field of `Request`.
    """
    request = dataclasses.replace(request or Request(), **changes)
    request.check()
    device, precision, batch_size, img_size = request.device, request.precision, request.batch_size, request.img_size
    protocol, warmup, iters, threads = request.protocol, request.warmup, request.iters, request.threads
    device = resolve_device(device)
    dev_type = device.split(":")[0]
    if protocol not in TIMING_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; accepted: {', '.join(TIMING_PROTOCOLS)}")
    proto = TIMING_PROTOCOLS[protocol]
    if proto.fixed_precision and precision not in (None, "auto", proto.fixed_precision):
        raise ValueError(f"--protocol {protocol} fixes precision {proto.fixed_precision}; "
                         f"use --protocol timm to choose {precision}")
    if proto.name == "paper" and iters not in (None, proto.iters[dev_type]):
        raise ValueError(f"--protocol paper fixes {proto.iters[dev_type]} timed runs; use --protocol timm for --iters")
    requested = proto.fixed_precision or precision or "auto"
    chosen = _parse_batch(batch_size) if batch_size is not None else proto.batch_size[dev_type]
    if chosen is None:
        raise ValueError(f"--protocol {protocol} on {dev_type} needs an explicit --batch-size N "
                         "(the largest batch that fits is searched only in GPU memory)")
    if chosen == "max" and dev_type != "cuda":
        raise ValueError("--batch-size max searches GPU memory and needs --device cuda; give a number on cpu")
    wanted = request.wanted()
    if "relspeed" in wanted and chosen == "max":
        raise ValueError("--metrics relspeed compares like with like and needs a fixed --batch-size N")
    compile_mode = request.compile_mode if request.compile else "off"
    if request.compile and not {"speed", "relspeed"} & set(wanted):
        raise ValueError(f"--compile compiles the timed forwards; --metrics {','.join(wanted)} times none (accuracy "
                         "runs eager), so the record would claim a compile that never ran: add speed or leave "
                         "--compile out")
    if compile_mode == "reduce-overhead" and dev_type != "cuda":
        raise ValueError("--compile reduce-overhead is CUDA graphs and needs --device cuda; on cpu use default, "
                         "freezing or max-autotune")
    check_graph_warmup(compile_mode, request.best_s, dev_type, proto.warmup[dev_type] if warmup is None else warmup)
    if "relspeed" in wanted and compile_mode not in ("off", "default"):
        raise ValueError(f"--metrics relspeed compares against baselines of plain --compile; --compile "
                         f"{compile_mode} is not gated")
    if "relspeed" in wanted and request.attention not in (None, "sdpa"):
        raise ValueError(f"--metrics relspeed compares against baselines of sdpa attention; --attention "
                         f"{request.attention} is not gated")
    if img_size is not None and variant.patch_size is not None and img_size % variant.patch_size:
        raise ValueError(f"--img-size {img_size} is not a multiple of {variant.name}'s patch size {variant.patch_size}")
    # relspeed times CPU time, which one thread keeps free of OpenMP spin-waits (docs/regression-gate.md)
    threads = threads or (1 if "relspeed" in wanted and dev_type == "cpu" else torch.get_num_threads())
    machine.check_threads(threads)
    if isinstance(chosen, int) and dev_type == "cpu":
        machine.check_input_fits(chosen, img_size or variant.img_size)
    precision, why = machine.choose_precision(requested, machine.detect(device, threads))
    speed.check_precision(precision, dev_type)
    accuracy_precision = machine.accuracy_precision(requested) if "accuracy" in wanted else None
    return Settings(
        device=device, precision=precision, batch_size=chosen, img_size=img_size or variant.img_size,
        protocol=protocol, stat=proto.stat, compile=request.compile, compile_mode=compile_mode,
        best_s=request.best_s, batch_fixed=batch_size is not None, attention=request.attention or "sdpa",
        attention_fixed=request.attention is not None,
        warmup=proto.warmup[dev_type] if warmup is None else warmup,
        iters=proto.iters[dev_type] if iters is None else iters,
        metrics=wanted, max_batch_cap=request.max_batch_cap, threads=threads, precision_requested=requested,
        precision_why=why, budget_s=request.budget_s, accuracy_precision=accuracy_precision)


def _parse_batch(value: str | int) -> int | str:
    if value == "max":
        return "max"
    try:
        number = value if isinstance(value, int) else plain_number(int, value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'max', got {value!r}")
    return number


def measure(variant: Variant, settings: Settings, log=lambda msg: print(msg, file=sys.stderr),
            eval_opts: EvalOptions | None = None) -> Record:
    """Build the model, measure what `settings.metrics` asks for, and return the record (not yet written)."""
    eval_opts = eval_opts or EvalOptions()
    if eval_opts.save_predictions and "accuracy" in settings.metrics:
        check_destination(eval_opts.save_predictions)
    with _threads(settings.threads):
        return _measure(variant, settings, log, eval_opts)


@contextlib.contextmanager
def _threads(threads: int):
    """torch's intra-op threads for the block, restored after (tests and --variant lists share a process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed_anything(settings: Settings) -> bool:
    """Whether the run times something (threads then matter): counting parameters and GMACs times nothing."""
    return bool(set(settings.metrics) - {"size"})


def _measure(variant: Variant, settings: Settings, log, eval_opts: EvalOptions) -> Record:
    fingerprint = machine.detect(settings.device, settings.threads)
    warnings = [w for w in (machine.bf16_warning(settings.precision, fingerprint),
                            machine.threads_warning(settings.threads) if _timed_anything(settings) else None,
                            _short_loop_warning(settings)) if w]
    for warning in warnings:
        log(warning)
    log(f"building {variant.name} ({variant.model}) at {settings.img_size} px")
    weights = build_model(variant, eval_opts, _img_size_override(variant, settings.img_size))
    model, notes = weights.model, weights.notes
    # the data is checked against the model's label space before minutes of timing, not after
    found = find_eval_data(model, eval_opts, weights.class_names) if "accuracy" in settings.metrics else None
    metrics: dict[str, Any] = {}
    if "size" in settings.metrics:
        log("counting parameters and GMACs (fvcore, attention included)")
        metrics["params"] = size.count_params(model)
        metrics["gmacs"] = size.count_gmacs(model, settings.img_size)
    env_extra: dict[str, Any] = {}
    device_name = cpu_model()
    if settings.device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(settings.device)
        env_extra = _try(gpu.device_info, settings.device)
    search = None
    if settings.best_s is not None:
        model = model.to(device=settings.device)
        search = _search(model, settings, fingerprint, (eval_opts, found), log)
        _release_freed_memory()  # else the timed peak RSS counts what the search's copies left (1,087 vs 921 MiB)
        settings = search_result(settings, search.chosen)
    has_attention = best.set_attention(model, settings.attention) > 0  # bench run refuses it for convnets only
    model = model.to(device=settings.device)
    timed = _timed_copy(model, settings)
    if "speed" in settings.metrics:
        timing, readings = _time(timed, variant, settings, log)
        metrics.update(speed_metrics(timing, settings, metrics.get("gmacs"), device_name, readings))
        metrics.update(measured_mfu(fingerprint, settings, metrics, log))
    if "relspeed" in settings.metrics:
        metrics.update(_relspeed(variant, settings, log))
    recorded = _settings_dict(variant, settings, metrics)
    if not has_attention:  # a convnet: nothing ran as `attention` says
        recorded["attention"] = None
    recorded["num_classes"] = getattr(model, "num_classes", variant.num_classes)  # a checkpoint's head decides
    if search is not None:
        recorded["search"] = {**search.to_dict(), "weights": "; ".join(notes) or "random initialisation"}
        if recorded["batch_policy"] == "searched" and not any(t.stage == "batch" and t.img_per_s is not None
                                                               for t in search.trials):
            recorded["batch_policy"] = "not searched: budget"  # the batch stage's trials were all skipped
    if "accuracy" in settings.metrics:
        # its own precision (fp32 unless one was named: a bf16 top-1 depends on the CPU), on the weights as they
        # were read: timing in bf16 weights (`--best` may choose them) cast a copy (`_timed_copy`)
        accuracy_precision = speed.PRECISIONS[settings.accuracy_precision]
        acc, recorded["eval"] = measure_accuracy(
            model.to(dtype=accuracy_precision.dtype), variant, eval_opts, found, img_size=settings.img_size,
            precision=accuracy_precision, log=log)
        metrics.update(acc)
    notes = notes + warnings
    return Record(variant=variant.name, model=variant.model, settings=recorded, metrics=metrics,
                  env=collect_env(device_name, env_extra, fingerprint), notes=notes)


def _short_loop_warning(settings: Settings) -> str | None:
    """A line for a timing shorter than its protocol's loop (`--warmup 0 --iters 1`, a smoke test): it printed
    "8.8 im/s" with no word, and `bench tables` then left it out of every column, silently too (a hostile pass)."""
    proto, device = TIMING_PROTOCOLS[settings.protocol], settings.device.split(":")[0]
    warmup, iters = proto.warmup[device], proto.iters[device]
    if "speed" not in settings.metrics or (settings.warmup >= warmup and settings.iters >= iters):
        return None
    setup = "; with no warm-up the first forward's one-off setup is timed too" if settings.warmup == 0 else ""
    return (f"timed with {settings.warmup} warm-up + {settings.iters} timed forwards, fewer than the {proto.name} "
            f"protocol's {warmup} + {iters}{setup}: a smoke test, not a measurement; bench tables leaves this timing "
            "out of its speed columns")


def _search(model, settings: Settings, fingerprint: machine.Fingerprint, data, log) -> best.Search:
    """`--best`: the fastest setting that agrees with fp32 eager, on the --data images when there are some."""
    eval_opts, found = data
    kind = settings.device.split(":")[0]
    wanted = best.precisions(fingerprint)
    if settings.precision_requested != "auto":  # a named precision is the only one searched
        wanted = (settings.precision,)
    attentions = (("none",) if not best.set_attention(model, "sdpa") else
                  (settings.attention,) if settings.attention_fixed else ATTENTIONS)
    start = settings.batch_size if settings.batch_fixed else min(settings.batch_size, settings.max_batch_cap)
    space = best.Space(wanted, best.SEARCHED[kind], attentions, start, settings.batch_fixed,
                       settings.max_batch_cap, settings.img_size, settings.device)
    log(f"searching for {settings.best_s:g} s at most: precisions {', '.join(space.precisions)}; compile "
        f"{', '.join(space.compile_modes)}; attention {', '.join(space.attentions)}; batch {settings.batch_size}"
        f"{' (fixed)' if space.batch_fixed else ' and around'}")
    inputs = best.check_images(model, settings.img_size, eval_opts.data, found.samples if found else None)
    return best.search(model, space, budget_s=settings.best_s, check_inputs=inputs, log=log)


def _timed_copy(model, settings: Settings):
    """The model in the timing's weight dtype: itself, cast in place, unless accuracy follows and the cast would
    lose what it needs (bf16 weights timed, fp32 evaluated): then a cast copy."""
    dtype = speed.PRECISIONS[settings.precision].dtype
    accuracy = speed.PRECISIONS[settings.accuracy_precision].dtype if settings.accuracy_precision else None
    if accuracy is not None and accuracy != dtype:
        return copy.deepcopy(model).to(dtype=dtype)
    return model.to(dtype=dtype)


def search_result(settings: Settings, chosen: best.Candidate) -> Settings:
    """The settings `bench run` times after the search: the chosen candidate's."""
    why = (settings.precision_why if settings.precision_requested != "auto" else
           "--best: the fastest native precision whose setting agrees with fp32 eager")
    return dataclasses.replace(settings, precision=chosen.precision, compile=chosen.compile != "off",
                               compile_mode=chosen.compile, batch_size=chosen.batch_size, attention=chosen.attention,
                               precision_why=why)


def _release_freed_memory() -> None:
    """Collect the search's dropped models and hand freed heap back to the OS (glibc's malloc_trim), so the process's
    peak resident set measured next is the chosen setting's, not the search's."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _img_size_override(variant: Variant, img_size: int) -> dict[str, int]:
    # ViTs size their position embedding at build time; convnets take any input size as it is.
    return {"img_size": img_size} if variant.family == "vit" else {}


def _time(model, variant: Variant, settings: Settings, log):
    prec = speed.PRECISIONS[settings.precision]
    batch = settings.batch_size
    if batch == "max":
        log(f"searching the largest batch that fits (cap {settings.max_batch_cap})")
        fits = speed.cuda_batch_fits(model, img_size=settings.img_size, device=settings.device, precision=prec)
        batch = speed.find_max_batch(fits, cap=settings.max_batch_cap)
        log(f"largest batch that fits: {batch}")
    runner = compiling.compiled(model, settings.compile_mode)
    for attempt in range(5):  # back off on OOM (compile workspaces, fragmentation) when searching "max"
        monitor = gpu.GpuMonitor.for_device(settings.device)
        log(f"timing {settings.warmup} warm-up + {settings.iters} timed forwards of batch {batch} "
            f"on {settings.device}, {settings.precision}{compiled_label(settings.compile_mode)}")
        # progress on a terminal (deit_b on 2 cores is minutes of forwards); updated between timed spans
        bar = tqdm(total=settings.warmup + settings.iters, desc="timing", unit="fwd", file=sys.stderr, disable=None,
                   leave=False)
        try:
            timing = speed.time_forward(runner, speed.Batch(batch, settings.img_size, settings.device, prec),
                                        warmup=settings.warmup, iters=settings.iters, monitor=monitor,
                                        progress=functools.partial(bar.update, 1))
            return timing, (monitor.readings if monitor else {})
        except RuntimeError as exc:  # compiling, inductor wraps an out-of-memory in BackendCompilerFailed
            if not (isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)):
                raise
            if settings.batch_size != "max" or attempt == 4:
                torch.cuda.empty_cache()
                raise BatchDoesNotFit(f"batch size {batch} does not fit in GPU memory for {variant.name} at "
                                      f"{settings.precision}; use a smaller --batch-size or max") from None
        finally:
            bar.close()
        if settings.compile_mode != "off":  # CUDA graphs keep their memory pools, which empty_cache leaves alone:
            runner = None  # dynamo's reset frees them (it resets the CUDA-graph trees); then compile anew
            torch._dynamo.reset()
            runner = compiling.compiled(model, settings.compile_mode)
        torch.cuda.empty_cache()  # here, not in the except block, whose traceback holds the failed call's tensors
        batch = max(1, int(batch * 0.9))
        log(f"out of memory; backing off to batch {batch}")
    raise AssertionError("unreachable")


def compiled_label(mode: str) -> str:
    return "" if mode == "off" else ", compiled" if mode == "default" else f", compiled ({mode})"


# Relative timing runs in this many fresh processes on CPU, the rounds split between them. One process keeps
# one memory layout for its life, and with it a bias of its own: eleven single-process `bench run --metrics
# relspeed` runs of deit_ti on the development VM had medians with a standard deviation of 3.6 %; eleven runs of
# 4 processes each, 1.2 % (results/REPORT.md). The model is rebuilt in each process with random
# weights (speed does not depend on them).
RELSPEED_PROCESSES = {"cpu": 4, "cuda": 1}


def _relspeed(variant: Variant, settings: Settings, log) -> dict[str, Any]:
    reference = speed.ReferenceEncoder.describe(settings.batch_size)  # the workers build the workload itself
    processes = RELSPEED_PROCESSES[settings.device.split(":")[0]]
    log(f"timing {settings.iters} alternating rounds of the model (batch {settings.batch_size}) and the reference "
        f"({reference}) in {processes} fresh process(es), {settings.threads} thread(s); up to "
        f"{settings.budget_s:g} s more while contended")
    share = dataclasses.replace(settings, iters=-(-settings.iters // processes), budget_s=settings.budget_s / processes)
    if processes == 1:
        parts = [_relspeed_worker(variant.name, share)]
    else:  # "spawn": a new interpreter each, nothing inherited from this process's heap
        context = multiprocessing.get_context("spawn")
        parts = []
        for _ in range(processes):
            with context.Pool(1, initializer=_leave_ctrl_c_to_the_parent) as pool:
                parts.append(pool.apply(_relspeed_worker, (variant.name, share)))
    rel = speed.RelativeTiming.concat(parts)
    contended = sum(rel.contended)
    known = None not in rel.other_cores + rel.steal  # /proc/stat read in every round
    if contended:
        log(f"{contended} of {len(rel.ratios)} rounds ran while the machine was busy"
            + (f" (median other busy cores {statistics.median(rel.other_cores):.2f})" if known else "")
            + "; bench check will not call a slowdown a regression from them")
    if not known:
        log("warning: /proc/stat could not be read, so other processes' load is unknown: rounds were judged busy or "
            "quiet by this process's own share of a core alone")
    return {
        "relspeed_ratio": statistics.median(rel.ratios),
        "relspeed_ratios": [round(r, 6) for r in rel.ratios],
        "relspeed_clock": rel.clock,
        "relspeed_model_ms": [round(t * 1e3, 4) for t in rel.model_s],
        "relspeed_reference_ms": [round(t * 1e3, 4) for t in rel.reference_s],
        "relspeed_model_wall_ms": [round(t * 1e3, 4) for t in rel.model_wall_s],
        "relspeed_reference_wall_ms": [round(t * 1e3, 4) for t in rel.reference_wall_s],
        "relspeed_other_cores": [round(v, 3) for v in rel.other_cores] if known else None,
        "relspeed_steal": [round(v, 4) for v in rel.steal] if known else None,
        "relspeed_cpu_share": [round(v, 3) for v in rel.cpu_share],
        "relspeed_contended": list(rel.contended),
        "relspeed_reference": reference,
        "relspeed_processes": processes,
    }


def _leave_ctrl_c_to_the_parent() -> None:
    """Ctrl-C reaches the whole process group: the parent stops the pool and says so; a worker stays quiet."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _relspeed_worker(name: str, settings: Settings) -> speed.RelativeTiming:
    """One process's share of the relative timing: build the model and the reference, time alternately."""
    from bench.registry import VARIANTS

    torch.set_num_threads(settings.threads)
    variant = VARIANTS[name]
    model = variant.build(**_img_size_override(variant, settings.img_size)).eval()
    model = model.to(device=settings.device, dtype=speed.PRECISIONS[settings.precision].dtype)
    runner = compiling.compiled(model, settings.compile_mode)
    batch = speed.Batch(settings.batch_size, settings.img_size, settings.device, speed.PRECISIONS[settings.precision])
    return speed.time_interleaved(runner, speed.ReferenceEncoder(settings.batch_size), batch, rounds=settings.iters,
                                  warmup=settings.warmup, budget_s=settings.budget_s)


def speed_metrics(timing: speed.Timing, settings: Settings, gmacs: float | None, device_name: str,
                  readings: dict[str, Any]) -> dict[str, Any]:
    """Record keys for one timing run (names carry their units)."""
    img_per_s = timing.img_per_s(settings.stat)
    out: dict[str, Any] = {
        "infer_img_per_s": img_per_s,
        "infer_img_per_s_median": timing.img_per_s("median"),
        "infer_img_per_s_mean": timing.img_per_s("mean"),
        "infer_batch_size": timing.batch_size,
        "batch_ms_median": timing.median_s * 1e3,
        "batch_ms_mean": timing.mean_s * 1e3,
        "batch_ms_min": min(timing.samples_s) * 1e3,
        "batch_ms_max": max(timing.samples_s) * 1e3,
        "batch_ms_iqr": (timing.quantile_s(0.75) - timing.quantile_s(0.25)) * 1e3,
        "latency_ms_p50": timing.quantile_s(0.50) * 1e3,
        "latency_ms_p90": timing.quantile_s(0.90) * 1e3,
        "latency_ms_p99": timing.quantile_s(0.99) * 1e3,
        "batch_ms_samples": [round(s * 1e3, 4) for s in timing.samples_s],
        "peak_mem_mib": timing.peak_mem_mib,
        "peak_mem_kind": timing.peak_mem_kind,
        "timer": timing.timer,
        "timed_other_cores": None if timing.other_cores is None else round(timing.other_cores, 3),
        "timed_busy": timing.busy,
    }
    if settings.device.startswith("cuda"):
        peak = gpu.peak_tflops(device_name, speed.PRECISIONS[settings.precision].peak)
        out["peak_tflops_datasheet"] = peak
        out["mfu"] = gpu.mfu(gmacs, img_per_s, peak) if gmacs is not None else None
        energy = readings.get("energy_j")
        images = timing.batch_size * len(timing.samples_s)
        out.update({f"gpu_{k}": v for k, v in readings.items()})
        out["energy_j_per_img"] = energy / images if energy is not None else None
    return out


def measured_mfu(fingerprint: machine.Fingerprint, settings: Settings, metrics: dict[str, Any], log) -> dict[str, Any]:
    """Achieved model FLOP/s and its fraction of this machine's measured GEMM peak in the precision that bounds the
    run (amp_bf16: bf16). No fraction where that precision has no native peak here, its peak was measured busy, or
    the run beat it (peak.usable)."""
    column = speed.PRECISIONS[settings.precision].peak
    gmacs = metrics.get("gmacs")
    achieved = 2 * gmacs * metrics["infer_img_per_s"] / 1e3 if gmacs is not None else None
    measured = peak.usable(fingerprint, settings.device, column, achieved, log=log)
    return {"achieved_tflops": achieved, "peak_column": column,
            "peak_tflops_measured": measured.tflops if measured else None,
            "mfu_measured": achieved / measured.tflops if measured and achieved is not None else None}


def _settings_dict(variant: Variant, settings: Settings, metrics: dict[str, Any]) -> dict[str, Any]:
    out = dataclasses.asdict(settings)
    if settings.accuracy_precision is None:  # no key for what was not measured
        del out["accuracy_precision"]
    out["metrics"] = list(settings.metrics)
    out["batch_policy"] = ("max" if settings.batch_size == "max" else
                           "searched" if settings.best_s is not None and not settings.batch_fixed else "fixed")
    out["batch_size"] = metrics.get("infer_batch_size", settings.batch_size)  # the size actually timed
    out["num_classes"] = variant.num_classes
    out["distilled"] = variant.distilled
    return out


def _try(fn, *args) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # telemetry is optional: record why it is missing instead of failing the run
        return {"gpu_info_error": f"{type(exc).__name__}: {exc}"}
