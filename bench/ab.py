"""`bench check --against REF`: the speed gate as an A/B of two trees, or two Python environments, in one run.

Like `asv continuous BASE HEAD`: no stored baseline, so it works on a machine never seen before. The reference
commit's files (`git archive`, not checked out over anything) and the working tree are measured in turn, each in a
fresh process of bench/ab_worker.py, A B B A A B …; that worker imports `bench` and `reproduce` from the tree it
measures and times the same workloads on both sides (bench/protocols.py: AB_WORKLOADS): DeiT-Ti's forward and one
training step of the distilled debug model with its teacher, fp32, one thread, by CPU time. With `--against-python` the two sides are
one tree under two interpreters, to gate a torch or timm upgrade before it lands.

Each round pairs one reference process with one current process; its log ratio of median call times is one
observation. The verdict reads the Hodges–Lehmann estimate of the median log ratio and its exact 95 % Wilcoxon
signed-rank interval (bench/stats.py). Why this and not a bootstrap: ten rounds are few for a bootstrap of a median
(its interval is coarse and random); the signed-rank interval is exact for any symmetric distribution of the round
ratios, needs no normality, and gives the same verdict for the same timings. A process keeps one memory layout and
with it a bias of its own: fresh processes make that bias part of the round-to-round spread the interval sees.

Verdicts (`verdict_of`; docs/regression-gate.md): faster than the floor with the interval below zero, improved; an
estimate within the floor whose interval stays below twice the floor, pass; slower than the floor with the interval
above zero, a regression; on a busy machine (fewer than half the rounds quiet) the interval must clear the floor
itself either way (a faster estimate that does not is a pass, not an improvement); anything else inconclusive.
Two checks read what the medians cannot: over the quiet rounds, a current side that waits (wall time, `_waiting`) and
a slowdown confined to some of the calls (the mean CPU time per call, its whole interval above the floor,
`_some_calls`) are regressions too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.check import Row, Tolerances
from bench.errors import UsageError, answer_deferred_stop, outside_imports, raise_terminated
from bench.load import MachineLoad, is_contended
from bench.protocols import AB_CALLS, AB_ROUNDS, AB_WARMUP, AB_WORKLOADS
from bench.record import git_environment
from bench.stats import Shift, hodges_lehmann
from bench.store import write_text_atomic

METRIC = "A/B CPU time per call, ms (reference → current)"
WORKER = Path(__file__).with_name("ab_worker.py")


@dataclass(frozen=True)
class Side:
    """One side of the A/B: the tree whose code runs and the interpreter that runs it."""

    name: str  # "reference" or "current"
    tree: Path
    python: str
    commit: str  # the commit, "+ uncommitted changes" where the working tree differs from it


@dataclass(frozen=True)
class Process:
    """One fresh worker process: per workload, its median CPU time per call and whether the machine was busy."""

    side: str
    median_s: dict[str, float]
    contended: dict[str, bool]
    what: dict[str, dict[str, Any]]
    versions: dict[str, str | None]
    wall_median_s: dict[str, float] | None = None  # median wall time per call (a quiet machine's check on waiting)
    others_busy: dict[str, bool] | None = None  # other processes or the hypervisor took CPU (our own waiting aside)
    # every timed call's CPU and wall seconds and the cores others kept busy, for a reader of --ab-record: the verdict
    # reads medians, which a slowdown confined to a minority of calls does not move (docs/regression-gate.md)
    calls_cpu_s: dict[str, list[float]] | None = None
    calls_wall_s: dict[str, list[float]] | None = None
    other_cores: dict[str, float | None] | None = None


@dataclass(frozen=True)
class Paired:
    """One workload's rounds and verdict; `change` and its interval are relative (current/reference − 1)."""

    workload: str
    ratios: tuple[float, ...]  # per round, current/reference median CPU time
    contended: tuple[bool, ...]
    reference_s: float
    current_s: float
    shift: Shift | None  # of the log ratios
    verdict: str
    why: str

    @property
    def change(self) -> tuple[float, float, float] | None:
        if self.shift is None:
            return None
        return tuple(math.expm1(v) for v in (self.shift.estimate, self.shift.low, self.shift.high))


