"""Table 4: the fraction of images two classifiers label differently, from saved per-image predictions.

`bench run … --save-predictions FILE` stores each image's top-5 per head; this reads several such files
(images matched by file name) and needs no model or data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from bench.predictions import Predictions

# Which heads of a distilled model become Table 4 columns, and their names there.
HEAD_LABELS = {"": "", "cls": "class", "dist": "distil", "fused_logits": "class+distil"}


def top1_columns(files: list[Path], labels: list[str] | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Top-1 per classifier (one per head of each file, named by `labels` or `file_labels`), plus the ground
    truth, on the images all files share."""
    loaded = [(f, Predictions.load(f)) for f in files]
    common = set(loaded[0][1].names).intersection(*(set(p.names) for _, p in loaded[1:]))
    if not common:
        raise ValueError("the prediction files share no image; they must come from the same data")
    order = sorted(common)
    columns: dict[str, torch.Tensor] = {}
    for (_, preds), name in zip(loaded, labels or file_labels(files)):
        position = {n: i for i, n in enumerate(preds.names)}
        rows = torch.tensor([position[n] for n in order])
        columns.setdefault("ground truth", preds.targets[rows])
        for head, label in HEAD_LABELS.items():
            if head in preds.top5:
                columns[f"{name} {label}".strip()] = preds.top5[head][rows, 0]
    return columns, len(order)


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
