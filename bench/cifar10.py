"""The CIFAR-10 JPEG tree (train/, test/) on disk, unpacked once from ../shared/datasets into the cache folder.

Torch-free: `bench tables` finds the gallery's test images through it without importing the training code.
"""

from __future__ import annotations

import os
import shutil
import socket
import tarfile
import tempfile
from pathlib import Path

from bench.errors import DataError
from bench.store import cache_root

# ../shared beside the checkout, else shared/ inside it: what travels to a lent GPU with the working tree (.ci/device)
_PLACES = tuple(Path(__file__).resolve().parents[n] / "shared" / "datasets" / "cifar10-jpeg.tar.gz" for n in (2, 1))
SHARED_CIFAR = next((p for p in _PLACES if p.exists()), _PLACES[0])


def cifar10_tree() -> Path:
    """The CIFAR-10 JPEG tree (train/, test/), unpacked once from ../shared/datasets into the cache folder.

    On a machine with a network and without the shared archive, pass data=<folder> made by your own copy.
    """
    cache = cache_root()
    if cache is None:
        raise DataError("dataset=cifar10 without --data unpacks CIFAR-10 into a cache folder, and there is none here "
                        "(HOME is unset and this user has no home): set DEIT_BENCH_CACHE=FOLDER, or pass --data "
                        "pointing at a folder with train/<class>/ and test/<class>/ images")
    target = cache / "cifar10-jpeg"
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    if not SHARED_CIFAR.exists():
        raise DataError(f"dataset=cifar10 without --data needs the CIFAR-10 JPEG archive at {SHARED_CIFAR}; "
                        "or pass --data pointing at a folder with train/<class>/ and test/<class>/ images")
    # a read-only home or a full disk was an OSError traceback (a hostile pass): named, with what to do instead
    instead = ("set DEIT_BENCH_CACHE=FOLDER to a writable folder with about 0.25 GB free, or pass --data pointing at "
               "a folder with train/<class>/ and test/<class>/ images")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _sweep_dead_unpacks(cache)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP}{_this_host()}-{os.getpid()}-", dir=cache))
    except OSError as exc:
        raise DataError(f"cannot unpack CIFAR-10 into {cache}: {exc.strerror or exc}; {instead}") from None
    try:
        with tarfile.open(SHARED_CIFAR) as tar:
            _extract_with_progress(tar, tmp, cache)
        os.replace(tmp, target)  # atomic: a half-unpacked tree never has the final name
    except OSError as exc:
        if not (target / "train").is_dir():  # else another process unpacked it meanwhile
            raise DataError(f"unpacking CIFAR-10 into {cache} failed: {exc.strerror or exc}; nothing of it was kept; "
                            f"{instead}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_TEMP = ".tmp-cifar-"  # then the host, the unpacking process's id and mkdtemp's suffix


def _sweep_dead_unpacks(cache: Path) -> None:
    """Remove what an unpack killed outright (SIGKILL, a power cut) left: 0.25 GB per try (a hostile pass). Only this
    host's, and only where the process that made it is gone; a cache shared between machines keeps the others'."""
    host = _this_host()
    for folder in cache.glob(_TEMP + "*"):
        maker, pid, _ = folder.name[len(_TEMP):].rsplit("-", 2) if folder.name.count("-") >= 4 else ("", "", "")
        if maker == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _this_host() -> str:
    """The host name and, where /proc says, the process-id namespace: two containers of one host name sharing a
    cache see each other's process ids as gone (a review)."""
    try:
        return f"{socket.gethostname()}.{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:  # a zombie (killed, its parent gone, and a container's init that reaps nothing) answers signal 0 too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): taken as alive, so nothing live is ever removed
        return True


def _extract_with_progress(tar: tarfile.TarFile, into: Path, cache: Path, files: int = 60_022) -> None:
    """Unpack with a progress line on stderr (60,000 files: silence looks like a hang); `files` is the archive's count
    (members, folders included), so that reading the index first does not double the time."""
    import sys

    from tqdm import tqdm

    print(f"unpacking CIFAR-10 ({SHARED_CIFAR.name}) into {cache} once", file=sys.stderr)
    with tqdm(total=files, unit="file", desc="unpacking", file=sys.stderr, disable=None, leave=False) as bar:
        for member in tar:
            tar.extract(member, into, filter="data")
            bar.update(1)
