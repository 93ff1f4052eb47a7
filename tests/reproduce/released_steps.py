"""Issue #20: 30 optimizer steps of our `mini_hard` composition against the released DeiT code, from the same
initial weights on the same fixed batches, fp32 on the CPU; prints one JSON line with the largest loss and weight
differences. Run by `test_against_released_code.py` in a process of its own: the released models.py re-registers
timm's deit_* names.

Ours: `build_student`, the official no-decay groups and timm scheduler of `build_recipe`, `epoch_lr`, Mixup, the
`Distiller`, `Recipe.step`. Theirs (a checkout of facebookresearch/deit named by DEIT_OFFICIAL_DIR, never copied
here): `DistilledVisionTransformer`, `DistillationLoss`, `engine.train_one_epoch`, main.py's argument defaults,
timm's `create_optimizer`/`create_scheduler`/`NativeScaler`, and `lr_scheduler.step(epoch)` after each epoch, as
main.py does. One thing of timm 0.3.2, which the release pinned, is restored on their side: its no-decay list
(pos_embed, cls_token; timm 1.0 adds dist_token). The rest runs as released, under today's timm.

    DEIT_OFFICIAL_DIR=/path/to/deit python tests/reproduce/released_steps.py [--mixup] [--timing official|start]
"""

import argparse
import contextlib
import copy
import io
import json
import os
import random
import sys
import types
import warnings
from dataclasses import replace
from functools import partial

import numpy as np
import torch
from torch import nn

from bench.registry import VARIANTS
from reproduce import experiments
from reproduce.models import build_student
from reproduce.schedule import epoch_lr
from reproduce.train import Processes, build_recipe

EPOCHS, STEPS, BATCH = 3, 10, 16


def seed(k: int) -> None:
    """The same random state before each step on both sides: Mixup/CutMix draw from numpy and random."""
    random.seed(k)
    np.random.seed(k)
    torch.manual_seed(k)


def ours(cfg, start, teacher, batches):
    student, _, _ = build_student(cfg)
    student.load_state_dict(start)
    recipe = build_recipe(cfg, student, teacher, Processes(0, 1, "cpu"), BATCH, STEPS, torch.contiguous_format, "none")
    losses = []
    for epoch in range(EPOCHS):
        epoch_lr(recipe.scheduler, epoch, cfg.sched_timing)
        student.train()
        for step in range(STEPS):
            k = epoch * STEPS + step
            seed(k)
            images, target = (t.clone() for t in batches[k])  # Mixup mixes the batch in place
            losses.append(recipe.step(student, student, images, target, k, where=f"step {k}").loss)
    return losses, student.state_dict()


def released(cfg, start, teacher, batches):
    sys.path.insert(0, os.environ["DEIT_OFFICIAL_DIR"])
    sys.modules["augment"] = types.SimpleNamespace(new_data_aug_generator=None)  # imports what timm 1.0 lacks; unused
    torch.cuda.synchronize = lambda *a, **k: None  # the released engine syncs CUDA after every step
    import main  # the released main.py, for its argument defaults
    from engine import train_one_epoch
    from losses import DistillationLoss
    from models import DistilledVisionTransformer
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer
    from timm.scheduler import create_scheduler
    from timm.utils import NativeScaler

    args = main.get_args_parser().parse_args([])
    for name in ("lr", "epochs", "warmup_epochs", "weight_decay", "warmup_lr", "min_lr", "smoothing", "mixup",
                 "cutmix", "clip_grad"):
        setattr(args, name, getattr(cfg, name))
    model = DistilledVisionTransformer(**VARIANTS[cfg.variant].model_kwargs, mlp_ratio=4, qkv_bias=True,
                                       norm_layer=partial(nn.LayerNorm, eps=1e-6))  # our student's architecture
    model.load_state_dict(start)  # strict: every name and shape agrees with ours
    model.no_weight_decay = lambda: {"pos_embed", "cls_token"}  # timm 0.3.2's list
    optimizer = create_optimizer(args, model)
    lr_scheduler, _ = create_scheduler(args, optimizer)
    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                      prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                      label_smoothing=args.smoothing, num_classes=cfg.num_classes)
    base = SoftTargetCrossEntropy() if mixup else LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    losses = []

    class Recorded(DistillationLoss):
        def forward(self, inputs, outputs, labels):
            loss = super().forward(inputs, outputs, labels)
            losses.append(loss.item())
            return loss

    class Batches:  # the engine's MetricLogger takes len(); the state is seeded as ours before each step
        def __init__(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return STEPS

        def __iter__(self):
            for step in range(STEPS):
                k = self.epoch * STEPS + step
                seed(k)
                yield tuple(t.clone() for t in batches[k])

    criterion = Recorded(base, teacher, "hard", cfg.distill_alpha, cfg.distill_tau)
    args.cosub = args.bce_loss = False
    for epoch in range(EPOCHS):
        with contextlib.redirect_stdout(io.StringIO()):
            train_one_epoch(model, criterion, Batches(epoch), optimizer, torch.device("cpu"), epoch, NativeScaler(),
                            args.clip_grad, None, mixup, set_training_mode=True, args=args)
        lr_scheduler.step(epoch)
    return losses, model.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixup", action="store_true", help="Mixup 0.8 and CutMix 1.0, as the paper rows")
    parser.add_argument("--timing", default="official", choices=("official", "start"))
    a = parser.parse_args()
    warnings.filterwarnings("ignore")
    cfg = replace(experiments.get("mini_hard").build(), epochs=EPOCHS, warmup_epochs=2, sched_timing=a.timing,
                  teacher_memo=False, fused_attn=True, mixup=0.8 if a.mixup else 0.0, cutmix=1.0 if a.mixup else 0.0)
    torch.manual_seed(0)
    start = copy.deepcopy(build_student(cfg)[0].state_dict())
    teacher = VARIANTS["cifar_resnet10"].build(num_classes=cfg.num_classes).eval()  # random but fixed: its argmax is the label
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
               for _ in range(EPOCHS * STEPS)]
    ours_losses, ours_weights = ours(cfg, start, teacher, batches)
    their_losses, their_weights = released(cfg, start, teacher, batches)
    print(json.dumps({
        "mixup": a.mixup, "timing": a.timing, "steps": len(ours_losses),
        "max_loss_diff": max(abs(x - y) for x, y in zip(ours_losses, their_losses, strict=True)),
        "max_weight_diff": max((ours_weights[k] - their_weights[k]).abs().max().item() for k in start),
        "loss_last": [ours_losses[-1], their_losses[-1]]}))


if __name__ == "__main__":
    main()
