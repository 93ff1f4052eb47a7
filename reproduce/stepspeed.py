"""`reproduce step-speed`: our training step against an official-style loop, side by side in one process.

Both loops train the same student from the same initial weights, with the same teacher, Mixup and optimiser
settings, on the same fixed synthetic batches on the device (the input pipeline is left out: this times the step).

- **ours**: the step `reproduce train` runs (`Recipe.step`): precision by `amp` (auto: bf16 where it is native, no
  loss scaler), fused AdamW on CUDA, the teacher channels-last in inference mode, `compile=true` if set;
- **official-style**: what the released `engine.train_one_epoch` does: fp16 autocast with a GradScaler on CUDA
  (fp32 on a CPU, where the released code does not run), eager, the default (for-each) AdamW, the teacher under
  `no_grad`, `torch.cuda.synchronize()` after every step.

The teacher has random weights: speed does not depend on them, and no checkpoint is needed.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import peak
from bench.load import MachineLoad, is_contended
from bench.machine import Fingerprint
from reproduce import models
from reproduce.config import ConfigError, TrainConfig
from reproduce.distill import distillation_terms, weighted
from reproduce.train import Processes, Recipe, build_recipe, place_teacher, resolve_amp


@dataclass(frozen=True)
class StepSpeed:
    ours_img_per_s: float
    official_img_per_s: float
    ours_amp: str
    official_amp: str
    batch_size: int
    steps: int
    gflop_per_image: float  # the student's forward and backward (3 x its forward) and the teacher's forward
    ours_mfu: float | None  # of the machine's measured GEMM peak in each loop's precision (None: none usable)
    official_mfu: float | None
    ours_peak_tflops: float | None  # the measured peak each MFU divides by, so a reader can recompute it (a hostile
    official_peak_tflops: float | None  # pass could not)
    timed_other_cores: float | None  # cores other processes kept busy, the larger of the two loops' (bench/load.py);
    timed_busy: bool | None  # either loop timed on a busy machine: the two loops then saw different machines; both
    # None where /proc/stat could not be read

    @property
    def ratio(self) -> float:
        return self.ours_img_per_s / self.official_img_per_s


def measure(cfg: TrainConfig, *, device: str, batch_size: int, steps: int, warmup: int, fingerprint: dict) -> StepSpeed:
    amp, _, _ = resolve_amp(cfg.amp, fingerprint)
    torch.backends.cudnn.benchmark = device.startswith("cuda")  # both loops, as the official main.py sets it
    setup = _setup(cfg, device, batch_size, amp)
    cfg, recipe, student, teacher = setup.cfg, setup.recipe, setup.student, setup.teacher
    images, targets = setup.images, setup.targets
    start_state = {k: v.clone() for k, v in student.state_dict().items()}
    runner = torch.compile(student) if cfg.compile else student

    def ours(i: int) -> None:
        recipe.step(runner, student, images, targets, i, where=f"step {i}")

    ours_loop = _timed(ours, steps, warmup, batch_size, device)

    official = "fp16" if device.startswith("cuda") else "none"
    teacher.to(memory_format=torch.contiguous_format)  # the official code's teacher: ours is channels-last
    student.load_state_dict(start_state)
    optimizer = torch.optim.AdamW(models.no_decay_groups(student, cfg.weight_decay, cfg.no_decay), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda") if official == "fp16" else None

    def official_step(i: int) -> None:
        mixed, soft = recipe.mixup(images, targets) if recipe.mixup else (images, targets)
        with torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=official == "fp16"):
            outputs = student(mixed)
            with torch.no_grad():
                teacher_out = teacher(mixed)
            base, term = distillation_terms(outputs, teacher_out, soft, mode=cfg.distillation, tau=cfg.distill_tau,
                                            kl_norm=cfg.kl_norm)
            loss = weighted(base, term, cfg.distill_alpha)
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    official_loop = _timed(official_step, steps, warmup, batch_size, device)
    ours_speed, official_speed = ours_loop.img_per_s, official_loop.img_per_s
    gflop = flop_per_image(student, teacher, images.shape[-1])
    machine = Fingerprint.from_dict(fingerprint)
    (ours_mfu, ours_peak), (official_mfu, official_peak) = (
        _mfu(gflop * speed / 1e3, machine, device, PEAK_COLUMN[mode])
        for speed, mode in ((ours_speed, amp), (official_speed, official)))
    return StepSpeed(ours_speed, official_speed, amp, official, batch_size, steps, gflop, ours_mfu, official_mfu,
                     ours_peak, official_peak, *_worse(ours_loop, official_loop))


def _worse(a: _Loop, b: _Loop) -> tuple[float | None, bool | None]:
    """The two loops' load: the larger other cores, busy if either was; None where either is unknown."""
    if a.other_cores is None or b.other_cores is None:
        return None, None
    return max(a.other_cores, b.other_cores), bool(a.busy or b.busy)


