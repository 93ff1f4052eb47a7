"""The console script `bench` (and `_launch`, which reproduce/launch.py uses): import the command's CLI, then run it.

A Ctrl-C while the libraries load (the first ~0.3 s: pandas, numpy) used to end in a KeyboardInterrupt traceback
and exit status -2, where one a second later exits 130 with one line (a hostile pass); here both read alike.
"""

import atexit
import errno
import importlib
import os
import sys

from bench.errors import (
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
    launched()  # main() is the whole process: the quick exit it installs on a stop stays for the exit
    try:
        code = main()
        exit_at_once_on_another_stop(code)  # what follows is the interpreter's exit: a Ctrl-C now ends it, quietly,
        # with the command's own code (a run that wrote its record said 130 when Ctrl-C came at exit, a hostile pass)
        sys.stdout.flush()  # a buffered stdout fails here, not as "Exception ignored" at the interpreter's exit
    except OSError as exc:
        if exc.errno not in _OUTPUT_FAILED:
            raise
        _quiet_stdout()
        print(f"{name}: error: cannot write {exc.filename or 'the output'}: {exc.strerror}", file=sys.stderr)
        return 1
    return code


def _quiet_stdout() -> None:
    """Send what is still buffered for stdout nowhere, so the interpreter's own flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a replaced stdout without a descriptor (pytest's capture): nothing to flush
        pass
