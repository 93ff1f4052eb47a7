"""Table 4: the fraction of images two classifiers label differently, from saved per-image predictions.

`bench run … --save-predictions FILE` stores each image's top-5 per head; this reads several such files
(images matched by file name) and needs no model or data. Each file is checked field by field, and all must agree
on every shared image's label (the first file's labels are not taken for all).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.predictions import Predictions, image_key

# Which heads of a distilled model become Table 4 columns, and their names there.
HEAD_LABELS = {"": "", "cls": "class", "dist": "distil", "fused_logits": "class+distil"}


def top1_columns(files: list[Path], labels: list[str] | None = None
                 ) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """Top-1 per classifier (one per head of each file, named by `labels` or `file_labels`), plus the ground
    truth, on the images all files share; and a note for each way the files were made differently
    (`made_differently`)."""
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise ValueError(f"no such prediction file: {', '.join(missing)} (write them with --save-predictions)")
    special = [str(p) for p in files if not p.is_file()]
    if special:  # a FIFO would be waited on
        raise ValueError(f"not a regular file: {', '.join(special)}")
    try:
        loaded = [(f, load(f)) for f in files]
    except ValueError:
        raise
    except Exception as exc:  # not a torch file, or not one of ours
        raise ValueError(f"cannot read the prediction files: {type(exc).__name__}: {exc}") from None
    keys = [[image_key(n) for n in p.names] for _, p in loaded]  # files written before image_key: named by folder
    for (path, _), names in zip(loaded, keys):
        if len(set(names)) != len(names):
            raise ValueError(f"{path} holds one ILSVRC2012 val image name in several folders")
    common = set(keys[0]).intersection(*(set(k) for k in keys[1:]))
    if not common:
        raise ValueError("the prediction files share no image; they must come from the same data")
    order = sorted(common)
    columns: dict[str, torch.Tensor] = {}
    for (path, preds), names, name in zip(loaded, keys, labels or file_labels(files)):
        position = {n: i for i, n in enumerate(names)}
        rows = torch.tensor([position[n] for n in order])
        truth = preds.targets[rows]
        if "ground truth" in columns and not torch.equal(truth, columns["ground truth"]):
            differ = (truth != columns["ground truth"]).nonzero().flatten()
            first = int(differ[0])
            raise ValueError(f"{loaded[0][0]} and {path} label {len(differ)} of the {len(order)} shared images "
                             f"differently (ground truth of {order[first]!r}: {int(columns['ground truth'][first])} "
                             f"and {int(truth[first])}); predictions of other data or another label set cannot be "
                             "compared")
        columns.setdefault("ground truth", truth)
        for head, label in HEAD_LABELS.items():
            if head in preds.top5:
                columns[f"{name} {label}".strip()] = preds.top5[head][rows, 0]
    return columns, len(order), made_differently([(str(path), preds) for path, preds in loaded])


# What can make two classifiers disagree besides the models: a crop or resize changes which pixels each one sees,
# and a precision flips close calls. A hostile pass compared a timm-crop file with an official-crop one in silence.
CONFOUNDS = ("precision", "preprocess")


def made_differently(loaded: list[tuple[str, Predictions]]) -> list[str]:
    """'precision differs: a.pt fp32, b.pt amp_bf16' for each confound on which the files differ, and which files do
    not say how they were made (written before they did). Teacher and student each have their own preprocessing
    when evaluated by timm's protocol, so a difference is named, not refused."""
    notes = []
    unknown = [name for name, p in loaded if p.made is None]
    if unknown and len(unknown) < len(loaded) or len(unknown) == len(loaded) > 1:
        notes.append(f"{', '.join(unknown)}: written before prediction files said how they were made; their "
                     "preprocessing and precision are not known")
    known = [(name, p.made) for name, p in loaded if p.made is not None]
    for key in CONFOUNDS:
        values = {name: made.get(key) for name, made in known}
        if len({repr(v) for v in values.values()}) > 1:
            shown = {name: _shown(v) for name, v in values.items()}
            if len(set(shown.values())) == 1:  # the short form hides what differs (mean/std, a review): all of it
                shown = {name: repr(v) for name, v in values.items()}
            notes.append(f"{key} differs, so not only the models do: " +
                         "; ".join(f"{name}: {value}" for name, value in shown.items()))
    return notes


def _shown(value: Any) -> str:
    if isinstance(value, dict) and {"protocol", "resize_size", "img_size", "interpolation"} <= set(value):
        return (f"{value['protocol']} (resize {value['resize_size']}, crop {value['img_size']}, "
                f"{value['interpolation']})")
    return str(value)


def load(path: Path) -> Predictions:
    """A predictions file, checked field by field. Raises ValueError naming the file and the field."""
    preds = Predictions.load(path)
    names, targets, top5 = preds.names, preds.targets, preds.top5
    problem = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problem = f"names: expected a list of image names, got {type(names).__name__}"
    elif len(set(names)) != len(names):
        problem = f"names: {len(names) - len(set(names))} image names appear twice"
    elif not _integers(targets, 1) or len(targets) != len(names):
        problem = f"targets: expected {len(names)} integer labels (one per name), got {_shape(targets)}"
    elif not isinstance(top5, dict) or not top5:
        problem = "top5: expected one entry per head, got " + (type(top5).__name__ if not isinstance(top5, dict) else
                                                                 "none")
    else:
        problem = next((f"top5[{head!r}]: expected {len(names)} rows of k >= 1 integer classes, got {_shape(t)}"
                        for head, t in top5.items() if not _integers(t, 2) or t.shape[0] != len(names)
                        or t.shape[1] < 1), None)
    if problem:
        raise ValueError(f"{path}: {problem}; not a predictions file as `bench run --save-predictions` writes it")
    return preds


def _integers(t: object, dims: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == dims and not t.is_floating_point() and not t.is_complex()


def _shape(t: object) -> str:
    return f"a {t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def file_labels(files: list[Path]) -> list[str]:
    """A column name per file: its stem, or where stems repeat (training runs all write predictions.pt) its path
    from the files' common folder, e.g. `seed0/mini_hard` for `…/seed0/mini_hard/predictions.pt`."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    paths = [f.resolve() for f in files]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"a prediction file is given twice: {', '.join(twice)}")
    common = Path(os.path.commonpath(paths))
    one_stem = len(set(stems)) == 1
    labels = [(p.parent if one_stem else p.with_suffix("")).relative_to(common).as_posix() for p in paths]
    return [label if label != "." else p.parent.name for label, p in zip(labels, paths)]


def disagreement(columns: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Symmetric matrix of the fraction of images on which two columns' top-1 differ."""
    names = list(columns)
    return pd.DataFrame([[(columns[a] != columns[b]).float().mean().item() for b in names] for a in names],
                        index=names, columns=names)
