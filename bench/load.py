"""How busy the machine is: /proc/stat's counters around a timed stretch, and the rule that calls it contended.
Plain Python (no torch), so the A/B gate's parent process (bench/ab.py) reads what its workers saw."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

# A round is contended when, during it, other processes kept more than this many cores busy (from /proc/stat,
# our own CPU time subtracted), the hypervisor stole more than this share of the machine, or our single
# measuring thread got less than this share of a core. Thresholds: a quiet 2-core machine here showed
# 0.00-0.05 other cores and 0 steal; one competing CPU-bound process shows ~1 (docs/regression-gate.md).
CONTENDED_OTHER_CORES = 0.25
CONTENDED_STEAL = 0.02
CONTENDED_SHARE = 0.90


@dataclass(frozen=True)
class MachineLoad:
    """Cumulative CPU counters at one instant: wall clock, this process's CPU time, and /proc/stat's busy and
    stolen time of the whole machine (None off Linux)."""

    wall_s: float
    own_cpu_s: float
    busy_s: float | None
    steal_s: float | None
    total_s: float | None

    @classmethod
    def now(cls, own_cpu_s: float | None = None) -> MachineLoad:
        """`own_cpu_s`: the CPU time that counts as ours (default: this process's; a training run's data-loading
        workers are its own work too, `family_cpu_s`)."""
        stat = ""
        with contextlib.suppress(OSError):
            with open("/proc/stat") as f:
                stat = f.readline()
        return cls.parse(time.perf_counter(), time.process_time() if own_cpu_s is None else own_cpu_s, stat)

    @classmethod
    def parse(cls, wall_s: float, own_cpu_s: float, stat: str) -> MachineLoad:
        """From the clocks and the first line of /proc/stat (`cpu user nice system idle iowait irq softirq steal …`;
        empty off Linux), read at one instant, possibly by another process (bench/ab_worker.py)."""
        busy = steal = total = None
        with contextlib.suppress(ValueError, IndexError):
            jiffies = [int(v) for v in stat.split()[1:9]]
            hz = os.sysconf("SC_CLK_TCK")
            user, nice, system, idle, iowait, irq, softirq, stolen = jiffies
            busy, steal, total = (user + nice + system + irq + softirq) / hz, stolen / hz, sum(jiffies) / hz
        return cls(wall_s, own_cpu_s, busy, steal, total)

    def since(self, start: MachineLoad) -> tuple[float | None, float | None, float]:
        """(other processes' busy cores, stolen share, our CPU share) between `start` and this instant; the first two
        None where /proc/stat could not be read (off Linux, masked or garbled): read as 0, an unreadable /proc/stat
        recorded a machine with a busy core as quiet (a hostile pass)."""
        wall = max(self.wall_s - start.wall_s, 1e-9)
        own = self.own_cpu_s - start.own_cpu_s
        if self.busy_s is None or start.busy_s is None:
            return None, None, own / wall
        others = max(0.0, (self.busy_s - start.busy_s - own) / wall)
        total = max(self.total_s - start.total_s, 1e-9)
        return others, (self.steal_s - start.steal_s) / total, own / wall


def family_cpu_s(root: int) -> float | None:
    """CPU seconds of process `root` and of every live process below it, each with the children it has reaped
    (utime, stime, cutime and cstime of /proc/PID/stat), so a worker that ends in between still counts; None off
    Linux or when `root` is gone. A training step's DataLoader workers, and under torchrun the other local ranks,
    are the run's own work, not another process's (the busy flag of `reproduce train`'s speed)."""
    children: dict[int, list[int]] = {}
    seconds: dict[int, float] = {}
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return None
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            # after the command's closing parenthesis: state, ppid, ... utime (14th field), stime, cutime, cstime
            fields = stat[stat.rindex(b")") + 2:].split()
            pid, ppid = int(name), int(fields[1])
            seconds[pid] = sum(int(v) for v in fields[11:15])
        except (OSError, ValueError, IndexError):
            continue  # ended while we read, or not ours to read
        children.setdefault(ppid, []).append(pid)
    if root not in seconds:
        return None
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += seconds.get(pid, 0.0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def is_contended(other_cores: float, steal: float, cpu_share: float, *, cuda: bool) -> bool:
    """Was a round timed while something else used the machine? (The share of a core is moot on a GPU.)"""
    return other_cores > CONTENDED_OTHER_CORES or steal > CONTENDED_STEAL or (not cuda and cpu_share < CONTENDED_SHARE)
