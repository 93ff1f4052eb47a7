"""The learning-rate schedule as training sets it: timm's scheduler, stepped per epoch the way the released code
steps it (or per step), and the (epoch, lr) points `reproduce ls --lr-figure` draws and config records keep."""

from __future__ import annotations

import torch
from timm.scheduler import create_scheduler_v2

from reproduce.config import TrainConfig


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """timm's scheduler for the config (its per-epoch lr is set by `epoch_lr`, its per-step one by step_update)."""
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                       warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=not cfg.sched_per_step,
                                       updates_per_epoch=steps_per_epoch)
    return scheduler


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int = 1) -> list[tuple[float, float]]:
    """(epoch, learning rate) at the start of every epoch (or every step, with sched_per_step) exactly as training
    sets it, for a peak lr after batch scaling; `reproduce ls --show E --lr-figure FILE` draws it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.peak_lr())
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
    points = []
    for epoch in range(cfg.epochs):
        if not cfg.sched_per_step:
            epoch_lr(scheduler, epoch, cfg.sched_timing)
            points.append((float(epoch), optimizer.param_groups[0]["lr"]))
            continue
        for step in range(steps_per_epoch):
            scheduler.step_update(epoch * steps_per_epoch + step)
            points.append((epoch + step / steps_per_epoch, optimizer.param_groups[0]["lr"]))
    return points


def epoch_lr(scheduler, epoch: int, timing: str) -> None:
    """Set the learning rate of `epoch` on a per-epoch timm scheduler, stateless so a resumed run sets the same.

    `official`: the released main.py calls `lr_scheduler.step(epoch)` after each epoch, and timm's scheduler starts at
    `warmup_lr`, so epoch 0 trains at warmup_lr and epoch e >= 1 at lr(e - 1) (two epochs at warmup_lr;
    https://github.com/facebookresearch/deit/issues/145). `start`: step(epoch) before each epoch, epoch e at lr(e)."""
    if timing == "start":
        scheduler.step(epoch)
    else:
        scheduler.step(max(epoch - 1, 0))  # lr(0) is warmup_lr, what the scheduler's constructor set