PEAK_COLUMN = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}  # a loop's amp -> the GEMM peak that bounds it


def flop_per_image(student: torch.nn.Module, teacher: torch.nn.Module, img_size: int) -> float:
    """GFLOP one training image costs: 2 per MAC, the student's forward and backward (3 x its forward, the usual
    count) and the teacher's forward. Elementwise work, the loss and the optimiser are left out, as in MFU."""
    from bench.size import count_gmacs

    return 2 * (3 * count_gmacs(student, img_size) + count_gmacs(teacher, img_size))


def _mfu(achieved_tflops: float, machine: Fingerprint, device: str, column: str) -> tuple[float | None, float | None]:
    """(MFU, the measured peak it divides by, TFLOP/s), or (None, None) where no peak is usable."""
    measured = peak.usable(machine, device, column, achieved_tflops)
    return (None, None) if measured is None else (achieved_tflops / measured.tflops, measured.tflops)


@dataclass(frozen=True)
class _Setup:
    cfg: TrainConfig
    recipe: Recipe
    student: torch.nn.Module
    teacher: torch.nn.Module
    images: torch.Tensor
    targets: torch.Tensor


def _setup(cfg: TrainConfig, device: str, batch_size: int, amp: str) -> _Setup:
    """The student (seeded), its teacher (random weights, channels-last, frozen), fixed synthetic batches on the
    device and our recipe (`Recipe.step`) in precision `amp`."""
    if cfg.distillation == "none":
        raise ConfigError("step-speed compares distillation steps: give an experiment with a teacher (e.g. deit_s_hard)")
    cfg = dataclasses.replace(cfg, teacher_checkpoint="", teacher_memo=False, batch_size=batch_size, device=device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, *(2 * [cfg.img_size or models.variant_of(cfg).img_size]), generator=gen)
    targets = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen)
    teacher = models.resolve(cfg.teacher).build(num_classes=cfg.num_classes).eval().requires_grad_(False)
    procs = Processes(0, 1, device)
    placed, _ = place_teacher(teacher, None, cfg, procs, amp, Path("."), log=lambda message: None)  # as train places it
    models.seed_everything(0)
    student, _, _ = models.build_student(cfg)
    student.to(device)
    recipe = build_recipe(cfg, student, placed, procs, batch_size, 1, torch.contiguous_format, amp)
    return _Setup(cfg, recipe, student, teacher, images.to(device), targets.to(device))


GATE_EXPERIMENT, GATE_BATCH = "debug_hard", 32


def gate_workload() -> tuple[dict[str, object], Callable[[], None]]:
    """The A/B speed gate's training workload (bench/ab.py): one optimiser step of `reproduce train`'s recipe on the
    debug_hard experiment (the 2-block debug student with a distillation token, hard distillation from a
    cifar_resnet10 teacher), batch 32 at 32 px, fp32 on the CPU, Mixup as configured. Returns what it is and one
    call of it; the A/B worker runs this in each tree it measures."""
    from reproduce.experiments import get

    setup = _setup(get(GATE_EXPERIMENT).build(), "cpu", GATE_BATCH, "none")
    steps = itertools.count()

    def step() -> None:
        i = next(steps)
        setup.recipe.step(setup.student, setup.student, setup.images, setup.targets, i, where=f"gate step {i}")

    return {"experiment": GATE_EXPERIMENT, "batch_size": GATE_BATCH, "img_size": setup.images.shape[-1], "amp": "none",
            "mode": "train step with teacher"}, step


@dataclass(frozen=True)
class _Loop:
    img_per_s: float
    other_cores: float | None
    busy: bool | None


def _timed(step, steps: int, warmup: int, batch_size: int, device: str) -> _Loop:
    """Images per second over `steps` steps after `warmup` untimed ones (compilation included in the warm-up), and
    how busy other processes kept the machine meanwhile: one busy loop made ours 0.22x the official-style loop where
    the quiet machine gave 1.04x, without a word (a hostile pass)."""
    for i in range(warmup):
        step(i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    load = MachineLoad.now()
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    others, steal, _ = MachineLoad.now().since(load)  # bench's rule (speed.Timing.busy): others and steal count, a
    # multi-threaded step's own share of a core says nothing, and a GPU's step is not judged by the CPUs' load
    busy = None if others is None else not device.startswith("cuda") and is_contended(others, steal, 1.0, cuda=False)
    return _Loop(steps * batch_size / elapsed, others, busy)
