"""Evaluation data: folder layouts, label spaces, and the preprocessing protocols of the paper and timm.

Layouts (`--dataset`, guessed when not given):
- `folder`: one folder per class, classes in sorted order (ImageNet `val/` re-arranged, CIFAR-10 JPEG tree);
- `imagenet-v2`: folders named `0 … 999` are class *indices*. torchvision's ImageFolder sorts them as
  strings ("10" before "2") and scrambles 990 classes; here the name is the label;
- `imagenet-flat`: the ILSVRC2012 validation folder as released, `ILSVRC2012_val_XXXXXXXX.JPEG`, with a
  `name index` labels file (`--labels`, or `ILSVRC2012_val_labels.txt` in or beside the folder).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.errors import DataError, not_a_file
from bench.predictions import FLAT_PREFIX  # defined there: bench disagree reads it without loading timm
from bench.processes import enough_open_files, leave_stop_signals_to_the_main_process, stop_signals_held

LAYOUTS = ("folder", "imagenet-v2", "imagenet-flat")
EVAL_PROTOCOLS = ("official", "timm")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
LABELS_NAME = "ILSVRC2012_val_labels.txt"


class ImageList(Dataset):
    """(image, label, index) for a fixed list of files; the index lets distributed ranks reassemble order.

    `preload` decodes every file once, up front, and keeps the RGB images in memory: for small-image sets
    (CIFAR-10 is 3 KB per decoded image) that are read many times, where opening and decoding each JPEG again
    every epoch costs more than the augmentation. Data-loading workers share the decoded images by the fork.
    """

    def __init__(self, samples: list[tuple[Path, int]], transform, preload: bool = False,
                 classes: tuple[str, ...] | None = None) -> None:
        self.samples, self.transform, self.classes = samples, transform, classes  # classes: names by label
        self.images = [_read(path) for path, _ in samples] if preload else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = self.images[index] if self.images is not None else _read(path)
        return self.transform(image), label, index


def _read(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # truncated, not an image, unreadable: name the file
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None


def _images(folder: Path) -> list[Path]:
    # scandir tells files from folders without a stat per file, and within one folder ordering by name is Path
    # ordering; sorting Path objects compared them part by part (over a second per run on CIFAR-10's 60,000 files)
    with os.scandir(folder) as entries:
        named = [e for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    files, not_files = [], []
    for e in named:
        try:
            (files if e.is_file() else not_files).append(e.name)
        except OSError:  # a link loop: "Too many levels of symbolic links"
            not_files.append(e.name)
    if not_files:  # skipped without a word, an image would go uncounted: 1 of 2 was evaluated
        raise DataError(f"{len(not_files)} image name(s) in {folder} are not image files (a link to nothing, a link "
                        f"loop or a folder), e.g. {not_files[0]}; fix or remove them")
    return [folder / name for name in sorted(files)]


def guess_layout(root: Path) -> str:
    if any(p.name.startswith(FLAT_PREFIX) for p in _images(root)):
        return "imagenet-flat"
    classes = class_folders(root)
    if classes and all(name.isdigit() for name in classes):
        return "imagenet-v2"
    return "folder"


def class_folders(root: Path) -> list[str]:
    """The class folders' names under `root`, sorted (ImageFolder's order)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def find_samples(root: Path, layout: str | None = None, labels_file: Path | None = None,
                 class_names: tuple[str, ...] | None = None) -> tuple[list[tuple[Path, int]], str]:
    """Every (image, label) under `root`, in a fixed order, and the layout used.

    A class-per-folder tree is labelled by the folders' sorted order, or, when `class_names` is given (the label
    space of a model or of a training set), by each folder's position in it: a tree with some of the classes
    keeps the labels the model knows them by."""
    if not root.is_dir():
        raise DataError(f"--data {root} is not a folder")
    layout = layout or guess_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown --dataset {layout!r}; accepted: {', '.join(LAYOUTS)}")
    if labels_file is not None and layout != "imagenet-flat":  # its folders label it: the file would go unread
        raise DataError(f"--labels is read only for the flat ILSVRC2012 layout (--dataset imagenet-flat); {root} is "
                        f"laid out as {layout}, whose folders give the labels: leave --labels out")
    if layout == "imagenet-flat":
        samples = _flat_samples(root, labels_file)
    elif layout == "imagenet-v2":
        named = [name for name in class_folders(root) if not name.isdigit()]
        if named:
            raise DataError(f"--dataset imagenet-v2 expects class folders named by class index (0 … 999) in {root}; "
                            f"found {', '.join(named[:5])}{' …' if len(named) > 5 else ''}. For folders named by "
                            "class, use --dataset folder")
        samples = [(img, int(name)) for name in sorted(class_folders(root), key=int) for img in _images(root / name)]
    else:
        names = class_folders(root)
        index = {name: i for i, name in enumerate(class_names if class_names is not None else names)}
        unknown = [name for name in names if name not in index]
        if unknown:
            raise DataError(f"class folders {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''} in {root} are "
                            f"not among the {len(index)} classes of the label space "
                            f"({', '.join(list(index)[:5])}{' …' if len(index) > 5 else ''})")
        samples = [(img, index[name]) for name in names for img in _images(root / name)]
    if not samples:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {root} (read as the {layout} layout)")
    return samples, layout


