"""`bench campaign`: the whole GPU measurement as one command that fits one lent call.

A plan of steps in priority order, each a command of this project (or timm's own `benchmark.py`) run as a child
process with its own log: a crash or a timeout of one step is recorded and the next one runs. The plan runs within
`--budget-s`; a step whose estimate no longer fits is deferred, and the last step (the resumable Table-3 suite) gets
what is left and is stopped by SIGTERM, which checkpoints it. After every step the state (`campaign.json`) is
written atomically; at the end records, logs and state are packed into one archive, `campaign.tar.gz` in `--out`
(a device call brings back at most 8 files). `--continue ARCHIVE` unpacks an earlier call's archive first and runs
only the steps not yet done. `--dry-run` runs the same plan with the debug models on the CPU in about a minute, so
that the GPU call can fail on nothing but the GPU.

What it owns: each call works in a folder of its own, made fresh under `--out` (`campaign-work-*`), and
removes only that one; an existing archive is replaced only by the campaign it holds (`--continue` it) or with
`--force`; an archive to continue is read to its end and checked (members, `campaign.json` field by field) before
anything is unpacked, and it is unpacked aside and moved into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError, not_a_file
from bench.jsontypes import type_problem
from bench.store import missing_folders, remove_if_empty, write_atomic, write_text_atomic

DEIT = ("deit_ti", "deit_s", "deit_b", "deit_b_384", "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384")
STATE = "campaign.json"
MIN_RESUMABLE_S = 30  # a resumable step starts only with this much left (a shorter start would only checkpoint)
OVERRUN = 3  # a step that is not resumable is stopped at this many times its estimate: one bad guess eats no call
# The paper's protocol searches the largest batch that fits; on an 80 GB card that is thousands of images and
# minutes a variant in strict fp32, where throughput stopped growing long before (a GPU review, 2026-12-05)
PAPER_BATCH_CAP = 256
ARCHIVE = "campaign.tar.gz"
PARTS = ("records", "logs", "timm", STATE)  # what an archive holds, and all that --continue unpacks
MAX_UNPACKED_BYTES = 4 << 30  # an archive a device call returns is megabytes; more is not one of ours
WORK_PREFIX = "campaign-work-"


class Stopped(Exception):
    """The campaign stopped early: Ctrl-C (exit code 130) or a disk that refused a write (1). The message says what
    was kept and where."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Step:
    """One measurement: a command (argv after the interpreter), what it gives, and a wall-time estimate."""

    name: str
    argv: tuple[str, ...]
    estimate_s: float
    what: str
    resumable: bool = False  # stopped by SIGTERM when the budget ends; the next call continues it
    unavailable: str = ""  # why this step cannot run in this call (e.g. no timm benchmark.py given)


STATUSES = ("done", "failed", "deferred", "stopped", "unavailable")


@dataclass
class Outcome:
    status: str  # one of STATUSES
    wall_s: float = 0.0
    rc: int | None = None
    note: str = ""


@dataclass
class State:
    device: str
    dry_run: bool
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        data = {"device": self.device, "dry_run": self.dry_run,
                "outcomes": {k: asdict(v) for k, v in self.outcomes.items()}}
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> State:
        """Raises ValueError naming the field that is missing, unknown or of the wrong type."""
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{STATE} is not readable JSON ({type(exc).__name__}: {exc})") from None
        _expect(data, {"device": str, "dry_run": bool, "outcomes": dict}, STATE)
        outcomes = {}
        for name, value in data["outcomes"].items():
            where = f"{STATE}: outcomes.{name}"
            _expect(value, {"status": str, "wall_s": float, "rc": int | None, "note": str}, where)
            if value["status"] not in STATUSES:
                raise ValueError(f"{where}.status: {value['status']!r} is none of {', '.join(STATUSES)}")
            if value["wall_s"] < 0:
                raise ValueError(f"{where}.wall_s: {value['wall_s']!r} is negative")
            outcomes[name] = Outcome(**value)
        return cls(data["device"], data["dry_run"], outcomes)


