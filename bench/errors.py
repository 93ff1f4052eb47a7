"""Errors the commands report as a message and exit code 2, not a traceback; torch-free."""

import argparse
import contextlib
import functools
import os
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class DataError(ValueError):
    """Data that cannot be evaluated, with what to do about it."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason a user can act on."""


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit code 2, no traceback."""


class FolderInUse(UsageError):
    """A run folder another live process is writing (two runs into one folder interleaved their logs)."""


class StorageError(UsageError, OSError):
    """A full or read-only disk (or a folder where a file is to be written), named as such with what was kept.
    Reported like a usage error (one line, exit 2): the user frees space or writes elsewhere, nothing
    in the run is wrong. Also an OSError, so the callers that handle a failed write still do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a scheduler's stop): a `bench` command stops as on Ctrl-C, cleaning up the same way,
    and exits 143. Before, SIGTERM killed it where it stood: a campaign's running step went on orphaned, a figure
    process kept `bench tables`' lock, a record's temporary file stayed behind (a hostile pass)."""


def outside_imports(handler):
    """`handler`, a stop signal's handler that raises, made to wait while the signal finds the main thread inside an
    import. An exception raised in a module's import may be swallowed by the C code that asked for it (torch's
    `from torch._C import *` imports numpy so; triton's import too): a Ctrl-C or SIGTERM in a command's first seconds
    was lost, and the run went on to write its record and exit 0 (3 of ~60 SIGTERMs, 1 of 8 Ctrl-Cs, a hostile pass),
    or left numpy half imported ("module 'numpy' has no attribute 'multiply'").

    Once the import is done the signal is sent again, to whatever handler is in force then (a block that holds stops
    back, `store.interrupts_deferred` or `processes.stop_signals_held`, holds this one too). The wait is polled every
    10 ms with SIGALRM (system calls restarted; a caller's own SIGALRM handler and timer are given back); it ends after
    `IMPORT_WAIT_S` whatever the import does, and a second stop while the first waits is answered at once: an import
    that hangs cannot make a command unstoppable."""
    def deferred(signum, frame):
        sent_again = time.monotonic() - _NO_WAIT.pop(signum, float("-inf")) < 1.0  # a stale mark is no mark
        if not sent_again and _PENDING:  # the user asked twice: the first stop, now
            answer_deferred_stop()
            return
        if not sent_again and _importing(frame):
            before = signal.signal(signal.SIGALRM, _retry)  # given back when the stop is answered
            signal.siginterrupt(signal.SIGALRM, False)
            _PENDING[:] = [(signum, time.monotonic(), before, signal.setitimer(signal.ITIMER_REAL, 0.01))]
            return
        handler(signum, frame)
    deferred.__wrapped__ = handler
    return deferred


# the deferred (signum, since, SIGALRM's handler and timer before), at most one: the first stop is the one answered
_PENDING: list = []
_NO_WAIT: dict[int, float] = {}  # a stop sent again (when), which no import may hold back a second time
IMPORT_WAIT_S = 5.0  # torch's import, the longest a stop waits for, takes 1-2 s here


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _retry(_signum, frame) -> None:
    if _PENDING and _importing(frame) and time.monotonic() - _PENDING[0][1] < IMPORT_WAIT_S:
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    answer_deferred_stop()


def answer_deferred_stop() -> None:
    """Send a stop `outside_imports` deferred again, now, to the handler in force. Called where a block's handlers
    are about to be put back, so that a stop still waiting is answered inside that block (the command's own message
    and exit code), not 10 ms later in whatever runs next."""
    if threading.current_thread() is not threading.main_thread() or not _PENDING:
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    signum, since, alarm_handler, (delay, interval) = _PENDING.pop()
    signal.signal(signal.SIGALRM, alarm_handler if alarm_handler is not None else signal.SIG_DFL)
    if delay > 0:  # a caller's own alarm (a test's hang guard) goes on, less the time spent here
        signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - since), 1e-3), interval)
    _NO_WAIT[signum] = time.monotonic()
    try:
        os.kill(os.getpid(), signum)  # unless the signal is blocked, Python runs its handler inside this call
    finally:
        if signum not in signal.pthread_sigmask(signal.SIG_BLOCK, []):
            _NO_WAIT.pop(signum, None)  # answered, by whatever handler was in force


def raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated`, where Ctrl-C raises KeyboardInterrupt (main thread only); both
    wait for an import under way to end (`outside_imports`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signal.SIGTERM: signal.signal(signal.SIGTERM, outside_imports(raise_terminated))}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        before[signal.SIGINT] = signal.signal(signal.SIGINT, outside_imports(signal.default_int_handler))
    try:
        yield
    finally:
        try:
            answer_deferred_stop()  # raised inside the block, by its own handlers, however it is left
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)


def exit_at_once_on_another_stop(code: int | None = None) -> None:
    """Once a command has stopped (it was interrupted, or it is done), a further Ctrl-C or SIGTERM ends the exit at
    once, with `code` (a finished command's own: its work is done) or else 130 or 143: a second Ctrl-C 20-100 ms
    after the first landed in the interpreter's exit (torch's atexit hooks, its finalisation) and gave a
    KeyboardInterrupt traceback or death by signal, status -2 (a hostile pass). Whatever was to be kept was kept
    before this point. Main thread only, as Python's signal handlers are."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # a caller's nohup stays in force
            signal.signal(signum, functools.partial(_exit_at_once, code=code))


_LAUNCHED = False  # set by the console scripts' launcher (bench/launch.py): main() runs as the whole process


def launched() -> None:
    global _LAUNCHED
    _LAUNCHED = True


@contextlib.contextmanager
def stop_handlers_restored() -> Iterator[None]:
    """For a command's `main`, whose interrupt branches call `exit_at_once_on_another_stop`: the handlers in force
    before it are back when it returns, so a caller of `main()` in its own process (a test, a notebook) keeps its
    Ctrl-C. The console script's launcher puts the quick exit in place again for the interpreter's exit."""
    if threading.current_thread() is not threading.main_thread() or _LAUNCHED:  # the launcher's own exit follows:
        yield  # putting Python's handlers back first left a moment where a Ctrl-C gave a traceback (a review)
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            if handler is not None:  # None: set outside Python, which signal.signal cannot put back
                signal.signal(s, handler)


def ignore_stops_while_finalising() -> None:
    """For the interpreter's last steps, after every atexit hook: Python then puts its own handlers back to the
    default action, and a Ctrl-C there killed the process by signal (status -2). An ignored signal stays ignored."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def _exit_at_once(signum, frame, code: int | None = None) -> None:
    import sys

    from bench.processes import kill_daemon_children  # what the normal exit runs for them, skipped by os._exit

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a flush the signal interrupted may refuse a second one
            stream.flush()
    with contextlib.suppress(Exception):
        kill_daemon_children()
    os._exit(128 + signum if code is None else code)


def plain_streams() -> None:
    """Text our commands print that the terminal's encoding lacks (↑, ⚗, –, a non-ASCII path under LC_ALL=C or
    PYTHONIOENCODING=ascii) comes out escaped, not as a UnicodeEncodeError traceback after the record was written
    (a hostile pass)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # a replaced stream without reconfigure
            stream.reconfigure(errors="backslashreplace")


