"""Accuracy: one pass over the data, every head of a distilled model, per-image top-5 kept.

Keeping each image's top-5 per head (not running sums) makes one pass serve everything: top-1/top-5 of each
head, ImageNet-ReaL (any top-k prediction in the image's label set), Table 4's disagreement between models,
and exact distributed evaluation (ranks gather predictions by image index; nothing is padded or counted twice).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Subset
from tqdm import tqdm

from bench.data import ImageList, Preprocess, WorkerLoader, normalize_batch
from bench.predictions import Predictions, image_key
from bench.speed import Precision, precision_mode


def head_outputs(model: nn.Module, images: Tensor, distilled: bool) -> dict[str, Tensor]:
    """Scores of every head. Distilled: class head, distillation head, their logits averaged (what the
    official code and timm report) and their softmaxes summed (what the paper's text describes)."""
    if not distilled:
        return {"": model(images)}
    tokens = model.forward_features(images)  # timm VisionTransformerDistilled: token 0 = class, 1 = distillation
    cls, dist_ = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
    return {"cls": cls, "dist": dist_, "fused_logits": (cls + dist_) / 2,
            "fused_probs": cls.float().softmax(-1) + dist_.float().softmax(-1)}


def official_head(distilled: bool) -> str:
    return "fused_logits" if distilled else ""


def predict(model: nn.Module, dataset: ImageList, prep: Preprocess, *, distilled: bool, precision: Precision,
            batch_size: int, workers: int, progress: bool = True) -> Predictions:
    """Predictions for every image of `dataset` (whose transform stops at uint8, normalised here per batch) on the
    device the model's weights are on; under torchrun each rank takes every world-th image and the ranks' results
    are gathered (each image counted exactly once)."""
    return timed_predict(model, dataset, prep, distilled=distilled, precision=precision, batch_size=batch_size,
                         workers=workers, progress=progress)[0]


def timed_predict(model: nn.Module, dataset: ImageList, prep: Preprocess, *, distilled: bool, precision: Precision,
                  batch_size: int, workers: int, progress: bool = True) -> tuple[Predictions, LoopSpeed]:
    """`predict` and the images/s of its loop."""
    start = time.perf_counter()
    batch_ends: list[tuple[float, int]] = []  # (perf_counter, images) after each batch
    device = next(model.parameters()).device
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = WorkerLoader(shard, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda",
                          persistent_workers=False)
    indices, targets, loss_sum = [], [], 0.0
    top5: dict[str, list[Tensor]] = {}
    head = official_head(distilled)
    bar = tqdm(total=len(dataset), unit="img", desc="evaluating", disable=not progress or rank != 0,
               file=sys.stderr, smoothing=0.1)
    with torch.inference_mode(), precision_mode(precision, device.type):
        for images, labels, index in loader:
            images = normalize_batch(images.to(device, non_blocking=True), prep).to(precision.dtype)
            outputs = head_outputs(model, images, distilled)
            k = min(5, outputs[head].shape[-1])
            for name, scores in outputs.items():
                top5.setdefault(name, []).append(scores.topk(k, dim=-1).indices.cpu())
            loss_sum += F.cross_entropy(outputs[head].float().cpu(), labels, reduction="sum").item()
            indices.append(index)
            targets.append(labels)
            bar.update(min(len(labels) * world, bar.total - bar.n))  # rank 0 stands for all ranks
            batch_ends.append((time.perf_counter(), len(labels)))
    bar.close()
    local = (torch.cat(indices), torch.cat(targets), {h: torch.cat(v) for h, v in top5.items()}, loss_sum)
    order, targets_, top5_, loss_sum = _gather(local) if world > 1 else local
    perm = order.argsort()
    # "class_folder/file": CIFAR-style trees repeat file names across class folders (0001.jpg in each)
    names = [_image_name(dataset.samples[i][0]) for i in order[perm].tolist()]
    preds = Predictions(names, targets_[perm], {h: v[perm] for h, v in top5_.items()}, loss_sum)
    whole = len(preds.targets) / (time.perf_counter() - start)
    steady = None
    if len(batch_ends) > 1:
        steady = sum(n for _, n in batch_ends[1:]) / (batch_ends[-1][0] - batch_ends[0][0])
    return preds, LoopSpeed(whole, steady)


def _image_name(path: Path) -> str:
    return image_key(f"{path.parent.name}/{path.name}" if path.parent.name else path.name)


def _gather(local):
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            {h: torch.cat([p[2][h] for p in parts]) for h in local[2]}, sum(p[3] for p in parts))


def scores(preds: Predictions, real_sets: list[list[int]] | None = None) -> dict[str, float | int]:
    """Record keys: top1/top5 per head (suffix `_cls`, `_dist`, `_fused_logits`, `_fused_probs` for distilled
    models; unsuffixed = the official output), loss, and ImageNet-ReaL where label sets are given."""
    distilled = "cls" in preds.top5
    official = official_head(distilled)
    out: dict[str, float | int] = {"images": len(preds.targets), "loss": preds.loss_sum / len(preds.targets)}
    for head, top in preds.top5.items():
        hits = top == preds.targets[:, None]
        for k, name in ((1, "top1"), (5, "top5")):
            value = 100.0 * hits[:, :k].any(dim=1).float().mean().item()
            out[name + (f"_{head}" if head else "")] = value
            if head == official and distilled:
                out[name] = value
    if real_sets is not None:
        # ReaL: correct when any of the top-k is in the image's set; empty sets are left out (timm validate.py).
        keep = [i for i, s in enumerate(real_sets) if s]
        out["real_images"] = len(keep)
        for head, top in preds.top5.items():
            suffix = f"_{head}" if head else ""
            for k, name in ((1, "real_top1"), (5, "real_top5")):
                hit = sum(any(p in real_sets[i] for p in top[i, :k].tolist()) for i in keep)
                out[name + suffix] = 100.0 * hit / len(keep) if keep else None
                if head == official and distilled:
                    out[name] = out[name + suffix]
    return out


@dataclass(frozen=True)
class LoopSpeed:
    """Images/s of the evaluation loop, loading included.

    `whole`: every image over the whole call (worker start-up and the first batch included);
    `steady`: images after the first batch over the time after it, this rank's share (comparable to the
    forward throughput, whose warm-up is excluded too). None when there is a single batch.
    """

    whole: float
    steady: float | None
