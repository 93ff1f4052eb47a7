"""`reproduce step-speed`: our training step against an official-style loop, side by side in one process (#21).

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
import time
from dataclasses import dataclass

import torch

from reproduce import models
from reproduce.config import ConfigError, TrainConfig
from reproduce.distill import distillation_terms, weighted
from reproduce.train import Processes, build_recipe, resolve_amp


@dataclass(frozen=True)
class StepSpeed:
    ours_img_per_s: float
    official_img_per_s: float
    ours_amp: str
    official_amp: str
    batch_size: int
    steps: int

    @property
    def ratio(self) -> float:
        return self.ours_img_per_s / self.official_img_per_s


def measure(cfg: TrainConfig, *, device: str, batch_size: int, steps: int, warmup: int, fingerprint: dict) -> StepSpeed:
    if cfg.distillation == "none":
        raise ConfigError("step-speed compares distillation steps: give an experiment with a teacher (e.g. deit_s_hard)")
    cfg = dataclasses.replace(cfg, teacher_checkpoint="", teacher_memo=False, batch_size=batch_size, device=device)
    procs = Processes(0, 1, device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, *(2 * [cfg.img_size or models.variant_of(cfg).img_size]), generator=gen)
    targets = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen)
    images, targets = images.to(device), targets.to(device)
    teacher = models.resolve(cfg.teacher).build(num_classes=cfg.num_classes).eval().requires_grad_(False)
    teacher = teacher.to(device, memory_format=torch.channels_last)
    amp, _, _ = resolve_amp(cfg.amp, fingerprint)

    models.seed_everything(0)
    student, _, _ = models.build_student(cfg)
    start_state = {k: v.clone() for k, v in student.state_dict().items()}
    student.to(device)
    recipe = build_recipe(cfg, student, teacher, procs, batch_size, 1, torch.contiguous_format, amp)
    runner = torch.compile(student) if cfg.compile else student

    def ours(i: int) -> None:
        recipe.step(runner, student, images, targets, i, where=f"step {i}")

    ours_speed = _timed(ours, steps, warmup, batch_size, device)

    official = "fp16" if device.startswith("cuda") else "none"
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

    official_speed = _timed(official_step, steps, warmup, batch_size, device)
    return StepSpeed(ours_speed, official_speed, amp, official, batch_size, steps)


def _timed(step, steps: int, warmup: int, batch_size: int, device: str) -> float:
    """Images per second over `steps` steps after `warmup` untimed ones (compilation included in the warm-up)."""
    for i in range(warmup):
        step(i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)
