"""Real files for tests: random JPEGs in class folders, a record re-timed (tests/ is on sys.path through its conftest)."""

import zlib
from pathlib import Path

import torch
from PIL import Image


def jpeg(path: Path, seed: int, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    return path


def folder_tree(root: Path, counts: dict[str, int]) -> Path:
    """`root/<class>/<i>.jpg`, counts[class] images per class (an empty folder for 0)."""
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            jpeg(root / name / f"{i}.jpg", seed=zlib.crc32(f"{name}/{i}".encode()))  # not hash(): salted per process
    return root


def at_speed(metrics: dict, img_per_s: float) -> dict:
    """A bench record's `metrics` as if timed at `img_per_s`: the batch times, their samples, the other throughputs
    and the FLOP/s scaled alike, so the record stays consistent (bench/schema.py: `BenchMetrics.inconsistencies`)."""
    slower = metrics["infer_img_per_s"] / img_per_s
    out = dict(metrics)
    for key, value in metrics.items():
        if value is None:
            continue
        if key.startswith(("batch_ms_", "latency_ms_")) and key != "batch_ms_samples":
            out[key] = value * slower
        elif key.startswith("infer_img_per_s") or key in ("achieved_tflops", "mfu", "mfu_measured"):
            out[key] = value / slower
    if metrics.get("batch_ms_samples"):
        out["batch_ms_samples"] = [round(s * slower, 4) for s in metrics["batch_ms_samples"]]
    return out
