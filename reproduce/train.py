"""`reproduce train`: DeiT's recipe (paper Table 9, official `main.py` + `engine.py`) on timm components.

Reads top to bottom as the recipe: processes, data, student, teacher, optimiser, schedule, Mixup, EMA, the
loop, evaluation, checkpoint, record. Every random draw is re-derived from (seed, rank, epoch, position), so a
run resumed from any checkpoint continues the very same loss trace.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from bench import compiling
from bench import data as bench_data
from bench.errors import DataError, StorageError, message_of, plural
from bench.evaluate import predict, scores
from bench.predictions import how_made
from bench.processes import (
    Processes,
    start_processes,
    stop_reporting_dead_workers,
)
from bench.record import Record
from bench.registry import Variant
from bench.speed import PRECISIONS
from bench.store import hold_folder
from reproduce import config, data, models, tracking
from reproduce.checkpoints import CheckpointState, RunFiles, resolve_amp, run_env
from reproduce.config import ConfigError, Interrupted, NonFiniteLoss, PeerLost, Preempted, TrainConfig
from reproduce.distill import AttentionTap, AttentionTerm, Distiller, LabelTeacher, MemoTeacher
from reproduce.meter import EpochMeter, StepStats
from reproduce.sampling import ResumableSampler, SeededItems, step_seed
from reproduce.schedule import epoch_lr, make_scheduler


def train(cfg: TrainConfig, output: Path, *, experiment: str, resume: bool, log=print,
          tensorboard: bool = False, resume_hint: str = "--resume continues from it") -> Record | None:
    """Train as `cfg` says, checkpointing into `output`, which this process holds (a second is refused);
    return the new result record (None on ranks other than 0, and for a run finished and recorded before).
    The CLI's checks run here too, so configs built in Python (suites, tests, scripts) are checked as well.
    `tensorboard` also writes the log's scalars as TensorBoard events into `output` (reproduce/tracking.py)."""
    config.check_ready(config.check(cfg))
    procs = start_processes(cfg.device)
    torch.backends.cudnn.benchmark = procs.device.startswith("cuda")  # fixed shapes; as the official main.py
    with hold_folder(output, log=log) if procs.main else contextlib.nullcontext(), \
            tracking.tensorboard(output, on=tensorboard, main=procs.main) as sinks:  # the log's scalars, watched live
        said = log if procs.main else (lambda _: None)  # under torchrun one banner, not one per rank run together
        return _train(cfg, procs, output, experiment, resume, said, sinks, resume_hint)