@dataclass(frozen=True)
class ABResult:
    reference: Side
    current: Side
    rounds: int
    calls: int
    processes: tuple[Process, ...]
    workloads: tuple[Paired, ...]
    seconds: float


def run(against: str | None, against_python: str | None, *, tol: Tolerances, rounds: int = AB_ROUNDS,
        calls: int = AB_CALLS, workloads: dict[str, str] = AB_WORKLOADS, repo: Path | None = None,
        progress: Callable[[str], None] = lambda line: None) -> ABResult:
    """Measure the reference (commit `against` and/or interpreter `against_python`) against the working tree of
    `repo` (default: the checkout this bench runs from) with this interpreter, `rounds` paired rounds, and judge each
    workload."""
    start = time.perf_counter()
    repo = repo or repository()
    current = Side("current", repo, sys.executable, describe_tree(repo))
    python = check_python(against_python) if against_python else sys.executable
    with _terminate_as_interrupt(), reference_tree(repo, against) as (tree, commit):
        if against is not None:
            _check_workloads(tree, workloads, f"--against {against}: commit {commit}")
        reference = Side("reference", tree, python, commit)
        processes = measure(reference, current, rounds=rounds, calls=calls, workloads=workloads, progress=progress)
    paired = tuple(judge(name, spec, processes, tol) for name, spec in workloads.items())
    return ABResult(reference, current, rounds, calls, tuple(processes), paired, time.perf_counter() - start)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (timeout, docker stop, a CI runner's cancel) unwinds like Ctrl-C, so the reference tree's temporary
    folder is removed, and the command exits 143 (it said 130, a hostile pass); restored afterwards."""
    try:
        before = signal.signal(signal.SIGTERM, outside_imports(raise_terminated))
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        try:
            answer_deferred_stop()  # however the block is left: never left waiting for an unrelated moment
        finally:
            signal.signal(signal.SIGTERM, before)


# ---- the two sides ----

def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=git_environment())
    if done.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def repository() -> Path:
    """The git checkout this `bench` is imported from: the working tree under test."""
    here = Path(__file__).resolve().parent
    try:
        return Path(_git(here, "rev-parse", "--show-toplevel"))
    except (UsageError, FileNotFoundError) as e:
        raise UsageError(f"--against needs bench to run from a git checkout (it runs from {here}): {e}") from None


def describe_tree(repo: Path) -> str:
    """The commit, and whether the tree that runs differs from it: tracked changes, or new Python files in the
    packages, which the working tree may import (one was measured under the commit's name alone, a hostile pass).
    Files git ignores (caches, build outputs) do not count."""
    head = _git(repo, "rev-parse", "--short=12", "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    new = [name for name in _git(repo, "ls-files", "-z", "--others", "--exclude-standard", "--", "bench/*.py",
                                 "reproduce/*.py").split("\0") if name]
    untracked = f"untracked {', '.join(new[:2])}{' …' if len(new) > 2 else ''}" if new else ""
    changes = " and ".join(part for part in ("uncommitted changes" if dirty else "", untracked) if part)
    return f"{head} + {changes}" if changes else head


@contextmanager
def reference_tree(repo: Path, against: str | None) -> Iterator[tuple[Path, str]]:
    """The reference commit's files in a temporary folder (`git archive`: nothing in the checkout is touched, and an
    interrupted run leaves only a temporary folder, removed on the way out); the working tree when `against` is
    None (a dependency A/B)."""
    if against is None:
        yield repo, describe_tree(repo)
        return
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{against}^{{commit}}")
    except UsageError:
        raise UsageError(f"--against {against!r} is not a commit in {repo} (a shallow clone lacks old commits: "
                         "fetch it, or give a commit this clone has)") from None
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as folder:
        archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit], capture_output=True,
                                 env=git_environment())
        if archive.returncode != 0:
            raise UsageError(f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        for package in ("bench", "reproduce"):
            if not (Path(folder) / package / "__init__.py").exists():
                raise UsageError(f"--against {against}: commit {commit[:12]} has no {package}/ package to measure")
        yield Path(folder), commit[:12]


def _check_workloads(tree: Path, workloads: dict[str, str], what: str) -> None:
    """UsageError unless every workload's function is defined in `tree`'s code: a commit from before the gate
    started a worker first and failed in two lines naming a temporary folder already removed (a hostile pass)."""
    for spec in workloads.values():
        module, _, function = spec.partition(":")
        source = tree / (module.replace(".", "/") + ".py")
        if not source.is_file() or f"def {function}(" not in source.read_text(encoding="utf-8", errors="replace"):
            raise UsageError(f"{what} does not define {spec}, which this tree's gate times (bench/protocols.py: "
                             "AB_WORKLOADS): it predates the gate's workloads, or this tree renamed one; give a "
                             "reference that defines them")


def check_python(python: str) -> str:
    """An interpreter that has torch and timm installed (found, not imported: that takes seconds; a broken install
    fails in the first worker, with its message), or a usage error saying which part is missing."""
    probe = ("import importlib.util as u; missing = [m for m in ('torch', 'timm') if u.find_spec(m) is None]; "
             "print(' and '.join(missing))")
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"--against-python {python}: cannot run it ({e})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"it exited {done.returncode} without a message"])[-1]
        raise UsageError(f"--against-python {python}: cannot run it as a Python interpreter ({last})")
    if done.stdout.strip():
        raise UsageError(f"--against-python {python} has no {done.stdout.strip()} installed; give the interpreter of "
                         "an environment with the project's dependencies (e.g. OTHER/.venv/bin/python)")
    return python


# ---- measuring ----

def measure(reference: Side, current: Side, *, rounds: int, calls: int, workloads: dict[str, str],
            progress: Callable[[str], None]) -> list[Process]:
    """`rounds` pairs of fresh processes, the order alternating (A B, B A, …) so that a drift of the machine over the
    run weighs on both sides alike."""
    processes = []
    for i in range(rounds):
        pair = (reference, current) if i % 2 == 0 else (current, reference)
        for side in pair:
            processes.append(run_worker(side, list(workloads.values()), calls))
        ours = {p.side: p for p in processes[-2:]}
        _same_workloads(ours["reference"], ours["current"], workloads)
        changes = ", ".join(f"{name} {100 * (ours['current'].median_s[spec] / ours['reference'].median_s[spec] - 1):+.1f} %"
                            for name, spec in workloads.items())
        busy = " (busy)" if any(c for p in ours.values() for c in p.contended.values()) else ""
        progress(f"round {i + 1}/{rounds}: {changes}{busy}")
    return processes


def _same_workloads(reference: Process, current: Process, workloads: dict[str, str]) -> None:
    """Both sides must time the same thing (checked after the first round, before minutes are spent)."""
    for name, spec in workloads.items():
        if reference.what[spec] != current.what[spec]:
            raise UsageError(f"{name}: the two sides measure different workloads (reference {reference.what[spec]}, "
                             f"current {current.what[spec]}); choose a reference commit whose gate workload is the same")


def run_worker(side: Side, specs: list[str], calls: int) -> Process:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)  # the worker puts the side's tree first; nothing else may shadow it
    command = [side.python, str(WORKER), str(side.tree), str(calls), str(AB_WARMUP), *specs]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=side.tree)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise UsageError(f"the {side.name} side ({side.commit}, {side.python}) failed to measure:\n{tail}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    results = data["results"]
    return Process(side.name, {s: statistics.median(r["cpu_s"]) for s, r in results.items()},
                   {s: _busy(r["load"]) for s, r in results.items()}, {s: r["what"] for s, r in results.items()},
                   data["versions"], {s: statistics.median(r["wall_s"]) for s, r in results.items()},
                   {s: _others_busy(r["load"]) for s, r in results.items()},
                   {s: list(r["cpu_s"]) for s, r in results.items()}, {s: list(r["wall_s"]) for s, r in results.items()},
                   {s: _other_cores(r["load"]) for s, r in results.items()})


def _span(load: list[dict[str, Any]]) -> tuple[MachineLoad, MachineLoad]:
    """The counters a worker read before and after its timed calls."""
    start, end = (MachineLoad.parse(c["wall_s"], c["own_cpu_s"], c["stat"]) for c in load)
    return start, end


def _busy(load: list[dict[str, Any]]) -> bool:
    """bench/load.py's rule; where /proc/stat could not be read, our own share of a core alone (CPU time, which the
    verdict reads, is the least disturbed by others)."""
    start, end = _span(load)
    others, steal, share = end.since(start)
    return is_contended(others or 0.0, steal or 0.0, share, cuda=False)


def _other_cores(load: list[dict[str, Any]]) -> float | None:
    """The cores others kept busy, or None where /proc/stat could not be read (`_others_busy` counts that as busy)."""
    start, end = _span(load)
    return None if start.busy_s is None or end.busy_s is None else round(end.since(start)[0], 3)


def _others_busy(load: list[dict[str, Any]]) -> bool:
    """Busy by others' doing: `_busy` less its own share of a core, which also falls when our code waits. Where
    /proc/stat could not be read, others' load is unknown, and counts as busy (the wall-time check then stays out)."""
    others = _other_cores(load)
    if others is None:
        return True
    start, end = _span(load)
    return is_contended(others, end.since(start)[1], 1.0, cuda=False)


