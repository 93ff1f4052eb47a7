"""A training run's files: the checkpoint (official DeiT keys + our position), the JSONL log and the result.

Only rank 0 writes. Every write goes to a temporary file first and is renamed into place, so a crash or
Ctrl-C leaves the previous checkpoint or result whole.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench import machine
from bench.checkpoint import load_torch_file, sha256_of
from bench.errors import CheckpointError, StorageError, kind_of, plural
from bench.record import Record, RecordError, collect_env, cpu_model, read_record
from bench.store import append_line, check_held, write_atomic, write_text_atomic
from reproduce.config import PATH_FIELDS, ConfigError, TrainConfig, as_dict, caveats

if TYPE_CHECKING:  # the run's files are written by train.py, which imports this module
    from reproduce.train import Run


@dataclass
class CheckpointState:
    """Where the run is: `epoch` epochs complete plus `step` steps of the next; evaluations so far."""

    experiment: str
    config: dict[str, Any]
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_img_per_s: list[float] = field(default_factory=list)
    # per epoch beside train_img_per_s: {"other_cores", "busy"} while it trained (EpochMeter), None where not known
    train_load: list[dict[str, Any] | None] = field(default_factory=list)
    class_names: list[str] | None = None  # the label space by name (folder data), so evaluation can match by name
    weights: dict[str, Any] = field(default_factory=dict, repr=False)  # state dicts read from the file
    # the sha256 of every checkpoint the run loaded, kept across resumes (a path alone cannot tie a
    # student to the teacher run it learnt from, and a file at that path may be replaced)
    teacher_sha256: str | None = None
    finetune_sha256: str | None = None
    resumed_from: list[dict[str, Any]] = field(default_factory=list)  # {path, sha256, epoch, step} per resume
    # the loss sums and step count of the epoch a signal stopped mid-way ({"sums": …, "steps": n}), so that its
    # epoch line after --resume is the mean over all its steps, not over those after the resume (a hostile pass)
    partial_epoch: dict[str, Any] | None = None
    world_size: int | None = None  # the processes that wrote the checkpoint (None: a checkpoint from before it was kept)
    # how many training images and a digest of their list (`data.train_images`); None in older checkpoints
    train_images: dict[str, Any] | None = None

    @classmethod
    def fresh(cls, cfg: TrainConfig, experiment: str) -> CheckpointState:
        return cls(experiment, as_dict(cfg))

    def finished(self, cfg: TrainConfig) -> bool:
        return self.epoch >= cfg.epochs

    def check_images(self, now: dict[str, Any]) -> None:
        """A resumed run trains on the images it started with: 10 images added (or 15 deleted) under the data folder
        were resumed without a word, the epoch's steps and the sampler's order now another dataset's (a hostile
        pass). The path alone is checked with the config; this checks what is there."""
        if self.train_images is not None and self.train_images != now:
            counts = (f"{self.train_images['count']:,} then, {now['count']:,} now" if self.train_images["count"] !=
                      now["count"] else f"{now['count']:,} both times, but not the same files")
            raise ConfigError(f"--resume: the training images changed since the checkpoint ({counts}); resumed, the run "
                              "would go on with another dataset: put the images back as they were, or start a new "
                              "run in another --output")

    def check_world(self, world: int, log) -> None:
        """A run stopped mid-epoch resumes only on as many processes as wrote its checkpoint: where the epoch goes on
        (the sampler's position is steps x the per-process batch) and every rank's random draws depend on it (a
        hostile pass resumed a 2-process checkpoint in 1 process, silently). At an epoch boundary the global batch and
        the recipe hold; the change is said, and `resumed_from` keeps each start's world size."""
        if self.world_size in (None, world):
            return
        if self.step:
            raise ConfigError(f"--resume: {self.resumed_from[-1]['path']} was written by {self.world_size} "
                              f"process(es) in the middle of epoch {self.epoch + 1}; resume it on {self.world_size} "
                              f"(torchrun --nproc_per_node {self.world_size}), not {world}")
        log(f"resuming a run of {self.world_size} process(es) on {world}, at an epoch boundary: the global batch is "
            "the same, the data order and random draws from here on are not those of an uninterrupted run")

    def restore(self, model, optimizer, scheduler, scaler, ema) -> None:
        model.load_state_dict(self.weights["model"])
        optimizer.load_state_dict(self.weights["optimizer"])
        scheduler.load_state_dict(self.weights["lr_scheduler"])
        if scaler is not None:
            scaler.load_state_dict(self.weights["scaler"])
        if ema is not None:
            ema.module.load_state_dict(self.weights["model_ema"])

    def hash_inputs(self, cfg: TrainConfig, teacher_sha256: str | None) -> None:
        """Keep the sha256 of the checkpoints this start loads besides the run's own: the teacher's on every start
        (a resumed run must distil from the very file it began with), as `models.build_teacher` hashed it while
        reading it (not hashed a second time here); the fine-tuning source's on the first (a resumed run takes the
        student from its own checkpoint)."""
        if teacher_sha256 is not None:
            if self.teacher_sha256 not in (None, teacher_sha256):
                raise ConfigError(f"--resume: teacher_checkpoint={cfg.teacher_checkpoint} has changed since the run "
                                  f"began (sha256 {self.teacher_sha256[:12]}, now {teacher_sha256[:12]}); restore that "
                                  "file, or train into another --output")
            self.teacher_sha256 = teacher_sha256
        if cfg.finetune and not self.resumed_from:
            self.finetune_sha256 = sha256_of(Path(cfg.finetune))

    def provenance(self) -> dict[str, Any]:
        """The hashes as the record's settings and the checkpoint keep them (what was not loaded is left out)."""
        hashes = {"teacher_sha256": self.teacher_sha256, "finetune_sha256": self.finetune_sha256,
                  "resumed_from": self.resumed_from}
        return {k: v for k, v in hashes.items() if v}

    def save_to(self, files: RunFiles, model, optimizer, scheduler, scaler, ema) -> None:
        if not files.main:
            return
        blob = {  # the official DeiT checkpoint keys, so its tools (and bench --checkpoint) read ours
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "model_ema": ema.module.state_dict() if ema is not None else None,
            "epoch": self.epoch, "step": self.step, "experiment": self.experiment, "config": self.config,
            "history": self.history, "train_img_per_s": self.train_img_per_s, "class_names": self.class_names,
            "provenance": self.provenance(), "partial_epoch": self.partial_epoch, "world_size": self.world_size,
            "train_images": self.train_images, "train_load": self.train_load,
        }
        check_held(files.checkpoint.parent)  # not into a run folder someone removed, re-made without its lock
        write_atomic(files.checkpoint, lambda tmp: torch.save(blob, tmp))
        files.saved_at = (self.epoch, self.step)


RESUME_KEYS = ("model", "optimizer", "lr_scheduler", "scaler", "model_ema", "epoch", "step", "experiment", "config",
               "history", "train_img_per_s")


class RunFiles:
    def __init__(self, output: Path, *, main: bool, sinks: Sequence[Callable[[dict[str, Any]], None]] = (),
                 resume_hint: str = "--resume continues from it") -> None:
        self.output, self.main, self.sinks, self.resume_hint = output, main, tuple(sinks), resume_hint
        self.checkpoint, self.log_file, self.result = output / "checkpoint.pth", output / "log.jsonl", output / "result.json"
        self.predictions = output / "predictions.pt"  # per-image top-5 of every head at the last evaluation
        self.saved_at: tuple[int, int] | None = None  # (epochs done, steps of the next) of the checkpoint on disk
        if main:
            output.mkdir(parents=True, exist_ok=True)

    def kept(self) -> str:
        """What a run stopped now leaves to continue from, for the messages of a failure or an interruption."""
        if self.checkpoint.is_file():
            at = "" if self.saved_at is None else \
                f"{plural(self.saved_at[0], 'epoch')} done, {plural(self.saved_at[1], 'step')} of the next; "
            return f"the last checkpoint {self.checkpoint} is intact ({at}{self.resume_hint})"
        return f"no checkpoint had been written yet ({self.checkpoint}; the first is saved after epoch 1), so a rerun starts afresh"

    def recorded(self, state: CheckpointState, cfg: TrainConfig, log=print) -> bool:
        """Whether the run had finished and been recorded: a second record would count it twice. A run that
        finished without its record (a full disk at result.json) is not: its record is written now."""
        if not state.finished(cfg):
            return False
        if self.result.exists():
            try:
                read_record(self.result)
            except RecordError as exc:  # a corrupt result.json is no record of the run (a hostile pass)
                log(f"finished before, but its record is unreadable ({exc}); writing it again")
                return False
            log(f"already finished: {self.result}; nothing to train")
            return True
        log(f"finished before, but its record was not written ({self.result} is missing); writing it now")
        return False

    def load(self, resume: bool, cfg: TrainConfig, experiment: str) -> CheckpointState | None:
        """The saved state when resuming (None when there is nothing to resume); refuses to start over an existing
        run without --resume, and to resume with a different configuration."""
        for path in (self.log_file, self.result):  # a folder there: a traceback at the log's trim, or a whole run
            if os.path.lexists(path) and not path.is_file():  # trained before failing to write its record
                raise ConfigError(f"{path} is not a regular file ({kind_of(path)}); the run writes it there: move it "
                                  "away, or choose another --output")  # (a hostile pass)
        if not self.checkpoint.exists():
            self._check_fresh()
            return None
        if not resume:
            raise ConfigError(f"{self.output} already holds a run ({self.checkpoint.name}); pass --resume to continue "
                              "it, or choose another --output")
        blob = load_torch_file(self.checkpoint, "--resume: the checkpoint")
        missing = [k for k in RESUME_KEYS if not isinstance(blob, dict) or k not in blob]
        if missing:
            found = ", ".join(sorted(map(str, blob))[:8]) if isinstance(blob, dict) else type(blob).__name__
            raise CheckpointError(f"--resume: {self.checkpoint} is not a checkpoint of `reproduce train` (it lacks "
                                  f"{', '.join(missing)}; found {found or 'nothing'}); move it away or choose "
                                  "another --output")
        if blob["experiment"] != experiment:  # two experiments can share a config (mini_hard, mini_hard_init_timm):
            # resumed under the other name, the run and its record were credited to it (a hostile pass)
            raise ConfigError(f"--resume --experiment {experiment}, but {self.checkpoint} is a run of "
                              f"{blob['experiment']}: give --experiment {blob['experiment']}, or another --output")
        differ = config_differences(blob["config"], cfg)
        if differ:
            raise ConfigError(f"--resume with a different configuration than {self.checkpoint}: {differ}")
        weights = {k: blob[k] for k in ("model", "optimizer", "lr_scheduler", "scaler", "model_ema")}
        earlier = blob.get("provenance") or {}  # none in older checkpoints
        self.saved_at = (blob["epoch"], blob["step"])
        resumed = {"path": str(self.checkpoint), "sha256": sha256_of(self.checkpoint), "epoch": blob["epoch"],
                   "step": blob["step"], "world_size": blob.get("world_size")}
        return CheckpointState(blob["experiment"], blob["config"], blob["epoch"], blob["step"], blob["history"],
                               blob["train_img_per_s"], class_names=blob.get("class_names"), weights=weights,
                               teacher_sha256=earlier.get("teacher_sha256"),
                               finetune_sha256=earlier.get("finetune_sha256"),
                               resumed_from=[*earlier.get("resumed_from", []), resumed],
                               partial_epoch=blob.get("partial_epoch") if blob["step"] else None,
                               world_size=blob.get("world_size"), train_images=blob.get("train_images"),
                               train_load=blob.get("train_load") or [None] * len(blob["train_img_per_s"]))

    def _check_fresh(self) -> None:
        """Refuse a fresh start over what it would replace and is not a stopped run's: a result.json (a run's comes
        after its checkpoint), or a log.jsonl whose lines are not `reproduce train`'s (a stopped run's last may be
        torn). A hostile pass saw a folder's result.json and log.jsonl replaced without a word."""
        if self.result.exists():
            raise ConfigError(f"{self.output} holds {self.result.name} but no {self.checkpoint.name}: a finished run "
                              "whose checkpoint is gone, or someone else's file; a new run would replace it. Choose "
                              "another --output, or move it away")
        if self.log_file.is_file():
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
            whole = all(_log_position(line) is not None for line in lines[:-1])
            last = not lines or _log_position(lines[-1]) is not None or lines[-1].startswith('{"type": "')  # or torn
            if not (whole and last):
                raise ConfigError(f"{self.output} holds {self.log_file.name}, which is not a log of `reproduce train`; "
                                  "a new run would replace it. Choose another --output, or move it away")

    def trim_log(self, state: CheckpointState, log=print) -> None:
        """Drop log lines written after the checkpoint (a run killed between them), so a resumed log is whole; and
        lines that cannot be read, saying so (a line torn by a kill or a full disk made --resume
        fail with a JSONDecodeError, though the checkpoint, which holds the history, was intact)."""
        if not self.main:
            return
        if not self.log_file.exists():
            if (state.epoch, state.step) != (0, 0):
                log(f"warning: {self.log_file} is missing up to the checkpoint (epoch {state.epoch}, step "
                    f"{state.step}): the log of the steps before it is lost; the checkpoint and the record keep the "
                    "history")
            return
        keep, bad = [], []
        lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            position = _log_position(line)
            if position is None:
                bad.append(number)
            elif position <= (state.epoch, state.step):
                keep.append(line)
        if (state.epoch, state.step) == (0, 0):  # a fresh start over a run stopped before its first checkpoint
            if lines:
                log(f"starting afresh: {self.log_file} of a run stopped before its first checkpoint is replaced")
        elif not keep:  # emptied or cut by hand: resumed silently, 42 of 57 lines gone (a hostile pass)
            log(f"warning: {self.log_file} holds no entry up to the checkpoint (epoch {state.epoch}, step "
                f"{state.step}): the log of the steps before it is lost; the checkpoint and the record keep the history")
        elif bad == [len(lines)]:
            log(f"warning: {self.log_file}: dropped its torn last line (a write cut short); the checkpoint is intact")
        elif bad:
            log(f"warning: {self.log_file}: dropped unreadable lines {', '.join(map(str, bad))} (not log entries of "
                "`reproduce train`); the checkpoint is intact")
        write_text_atomic(self.log_file, "".join(k + "\n" for k in keep))

    def log(self, entry: dict[str, Any]) -> None:
        if self.main:
            check_held(self.log_file.parent)
            append_line(self.log_file, json.dumps(entry))
            for sink in self.sinks:  # what watches the run besides the log: TensorBoard (reproduce/tracking.py)
                sink(entry)

    def finish(self, run: Run, wall_s: float, ranks_identical: bool) -> Record | None:
        """The run's result record (kind "train"), also kept as result.json beside the checkpoint."""
        if not self.main:
            return None
        state, cfg, procs = run.state, run.cfg, run.procs
        final = state.history[-1] if state.history else {}
        metrics: dict[str, Any] = {f"final_{k}": v for k, v in final.items() if k != "epoch"}
        for key in (k for k in final if "top1" in k):
            best = max(state.history, key=lambda h: h.get(key, float("-inf")))
            metrics[f"best_{key}"], metrics[f"best_{key}_epoch"] = best[key], best["epoch"]
        speeds = [s for s in state.train_img_per_s if s]
        metrics.update(_busy(state))
        metrics.update(epochs=state.epoch, train_img_per_s=statistics.median(speeds) if speeds else None,
                       wall_s_this_process=wall_s, ranks_identical_weights=ranks_identical,
                       checkpoint_sha256=sha256_of(self.checkpoint))  # the file a student's teacher_sha256 names
        settings = {"experiment": run.experiment, "config": state.config, "device": procs.device,
                    "world_size": procs.world, "batch_size_per_gpu": run.per_rank, "global_batch_size": cfg.batch_size,
                    "lr_scaled": run.recipe.lr, "output": str(self.output), "history": state.history,
                    **run.precision, **state.provenance()}
        notes = [] if cfg.finetune or cfg.dataset != "synthetic" else ["synthetic data: a smoke run, not a result"]
        notes += caveats(cfg) + _world_changes(state, procs.world)
        record = Record(run.variant.name, run.variant.model, settings, metrics, run.env, kind="train", notes=notes)
        try:
            check_held(self.result.parent)
            write_text_atomic(self.result, record.to_json())
        except StorageError as exc:
            raise StorageError(f"{exc}; {self.kept()}") from exc
        return record


def busy_warning(record: Record) -> str | None:
    """What a training record's `timed_busy` means, for the end of `reproduce train` and of a suite row."""
    if not record.metrics.get("timed_busy"):
        return None
    return (f"other processes kept up to {record.metrics.timed_other_cores:.1f} cores busy while it trained: its "
            "train_img_per_s is a busy machine's figure (timed_busy in the record)")


def _world_changes(state: CheckpointState, world: int) -> list[str]:
    """`check_world`'s warning, kept in the record's notes: it was said at the resume and lost from the record, whose
    world_size names the last start alone (a hostile pass). A start counts only where it trained: a resume that only
    wrote a finished run's missing record changed nothing. Older checkpoints' entries have no world_size."""
    starts = [*state.resumed_from, {"world_size": world, "epoch": state.epoch, "step": state.step}]
    return [f"resumed with {plural(resumed['epoch'], 'epoch')} done ({plural(resumed['step'], 'step')} of the next) "
            f"on {then['world_size']} process(es), from a checkpoint of {resumed['world_size']}: the data order and "
            "random draws from there on are not an uninterrupted run's"
            for resumed, then in zip(starts, starts[1:])
            if None not in (resumed.get("world_size"), then.get("world_size")) and resumed["world_size"] !=
            then["world_size"] and (resumed.get("epoch"), resumed.get("step")) != (then.get("epoch"), then.get("step"))]


def _busy(state: CheckpointState) -> dict[str, Any]:
    """`timed_other_cores` (the most over the epochs whose speed counts) and `timed_busy` (any of them busy), only
    where every such epoch's load is known: a run resumed from an older checkpoint says nothing rather than half."""
    loads = [load for speed, load in zip(state.train_img_per_s, state.train_load) if speed]
    if not loads or any(load is None for load in loads):
        return {}
    return {"timed_other_cores": max(load["other_cores"] for load in loads),
            "timed_busy": any(load["busy"] for load in loads)}


def _log_position(line: str) -> tuple[int, int] | None:
    """Where a log line stands (epochs complete, steps of the next); None for a line that is not an entry of ours."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or type(entry.get("epoch")) is not int:
        return None
    if entry.get("type") == "epoch":
        return entry["epoch"] + 1, 0
    return (entry["epoch"], entry["step"]) if entry.get("type") == "step" and type(entry.get("step")) is int else None


def same_value(a: Any, b: Any) -> bool:
    """Equality of config values as JSON reads them back, with nan equal to itself: `nan != nan` refused every
    --resume of a run whose config held one."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


_AMP_PRECISION = {"auto": "auto", "none": "fp32", "bf16": "amp_bf16", "fp16": "amp_fp16"}  # TrainConfig.amp -> bench


def resolve_amp(requested: str, fingerprint: dict) -> tuple[str, str, str | None]:
    """(amp mode, why, warning or None) for `TrainConfig.amp` on this machine: `auto` is bf16 only where bf16 is
    native (emulated bf16 trained the mini scale 14x slower on an AVX2 CPU). The record keeps both."""
    fp = machine.Fingerprint.from_dict(fingerprint)
    if requested == "fp16" and fp.device == "cpu":  # as bench run refuses it (a hostile pass: trained, without a word)
        raise ConfigError("amp=fp16 is for a CUDA GPU (the released code's setting), as bench run's fp16 is; on a CPU "
                          "use amp=auto, bf16 or none")
    precision, why = machine.choose_precision(_AMP_PRECISION[requested], fp)
    amp = next(mode for mode, name in _AMP_PRECISION.items() if name == precision)
    return amp, why, machine.bf16_warning(precision, fp)


def run_env(device: str) -> dict[str, Any]:
    """Provenance taken when the run starts: the code that runs is the code of this moment (a commit made while
    a long run trains must not be credited with its result)."""
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_model()
    return collect_env(name, fingerprint=machine.detect(device))


def config_differences(saved: dict, cfg: TrainConfig) -> str:
    """The fields in which `cfg` differs from a saved configuration, as "name (saved X, now Y), …"; "" when none."""
    now = json.loads(json.dumps(as_dict(cfg)))  # tuples as lists, as they come back from the file
    saved = json.loads(json.dumps(saved))
    saved = {k: os.path.abspath(v) if k in PATH_FIELDS and isinstance(v, str) and v else v  # runs from before paths
             for k, v in saved.items()}  # were made absolute kept them relative to where they were started
    differ = sorted(k for k in set(saved) | set(now) if not same_value(saved.get(k), now.get(k)))
    return ", ".join(f"{k} (saved {saved.get(k)!r}, now {now.get(k)!r})" for k in differ)


def unrecorded(result: Path, results_dir: Path) -> Record | None:
    """The record in a finished run's `result.json` when `results_dir` holds no copy of it (a kill between the two
    writes lost it for good: `--resume` said "already finished", a hostile pass); None when it is there, or when
    there is no readable result.json. A copy is a record of the same run: same creation time and run folder."""
    try:
        finished = read_record(result)
    except RecordError:
        return None
    key = (finished.env.get("created"), finished.settings.get("output"))
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else ():
        try:
            other = read_record(path)
        except RecordError:
            continue
        if (other.env.get("created"), other.settings.get("output")) == key:
            return None
    return finished