def _train(cfg: TrainConfig, procs: Processes, output: Path, experiment: str, resume: bool, log,
           sinks=(), resume_hint: str = "--resume continues from it") -> Record | None:
    env = run_env(procs.device)
    amp, amp_why, warning = resolve_amp(cfg.amp, env["fingerprint"])
    if warning:
        log(warning)
    files = RunFiles(output, main=procs.main, sinks=sinks, resume_hint=resume_hint)
    if cfg.batch_size % procs.world:
        raise ConfigError(f"batch_size={cfg.batch_size} (global) does not split over {procs.world} processes")
    per_rank = cfg.batch_size // procs.world
    models.seed_everything(cfg.seed + procs.rank)

    # student, teacher, data: the model decides resolution and eval preprocessing
    student, variant, img_size = models.build_student(cfg)
    teacher, teacher_sha256 = models.build_teacher(cfg)  # the file hashed once, as it is read
    prep = bench_data.preprocess(student, img_size, cfg.eval_protocol)
    train_set, val_set = data.datasets(cfg, data.train_transform(cfg, img_size), bench_data.build_transform(prep, False))
    batches = training_batches(train_set, cfg, procs, per_rank, img_size)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    student.to(procs.device, memory_format=memory_format)  # before the optimiser and the EMA copy are made
    teacher, memo = place_teacher(teacher, teacher_sha256, cfg, procs, amp, output, log)
    recipe = build_recipe(cfg, student, teacher, procs, per_rank, batches.steps_per_epoch, memory_format, amp)

    state = files.load(resume, cfg, experiment)  # None: a fresh start
    images = data.train_images(train_set)  # 1.28 M names hashed for ImageNet: once
    if state is not None:
        state.check_images(images)
        state.check_world(procs.world, log)
        state.restore(student, *recipe.checkpointed)
    else:
        state = CheckpointState.fresh(cfg, experiment)
    state.class_names = list(train_set.classes) if getattr(train_set, "classes", None) else None
    if files.recorded(state, cfg, log):
        return None
    if state.resumed_from:
        log(f"resumed from {files.checkpoint} (sha256 {state.resumed_from[-1]['sha256'][:12]}): "
            f"{plural(state.epoch, 'epoch')} done, continuing epoch {state.epoch + 1} after step {state.step}")
    state.world_size = procs.world
    state.train_images = images
    state.hash_inputs(cfg, teacher_sha256)

    model = DistributedDataParallel(student) if procs.world > 1 else student
    step_fn = torch.compile(model) if cfg.compile else model
    files.trim_log(state, log)
    named = f"; teacher {cfg.teacher_checkpoint}, sha256 {teacher_sha256[:12]}" if teacher_sha256 else ""
    log(f"{experiment}: {variant.name} ({cfg.teacher_signals()}{named}), "
        f"{len(train_set)} train / {len(val_set)} val images, {procs.world} × {per_rank} = {cfg.batch_size} per step, "
        f"lr {recipe.lr:.3g}, {cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'} × {batches.steps_per_epoch} steps "
        f"on {procs.device}, amp {amp} ({amp_why})")
    for caveat in [*config.caveats(cfg), *data.caveats(cfg, train_set, val_set)]:  # after the banner, which names
        log(f"warning: {caveat}")  # the run first
    run = Run(cfg, experiment, procs, files, state, recipe, student, variant, per_rank, val_set, prep, log,
              env, {"amp": amp, "amp_why": amp_why})
    started = time.perf_counter()
    stop = _PreemptionFlag()
    try:
        _loop(run, step_fn, batches, memo, stop)
        agree = ranks_agree(student, procs)  # a collective too: a peer may end here as well
    except (NonFiniteLoss, StorageError, DataError) as exc:  # a full or read-only disk; an image that cannot be read
        raise type(exc)(f"{message_of(exc)}; {files.kept()}") from None  # (a DataLoader worker's: one line, not 15)
    except KeyboardInterrupt:  # where the checkpoint stands, not the loop: an epoch is counted before it is evaluated
        raise Interrupted(f"interrupted; {files.kept()}") from None
    except RuntimeError as exc:
        if procs.world == 1 or not lost_peer(exc):
            raise
        # the survivor printed gloo's 40-line traceback and nothing of the checkpoint (a hostile pass)
        raise PeerLost(f"another process of the run ended ({_first_sentence(message_of(exc))}); {files.kept()}") from None
    finally:
        stop.restore()
    if not agree:
        log("warning: the ranks ended with different weights (DDP desynchronised)")
    return files.finish(run, time.perf_counter() - started, ranks_identical=agree)


@dataclass
class Run:
    """One training run as the loop and its record see it: the config, the processes, the files it writes, its
    position (`state`, which the loop advances), the step's recipe, the student and the validation data."""

    cfg: TrainConfig
    experiment: str
    procs: Processes
    files: RunFiles
    state: CheckpointState
    recipe: Recipe
    student: torch.nn.Module
    variant: Variant
    per_rank: int
    val_set: object
    prep: bench_data.Preprocess
    log: Callable[[str], None]
    env: dict  # provenance taken at the start (`run_env`)
    precision: dict[str, str]  # the amp mode used and why


def lost_peer(exc: RuntimeError) -> bool:
    """Whether a collective failed because another rank's end closed its connection: torch's network error, or
    gloo's plain RuntimeError ("[…/gloo/transport/tcp/pair.cc:545] Read error …: Connection reset by peer"). Not a
    timeout (a peer may be slow, not gone) nor any other gloo or NCCL error (a desynchronised collective, this rank's
    out of memory): those keep their traceback."""
    return isinstance(exc, dist.DistNetworkError) or any(sign in str(exc) for sign in (
        "Connection reset by peer", "Connection closed by peer", "Broken pipe"))


def _first_sentence(text: str) -> str:
    """`[…/pair.cc:545] Read error [127.0.0.1]:30091: Connection reset by peer. This is typically …` → its first
    sentence without the source location."""
    line = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text.splitlines()[0] if text else "")
    return line.split(". ")[0][:200]


