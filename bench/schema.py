"""The record schema, typed: one class per section and record kind, each key a typed attribute with its meaning.

A record's `settings`, `metrics` and `env` are these sections (bench/record.py wraps the JSON objects in them), so
readers write `record.metrics.infer_img_per_s` and a type checker knows it is a float or None. A section is also a
read-only mapping of exactly the keys the JSON holds, so the file written is the file read, and records of older
sessions, which miss keys added since, still load: a missing key reads as None ("not measured").

docs/records.md is generated from these classes (`python -m bench.schema > docs/records.md`) and a test checks
every committed record against them, so the schema, the docs and what the code writes cannot drift apart.
Torch-free. To add a key: one `Key` line in its section's class (docs/extending.md).

Each key's declared type is also checked when a record is read (`Section.problems`): a record with
`"params": "five million"` is refused naming the file and the key, not a traceback in whatever reads it. JSON null
reads as "not measured", as a missing key does.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
import statistics
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from bench.jsontypes import type_problem
from bench.protocols import TIMING_PROTOCOLS

T = TypeVar("T")

KINDS = {
    "bench": "`bench run`: size, speed, relative speed (the gate), accuracy of one model",
    "train": "`reproduce train` and `reproduce suite`: one training run",
    "disagree": "`reproduce suite`: Table 4 for one seed, from the runs' predictions",
    "config": "`reproduce ls --show E --record DIR`: an experiment's resolved config (Table 9 reads it)",
    "stepspeed": "`reproduce step-speed`: our training step against an official-style loop, side by side",
}


class Key(Generic[T]):
    """One key of a section: `params = Key[int]("parameters")` reads `data["params"]` as an int, None if absent.
    `items` declares the type of a list's items or a dict's values (`Key[list]("…", items=float)`); `nullable=False`
    marks a key the writers always give a value, which readers use without a None check (null there is a damaged
    record); `required` a key every record has (absent: a damaged record); `valid(value)`, a problem beyond the type
    (None when there is none)."""

    def __init__(self, meaning: str, *, items: Any = None, nullable: bool = True, required: bool = False,
                 valid: Callable[[Any], str | None] | None = None) -> None:
        self.meaning = meaning
        self.items = items
        self.nullable = nullable and not required
        self.required = required
        self.valid = valid
        self.name = ""

    @property
    def type(self) -> Any:
        """What a value must be (`Section.problems`): the declared type, `list[items]` or `dict[str, items]`."""
        declared = self.__orig_class__.__args__[0]  # typing keeps `Key[int]`'s argument on the instance
        if self.items is None:
            return declared
        return list[self.items] if declared is list else dict[str, self.items]

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Key[T]: ...
    @overload
    def __get__(self, obj: Section, owner: type) -> T | None: ...

    def __get__(self, obj, owner=None):
        return self if obj is None else obj._data.get(self.name)


def positive(value: float) -> str | None:
    """A size or a speed: `bench check` read a hand-edited `params: -5` as CHANGED (a regression's exit 1) where
    `bench tables` refused it (a hostile pass); declared here, every reader refuses it."""
    return None if value > 0 else f"{value} must be positive"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else f"{value!r} is negative"


def percentage(value: float) -> str | None:
    return None if 0 <= value <= 100 else f"{value} must be a percentage in [0, 100]"


def all_positive(values: list) -> str | None:
    """Per-round ratios of two times: a ratio of -1 passed the gate (a hostile pass)."""
    bad = next((v for v in values if not v > 0), None)
    return None if bad is None else f"holds {bad}; a ratio of two times is > 0"


def a_percentage_where_named_top(name: str, value: float) -> str | None:
    """`final_val_top1_cls`, `best_val_top5`: a percentage; `best_val_top1_epoch`, `final_val_loss`: not one. A
    training record's top-1 of 150 was averaged into Table 3 (a hostile pass)."""
    return percentage(value) if ("top1" in name or "top5" in name) and not name.endswith("_epoch") else None


def history_problem(history: list) -> str | None:
    """Each evaluation: its epoch (a whole number, not negative) and top-1/top-5 percentages; the training figure drew
    what the reader let through, and a missing epoch crashed it (a hostile pass)."""
    for i, point in enumerate(history):
        if not isinstance(point, dict):
            return f"item {i}: expected an object with epoch and val_top1, got {type(point).__name__}"
        epoch = point.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            return f"item {i}: epoch {epoch!r} is not a whole number of epochs"
        for key, value in point.items():
            if "top" in key:
                problem = type_problem(value, float) or percentage(value)
                if problem:
                    return f"item {i}: {key}: {problem}"
    return None


def schedule_problem(points: list) -> str | None:
    """[epoch, learning rate] pairs, epochs not negative and in order, rates finite and not negative: [1, 2, 3]
    crashed the lr_schedule figure, and NaN or negative rates were drawn without a word (a hostile pass)."""
    last = 0.0
    for i, point in enumerate(points):
        if not (isinstance(point, list) and len(point) == 2) or type_problem(point, list[float]):
            return f"item {i}: expected [epoch, learning rate], got {point!r:.60}"
        epoch, lr = point
        if epoch < last or lr < 0:
            return f"item {i}: {point} is not an epoch after the one before with a rate of 0 or more"
        last = epoch
    return None


def device_problem(value: str) -> str | None:
    """cpu, cuda or cuda:N: a record of device "tpu" was placed in a CPU column (a hostile pass)."""
    kind, sep, index = value.partition(":")
    ok = value == "cpu" or kind == "cuda" and (not sep or index.isdigit())
    return None if ok else f"{value!r} is not cpu, cuda or cuda:N"


FUTURE_SKEW = dt.timedelta(days=1)  # a clock this far ahead of ours is wrong, not merely another machine's


def iso_time_problem(value: str) -> str | None:
    """Why `value` is not an ISO 8601 time with its zone, in the past (`created`: records are ordered by it, as
    times, not as text). A record dated 2099 was the newest for ever, hiding every later one from the gate and the
    tables; one without a zone was ordered as if in UTC (a hostile pass)."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an ISO 8601 time such as 2026-12-05T20:30:00+00:00"
    if when.tzinfo is None:
        return f"{value!r} has no time zone (such as +00:00), so it cannot be ordered with other machines' records"
    now = dt.datetime.now(dt.timezone.utc)
    if when > now + FUTURE_SKEW:
        return (f"{value!r} is in the future (now {now:%Y-%m-%dT%H:%M}Z): a record from a wrong clock would be the "
                "newest for ever")
    return None


class Family:
    """Keys sharing a pattern (one per head, per GPU reading): `batch_ms_*`. Read them by name: `metrics["…"]`.
    `type`, where every key of the family has one, is checked like a key's."""

    def __init__(self, pattern: str, meaning: str, type: Any = None,
                 valid: Callable[[str, Any], str | None] | None = None) -> None:
        self.pattern, self.meaning, self.type, self.valid = pattern, meaning, type, valid


class Section(Mapping[str, Any]):
    """A read-only view of one JSON object of a record, with the keys its subclass declares as typed attributes."""

    FAMILIES: tuple[Family, ...] = ()

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    @classmethod
    def declared(cls) -> list[Key]:
        """The typed keys, in declaration order (base classes first)."""
        seen: dict[str, Key] = {}
        for klass in reversed(cls.__mro__):
            seen.update({k: v for k, v in vars(klass).items() if isinstance(v, Key)})
        return list(seen.values())

    def problems(self) -> list[str]:
        """'key: expected int, got str …' for every value not of its key's declared type (or its family's); null
        is "not measured" and passes, but for a key declared `nullable=False`. Undeclared keys are `undocumented`'s
        business."""
        declared = {k.name: k for k in self.declared()}
        out = []
        for name, value in self._data.items():
            key = declared.get(name)
            family = None if key else next((f for f in self.FAMILIES if fnmatch.fnmatchcase(name, f.pattern)), None)
            expected = key.type if key else family.type if family else None
            if value is None:
                problem = None if key is None or key.nullable else \
                    "null, where it always has a value (a key not measured is left out)"
            else:
                problem = None if expected is None else type_problem(value, expected)
                if problem is None and key is not None and key.valid is not None:
                    problem = key.valid(value)
                if problem is None and family is not None and family.valid is not None:
                    problem = family.valid(name, value)
            if problem:
                out.append(f"{name}: {problem}")
        out += [f"{k.name}: missing, where every record has it" for k in declared.values()
                if k.required and k.name not in self._data]
        return out or self.inconsistencies()

    def inconsistencies(self) -> list[str]:
        """Values that disagree with the values they are computed from (read once every type is right)."""
        return []

    @classmethod
    def undocumented(cls, names: list[str]) -> list[str]:
        """The names that are neither a declared key nor in a declared family."""
        known = {k.name for k in cls.declared()}
        return [n for n in names if n not in known
                and not any(fnmatch.fnmatchcase(n, f.pattern) for f in cls.FAMILIES)]


class Env(Section):
    """`env`: where and with what the record was made (every kind)."""

    git_sha = Key[str]("commit of the code that ran")
    git_dirty = Key[bool]("uncommitted changes to tracked files")
    python = Key[str]("Python version")
    torch = Key[str]("torch version")
    torchvision = Key[str]("torchvision version")
    timm = Key[str]("timm version")
    fvcore = Key[str]("fvcore version")
    cuda = Key[str]("CUDA version torch was built with")
    cudnn = Key[int]("cuDNN version")
    device_name = Key[str]("the CPU's model name or the GPU's name")
    cpu = Key[str]("the CPU's model name")
    num_threads = Key[int]("torch threads when the record was made", valid=positive)
    os = Key[str]("platform string")
    created = Key[str]("UTC time, ISO 8601", required=True, valid=iso_time_problem)
    command = Key[str]("the command line")
    fingerprint = Key[dict]("the machine fingerprint (bench/machine.py): CPU vendor/family/model/stepping/name, ISA "
                            "features, cores, threads, torch, timm, torch's CPU capability; GPU name, capability, "
                            "driver, CUDA, power limit; `id`. Since 2026-12-01")
    gpu_name = Key[str]("bench on a GPU: its name from NVML")
    driver = Key[str]("bench on a GPU: NVIDIA driver version")
    gpu_memory_mib = Key[int]("bench on a GPU: its memory")
    gpu_info_error = Key[str]("bench on a GPU: why NVML facts are missing")


class BenchSettings(Section):
    """`settings` of `bench run`: what was asked for, every default resolved."""

    device = Key[str]("cpu, cuda or cuda:N", required=True, valid=device_problem)
    precision = Key[str]("the precision of the timed forwards, speed and relspeed (docs/precision.md)", required=True)
    precision_requested = Key[str]("what was asked for (`auto` by default)")
    precision_why = Key[str]("why `precision` was chosen")
    accuracy_precision = Key[str]("accuracy: the precision it was evaluated in, fp32 unless `--precision` named "
                                  "another (`auto` is for timing only). Absent in older records: `precision`")
    threads = Key[int]("torch threads of the measurement")
    batch_size = Key[int]("images per forward actually timed", valid=positive)
    batch_policy = Key[str]("fixed, max (largest batch that fits), searched (--best chose it) or not searched: "
                            "budget (--best's budget ran out before its batch stage timed anything)")
    max_batch_cap = Key[int]("upper bound of the max search")
    img_size = Key[int]("input resolution", required=True, valid=positive)
    protocol = Key[str]("timing protocol: timm or paper (docs/benchmarking.md)", required=True,
                        valid=lambda v: None if v in TIMING_PROTOCOLS else f"{v!r} is not timm or paper")
    stat = Key[str]("median or mean of the per-batch times")
    compile = Key[bool]("torch.compile", required=True)
    compile_mode = Key[str]("off, default, freezing, max-autotune or reduce-overhead (bench/compiling.py); absent "
                            "in older records: default where compile is true")
    best_s = Key[float]("--best: the search's budget in seconds (None: no search)")
    attention = Key[str]("sdpa or matmul: how the ViT's attention ran (None: the model has none); absent in older "
                         "records: sdpa")
    attention_fixed = Key[bool]("--attention was given (--best searched no other)")
    batch_fixed = Key[bool]("--batch-size was given (--best then searched no batch)")
    search = Key[dict]("--best: chosen setting, every setting tried (precision, compile, batch, stage, status, trial "
                       "im/s, seconds), the agreement check against fp32 eager, the weights, budget and time spent")
    warmup = Key[int]("untimed forwards", valid=lambda v: None if v >= 0 else f"{v} must be 0 or more")
    iters = Key[int]("timed forwards (relspeed: rounds)", valid=positive)
    metrics = Key[list]("what was measured", items=str, required=True)
    budget_s = Key[float]("relspeed: seconds allowed for retaking contended rounds")
    num_classes = Key[int]("the head's classes (a checkpoint's head decides)")
    distilled = Key[bool]("has a distillation token")
    eval = Key[dict]("accuracy: data, layout, label_space (how folders were matched to the model's classes), "
                     "classes_present, batch_size, preprocessing (protocol, crop, resize, interpolation, mean, std), "
                     "weights, limit (--limit N: at most N images, spread evenly; absent or null: every image)")


class BenchMetrics(Section):
    """`metrics` of `bench run`: what was measured, names with units."""

    FAMILIES = (
        Family("infer_img_per_s_*", "throughput by the median and by the mean of the per-batch times", float),
        Family("batch_ms_*", "per-batch time: median, mean, min, max, iqr, samples (ms)"),
        Family("latency_ms_p*", "per-batch time quantiles p50, p90, p99 (ms)", float),
        Family("gpu_*", "NVML readings: clocks (MHz), power (W), energy (J), temperature (C), throttle reasons"),
        Family("relspeed_*_ms", "per round: model and reference time, CPU and wall (ms)", list[float]),
        Family("top1_*", "top-1 (%) per head of a distilled model: _cls, _dist, _fused_logits, _fused_probs", float),
        Family("top5_*", "top-5 (%), the same heads", float),
        Family("real_*", "ImageNet-ReaL top-1/top-5 per head", float),
    )
    params = Key[int]("parameters", nullable=False, valid=positive)
    gmacs = Key[float]("multiply-accumulates, batch 1, G", nullable=False, valid=positive)
    infer_img_per_s = Key[float]("throughput by the protocol's statistic (images/s)", nullable=False, valid=positive)
    infer_batch_size = Key[int]("batch timed")
    peak_mem_mib = Key[float]("peak memory (MiB) over the timed forwards (reset after the warm-up)", valid=not_negative)
    peak_mem_kind = Key[str]("cuda_max_allocated or process_peak_rss")
    timer = Key[str]("cuda_event or perf_counter")
    timed_other_cores = Key[float]("cores other processes kept busy during the timed forwards (bench/load.py; null: "
                                   "/proc/stat could not be read)", valid=not_negative)
    timed_busy = Key[bool]("timed while other processes used the machine: a busy machine's figure (absent in older "
                           "records; null: unknown, /proc/stat could not be read)")
    mfu = Key[float]("model FLOPs utilisation against the datasheet peak (GPU)")
    peak_tflops_datasheet = Key[float]("the peak MFU divides by", valid=positive)
    achieved_tflops = Key[float]("model FLOP/s achieved: 2 per MAC, forward, at infer_img_per_s (TFLOP/s)")
    peak_column = Key[str]("the precision whose GEMM peak bounds this run: fp32, tf32, bf16 or fp16")
    peak_tflops_measured = Key[float]("this machine's measured dense-GEMM peak in that precision (bench/peak.py)", valid=positive)
    mfu_measured = Key[float]("achieved_tflops / peak_tflops_measured (None: no native peak, or measured busy)")
    energy_j_per_img = Key[float]("NVML energy over the timed loop per image (J)")
    relspeed_ratio = Key[float]("median model/reference time ratio (the gate)", nullable=False, valid=positive)
    relspeed_ratios = Key[list]("the ratio of every round", items=float, nullable=False, valid=all_positive)
    relspeed_clock = Key[str]("process_cpu_time or cuda_event")
    relspeed_other_cores = Key[list]("per round: cores other processes kept busy (null: /proc/stat could not be read; "
                                     "rounds were then judged by relspeed_cpu_share alone)", items=float)
    relspeed_steal = Key[list]("per round: share of the machine the hypervisor took (null: likewise)", items=float)
    relspeed_cpu_share = Key[list]("per round: the share of a core our thread got", items=float)
    relspeed_contended = Key[list]("per round: measured on a busy machine", items=bool)
    relspeed_reference = Key[str]("the reference workload", nullable=False)
    relspeed_processes = Key[int]("fresh processes the rounds were split over")
    top1 = Key[float]("top-1 (%) of the official output (a distilled model: mean of the heads' logits)", nullable=False,
                      valid=percentage)
    top5 = Key[float]("top-5 (%) of the official output", nullable=False, valid=percentage)
    real_top1 = Key[float]("ImageNet-ReaL top-1 (%) of the official output", valid=percentage)
    real_top5 = Key[float]("ImageNet-ReaL top-5 (%) of the official output", valid=percentage)
    real_images = Key[int]("images with a ReaL label set (the others are left out)")
    loss = Key[float]("mean cross-entropy of the official output")
    images = Key[int]("images scored")
    eval_img_per_s = Key[float]("evaluation loop speed, loading included (images/s)")
    eval_img_per_s_steady = Key[float]("evaluation loop speed after the first batch (images/s)")

    def inconsistencies(self) -> list[str]:
        """Each derived speed number against what `bench run` derives it from. A hand-edited `infer_img_per_s` of
        1e308 was shown in every table and the gate (a hostile pass); each committed record agrees to rounding."""
        m, out = self._data, []

        def agree(name: str, want: float | None, how: str, *, abs_tol: float = 0.0) -> None:
            value = m.get(name)
            if value is not None and want is not None and not math.isclose(value, want, rel_tol=1e-6, abs_tol=abs_tol):
                out.append(f"{name}: {value!r} disagrees with {how}, {want:.6g}")

        def get(*names: str) -> list[float] | None:
            values = [m.get(n) for n in names]
            return None if None in values or 0 in values else values

        samples = m.get("batch_ms_samples")
        if samples and all(isinstance(v, (int, float)) for v in samples):  # rounded to 1e-4 ms when written
            for stat, of in (("median", statistics.median), ("mean", statistics.fmean), ("min", min), ("max", max)):
                agree(f"batch_ms_{stat}", of(samples), f"the {stat} of batch_ms_samples", abs_tol=1e-3)
        for stat in ("median", "mean"):
            if (got := get("infer_batch_size", f"batch_ms_{stat}")):
                agree(f"infer_img_per_s_{stat}", 1e3 * got[0] / got[1], f"infer_batch_size × 1000 / batch_ms_{stat}")
        by_stat = [m[n] for n in ("infer_img_per_s_median", "infer_img_per_s_mean") if m.get(n) is not None]
        if m.get("infer_img_per_s") is not None and by_stat and \
                not any(math.isclose(m["infer_img_per_s"], v, rel_tol=1e-9) for v in by_stat):
            out.append(f"infer_img_per_s: {m['infer_img_per_s']!r} is neither infer_img_per_s_median nor _mean")
        if (got := get("gmacs", "infer_img_per_s")):
            agree("achieved_tflops", 2 * got[0] * got[1] / 1e3, "2 × gmacs × infer_img_per_s / 1000")
        if (got := get("achieved_tflops", "peak_tflops_measured")):
            agree("mfu_measured", got[0] / got[1], "achieved_tflops / peak_tflops_measured")
        if (got := get("gmacs", "infer_img_per_s", "peak_tflops_datasheet")):
            agree("mfu", 2 * got[0] * got[1] / 1e3 / got[2], "2 × gmacs × infer_img_per_s / 1000 / peak_tflops_datasheet")
        return out


class TrainSettings(Section):
    """`settings` of a training run."""

    experiment = Key[str]("the registered experiment (reproduce ls)", required=True)
    config = Key[dict]("every TrainConfig field, resolved", required=True)
    device = Key[str]("cpu, cuda or cuda:N", valid=device_problem)
    amp = Key[str]("the precision that trained: none, bf16 or fp16")
    amp_why = Key[str]("why (`auto` resolves by the hardware)")
    world_size = Key[int]("processes")
    batch_size_per_gpu = Key[int]("images per process and step")
    global_batch_size = Key[int]("images per step over all processes")
    lr_scaled = Key[float]("the learning rate after batch scaling")
    output = Key[str]("the run folder")
    history = Key[list]("top-1/top-5 of every head at every evaluation", required=True, valid=history_problem)
    # the checkpoints a run loaded, by content (a path alone does not tie a student to its teacher run)
    teacher_sha256 = Key[str]("sha256 of the teacher checkpoint it distilled from (config.teacher_checkpoint); "
                              "absent without one, and in older records")
    finetune_sha256 = Key[str]("sha256 of the checkpoint it was fine-tuned from (config.finetune); not in older "
                               "records")
    resumed_from = Key[list]("per resume, in order: the checkpoint's path, sha256, epoch, step and world size; not "
                             "in older records")


# TrainConfig fields added after training records were written, with the value that describes what those older
# runs did (they predate the field). Readers fill a record's config with these before comparing configs, so seeds
# of one configuration stay together across versions (a test keeps this list complete).
CONFIG_BEFORE_FIELD: dict[str, Any] = {
    "sched_timing": "start", "cls_token_init": "timm", "attn_distill": False, "attn_blocks": [-1],
    "attn_per_head": False, "device_data": False, "channels_last": False, "fused_attn": True, "preload": False,
    "teacher_memo": False, "distill_smoothing": 0.0,
}


class TrainMetrics(Section):
    """`metrics` of a training run."""

    FAMILIES = (
        Family("final_*", "the last evaluation: val (and EMA) top-1/top-5 and loss per head", float,
               a_percentage_where_named_top),
        Family("best_*", "the best evaluation per top-1 head, and its epoch", float, a_percentage_where_named_top),
    )
    final_val_top1 = Key[float]("top-1 (%) of the official output at the last evaluation", valid=percentage)
    epochs = Key[int]("epochs completed", nullable=False)
    train_img_per_s = Key[float]("median training speed over epochs (all processes); with compile=true, each "
                                 "process's first epoch (it compiles) left out")
    timed_other_cores = Key[float]("the most cores other processes kept busy in an epoch whose speed counts (its "
                                   "own data-loading workers and local ranks not counted; absent in older records; "
                                   "null: not known)", valid=not_negative)
    timed_busy = Key[bool]("an epoch whose speed counts trained while other processes used the machine (never on a "
                           "GPU; absent in older records): train_img_per_s is then a busy machine's figure")
    wall_s_this_process = Key[float]("wall time of this process (a resumed run: since resuming)")
    ranks_identical_weights = Key[bool]("all processes ended with the same weights")
    checkpoint_sha256 = Key[str]("sha256 of the checkpoint.pth it wrote last (what a student's teacher_sha256 "
                                 "names); not in older records")


class DisagreeSettings(Section):
    """`settings` of a Table-4 record."""

    suite = Key[str]("the suite (e.g. table3-mini)")
    scale = Key[str]("mini, cifar10 or imagenet")
    seed = Key[int]("seed", required=True)
    device = Key[str]("where the predictions were made")
    experiments = Key[dict]("role -> experiment (teacher, DeiT, DeiT⚗)", items=str, required=True)
    runs = Key[dict]("role -> run folder", items=str, required=True)
    predictions_sha256 = Key[dict]("role -> sha256 of its predictions.pt", items=str)
    config_key = Key[str]("the students' configuration less their seed")


class DisagreeMetrics(Section):
    """`metrics` of a Table-4 record."""

    disagreement = Key[dict]("pairwise fraction of images classified differently", items=dict[str, float],
                             nullable=False)
    images = Key[int]("images compared", nullable=False)


class ConfigSettings(Section):
    """`settings` of a resolved-config record."""

    experiment = Key[str]("the registered experiment", required=True)
    config = Key[dict]("every TrainConfig field, resolved", required=True)
    device = Key[str]("always `config`: nothing ran")
    lr_schedule = Key[list]("[epoch, learning rate] as training sets it: at the start of every epoch, more often "
                            "with sched_per_step; the lr_schedule figure draws it", valid=schedule_problem)


class StepSpeedSettings(Section):
    """`settings` of a step-speed record."""

    experiment = Key[str]("the experiment whose step was timed", required=True)
    config = Key[dict]("every TrainConfig field, resolved", required=True)
    device = Key[str]("cpu, cuda or cuda:N")
    batch_size = Key[int]("images per step")
    steps = Key[int]("timed steps of each loop")
    warmup = Key[int]("untimed steps first (compilation included)")
    amp_ours = Key[str]("our precision (amp=auto resolved)")
    amp_official = Key[str]("the official-style loop's: fp16 with a scaler on CUDA, none on a CPU")


class StepSpeedMetrics(Section):
    """`metrics` of a step-speed record."""

    ours_img_per_s = Key[float]("our training step, images/s", nullable=False)
    official_img_per_s = Key[float]("the official-style loop, images/s", nullable=False)
    ratio = Key[float]("ours / official-style", nullable=False)
    gflop_per_image = Key[float]("training GFLOP per image: student forward and backward (3x), teacher forward")
    ours_mfu = Key[float]("ours: of the measured GEMM peak in its precision (None: no usable peak)")
    official_mfu = Key[float]("the official-style loop's, likewise")
    ours_peak_tflops_measured = Key[float]("the measured GEMM peak ours_mfu divides by, TFLOP/s (absent in older "
                                           "records)", valid=positive)
    official_peak_tflops_measured = Key[float]("the one official_mfu divides by, likewise", valid=positive)

    def inconsistencies(self) -> list[str]:
        """Each MFU against the speed, GFLOP per image and peak it is computed from."""
        m, out = self._data, []
        for side in ("ours", "official"):
            speed, gflop = m.get(f"{side}_img_per_s"), m.get("gflop_per_image")
            mfu, peak = m.get(f"{side}_mfu"), m.get(f"{side}_peak_tflops_measured")
            if None not in (speed, gflop, mfu, peak) and \
                    not math.isclose(mfu, gflop * speed / 1e3 / peak, rel_tol=1e-6):
                out.append(f"{side}_mfu: {mfu!r} disagrees with gflop_per_image × {side}_img_per_s / 1000 / "
                           f"{side}_peak_tflops_measured, {gflop * speed / 1e3 / peak:.6g}")
        return out
    timed_other_cores = Key[float]("cores other processes kept busy while a loop was timed, the larger of the two "
                                   "(absent in older records; null: /proc/stat could not be read)", valid=not_negative)
    timed_busy = Key[bool]("either loop timed while other processes used the machine (absent in older records; null: "
                           "unknown)")


class NoMetrics(Section):
    """A config record measures nothing."""


SECTIONS: dict[str, tuple[type[Section], type[Section]]] = {
    "bench": (BenchSettings, BenchMetrics), "train": (TrainSettings, TrainMetrics),
    "disagree": (DisagreeSettings, DisagreeMetrics), "config": (ConfigSettings, NoMetrics),
    "stepspeed": (StepSpeedSettings, StepSpeedMetrics),
}


def section_class(kind: str, section: str) -> type[Section]:
    if section == "env":
        return Env
    return SECTIONS[kind][("settings", "metrics").index(section)]


def undocumented(kind: str, section: str, names: list[str]) -> list[str]:
    """The names a record of `kind` carries in `section` that the schema does not know."""
    return section_class(kind, section).undocumented(names)


def render() -> str:
    """docs/records.md."""
    lines = ["# The result record", "",
             "<!-- generated by `python -m bench.schema > docs/records.md` from bench/schema.py; do not edit -->", "",
             "One JSON file per run (`bench/record.py: Record`), written atomically and never overwritten",
             "(`bench/store.py`). Tables, figures and the regression gate read records only. Every record has",
             "`schema_version`, `kind`, `variant`, `model` (timm name), `notes`, and three sections: `settings` (what",
             "was asked for, every default resolved), `metrics` (what was measured, names with units) and `env`",
             "(where and with what). In Python each section is typed (`record.metrics.params` is an int or None);",
             "a name ending in `*` is a family of keys, read by name (`record.metrics[\"top1_cls\"]`). A file lacking a",
             "`required` key, or whose `created` is not an ISO 8601 time with its zone, or lies more than a day ahead",
             "of this machine's clock, is not a record: `bench tables` names it and",
             "leaves it out; `bench check`, which must not judge on a partial reading, names it and stops (exit 2).",
             "The same holds for a `bench` record whose derived speed numbers disagree with what they are computed",
             "from (`BenchMetrics.inconsistencies`): the throughputs with the batch and its times, the batch times",
             "with their samples, `achieved_tflops` and the MFUs with the throughput, `gmacs` and the peaks.",
             "",
             "## Kinds", ""]
    lines += [f"- `{kind}`: {what}" for kind, what in KINDS.items()]
    for kind in KINDS:
        for section in ("settings", "metrics"):
            cls = section_class(kind, section)
            if cls.declared():
                lines += _table(f"`{kind}` records: `{section}` (`{cls.__name__}`)", cls)
    return "\n".join(lines + _table("`env`, every kind (`Env`)", Env)) + "\n"


def _table(title: str, cls: type[Section]) -> list[str]:
    rows = [f"| `{k.name}` | {_type_name(cls, k.name)}{', required' if k.required else ''} | {k.meaning} |"
            for k in cls.declared()]
    rows += [f"| `{f.pattern}` | family | {f.meaning} |" for f in cls.FAMILIES]
    return ["", f"## {title}", "", "| key | type | meaning |", "|:--|:--|:--|", *rows]


def _type_name(cls: type[Section], name: str) -> str:
    """`int` for a `Key[int]` (typing keeps the argument on the instance as `__orig_class__`)."""
    return getattr(cls, name).__orig_class__.__args__[0].__name__


if __name__ == "__main__":
    print(render(), end="")