def label_space(root: Path, layout: str, num_classes: int | None,
                model_names: tuple[str, ...] | None) -> tuple[tuple[str, ...] | None, str]:
    """The class names a class-per-folder tree is labelled by for a model with `num_classes` outputs, and how they
    were found; refuses a tree whose folders cannot be matched to the model's classes (two folders,
    cat/ and dog/, would be labelled 0 and 1 and scored against a CIFAR-10 head where they are 3 and 5)."""
    if layout != "folder":
        return None, f"{layout}: labels are class indices"
    folders = class_folders(root)
    if model_names:
        return tuple(model_names), "by class name, from the checkpoint"
    if num_classes == 1000 and folders and set(folders) <= set(imagenet_synsets()):
        return imagenet_synsets(), "by WordNet id, in ImageNet-1k order"
    if num_classes is None or len(folders) == num_classes or not any(_images(root / f) for f in folders):
        return None, "the class folders in sorted order"  # (no images at all: find_samples says so)
    shown = ", ".join(folders[:5]) + (" …" if len(folders) > 5 else "")
    if folders == ["val"]:  # the root of an extracted dataset, which holds the images in val/
        raise DataError(f"{root} holds one folder, val/: give --data {root / 'val'}")
    if len(folders) > num_classes:
        raise DataError(f"{root} has {len(folders)} class folders ({shown}) but the model has only {num_classes} "
                        "classes; pass a checkpoint for this label space (its head decides) or --num-classes")
    raise DataError(f"{root} has {len(folders)} class folders ({shown}) but the model has {num_classes} classes, and "
                    "the model's class names are unknown, so which class each folder is cannot be told. Give all "
                    f"{num_classes} class folders (an empty folder stands for a class without images), or a "
                    "checkpoint that names its classes (reproduce train writes them)")


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 WordNet ids of ImageNet-1k in label order (timm's copy; read once per process)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def _flat_samples(root: Path, labels_file: Path | None) -> list[tuple[Path, int]]:
    candidates = [labels_file] if labels_file else [root / LABELS_NAME, root.parent / LABELS_NAME]
    found = next((p for p in candidates if p and p.is_file()), None)
    if labels_file is not None and found is None:
        raise DataError(f"--labels {labels_file}: {not_a_file(labels_file)} (lines 'ILSVRC2012_val_00000001.JPEG 65')")
    if found is None:
        raise DataError(f"the flat ILSVRC2012 folder {root} needs its labels: pass --labels FILE "
                        f"(lines 'ILSVRC2012_val_00000001.JPEG 65') or put {LABELS_NAME} beside the images or in "
                        "the folder above them")
    labels = {}
    for n, line in enumerate(found.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                name, index = line.split()
                labels[name] = int(index)
            except ValueError:
                raise DataError(f"{found}:{n}: expected 'file_name class_index', got {line!r}") from None
            if labels[name] < 0:
                raise DataError(f"{found}:{n}: class index {labels[name]} is negative; class indices count from 0")
    images = _images(root)
    unlabeled = [p.name for p in images if p.name not in labels]
    if unlabeled:
        raise DataError(f"{len(unlabeled)} images in {root} have no label in {found}, e.g. {unlabeled[0]}")
    return [(p, labels[p.name]) for p in images]


REAL_CLASSES = 1000  # ReaL relabels the ILSVRC2012 validation images in its 1000 classes


def real_label_sets(samples: list[tuple[Path, int]], real_json: Path | None = None) -> list[list[int]]:
    """ImageNet-ReaL label sets (Beyer et al. 2020) for each sample, from timm's copy unless a file is given.

    Entry i of the JSON belongs to ILSVRC2012_val_{i+1:08d}.JPEG; an empty set leaves the image out.
    """
    where = "timm's ReaL labels" if real_json is None else f"--real-labels {real_json}"
    accepted = "a JSON list with one list of class indices per ILSVRC2012 val image (timm's imagenet_real_labels.json)"
    try:
        text = (resources.files("timm.data").joinpath("_info/imagenet_real_labels.json").read_text()
                if real_json is None else real_json.read_text())
        table = json.loads(text)
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{where} is not JSON ({exc}); give {accepted}") from None
    if not isinstance(table, list) or not all(
            isinstance(s, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in s) for s in table):
        raise DataError(f"{where} is not {accepted}")
    for i, label_set in enumerate(table):
        if any(not 0 <= c < REAL_CLASSES for c in label_set):
            raise DataError(f"{where}: entry {i + 1:,} holds {label_set}; ReaL labels are ImageNet-1k classes, "
                            f"0 to {REAL_CLASSES - 1}")
    sets = []
    for path, _ in samples:
        stem = path.name
        if not stem.startswith(FLAT_PREFIX):
            raise DataError(f"ReaL labels are keyed by ILSVRC2012 file name; {path.name} is not one")
        index = int(stem[len(FLAT_PREFIX):len(FLAT_PREFIX) + 8]) - 1
        if not 0 <= index < len(table):
            raise DataError(f"{where} holds {len(table):,} label sets; {path.name} needs entry {index + 1:,}")
        sets.append(table[index])
    return sets


@dataclass(frozen=True)
class Preprocess:
    """The eval preprocessing, as the record stores it."""

    protocol: str
    img_size: int
    crop_pct: float
    resize_size: int  # shorter side before the center crop
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def preprocess(model: nn.Module, img_size: int, protocol: str, crop_pct: float | None = None) -> Preprocess:
    """`official`: the DeiT repo (resize int(size/0.875), bicubic, ImageNet mean/std); `timm`: the model's
    pretrained_cfg (crop 0.9 at 224, 1.0 at 384). `crop_pct` overrides either."""
    if protocol not in EVAL_PROTOCOLS:
        raise DataError(f"unknown --eval-protocol {protocol!r}; accepted: {', '.join(EVAL_PROTOCOLS)}")
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise DataError(f"--crop-pct must be in (0, 1], got {crop_pct}")
    if protocol == "official":
        pct, interpolation, mean, std = 0.875, "bicubic", IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    else:
        cfg = resolve_data_config({}, model=model)
        pct, interpolation, mean, std = cfg["crop_pct"], cfg["interpolation"], cfg["mean"], cfg["std"]
    pct = crop_pct or pct
    # timm computes floor(size / crop_pct); the official code int(size / 0.875): the same for positive sizes.
    return Preprocess(protocol, img_size, pct, math.floor(img_size / pct), interpolation, tuple(mean), tuple(std))


def build_transform(p: Preprocess, normalize: bool = True):
    """timm's eval transform: Resize(shorter side) → CenterCrop → ToTensor → Normalize.

    With normalize=False it stops at a uint8 tensor (timm's prefetcher path) and `normalize_batch` finishes
    the job once per batch: per image, ToTensor + Normalize cost more than the JPEG decode of a 32 px image.
    """
    return create_transform(input_size=(3, p.img_size, p.img_size), is_training=False, interpolation=p.interpolation,
                            mean=p.mean, std=p.std, crop_pct=p.crop_pct, crop_mode="center",
                            use_prefetcher=not normalize)


def normalize_batch(images: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 [B, 3, H, W] → normalised float32, with ToTensor's and Normalize's operations in their order,
    so the values equal the per-image pipeline's exactly."""
    mean = torch.tensor(p.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=images.device).view(1, -1, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


class WorkerLoader(DataLoader):
    """A DataLoader whose worker processes leave SIGTERM and SIGUSR1 to the main process from their first instruction
    on (bench/processes.py): what every loader of ours with workers is."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, worker_init_fn=leave_stop_signals_to_the_main_process, **kwargs)
        if self.num_workers > 0:
            enough_open_files(self.num_workers)

    def __iter__(self):
        with stop_signals_held():  # the workers fork here (or, persistent, on the first epoch)
            return super().__iter__()
