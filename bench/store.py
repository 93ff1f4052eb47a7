"""The one way this project writes a file: atomically. Torch-free.

The content goes to a temporary file in the target's folder, is flushed to disk, and only then takes the
target's name: `os.replace` when an old file may be replaced (a baseline, a table, a checkpoint), a hard link
when it must not be (a result record: append-only). A crash, Ctrl-C or a full disk leaves the old file or none,
never half of one, and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], None], *, replace: bool = True, mode: int = 0o644) -> Path:
    """Call `write(tmp)` to fill a temporary file, then move it to `path` in one step; return `path`.

    Args:
        write: writes the whole content to the path it is given (e.g. `torch.save(obj, tmp)`).
        replace: False makes an existing `path` an error (FileExistsError) instead of replacing it.
        mode: permissions of the new file (mkstemp makes files private; results are meant to be shared).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists: never overwrite
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str, *, replace: bool = True) -> Path:
    """`write_atomic` for text (UTF-8)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), replace=replace)


def write_bytes_atomic(path: Path, data: bytes, *, replace: bool = True) -> Path:
    """`write_atomic` for bytes."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), replace=replace)