def message_of(exc: Exception) -> str:
    """Our message, also when a DataLoader worker re-raised it with the worker's traceback attached."""
    text = str(exc)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


class Parser(argparse.ArgumentParser):
    """The commands' argument parser: an option that takes one value refuses to be given twice. Argparse keeps the
    last silently: `--variant debug --variant debug_dist` ran debug_dist alone, `--results-dir A --results-dir B`
    wrote to B (a hostile pass), where `reproduce --set epochs=2 --set epochs=3` was already refused. Its
    subcommands' parsers are of this class too (argparse makes them of the parent's), and its argument groups share
    its action registry, so their options refuse a repeat as well."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)
        for kind in (int, float):  # argparse looks a type up here first: `type=int` options read plain numbers
            self.register("type", kind, functools.partial(plain_number, kind))  # its message stays argparse's

    def error(self, message):
        """One line, as our own usage errors are (argparse printed its whole usage block first, 16 lines for `bench
        run`), with where the options are listed."""
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def plain_number(kind: type, text: str) -> int | float:
    """`kind(text)` for int or float, written in plain ASCII without underscores: Python also reads `2_0` as 20 and
    Arabic-Indic digits, so `--set epochs=2_0`, a typo, trained 20 epochs and `--batch-size 1_6` timed batch 16 (a
    hostile pass). Raises ValueError; other types are called as they are."""
    if kind in (int, float) and (not text.isascii() or "_" in text):
        raise ValueError(text)
    return kind(text)


class _Once(argparse._StoreAction):
    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is None:  # a positional (argparse may call one with its default): given once by its place
            return super().__call__(parser, namespace, values, option_string)
        given = getattr(namespace, "_given_once", None)
        if given is None:
            given = {}
            namespace._given_once = given
        if self.dest in given:
            parser.error(f"{option_string} given twice ({given[self.dest]} and {values}; the last would win "
                         "silently): give it once")
        given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


def path_arg(text: str) -> Path:
    """argparse's type for a path: an empty one is refused (exit 2), where Path("") would be the current folder and an
    unset shell variable (`--out "$OUT"`) would write a run's files there (a hostile pass)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); give a file or folder name")
    return Path(text)


def check_folder(path, flag: str) -> None:
    """Raise UsageError unless `path` is, or can become, a writable folder: checked before a command measures or
    trains anything, so a results folder given as a file name fails in a second, not after the run."""
    path = Path(path)
    for part in (path, *path.parents):  # a link to nothing passed, and the run failed at its end, "File exists"
        if part.exists():  # (a hostile pass)
            break
        if part.is_symlink():
            raise UsageError(f"{flag} {path}: {part} is a link to {os.readlink(part)}, which does not exist (or a loop "
                             "of links); make its target, or give another folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise UsageError(f"{flag} {path} {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        raise UsageError(f"{flag} {path}: {existing} is {'on a read-only disk' if read_only else 'not writable'}")
    try:  # access() approves what mkdir may still refuse (/proc, some network and overlay disks, root's view)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: nothing can be written in {existing} ({exc.strerror or exc})") from None


def writable(path) -> bool:
    """Whether `path` is, or can become, a folder this process may write (a read-only disk answers no)."""
    existing = _nearest_existing(Path(path))
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def _nearest_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor or "."))


def kind_of(path: Path) -> str:
    """'a folder', 'a link to nothing', 'a character device' …: what stands where a file of the run belongs."""
    if path.is_symlink() and not path.exists():
        return "a link to nothing, or a loop of links"
    mode = path.stat().st_mode
    return next((name for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                                         (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                                         (stat.S_ISSOCK, "a socket")) if test(mode)), "not a regular file")


def not_a_file(path) -> str:
    """Why `path` is no file to read, for a message: "no such file", or what stands there instead ("a folder, not a
    file"): a folder given for a file read as "no such file" (a hostile pass)."""
    if not os.path.lexists(path):
        return "no such file"
    kind = kind_of(Path(path))
    return kind if kind.startswith("not ") else f"{kind}, not a file"


def plural(count: int, noun: str) -> str:
    """`1 epoch`, `2 epochs`, `0 steps`: a count in a message ("1 epochs done", a hostile pass)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
