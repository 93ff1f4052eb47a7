"""The one way this project writes a file: atomically. Torch-free.

The content goes to a temporary file in the target's folder, is flushed to disk, and only then takes the
target's name: `os.replace` when an old file may be replaced (a baseline, a table, a checkpoint), a hard link
when it must not be (a result record: append-only). A crash, Ctrl-C or a full disk leaves the old file or none,
never half of one, and no temporary file behind. A full or read-only disk is named as such (`StorageError`), with
what was kept. Appended logs get a whole line or nothing (`append_line`), and a folder written by one process at a
time is held with `hold_folder`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.errors import FolderInUse, StorageError, Terminated

# torch.save reports a failed write of its zip writer as a RuntimeError that has lost the errno ("[enforce fail at
# inline_container.cc:672] . unexpected pos 732416 vs 732304" on a full disk)
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed writing")


def storage_error(path: Path, exc: BaseException, *, existed: bool) -> StorageError | None:
    """`exc`, raised writing `path`, as a StorageError naming a full or read-only disk and what was kept; None when
    it is neither. Called before a failed temporary file is removed: on a full disk its bytes are what fill it."""
    path, code = Path(path), getattr(exc, "errno", None)
    kept = f"{path} is unchanged" if existed else f"{path} was not written"
    folder = next((p for p in path.parents if p.exists()), path.parent)
    if code == errno.EISDIR:
        return StorageError(f"cannot write {path}: it is a folder; move it away or give another file name")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "is on a read-only disk" if code == errno.EROFS else "is not writable (permission denied)"
        return StorageError(f"cannot write {path}: {folder} {why}; {kept}")
    torch_failed = isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_FAILED)
    if code not in (errno.ENOSPC, errno.EDQUOT) and not torch_failed:
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    left = f"{free / 2**20:.1f} MiB free in {folder}" if free is not None else f"in {folder}"
    if code == errno.EDQUOT:
        return StorageError(f"cannot write {path}: the disk quota is used up ({left}); {kept}")
    if code == errno.ENOSPC or (free is not None and free < 2**20):
        return StorageError(f"cannot write {path}: the disk is full ({left}); {kept}; free space or write elsewhere")
    return StorageError(f"cannot write {path}: the write failed with {left}, a quota or an I/O error? "
                        f"({str(exc).splitlines()[0]}); {kept}")


def _named(path: Path, exc: BaseException, existed: bool) -> BaseException:
    return storage_error(path, exc, existed=existed) or exc


TEMP_PREFIX = ".tmp-"  # write_atomic's temporary files, beside their destination
STAGING_PREFIX = TEMP_PREFIX + "staging-"  # a folder of files put in place together (bench/site.py: regenerate)
_TEMP_FILE = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}\.\w+")  # mkstemp's 8 characters, then a suffix


def write_atomic(path: Path, write: Callable[[Path], None], *, replace: bool = True, mode: int = 0o644) -> Path:
    """Call `write(tmp)` to fill a temporary file, then move it to `path` in one step; return `path`.

    Args:
        write: writes the whole content to the path it is given (e.g. `torch.save(obj, tmp)`).
        replace: False makes an existing `path` an error (FileExistsError) instead of replacing it.
        mode: permissions of the new file (mkstemp makes files private; results are meant to be shared).
    """
    path = Path(path)
    existed = path.exists()
    made = missing_folders(path.parent)
    try:
        fd, name = _temporary_beside(path)
    except OSError as exc:
        remove_if_empty(made)
        raise _named(path, exc, existed) from exc
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
    except BaseException as exc:  # Ctrl-C too: nothing of the write is left, not even the folders it made
        named = _named(path, exc, existed) if isinstance(exc, OSError | RuntimeError) else None  # while the
        tmp.unlink(missing_ok=True)  # partial file still fills the disk: "the disk is full" is told by it
        remove_if_empty(made)
        if named is not None:
            raise named from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _temporary_beside(path: Path, tries: int = 3) -> tuple[int, str]:
    """A new temporary file in `path`'s folder, made with its parents. A concurrent writer's failed write takes back
    the empty folders it made (`remove_if_empty`), perhaps between our mkdir and our file: the folder is made again."""
    for attempt in range(tries):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # always a suffix: torch.save names its archive after the file's stem, and `.tmp-XXXX` alone has none
            # ("invalid file name": `--save-predictions preds` failed after the whole evaluation)
            return tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix or ".tmp", dir=path.parent)
        except FileNotFoundError:
            if attempt == tries - 1 or path.parent.exists():
                raise
    raise AssertionError("unreachable")


def missing_folders(folder: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create for `folder`, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Take back the folders a failed write made (deepest first), so a full disk leaves no empty results folder."""
    for folder in folders:  # a concurrent writer whose mkdir came between ours and its file makes it again
        try:
            folder.rmdir()
        except FileNotFoundError:  # never made: mkdir failed before it
            continue
        except OSError:  # not empty (another writer's file), or not ours to remove: stop there
            return


def write_text_atomic(path: Path, text: str, *, replace: bool = True) -> Path:
    """`write_atomic` for text (UTF-8)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), replace=replace)


def write_bytes_atomic(path: Path, data: bytes, *, replace: bool = True) -> Path:
    """`write_atomic` for bytes."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data), replace=replace)


def append_line(path: Path, line: str) -> None:
    """Append `line` and a newline to `path` whole or not at all: a failed write (a full disk) cuts the file back to
    its previous end, so an appended log never keeps a torn line of ours. Not synced: a log."""
    path, data = Path(path), (line + "\n").encode("utf-8")
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _named(path, exc, existed) from exc
    try:
        end = os.fstat(fd).st_size
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        raise _named(path, exc, existed) from exc
    finally:
        os.close(fd)


