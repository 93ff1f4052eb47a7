"""`bench run --metrics accuracy`: weights in, data in, the Table 3/5 numbers out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bench import checkpoint, data, evaluate
from bench.errors import not_a_file
from bench.predictions import how_made
from bench.processes import MAX_WORKERS
from bench.registry import Variant
from bench.speed import Precision


@dataclass(frozen=True)
class EvalOptions:
    """Where the weights and the data come from, and how images are preprocessed."""

    data: Path | None = None
    dataset: str | None = None  # layout; guessed when None
    labels: Path | None = None  # labels file of a flat ILSVRC2012 folder
    real_labels: str | None = None  # "timm" (the copy timm ships) or a JSON path; None: no ReaL
    checkpoint: Path | None = None
    pretrained: bool = False
    protocol: str = "official"
    crop_pct: float | None = None
    num_classes: int | None = None
    workers: int = 2
    save_predictions: Path | None = None
    # evaluation's own batch: the speed benchmark's CPU default of 16 evaluated at 157 img/s, 256 at 1,352
    batch_size: int = 256
    limit: int | None = None  # at most this many images, spread evenly over the sorted set (every class of a tree)

    def unread(self) -> list[str]:
        """The options that say how accuracy is measured, given away from their defaults: what a run that measures
        no accuracy would silently ignore (a hostile pass: `--metrics size --crop-pct 7` wrote a record)."""
        default = EvalOptions()
        return [flag for field, flag in _ACCURACY_ONLY.items() if getattr(self, field) != getattr(default, field)]

    def check_values(self) -> None:
        """Raise ValueError for a value out of its range, whatever the metrics."""
        if self.protocol not in data.EVAL_PROTOCOLS:
            raise ValueError(f"unknown --eval-protocol {self.protocol!r}; accepted: {', '.join(data.EVAL_PROTOCOLS)}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"--workers must be in [0, {MAX_WORKERS}] (data-loading processes), got {self.workers}")
        if self.batch_size < 1:
            raise ValueError(f"--eval-batch-size must be >= 1, got {self.batch_size}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"--num-classes must be >= 1, got {self.num_classes}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise ValueError(f"--crop-pct must be in (0, 1], got {self.crop_pct}")

    def check(self) -> None:
        """Raise ValueError for options that cannot work together, before anything is built."""
        if self.data is None:
            raise ValueError("--metrics accuracy needs --data PATH (a class-per-folder tree, ImageNet-V2, "
                             "or the flat ILSVRC2012 val folder)")
        if self.checkpoint is None and not self.pretrained:
            raise ValueError("--metrics accuracy (asked for, or implied by --data alone) needs weights: "
                             "--checkpoint FILE or --pretrained; to time only, with --data's images for --best's "
                             "agreement check, give --metrics size,speed")
        if self.checkpoint is not None and self.pretrained:
            raise ValueError("give --checkpoint FILE or --pretrained, not both")
        if self.checkpoint is not None and not self.checkpoint.is_file():  # before the model is built, not after
            raise ValueError(f"--checkpoint {self.checkpoint}: {not_a_file(self.checkpoint)}")
        self.check_values()
        if self.real_labels not in (None, "timm"):  # read now, not after minutes of timing
            data.real_label_sets([], Path(self.real_labels))


# what only an accuracy measurement reads: given with no accuracy to measure, refused (it would go unread)
_ACCURACY_ONLY = {"dataset": "--dataset", "labels": "--labels", "real_labels": "--real-labels",
                  "protocol": "--eval-protocol", "crop_pct": "--crop-pct", "limit": "--limit",
                  "save_predictions": "--save-predictions",  # asked for a file, and silently given none (a hostile pass)
                  "workers": "--workers", "batch_size": "--eval-batch-size"}  # accepted with size alone (another)


@dataclass(frozen=True)
class Weights:
    """The model to evaluate, what the record says about its weights, and its classes by name where known."""

    model: nn.Module
    notes: list[str]
    class_names: tuple[str, ...] | None = None


def build_model(variant: Variant, opts: EvalOptions, build_kwargs: dict[str, Any]) -> Weights:
    """The variant with its weights; the checkpoint's head decides the number of classes."""
    if opts.pretrained:
        model = checkpoint.load_pretrained(variant.model, **build_kwargs).eval()
        return Weights(model, [f"weights: timm hub {variant.model}"])
    if opts.checkpoint is None:
        classes = {"num_classes": opts.num_classes} if opts.num_classes else {}
        return Weights(variant.build(**build_kwargs, **classes).eval(), [])
    state, info = checkpoint.read_state_dict(opts.checkpoint)
    if opts.num_classes and info.num_classes and opts.num_classes != info.num_classes:
        raise checkpoint.CheckpointError(f"--num-classes {opts.num_classes} but the checkpoint's head has "
                                         f"{info.num_classes} classes")
    classes = info.num_classes or opts.num_classes or variant.num_classes
    model = variant.build(**build_kwargs, num_classes=classes)
    checkpoint.load_into(model, state, f"checkpoint {opts.checkpoint.name}")
    return Weights(model.eval(), [f"weights: {info.describe()}", f"checkpoint sha256 {info.sha256}"], info.class_names)