# ---- judging ----

# The machine counts as busy unless this many rounds, and at least half, were quiet: the fewest whose ratios alone give
# a 95 % signed-rank interval. With "half" alone, an A/A run in CI with 3 of 6 rounds quiet read as a regression
# (ratios 1.03 to 1.19, interval above zero; the order alternates, so this was the VM's noise).
QUIET_FOR_A_VERDICT = 6


def judge(name: str, spec: str, processes: list[Process], tol: Tolerances) -> Paired:
    by_side = {s: [p for p in processes if p.side == s] for s in ("reference", "current")}
    pairs = list(zip(by_side["reference"], by_side["current"]))
    ratios = tuple(cur.median_s[spec] / ref.median_s[spec] for ref, cur in pairs)
    contended = tuple(ref.contended[spec] or cur.contended[spec] for ref, cur in pairs)
    busy = sum(not c for c in contended) < max(QUIET_FOR_A_VERDICT, tol.min_clean_share * len(pairs))
    shift = hodges_lehmann([math.log(r) for r in ratios])
    verdict, why = verdict_of(shift, busy, tol.speed_floor)
    if verdict in ("pass", "improved"):
        verdict, why = _waiting(pairs, spec, tol) or (verdict, why)
    if verdict != "regression":  # inconclusive too: a median too noisy to pass does not hide what the means show
        verdict, why = _some_calls(pairs, spec, tol) or (verdict, why)
    return Paired(name, ratios, contended, statistics.median([r.median_s[spec] for r in by_side["reference"]]),
                  statistics.median([c.median_s[spec] for c in by_side["current"]]), shift, verdict,
                  f"{len(pairs)} rounds, {sum(not c for c in contended)} quiet; {why}")