def _expect(data: Any, types: dict[str, Any], where: str) -> None:
    """Raise ValueError unless `data` is an object of exactly these keys with values of these types."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} is a JSON {type(data).__name__}, not an object with {', '.join(types)}")
    missing, unknown = [k for k in types if k not in data], sorted(set(data) - set(types))
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else "")
            if part))
    for key, kind in types.items():
        problem = type_problem(data[key], kind)
        if problem:
            raise ValueError(f"{where}.{key}: {problem}")


def check_timm_benchmark(path: Path) -> None:
    """UsageError unless `path` reads as timm's benchmark.py: Python that parses and defines its runner. A file
    that was not (a hostile pass gave one holding "hi") failed only when its step came, minutes into lent GPU time."""
    if not path.is_file():
        raise UsageError(f"--timm-benchmark {path}: {not_a_file(path)} (timm's benchmark.py from a timm checkout)")
    try:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise UsageError(f"--timm-benchmark {path}: not a readable Python file ({exc}); "
                         "give timm's benchmark.py") from None
    if "InferenceBenchmarkRunner" not in source or "def benchmark(" not in source:
        raise UsageError(f"--timm-benchmark {path}: not timm's benchmark.py (no InferenceBenchmarkRunner, no "
                         "benchmark()); give the one at the root of a timm checkout")


def plan(work: Path, *, device: str, dry_run: bool, timm_benchmark: Path | None) -> list[Step]:
    """The steps in priority order: (1) DeiT-Ti/B/S at their best setting with NVML telemetry, each beside timm's
    own benchmark.py (issue #34), (2) the paper's protocol for the eight DeiT variants, (3) the training step against
    an official-style loop, (4) the cifar10-scale Table 3 as far as the budget reaches. Dry run: the debug models."""
    records = str(work / "records")
    bench = ("-m", "bench", "run", "--device", device, "--results-dir", records)

    def what(step: int, gpu: str) -> str:  # a dry run says so: its models, sizes and precisions are not the GPU's
        return f"dry run of step {step} (debug models on the CPU)" if dry_run else gpu

    if dry_run:  # the same commands at a size that runs in seconds on a CPU
        best = {"debug": ("test_vit",)}
        best_args, best_s = ("--metrics", "size,speed", "--best", "10", "--batch-size", "8", "--iters", "3",
                             "--warmup", "3"), 40  # estimates: a busy 2-core CI machine, OVERRUN's margin
        paper = {v: (*bench, "--variant", v, "--metrics", "size,speed", "--batch-size", "4", "--iters", "3",
                     "--warmup", "1") for v in ("debug", "debug_dist")}
        timm_args, timm_s = ("--bench", "inference", "-b", "2"), 20
    else:
        best = {"deit_ti": ("deit_tiny_patch16_224",), "deit_b": ("deit_base_patch16_224",),
                "deit_s": ("deit_small_patch16_224",)}
        best_args, best_s = ("--best", "100", "--max-batch-cap", "2048"), 240  # 100 s of trials, then compiles
        paper = {v: (*bench, "--variant", v, "--protocol", "paper", "--max-batch-cap", str(PAPER_BATCH_CAP))
                 for v in DEIT}
        timm_args, timm_s = ("--bench", "inference", "--amp", "--amp-dtype", "bfloat16", "--torchcompile", "-b",
                             "1024"), 120
    steps = []
    for variant, models in best.items():
        steps.append(Step(f"best_{variant}", (*bench, "--variant", variant, *best_args), best_s, what(
            1, "the --best search (tf32/bf16/fp16, eager/compile/CUDA graphs/max-autotune, batch up to 2048) checked "
               "against fp32 eager; NVML clocks, power, energy per image, MFU")))
        steps += [_timm_step(model, timm_benchmark, timm_args, work, device, timm_s, what(
            1, "timm's own benchmark.py, its best setting, same card and call")) for model in models]
    steps += [Step(f"paper_protocol_{v}", argv, 20 if dry_run else 60, what(
        2, f"Table 5/10 beside the V100: fp32, the largest batch that fits up to {PAPER_BATCH_CAP}, mean of 30"))
              for v, argv in paper.items()]
    step_args = (("--experiment", "debug_hard", "--batch-size", "16", "--steps", "3", "--warmup", "1") if dry_run else
                 ("--experiment", "deit_s_hard", "--set", "compile=true", "--batch-size", "128", "--steps", "30",
                  "--warmup", "10"))
    steps.append(Step("training_step_vs_official_loop",
                      ("-m", "reproduce", "step-speed", *step_args, "--device", device,
                       "--results-dir", str(work / "records" / "step-speed")), 40 if dry_run else 120, what(
                          3, "one training step of DeiT-S with hard distillation from RegNetY-16GF: ours against an "
                             "official-style fp16 eager loop, img/s side by side")))
    scale = "debug" if dry_run else "cifar10"
    steps.append(Step(f"table3_{scale}", ("-m", "reproduce", "suite", "table3", "--scale", scale, "--root",
                                          str(work / "runs"), "--results-dir", str(work / "records" / f"table3-{scale}")),
                      30 if dry_run else 300, f"Table 3 at {scale} scale: teacher and four trainings of seed 0",
                      resumable=True))
    return steps


def _timm_step(model: str, timm_benchmark: Path | None, args: tuple[str, ...], work: Path, device: str,
               estimate_s: float, what: str) -> Step:
    argv = (str(timm_benchmark), "--model", model, *args, "--device", device,
            "--results-file", str(work / "timm" / f"{model}.csv")) if timm_benchmark else ()
    return Step(f"timm_benchmark_{model}", argv, estimate_s, what, unavailable="" if timm_benchmark else
                "no --timm-benchmark PATH (timm's benchmark.py is not in its pip package: pass the file from a timm "
                "checkout)")


@dataclass(frozen=True)
class Call:
    """What one `bench campaign` call is asked to do (its flags)."""

    out: Path  # the archive goes here, the working folder under it
    device: str
    budget_s: float
    dry_run: bool
    timm_benchmark: Path | None = None  # timm's benchmark.py, for the side-by-side check
    previous: Path | None = None  # an earlier call's archive: what it did is not run again
    force: bool = False  # replace an archive of another campaign in `out`
    keep_work: bool = False  # keep the working folder after packing


def run(call: Call, log) -> State:
    """Run what is not done of the plan within the budget; pack everything into `call.out/campaign.tar.gz`.

    Raises:
        UsageError: a missing file, an archive in `out` that this call may not replace, an unsound `previous`.
        Stopped: Ctrl-C or a write that failed (a full disk); the working folder is kept, and on Ctrl-C what ran is
            packed (the message names both).
    """
    out, device, budget_s, dry_run = call.out, call.device, call.budget_s, call.dry_run
    timm_benchmark, previous = call.timm_benchmark, call.previous
    if timm_benchmark is not None:
        check_timm_benchmark(timm_benchmark)
    if previous is not None and not previous.is_file():
        raise UsageError(f"--continue {previous}: no such archive" if not previous.exists() else
                         f"--continue {previous}: not a file; give an earlier call's {ARCHIVE}")
    archive = out / ARCHIVE
    replace = _may_replace(archive, previous, call.force)
    made = missing_folders(out)
    out.mkdir(parents=True, exist_ok=True)
    # Our own folder, never a fixed name: `--out .` once lost a user's own `work/` to the clean-up.
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out))
    try:
        state = _unpack(previous, work) if previous is not None else State(device, dry_run)
        if (state.device, state.dry_run) != (device, dry_run):
            raise UsageError(f"--continue {previous}: that campaign ran with device={state.device}, "
                             f"dry_run={state.dry_run}")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # made by this call and holding nothing new
        remove_if_empty(made)  # and the --out folders this call made: a bad archive left one (a hostile pass)
        raise
    for folder in ("logs", "timm"):  # timm's benchmark.py does not make its results file's folder
        (work / folder).mkdir(parents=True, exist_ok=True)
    steps = plan(work, device=device, dry_run=dry_run, timm_benchmark=timm_benchmark)
    state.outcomes = {s.name: state.outcomes[s.name] for s in steps if s.name in state.outcomes}  # this plan's only
    try:
        interrupted = _run_plan(steps, state, work, budget_s, log)
        state.outcomes = {s.name: state.outcomes[s.name] for s in steps if s.name in state.outcomes}  # plan order
        state.save(work / STATE)
        _pack(work, archive, replace=replace)
    except KeyboardInterrupt:
        raise Stopped(f"interrupted while packing; everything so far is kept in {work} (not packed)", 130) from None
    except OSError as exc:  # a full or read-only disk: say so, and where what ran is (exit 2 like StorageError's)
        raise Stopped(f"cannot write {exc.filename or archive}: {exc.strerror or exc}; what ran so far is kept in "
                      f"{work}", 2 if isinstance(exc, UsageError) else 1) from None
    if interrupted:  # what ran is in the archive, so --continue picks up from here
        raise Stopped(f"interrupted; what ran is packed into {archive} and kept in {work}; the same command with "
                      f"--continue {archive} runs the rest", 130)
    if call.keep_work:
        log(f"working folder kept: {work}")
    else:
        shutil.rmtree(work)  # the archive holds everything (a device call returns at most 8 files)
    return state


def _run_plan(steps: list[Step], state: State, work: Path, budget_s: float, log) -> bool:
    """Run the steps not yet done, saving the state after each; True when Ctrl-C stopped it (the step it stopped
    is `stopped`: --continue runs it again)."""
    start, running = time.monotonic(), None
    try:
        for i, step in enumerate(steps, 1):
            done = state.outcomes.get(step.name)
            if done and done.status == "done":
                log(f"[{i}/{len(steps)}] {step.name}: done in an earlier call")
                continue
            left = budget_s - (time.monotonic() - start)
            if step.unavailable:
                state.outcomes[step.name] = Outcome("unavailable", note=step.unavailable)
            elif step.estimate_s > left and not (step.resumable and left > MIN_RESUMABLE_S):
                state.outcomes[step.name] = Outcome("deferred", note=f"needs ~{step.estimate_s:.0f} s, {left:.0f} s left")
            else:
                log(f"[{i}/{len(steps)}] {step.name}: {step.what} (~{step.estimate_s:.0f} s, {left:.0f} s left)")
                running, began = step, time.monotonic()
                limit = left if step.resumable else min(left, OVERRUN * step.estimate_s)
                state.outcomes[step.name] = _run_step(step, work / "logs" / f"{step.name}.log", limit)
                running = None
            outcome = state.outcomes[step.name]
            log(f"[{i}/{len(steps)}] {step.name}: {outcome.status}" + (f" in {outcome.wall_s:.0f} s" if outcome.wall_s
                else "") + (f" ({outcome.note})" if outcome.note else ""))
            state.save(work / STATE)
    except KeyboardInterrupt:
        if running is not None:
            # the time it ran before the stop (it said 0.0 s, a hostile pass)
            state.outcomes[running.name] = Outcome("stopped", time.monotonic() - began,
                                                   note="interrupted (Ctrl-C or SIGTERM); --continue runs it again")
        return True
    return False


def _may_replace(archive: Path, previous: Path | None, force: bool) -> bool:
    """Whether packing may replace `archive`: only the archive being continued (its content is carried into the new
    one) or with --force; anything else is refused before any step runs (a silent replacement loses a campaign)."""
    if not (archive.exists() or archive.is_symlink()):
        return False
    if not archive.is_file():
        raise UsageError(f"{archive} exists and is not a file; give another --out")
    if force or (previous is not None and os.path.samefile(archive, previous)):
        return True
    raise UsageError(f"{archive} already holds a campaign's records; continue that campaign with --continue {archive}, "
                     "replace its archive with --force, or give another --out")


def _unpack(archive: Path, work: Path) -> State:
    """An earlier call's state and files, into `work`: read to the end and checked first, unpacked aside, and moved
    into place only when complete (a truncated archive once left half a folder the next run resumed)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()  # reads the whole stream: a truncated or corrupt archive fails here
            _check_members(members, archive)
            aside = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=work))
            tar.extractall(aside, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise UsageError(f"--continue {archive}: not a readable campaign archive ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise UsageError(f"--continue {archive}: cannot unpack it into {work}: {exc.strerror or exc}") from None
    try:
        state = State.load(aside / STATE)
    except ValueError as exc:
        raise UsageError(f"--continue {archive}: {exc}") from None
    for part in PARTS:
        if (aside / part).exists():
            os.rename(aside / part, work / part)
    aside.rmdir()
    return state


def _check_members(members: list[tarfile.TarInfo], archive: Path) -> None:
    """Only what `_pack` writes: regular files and folders under PARTS, a campaign.json file, a sane total size."""
    def refuse(why: str) -> None:
        raise UsageError(f"--continue {archive}: {why}; not an archive `bench campaign` wrote")

    if not any(m.name == STATE and m.isfile() for m in members):
        refuse(f"no {STATE} file in it")
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not parts or parts[0] not in PARTS:
            refuse(f"member {m.name!r} is outside {', '.join(PARTS)}")
        if not (m.isfile() or m.isdir()):
            refuse(f"member {m.name!r} is a link or special file")
    if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
        refuse(f"it unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB")


def _run_step(step: Step, log_path: Path, left_s: float) -> Outcome:
    """The step as a child process; past `left_s`, SIGTERM (a training run checkpoints), then SIGKILL."""
    start = time.monotonic()
    with log_path.open("w") as log_file:
        child = subprocess.Popen([sys.executable, *step.argv], stdout=log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            rc = child.wait(timeout=max(left_s, 1))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                rc = child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                rc = child.wait()
            why = ("the budget ran out; --continue resumes it" if step.resumable else
                   f"stopped after {left_s:.0f} s (its estimate was {step.estimate_s:.0f} s); --continue runs it again")
            return Outcome("stopped", time.monotonic() - start, rc, why)
        except KeyboardInterrupt:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if rc else []
    return Outcome("done" if rc == 0 else "failed", time.monotonic() - start, rc, tail[0][:300] if tail else "")


def _pack(work: Path, archive: Path, *, replace: bool) -> None:
    """Records, logs, timm's CSVs and the state in one archive (no checkpoints: they exceed what a call returns)."""
    def pack(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for part in PARTS:
                if (work / part).exists():
                    tar.add(work / part, arcname=part)
    write_atomic(archive, pack, replace=replace)


def summary(state: State) -> str:
    width = max(map(len, state.outcomes), default=10)
    return "\n".join(f"{name:{width}s}  {o.status:11s} {o.wall_s:7.0f} s  {o.note}" for name, o in state.outcomes.items())