def _loop(run: Run, step_fn, batches: Batches, memo: MemoTeacher | None, stop: _PreemptionFlag) -> None:
    """The epochs from the saved position to the end: steps, evaluation, checkpoint, log line."""
    cfg, procs, files, state, recipe, student = run.cfg, run.procs, run.files, run.state, run.recipe, run.student
    sampler, loader, steps_per_epoch = batches
    first = state.epoch  # with compile=true this process's first epoch also compiles: its speed is not the step's
    for epoch in range(state.epoch, cfg.epochs):
        sampler.set_epoch(epoch, start=state.step * run.per_rank)
        if not cfg.sched_per_step:
            epoch_lr(recipe.scheduler, epoch, cfg.sched_timing)  # one lr per epoch, warm-up a staircase (official)
        student.train()
        meter = EpochMeter(state.partial_epoch if epoch == first and procs.main else None)  # rank 0 carries all
        with tqdm(total=steps_per_epoch, initial=state.step, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                  disable=not procs.main, file=sys.stderr, dynamic_ncols=True) as bar:  # closed before a stop's message
            for images, target, _ in loader:
                global_step = epoch * steps_per_epoch + state.step
                if cfg.sched_per_step:
                    recipe.scheduler.step_update(global_step)
                models.seed_everything(step_seed(cfg.seed, procs.rank, epoch, state.step))  # drop path, Mixup draws
                stats = recipe.step(step_fn, student, images, target, global_step,
                                    where=f"epoch {epoch + 1}, step {state.step + 1} (global step {global_step})")
                state.step += 1
                meter.add(len(images), stats)
                current_lr = recipe.optimizer.param_groups[0]["lr"]
                if state.step % cfg.log_every == 0 or state.step == steps_per_epoch:
                    files.log({"type": "step", "epoch": epoch, "step": state.step, "global_step": global_step,
                               "loss": stats.loss, "loss_base": stats.base, "loss_distill": stats.term,
                               "lr": current_lr})
                bar.set_postfix(loss=f"{stats.loss:.3f}", lr=f"{current_lr:.2e}", refresh=False)
                bar.update(1)
                if stop.requested(procs):
                    state.partial_epoch = meter.partial(procs)
                    state.save_to(files, student, *recipe.checkpointed)
                    if memo is not None:
                        memo.save()
                    raise Preempted(f"stopped by signal in epoch {epoch + 1} after step {state.step}; "
                                    f"checkpoint {files.checkpoint}")
        line = {"type": "epoch", "epoch": epoch, "lr": recipe.optimizer.param_groups[0]["lr"], **meter.means(procs)}
        state.epoch, state.step, state.partial_epoch = epoch + 1, 0, None
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            final = state.epoch == cfg.epochs
            line.update(evaluate(run, save_to=files.predictions if final and procs.main else None))
            state.history.append({"epoch": state.epoch, **{k: v for k, v in line.items() if "top" in k}})
        state.train_img_per_s.append(None if cfg.compile and epoch == first else line["train_img_per_s"])
        state.train_load.append(None if line["train_busy"] is None else
                                {"other_cores": line["train_other_cores"], "busy": line["train_busy"]})
        state.save_to(files, student, *recipe.checkpointed)
        if memo is not None:
            memo.save()
            line.update(teacher_memo_hits=memo.hits, teacher_memo_misses=memo.misses)
        files.log(line)
        if procs.main:  # one line per epoch, not one per rank: the means are over every rank already
            run.log(_epoch_summary(line, cfg.epochs))


class Batches(NamedTuple):
    sampler: ResumableSampler
    loader: DataLoader  # or a `DeviceLoader`
    steps_per_epoch: int


def training_batches(train_set, cfg: TrainConfig, procs: Processes, per_rank: int, img_size: int) -> Batches:
    """The resumable, repeat-augmenting sampler, the loader of seeded items (or of batches augmented on the device,
    `device_data`), and the steps per epoch."""
    sampler = ResumableSampler(RepeatAugSampler(train_set, num_replicas=procs.world, rank=procs.rank,
                                                num_repeats=cfg.repeated_aug, shuffle=True),
                               seed=cfg.seed, rank=procs.rank)
    steps_per_epoch = len(sampler.inner) // per_rank
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(sampler.inner)} images per rank and epoch cannot fill one batch of {per_rank}")
    if cfg.device_data:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        from reproduce.device_data import DeviceImages, DeviceLoader, check_supported

        check_supported(cfg)
        return Batches(sampler, DeviceLoader(DeviceImages(train_set, procs.device), sampler, per_rank, cfg, procs.rank,
                                             img_size, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), steps_per_epoch)
    loader = bench_data.WorkerLoader(SeededItems(train_set), batch_size=per_rank, sampler=sampler, drop_last=True,
                                     num_workers=cfg.workers, pin_memory=procs.device.startswith("cuda"),
                                     persistent_workers=cfg.workers > 0)
    return Batches(sampler, loader, steps_per_epoch)


