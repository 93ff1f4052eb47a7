"""The device a run uses and, under torchrun, its processes: one place for `auto` and for the process group, read
by `bench run`, `bench campaign` and `reproduce train | suite | stepspeed`."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.util  # registers its exit handler first, so that ours below runs before it
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from bench.errors import DataError

# Data-loading processes per rank, at most: each is a fork of the whole process, and `workers=100000` took down a
# 24 GiB machine through the kernel's out-of-memory killer (a hostile pass). The official code uses 10.
MAX_WORKERS = 64

WORKER_GRACE_S = 10  # a DataLoader worker outlives a SIGTERM by this much: the main process's step ends meanwhile


def enough_open_files(workers: int) -> None:
    """Make room for `workers` loader processes under the limit on open files, or raise DataError. Each worker holds
    pipes and, with torch's default sharing strategy, one descriptor per tensor in flight: under `ulimit -n 16` a
    run with 2 workers ended in an OSError traceback, or hung while a worker failed (a hostile pass). A soft limit
    below what they need is raised towards the hard one (for the rest of this process); a hard limit below it is
    refused. Called where a loader is made, and before the work by the commands that will make one."""
    try:
        import resource
    except ImportError:  # no such limits here (Windows)
        return
    needed = 64 + 32 * workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise DataError(f"loading with {workers} worker processes needs about {needed} open files, and this process "
                        f"may open {hard} at most (`ulimit -n`): raise the limit, or load the data in this process "
                        "(`reproduce`: --set workers=0; `bench run`: --workers 0)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed * 4 if hard == resource.RLIM_INFINITY else min(hard, needed * 4),
                                                hard))


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: SIGTERM and SIGUSR1 to the whole process group (SLURM, `docker stop`,
    systemd) killed the workers at once, and the loader's "worker killed by signal: Terminated" crashed the run
    before its pre-emption checkpoint (a hostile pass). The main process answers them. A worker ignores SIGUSR1 (a
    warning, which only the main process acts on) and ends `WORKER_GRACE_S` after a SIGTERM: long enough for the
    step being loaded, and still an end when the loader itself sends SIGTERM to a worker it cannot stop otherwise
    (a worker ignoring it outright stayed alive, and multiprocessing's exit waited for it for ever)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # `_end_soon`'s alarm ends the worker, whatever the parent had set
    signal.signal(signal.SIGTERM, _end_soon)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # the terminal closing: as SIGTERM, unless nohup'd
        signal.signal(signal.SIGHUP, _end_soon)  # (a review: the workers died at once while the run checkpointed)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held since the fork (`stop_signals_held`): one sent
    # meanwhile is answered here, by the handlers above


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGUSR1 back in this thread for the block, in which a loader forks its workers: a fork
    inherits them held, and `leave_stop_signals_to_the_main_process` lets them through once its handlers are in.
    Before, a worker answered a SIGTERM to the process group in its first milliseconds with torch's own handler
    (death by SIGTERM, set before any `worker_init_fn` runs), and the loader's "worker exited unexpectedly" crashed
    the run before its pre-emption checkpoint: 5 of 30 group SIGTERMs sent 0-800 ms after an epoch's training ended,
    all five at 80-110 ms, as its evaluation's workers started (a hostile pass had seen 1 in 17); after, 20 of 20.
    The main process gets a held signal at the end of the block, as any other thread of it may meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _end_soon(signum, frame) -> None:
    signal.alarm(signal.alarm(0) or WORKER_GRACE_S)  # SIGALRM's default action ends the process; a second SIGTERM
    # keeps the first one's deadline


def stop_reporting_dead_workers() -> None:
    """Once the main process is stopping (SIGTERM), the loader's SIGCHLD handler must not raise "worker killed" into
    whatever runs then, the checkpoint's write included: its workers are ending as asked."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def kill_daemon_children() -> None:
    """At exit, multiprocessing ends daemon children with SIGTERM and then waits for them without a limit: a
    DataLoader worker would keep the process `WORKER_GRACE_S` longer (above). They are ended as multiprocessing would
    end them, with SIGKILL, at once."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's loader reports a killed worker as a crash: not now
    for child in children:
        child.kill()


atexit.register(kill_daemon_children)


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: its rank, how many there are, and its device."""

    rank: int
    world: int
    device: str

    @property
    def main(self) -> bool:
        """Whether this process is the one that writes and prints (rank 0, or the only one)."""
        return self.rank == 0


def resolve_device(device: str, named: str | None = None) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` as this machine runs it: `auto` is cuda where torch sees a GPU, else cpu.

    Raises:
        ValueError: a device this machine lacks, or a name that is none of these; `named` (default
            `--device DEVICE`) says where it was given.
    """
    import torch  # late: the CLIs check their arguments before torch loads

    named = named or f"--device {device}"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"{named}: unknown device; accepted: auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"{named}: torch sees no CUDA device here (auto or cpu runs on the CPU)")
    count = torch.cuda.device_count()
    if int(device[5:] or 0) >= count:
        raise ValueError(f"{named}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def start_processes(device: str) -> Processes:
    """One process per device under torchrun (WORLD_SIZE > 1: NCCL on GPU, gloo on CPU, each rank on the GPU of
    its LOCAL_RANK); a single process on `device` otherwise. Raises ValueError as `resolve_device` does."""
    import torch
    import torch.distributed as dist

    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(0, 1, device)
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Processes(dist.get_rank(), world, device)
