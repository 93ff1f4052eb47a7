"""Real files for tests: random JPEGs in class folders (tests/ is on sys.path through its conftest)."""

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