def cache_root() -> Path | None:
    """Where bench keeps what it makes once per machine (GEMM peaks, the unpacked CIFAR-10): $DEIT_BENCH_CACHE, else
    ~/.cache/deit-bench; None where there is no home (HOME unset and a user id without a passwd entry, as in a
    container started with --user N: Path.home() raised there, after the timing, and the run's record was lost)."""
    if os.environ.get("DEIT_BENCH_CACHE"):
        return Path(os.environ["DEIT_BENCH_CACHE"])
    try:
        return Path.home() / ".cache" / "deit-bench"
    except RuntimeError:
        return None


LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold_folder(folder: Path, *, log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> Iterator[Path]:
    """Own `folder` for the block: an exclusive `flock` on `folder/.lock`, which names the owner's pid and host. A
    second process is refused with FolderInUse naming the holder (two runs into one folder both
    exited 0 with their logs interleaved). The kernel releases the lock when its process dies, however (SIGKILL
    included), so there is never a stale lock to clear by hand. On leaving, the lock file goes, and so do the folders
    the block made if they stayed empty: a start refused before its first write leaves nothing behind. Temporary
    files of `write_atomic` that a killed holder left (`.tmp-*`: a whole checkpoint each, a hostile pass) are removed
    once the lock is ours: no one else writes here."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    lock = folder / LOCK_NAME
    fd = _lock(folder, lock, log)
    _HELD[_key(folder)] = fd
    for stale in sorted(folder.glob(f"{TEMP_PREFIX}*")):
        with contextlib.suppress(OSError):
            if stale.is_symlink():
                continue
            if stale.is_file() and _TEMP_FILE.fullmatch(stale.name):  # only ours: a user's .tmp-notes.txt stays
                stale.unlink()
            elif stale.is_dir() and stale.name.startswith(STAGING_PREFIX):  # only ours: a user's .tmp-x/ stays
                shutil.rmtree(stale)
            else:
                continue
            log(f"removed {stale}, a temporary {'folder' if stale.name.startswith(STAGING_PREFIX) else 'file'} a "
                "stopped run left behind")
    try:
        yield folder
    finally:
        _HELD.pop(_key(folder), None)
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(lock), os.fstat(fd)):  # ours, not one another process made after ours went
                os.unlink(lock)  # still held: a process that opened it meanwhile finds it gone and locks a new one
        os.close(fd)
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty


_HELD: dict[str, int] = {}  # a held folder (`_key`) -> the descriptor of its flock-ed lock file


def _key(folder: Path) -> str:
    return str(Path(folder).absolute())


def writer_of(folder: Path) -> str | None:
    """Who holds `folder` with `hold_folder` now ("pid N on HOST"), or None where no other process does."""
    lock = Path(folder) / LOCK_NAME
    if _key(folder) in _HELD:  # this process's own
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return lock.read_text(errors="replace").strip() or "a process just starting"
        except OSError:
            return "a process"
    except OSError:  # no flock here: nobody can be known to hold it
        return None
    finally:
        os.close(fd)
    return None


def check_held(folder: Path) -> None:
    """Raise StorageError if `folder`, held by this process (`hold_folder`), was removed or replaced meanwhile: its
    lock file is gone or another. Training on into a deleted run folder crashed at the next log line with a
    FileNotFoundError traceback, or re-made the folder at the next checkpoint, without its log's earlier lines and
    without a lock (a hostile pass)."""
    fd = _HELD.get(_key(folder))
    if fd is None:
        return
    try:
        same = os.path.samestat(os.stat(Path(folder) / LOCK_NAME), os.fstat(fd))  # device and inode
    except OSError:
        same = False
    if not same:
        raise StorageError(f"{folder} was removed or replaced while this run wrote it (its {LOCK_NAME} is gone); "
                           "nothing more is written there")


def _flock_soon(fd: int) -> None:
    """An exclusive flock on `fd`, tried for up to 50 ms: `writer_of` holds a shared one for an instant while it looks
    whether a teacher's run is still training (a review), which is no holder to refuse a start over."""
    for _ in range(5):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock(folder: Path, lock: Path, log) -> int:
    """An open descriptor of `lock`, flock-ed; a lock file removed by a holder leaving between our open and our
    flock is not the lock any more, so the new one is taken."""
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the folder was removed by a holder leaving it empty
        except OSError as exc:
            raise _named(lock, exc, lock.exists()) from exc
        try:
            _flock_soon(fd)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = lock.read_text(errors="replace").strip() or "a process just starting"
            except FileNotFoundError:
                holder = "a process just leaving"
            raise FolderInUse(f"{folder} is being written by another process ({holder}, holding {lock}); wait for "
                              "it to finish, or write elsewhere") from None
        except OSError as exc:  # a filesystem without flock (Lustre mounted noflock, some NFS): run, but say so
            log(f"warning: cannot lock {lock} ({os.strerror(exc.errno)}); nothing stops a second process from "
                f"writing {folder} at the same time")
            return fd
        try:
            current = os.path.samestat(os.stat(lock), os.fstat(fd))  # device and inode, as check_held compares
        except FileNotFoundError:
            current = False
        if current:
            with contextlib.suppress(OSError):  # the pid only informs a refused process; a full disk fails later, named
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back for the block and raise them (KeyboardInterrupt, `Terminated`) once the
    block is done: for a few renames that must happen together (`bench tables`' outputs; SIGTERM in the middle of
    them left one new file among 56 old ones, a hostile pass). Outside the main thread the block runs as it is; a
    signal the caller ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    before = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    if signal.SIGTERM in seen:
        raise Terminated
    if seen:
        raise KeyboardInterrupt
