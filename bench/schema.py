"""The record schema: every key a record of each kind may carry, with its meaning; docs/records.md is generated
from it (`python -m bench.schema > docs/records.md`) and a test checks every committed record against it, so the
schema, the docs and what the code writes cannot drift apart. Torch-free.

A name may end in `*` (a family of keys: one per head, per GPU reading). Records of older sessions miss keys
added since; they still load (bench/record.py), and every reader treats a missing key as "not measured".
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

KINDS = {
    "bench": "`bench run`: size, speed, relative speed (the gate), accuracy of one model",
    "train": "`reproduce train` and `reproduce suite`: one training run",
    "disagree": "`reproduce suite`: Table 4 for one seed, from the runs' predictions",
    "config": "`reproduce ls --show E --record DIR`: an experiment's resolved config (Table 9 reads it)",
}
ALL = tuple(KINDS)


@dataclass(frozen=True)
class Key:
    section: str  # settings | metrics | env
    name: str  # may end in * (a family)
    kinds: tuple[str, ...]
    meaning: str


_ENV = [
    Key("env", "git_sha", ALL, "commit of the code that ran"), Key("env", "git_dirty", ALL, "uncommitted changes to tracked files"),
    Key("env", "python", ALL, "Python version"), Key("env", "torch", ALL, "torch version"),
    Key("env", "torchvision", ALL, "torchvision version"), Key("env", "timm", ALL, "timm version"),
    Key("env", "fvcore", ALL, "fvcore version"), Key("env", "cuda", ALL, "CUDA version torch was built with"),
    Key("env", "cudnn", ALL, "cuDNN version"), Key("env", "device_name", ALL, "the CPU's model name or the GPU's name"),
    Key("env", "cpu", ALL, "the CPU's model name"), Key("env", "num_threads", ALL, "torch threads when the record was made"),
    Key("env", "os", ALL, "platform string"), Key("env", "created", ALL, "UTC time, ISO 8601"),
    Key("env", "command", ALL, "the command line"),
    Key("env", "fingerprint", ALL, "the machine fingerprint (bench/machine.py): CPU vendor/family/model/stepping/name, "
        "ISA features, cores, threads, torch, timm, torch's CPU capability; GPU name, capability, driver, CUDA, "
        "power limit; `id`. Since 2026-12-01"),
    Key("env", "gpu_name", ("bench",), "GPU name from NVML"), Key("env", "driver", ("bench",), "NVIDIA driver version"),
    Key("env", "gpu_memory_mib", ("bench",), "GPU memory"), Key("env", "gpu_info_error", ("bench",), "why NVML facts are missing"),
]

_BENCH_SETTINGS = [
    Key("settings", "device", ("bench", "train", "disagree", "config"), "cpu, cuda or cuda:N (config records: `config`)"),
    Key("settings", "precision", ("bench",), "the precision that ran (docs/precision.md)"),
    Key("settings", "precision_requested", ("bench",), "what was asked for (`auto` by default)"),
    Key("settings", "precision_why", ("bench",), "why `precision` was chosen"),
    Key("settings", "threads", ("bench",), "torch threads of the measurement"),
    Key("settings", "batch_size", ("bench",), "images per forward actually timed"),
    Key("settings", "batch_policy", ("bench",), "fixed, or max (largest batch that fits)"),
    Key("settings", "max_batch_cap", ("bench",), "upper bound of the max search"),
    Key("settings", "img_size", ("bench",), "input resolution"),
    Key("settings", "protocol", ("bench",), "timing protocol: timm or paper (docs/benchmarking.md)"),
    Key("settings", "stat", ("bench",), "median or mean of the per-batch times"),
    Key("settings", "compile", ("bench",), "torch.compile"), Key("settings", "warmup", ("bench",), "untimed forwards"),
    Key("settings", "iters", ("bench",), "timed forwards (relspeed: rounds)"),
    Key("settings", "metrics", ("bench",), "what was measured"),
    Key("settings", "budget_s", ("bench",), "relspeed: seconds allowed for retaking contended rounds"),
    Key("settings", "num_classes", ("bench",), "the head's classes (a checkpoint's head decides)"),
    Key("settings", "distilled", ("bench",), "has a distillation token"),
    Key("settings", "eval", ("bench",), "accuracy: data, layout, label_space (how folders were matched to the model's "
        "classes), classes_present, batch_size, preprocessing (protocol, crop, resize, interpolation, mean, std), "
        "weights"),
]

_BENCH_METRICS = [
    Key("metrics", "params", ("bench",), "parameters"), Key("metrics", "gmacs", ("bench",), "multiply-accumulates, batch 1, G"),
    Key("metrics", "infer_img_per_s*", ("bench",), "throughput by the protocol's statistic (and by median, mean)"),
    Key("metrics", "infer_batch_size", ("bench",), "batch timed"),
    Key("metrics", "batch_ms_*", ("bench",), "per-batch time: median, mean, min, max, iqr, samples (ms)"),
    Key("metrics", "latency_ms_p*", ("bench",), "per-batch time quantiles p50, p90, p99 (ms)"),
    Key("metrics", "peak_mem_mib", ("bench",), "peak memory (MiB)"),
    Key("metrics", "peak_mem_kind", ("bench",), "cuda_max_allocated or process_peak_rss"),
    Key("metrics", "timer", ("bench",), "cuda_event or perf_counter"),
    Key("metrics", "mfu", ("bench",), "model FLOPs utilisation against the datasheet peak (GPU)"),
    Key("metrics", "peak_tflops_datasheet", ("bench",), "the peak MFU divides by"),
    Key("metrics", "energy_j_per_img", ("bench",), "NVML energy over the timed loop per image (J)"),
    Key("metrics", "gpu_*", ("bench",), "NVML readings: clocks (MHz), power (W), energy (J), temperature (C), throttle reasons"),
    Key("metrics", "relspeed_ratio", ("bench",), "median model/reference time ratio (the gate)"),
    Key("metrics", "relspeed_ratios", ("bench",), "the ratio of every round"),
    Key("metrics", "relspeed_clock", ("bench",), "process_cpu_time or cuda_event"),
    Key("metrics", "relspeed_*_ms", ("bench",), "per round: model and reference time, CPU and wall (ms)"),
    Key("metrics", "relspeed_other_cores", ("bench",), "per round: cores other processes kept busy"),
    Key("metrics", "relspeed_steal", ("bench",), "per round: share of the machine the hypervisor took"),
    Key("metrics", "relspeed_cpu_share", ("bench",), "per round: the share of a core our thread got"),
    Key("metrics", "relspeed_contended", ("bench",), "per round: measured on a busy machine"),
    Key("metrics", "relspeed_reference", ("bench",), "the reference workload"),
    Key("metrics", "relspeed_processes", ("bench",), "fresh processes the rounds were split over"),
    Key("metrics", "top1*", ("bench",), "top-1 (%): official output, and per head (_cls, _dist, _fused_logits, _fused_probs)"),
    Key("metrics", "top5*", ("bench",), "top-5 (%), the same heads"),
    Key("metrics", "real_*", ("bench",), "ImageNet-ReaL top-1/top-5 per head; real_images: images with a label set"),
    Key("metrics", "loss", ("bench",), "mean cross-entropy of the official output"),
    Key("metrics", "images", ("bench", "disagree"), "images scored"),
    Key("metrics", "eval_img_per_s*", ("bench",), "evaluation loop speed, whole and after the first batch"),
]

_TRAIN = [
    Key("settings", "experiment", ("train", "config"), "the registered experiment (reproduce ls)"),
    Key("settings", "config", ("train", "config"), "every TrainConfig field, resolved"),
    Key("settings", "amp", ("train",), "the precision that trained: none, bf16 or fp16"),
    Key("settings", "amp_why", ("train",), "why (`auto` resolves by the hardware)"),
    Key("settings", "world_size", ("train",), "processes"),
    Key("settings", "batch_size_per_gpu", ("train",), "images per process and step"),
    Key("settings", "global_batch_size", ("train",), "images per step over all processes"),
    Key("settings", "lr_scaled", ("train",), "the learning rate after batch scaling"),
    Key("settings", "output", ("train",), "the run folder"),
    Key("settings", "history", ("train",), "top-1/top-5 of every head at every evaluation"),
    Key("metrics", "final_*", ("train",), "the last evaluation: val (and EMA) top-1/top-5 per head"),
    Key("metrics", "best_*", ("train",), "the best evaluation per top-1 head, and its epoch"),
    Key("metrics", "epochs", ("train",), "epochs completed"),
    Key("metrics", "train_img_per_s", ("train",), "median training speed over epochs (all processes)"),
    Key("metrics", "wall_s_this_process", ("train",), "wall time of this process (a resumed run: since resuming)"),
    Key("metrics", "ranks_identical_weights", ("train",), "all processes ended with the same weights"),
]

_DISAGREE = [
    Key("settings", "suite", ("disagree",), "the suite (e.g. table3-mini)"),
    Key("settings", "scale", ("disagree",), "mini, cifar10 or imagenet"), Key("settings", "seed", ("disagree",), "seed"),
    Key("settings", "experiments", ("disagree",), "role -> experiment (teacher, DeiT, DeiT⚗)"),
    Key("settings", "runs", ("disagree",), "role -> run folder"),
    Key("settings", "predictions_sha256", ("disagree",), "role -> sha256 of its predictions.pt"),
    Key("settings", "config_key", ("disagree",), "the students' configuration less their seed"),
    Key("metrics", "disagreement", ("disagree",), "pairwise fraction of images classified differently"),
]

SCHEMA: tuple[Key, ...] = tuple(_ENV + _BENCH_SETTINGS + _BENCH_METRICS + _TRAIN + _DISAGREE)


def undocumented(kind: str, section: str, names: list[str]) -> list[str]:
    """The names a record of `kind` carries in `section` that the schema does not know."""
    patterns = [k.name for k in SCHEMA if k.section == section and kind in k.kinds]
    return [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def render() -> str:
    """docs/records.md."""
    lines = ["# The result record", "",
             "<!-- generated by `python -m bench.schema > docs/records.md` from bench/schema.py; do not edit -->", "",
             "One JSON file per run (`bench/record.py: Record`), written atomically and never overwritten",
             "(`bench/store.py`). Tables, figures and the regression gate read records only. Every record has",
             "`schema_version`, `kind`, `variant`, `model` (timm name), `notes`, and three sections: `settings` (what",
             "was asked for, every default resolved), `metrics` (what was measured, names with units) and `env`",
             "(where and with what). A name ending in `*` is a family of keys.", "", "## Kinds", ""]
    lines += [f"- `{kind}`: {what}" for kind, what in KINDS.items()]
    for section in ("settings", "metrics", "env"):
        lines += ["", f"## `{section}`", "", "| key | kinds | meaning |", "|:--|:--|:--|"]
        lines += [f"| `{k.name}` | {', '.join(k.kinds) if k.kinds != ALL else 'all'} | {k.meaning} |"
                  for k in SCHEMA if k.section == section]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