def _waiting(pairs: list[tuple[Process, Process]], spec: str, tol: Tolerances) -> tuple[str, str] | None:
    """A regression in wall time that CPU time cannot see (the current side sleeps, waits on I/O or a lock), judged
    as CPU time is, on the rounds no other process or the hypervisor disturbed: there a compute workload's wall time
    is its CPU time, and a gap between them is waiting. (Our own share of a core, which counts towards "busy" for CPU
    time, falls when we wait, so it is left out here.) A `time.sleep` of 40 ms per call, +36 % wall time, passed the
    gate (a hostile pass)."""
    if any(p.wall_median_s is None or p.others_busy is None for pair in pairs for p in pair):
        return None
    change = _quiet_change([(ref.wall_median_s[spec], cur.wall_median_s[spec]) for ref, cur in pairs
                            if not (ref.others_busy[spec] or cur.others_busy[spec])], len(pairs), tol)
    if change is not None and change[0] > tol.speed_floor and change[1] > 0:
        return "regression", (f"CPU time within the floor {100 * tol.speed_floor:.0f} %, but wall time "
                              f"{_shown(change)} rounds no other process disturbed: the current side waits (a sleep, "
                              "I/O, a lock)")
    return None


def _some_calls(pairs: list[tuple[Process, Process]], spec: str, tol: Tolerances) -> tuple[str, str] | None:
    """A regression confined to some of the calls, which the medians cannot see, judged on the mean CPU time per
    call over the quiet rounds: a workload made to run twice on every fourth call (+25 % mean time per call) passed
    (a hostile pass, 2026-12-06). A mean also takes in the machine's stray slow calls, which the medians keep out, so
    here the whole interval must clear the floor, not only zero."""
    if any(p.calls_cpu_s is None for pair in pairs for p in pair):
        return None
    change = _quiet_change([(statistics.fmean(ref.calls_cpu_s[spec]), statistics.fmean(cur.calls_cpu_s[spec]))
                            for ref, cur in pairs if not (ref.contended[spec] or cur.contended[spec])], len(pairs), tol)
    if change is not None and change[0] > tol.speed_floor and change[1] > tol.speed_floor:
        return "regression", (f"median CPU time not a regression, but mean CPU time per call {_shown(change)} quiet "
                              "rounds, the interval above the floor: some calls are slower (--ab-record keeps each)")
    return None