@dataclass(frozen=True)
class EvalData:
    """The images and their labels in the model's label space, found before anything is timed."""

    samples: list[tuple[Path, int]]
    layout: str
    label_space: str  # how folder names were matched to the model's classes


def find_eval_data(model: nn.Module, opts: EvalOptions, class_names: tuple[str, ...] | None) -> EvalData:
    """The evaluation images, labelled in the model's label space (by `class_names` where the weights name their
    classes); refuses data whose labels the model cannot have."""
    classes = getattr(model, "num_classes", None)
    if not opts.data.is_dir():
        raise data.DataError(f"--data {opts.data} is not a folder")
    if opts.real_labels and classes is not None and classes != data.REAL_CLASSES:
        raise data.DataError(f"--real-labels scores ImageNet-1k classes; the model has {classes} classes (give a "
                             "1000-class checkpoint, or leave --real-labels out)")
    layout = opts.dataset or data.guess_layout(opts.data)
    names, label_space = data.label_space(opts.data, layout, classes, class_names)
    samples, layout = data.find_samples(opts.data, layout, opts.labels, class_names=names)
    if opts.limit is not None and opts.limit < len(samples):  # evenly spread: the first N of a tree are one class
        samples = [samples[i * len(samples) // opts.limit] for i in range(opts.limit)]
    top_label = max(label for _, label in samples)
    if classes is not None and top_label >= classes:
        raise data.DataError(f"{opts.data} has label {top_label}, but the model's {classes} classes are 0 to "
                             f"{classes - 1}; pass a checkpoint for this label space (its head decides) or "
                             "--num-classes")
    if opts.real_labels:  # file names and the label-set count are checked now, not after minutes of timing
        data.real_label_sets(samples, None if opts.real_labels == "timm" else Path(opts.real_labels))
    return EvalData(samples, layout, label_space)


def measure_accuracy(model: nn.Module, variant: Variant, opts: EvalOptions, found: EvalData, *, img_size: int,
                     precision: Precision, log) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, settings) of one evaluation pass over `found`, on the device the model is on, `opts.batch_size`
    images per forward."""
    batch_size = opts.batch_size
    samples, layout, classes = found.samples, found.layout, getattr(model, "num_classes", None)
    prep = data.preprocess(model, img_size, opts.protocol, opts.crop_pct)
    real = None
    if opts.real_labels:
        real = data.real_label_sets(samples, None if opts.real_labels == "timm" else Path(opts.real_labels))
    log(f"evaluating {len(samples)} images ({layout}, {prep.protocol} preprocessing: resize {prep.resize_size}, "
        f"crop {prep.img_size}, {prep.interpolation}) with {opts.workers} workers")
    dataset = data.ImageList(samples, data.build_transform(prep, normalize=False))
    preds, speed = evaluate.timed_predict(model, dataset, prep, distilled=variant.distilled, precision=precision,
                                          batch_size=batch_size, workers=opts.workers)
    if opts.save_predictions and _main_process():  # every rank holds the gathered predictions; one file is written
        made = how_made(variant.model, img_size, precision.name, prep)
        dataclasses.replace(preds, made=made).save(opts.save_predictions)
    metrics = {**evaluate.scores(preds, real), "eval_img_per_s": speed.whole,
               "eval_img_per_s_steady": speed.steady}
    settings = {"data": str(opts.data), "dataset": layout, "label_space": found.label_space, "num_classes": classes,
                "batch_size": batch_size,
                "classes_present": len({label for _, label in samples}), "workers": opts.workers,
                "real_labels": opts.real_labels, "checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
                "pretrained": opts.pretrained, "preprocess": dataclasses.asdict(prep),
                "save_predictions": str(opts.save_predictions) if opts.save_predictions else None,
                "limit": opts.limit}
    return metrics, settings


def _main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