@dataclass(frozen=True)
class Recipe:
    """Everything a training step applies besides the model and the batch: the optimiser and its schedule,
    Mixup/CutMix, the loss (distillation included), the EMA and the precision."""

    lr: float
    optimizer: torch.optim.Optimizer
    scheduler: object
    mixup: Mixup | None
    distiller: Distiller
    ema: ModelEmaV3 | None
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    clip_grad: float | None
    device: str
    memory_format: torch.memory_format

    @property
    def checkpointed(self) -> tuple:
        """What a checkpoint holds besides the model, in `CheckpointState.save_to`/`restore` order."""
        return self.optimizer, self.scheduler, self.scaler, self.ema

    def step(self, model, student, images, target, global_step: int, where: str) -> StepStats:
        """One optimisation step on a loader batch. `model` runs the forward (DDP and/or compiled), `student` is
        the module its weights belong to; `where` describes the step in the error a non-finite loss raises."""
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        target = target.to(self.device, non_blocking=True)
        if self.mixup is not None:
            images, target = self.mixup(images, target)
        with torch.autocast(images.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, base, term, agree = self.distiller(images, model(images), target)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(f"non-finite loss {loss_value} at {where}")
        self.optimizer.zero_grad(set_to_none=True)
        _backward_step(loss, self.optimizer, self.scaler, student, self.clip_grad)
        if self.ema is not None:
            self.ema.update(student, step=global_step)
        return StepStats(loss_value, base.item(), term.item() if term is not None else None,
                         agree.item() if agree is not None else None)


def build_recipe(cfg: TrainConfig, student: torch.nn.Module, teacher: torch.nn.Module | None, procs: Processes,
                 per_rank: int, steps_per_epoch: int, memory_format: torch.memory_format, amp: str) -> Recipe:
    """The config's optimiser (the official parameter groups), schedule, Mixup, loss, EMA and precision (`amp`,
    resolved from cfg.amp)."""
    lr = cfg.peak_lr()
    fused = {"fused": True} if procs.device.startswith("cuda") and cfg.opt == "adamw" else {}  # one kernel per step
    # with layer decay timm builds the groups itself (its no-decay list includes dist_token); else the official groups
    params = student if cfg.layer_decay is not None else models.no_decay_groups(student, cfg.weight_decay, cfg.no_decay)
    optimizer = create_optimizer_v2(params, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                    eps=cfg.opt_eps, layer_decay=cfg.layer_decay, **fused)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        if per_rank % 2:  # timm's batch-mode Mixup pairs each image with the flipped batch
            raise ConfigError(f"Mixup/CutMix need an even batch per process; {cfg.batch_size} over {procs.world} "
                              f"process(es) is {per_rank}")
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.smoothing,
                      num_classes=cfg.num_classes)
    base_criterion = (SoftTargetCrossEntropy() if mixup else
                      LabelSmoothingCrossEntropy(cfg.smoothing) if cfg.smoothing else torch.nn.CrossEntropyLoss())
    attention = None
    if cfg.attn_distill:
        try:
            attention = AttentionTerm(AttentionTap(student, cfg.attn_blocks),
                                      AttentionTap(models.unwrap(teacher), cfg.attn_blocks), cfg.attn_per_head)
        except ValueError as exc:
            raise ConfigError(f"attn_distill: {exc}") from None
    distiller = Distiller(cfg.distillation, cfg.distill_alpha, cfg.distill_tau, cfg.kl_norm, teacher, base_criterion,
                          hard_smoothing=cfg.distill_smoothing, attention=attention)
    ema = ModelEmaV3(student, decay=cfg.ema_decay) if cfg.ema_decay else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(procs.device.split(":")[0]) if amp == "fp16" else None
    return Recipe(lr, optimizer, scheduler, mixup, distiller, ema, amp_dtype, scaler, cfg.clip_grad, procs.device,
                  memory_format)