def _quiet_change(quiet: list[tuple[float, float]], rounds: int, tol: Tolerances
                  ) -> tuple[float, float, float, int] | None:
    """(estimate, low, high, rounds) of current/reference − 1 over the quiet rounds' (reference, current) figures, or
    None where too few rounds were quiet for a verdict (as `judge` counts them)."""
    if len(quiet) < max(QUIET_FOR_A_VERDICT, tol.min_clean_share * rounds):
        return None
    shift = hodges_lehmann([math.log(cur / ref) for ref, cur in quiet])
    if shift is None:
        return None
    return (*(math.expm1(v) for v in (shift.estimate, shift.low, shift.high)), len(quiet))


def _shown(change: tuple[float, float, float, int]) -> str:
    estimate, low, high, rounds = change
    return f"{100 * estimate:+.1f} % [{100 * low:+.1f}, {100 * high:+.1f}] over {rounds}"


def verdict_of(shift: Shift | None, busy: bool, floor: float) -> tuple[str, str]:
    """(verdict, why) from the shift of the log ratios (slower is +)."""
    if shift is None:
        return "inconclusive", "too few rounds for a 95 % interval (at least 6)"
    estimate, low, high = (math.expm1(v) for v in (shift.estimate, shift.low, shift.high))
    rule = f"floor {100 * floor:.0f} %"
    needed = floor if busy else 0.0  # a busy machine's rounds swing: a change either way must clear the floor itself
    if estimate < -floor and high < -needed:
        return "improved", f"faster beyond the {rule}" + (", interval below it (busy machine)" if busy else "")
    if estimate < -floor and high < 0:  # an A/A run on a busy machine once read as > 6 % faster this way
        return "pass", f"faster than the {rule}, but on a busy machine the interval reaches the floor: not claimed"
    if estimate <= floor and high <= 2 * floor:
        return "pass", f"within the {rule}; the interval rules out twice the floor"
    if estimate <= floor:
        return "inconclusive", f"within the {rule}, but the interval reaches twice the floor (too noisy to pass)"
    if low > needed:
        return "regression", (f"slower than the {rule}, interval above {'the floor (busy machine)' if busy else 'zero'}")
    return "inconclusive", (f"slower than the {rule} but the interval reaches "
                            f"{'the floor on a busy machine' if busy else 'zero'}")


def rows(result: ABResult) -> list[Row]:
    out = []
    for p in result.workloads:
        change = p.change
        shown = "" if change is None else f"{100 * change[0]:+.1f} % [{100 * change[1]:+.1f}, {100 * change[2]:+.1f}]"
        out.append(Row(p.workload, METRIC, round(1e3 * p.reference_s, 2), round(1e3 * p.current_s, 2), shown,
                       p.verdict, p.why))
    return out


def describe(result: ABResult) -> str:
    """Who was measured against whom, with which software, in how long."""
    def side(s: Side) -> str:
        versions = next(p.versions for p in result.processes if p.side == s.name)
        return (f"{s.name} {s.commit} (python {versions['python']}, torch {versions['torch']}, timm {versions['timm']}"
                f"{'' if s.python == sys.executable else ', ' + s.python})")

    return (f"A/B: {side(result.reference)} vs {side(result.current)}; {result.rounds} rounds of {result.calls} calls, "
            f"{result.seconds:.0f} s")


def write(result: ABResult, path: Path) -> None:
    """Every process's timings, the verdicts and this machine's fingerprint, as one JSON file (atomic)."""
    from bench.machine import detect

    data = dataclasses.asdict(result) | {"machine": detect("cpu", threads=1).to_dict(),
                                         "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_text_atomic(path, json.dumps(data, indent=1, default=str) + "\n")
