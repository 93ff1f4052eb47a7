"""The console script `bench` (and `_launch`, which reproduce/launch.py uses): import the command's CLI, then run it.

A Ctrl-C while the libraries load (the first ~0.3 s: pandas, numpy) used to end in a KeyboardInterrupt traceback
and exit status -2, where one a second later exits 130 with one line (a hostile pass); here both read alike.
"""

import atexit
import errno
import importlib
import os
import sys


def _fill_closed_streams() -> None:
    """`bench run 2>&-` printed its log lines into stdout, into `--json`'s records (print(file=None) writes to
    stdout), `reproduce train 2>&-` died in its progress bar, and `>&-` ended every command in a traceback (a hostile
    pass). A closed standard descriptor gets /dev/null, before anything else can open a file that would take its
    number and receive the C libraries' warnings, and Python's stream for it writes there."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


_fill_closed_streams()

from bench.errors import (  # noqa: E402 (after the streams are whole: importing may print)
    Terminated,
    exit_at_once_on_another_stop,
    ignore_stops_while_finalising,
    launched,
    sigterm_interrupts,
)

atexit.register(ignore_stops_while_finalising)  # registered before torch and multiprocessing: runs after their hooks

# what a full or failing output stream raises: `bench ls > /dev/full` printed a traceback (a hostile pass)
_OUTPUT_FAILED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def bench() -> int:
    return _launch("bench.cli", "bench")


def _launch(module: str, name: str) -> int:
    try:
        with sigterm_interrupts():  # a SIGTERM in the first second (torch loading) killed `reproduce` silently, -15
            main = importlib.import_module(module).main
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{name}: {how} while starting; nothing was done", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        if (said := _unwritable_cache(exc, name)) is None:
            raise
        print(said, file=sys.stderr)
        return 2
    launched()  # main() is the whole process: the quick exit it installs on a stop stays for the exit
    try:
        code = main()
        exit_at_once_on_another_stop(code)  # what follows is the interpreter's exit: a Ctrl-C now ends it, quietly,
        # with the command's own code (a run that wrote its record said 130 when Ctrl-C came at exit, a hostile pass)
        sys.stdout.flush()  # a buffered stdout fails here, not as "Exception ignored" at the interpreter's exit
    except Exception as exc:
        if (said := _unwritable_cache(exc, name)) is not None:  # torch's own caches, where the environment puts them
            print(said, file=sys.stderr)
            return 2
        if not isinstance(exc, OSError) or exc.errno not in _OUTPUT_FAILED:
            raise
        _quiet_stdout()
        print(f"{name}: error: cannot write {exc.filename or 'the output'}: {exc.strerror}", file=sys.stderr)
        return 1
    return code


# where torch, inductor and triton keep their caches when told: `TORCHINDUCTOR_CACHE_DIR` on a read-only disk made
# every command that imports torchvision end in a 56-line OSError traceback (a hostile pass)
CACHE_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCH_HOME", "XDG_CACHE_HOME")


def _unwritable_cache(exc: BaseException, name: str) -> str | None:
    """One line for an OSError in a cache folder the environment names, wherever it lies in `exc`'s chain (inductor's
    cache writes fail inside dynamo's BackendCompilerFailed, a review), or None."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and (variable := _cache_variable(e)) is not None:
            return (f"{name}: error: cannot write {e.filename} ({e.strerror}), the folder {variable} names; point it "
                    "at a writable folder, or unset it")
        todo += [e.__cause__, e.__context__, getattr(e, "inner_exception", None)]
    return None


def _cache_variable(exc: OSError) -> str | None:
    """The cache variable whose folder `exc` failed to write, or None."""
    if not exc.filename or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC,
                                               errno.ENOTDIR, errno.EEXIST):
        return None
    failed = os.path.abspath(str(exc.filename))
    for variable in CACHE_VARIABLES:
        folder = os.environ.get(variable)
        if folder and (failed == os.path.abspath(folder) or failed.startswith(os.path.abspath(folder) + os.sep)):
            return f"{variable}={folder}"
    return None


def _quiet_stdout() -> None:
    """Send what is still buffered for stdout nowhere, so the interpreter's own flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a replaced stdout without a descriptor (pytest's capture): nothing to flush
        pass