def place_teacher(teacher: torch.nn.Module | None, teacher_sha256: str | None, cfg: TrainConfig, procs: Processes,
                  amp: str, output: Path, log) -> tuple[torch.nn.Module | None, MemoTeacher | None]:
    """The frozen teacher on the device in channels-last (NHWC weights make a convnet's convolutions NHWC whatever
    the input), compiled if asked, behind its logit memo if asked (`memo_path`, keyed by the checkpoint's sha256);
    and the memo, which the loop saves."""
    if teacher is None or isinstance(teacher, LabelTeacher):  # the labels need no device, compiling or memo
        return teacher, None
    teacher = teacher.to(procs.device, memory_format=torch.channels_last)
    # frozen weights folded in as constants (convolution + batch norm fused, GEMM weights pre-packed): the teacher
    # only ever runs in inference mode
    teacher = compiling.compiled(teacher, "freezing") if cfg.compile else teacher
    if not cfg.teacher_memo:
        return teacher, None
    memo = MemoTeacher.beside(teacher, cfg.teacher_checkpoint, teacher_sha256, amp, procs.rank, procs.world,
                              run_folder=output, log=log)
    return memo, memo


def ranks_agree(model: torch.nn.Module, procs: Processes) -> bool:
    """Whether every rank holds the same weights, compared by two float64 digests of all parameters (DDP keeps
    them identical; a mismatch means the ranks desynchronised)."""
    if procs.world == 1:
        return True
    flat = torch.cat([p.detach().flatten().float() for p in model.parameters()])
    digest = torch.stack([flat.double().sum(), (flat.double() * torch.arange(len(flat), device=flat.device)).sum()])
    gathered = [torch.zeros_like(digest) for _ in range(procs.world)]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _backward_step(loss, optimizer, scaler, model, clip_grad) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()


def evaluate(run: Run, save_to: Path | None = None) -> dict:
    """Top-1/top-5 of every head on the validation set (bench's evaluation: each image once over all ranks),
    for the EMA weights too when there are any (the official code keeps an EMA but never evaluates it).
    `save_to` keeps the student's per-image predictions (for Table 4 and the gallery figure)."""
    amp_dtype, ema = run.recipe.amp_dtype, run.recipe.ema
    precision = PRECISIONS[{None: "fp32", torch.bfloat16: "amp_bf16", torch.float16: "amp_fp16"}[amp_dtype]]
    out = {}
    for prefix, net in (("val_", run.student), ("ema_val_", ema.module if ema is not None else None)):
        if net is None:
            continue
        net.eval()
        preds = predict(net, run.val_set, run.prep, distilled=run.variant.distilled, precision=precision,
                        batch_size=run.cfg.eval_batch_size, workers=run.cfg.workers, progress=False)
        net.train()
        if save_to is not None and prefix == "val_":  # with how they were made, which bench disagree compares
            made = how_made(run.variant.model, run.prep.img_size, precision.name, run.prep)
            replace(preds, made=made).save(save_to)
        out.update({prefix + k: v for k, v in scores(preds).items() if k.startswith(("top", "loss"))})
    return out


def _epoch_summary(line: dict, epochs: int) -> str:
    parts = [f"epoch {line['epoch'] + 1}/{epochs}", f"loss {line['loss']:.4f}", f"lr {line['lr']:.3g}"]
    if line.get("train_img_per_s"):
        parts.append(f"{line['train_img_per_s']:.1f} img/s")
    parts += [f"{k.removeprefix('val_')} {v:.2f}" for k, v in line.items() if k.startswith("val_top1")]
    parts += [f"{k} {v:.2f}" for k, v in line.items() if k.startswith("ema_val_top1")]
    return ", ".join(parts)


class _PreemptionFlag:
    """SIGTERM/SIGUSR1 (SLURM's pre-emption warnings) ask for a checkpoint at the next step boundary; under
    torchrun the ranks agree through an all-reduce, so all of them stop at the same step. So does SIGHUP, the
    terminal closing, unless it is ignored (nohup): it killed the run silently, the epoch's steps lost (a hostile
    pass)."""

    def __init__(self) -> None:
        self.flag = False
        asked = (signal.SIGTERM, signal.SIGUSR1) + (() if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
                                                     else (signal.SIGHUP,))
        self.before = {sig: signal.signal(sig, self._set) for sig in asked}

    def restore(self) -> None:
        """The handlers from before the loop: left in place, they swallowed a SIGTERM after it, between a suite's
        rows (its Table 4 records, a teacher's evaluation) as in a test that trains in-process (a review)."""
        for sig, handler in self.before.items():
            signal.signal(sig, handler)

    def _set(self, signum, frame) -> None:
        self.flag = True
        if signum in (signal.SIGTERM, signal.SIGHUP):  # the loader's workers got it too, and end soon: not an error
            stop_reporting_dead_workers()

    def requested(self, procs: Processes) -> bool:
        if procs.world == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=procs.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
