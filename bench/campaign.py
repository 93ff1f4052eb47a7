"""`bench campaign`: the whole GPU measurement as one command that fits one lent call (issue #21).

A plan of steps in priority order, each a command of this project (or timm's own `benchmark.py`) run as a child
process with its own log: a crash or a timeout of one step is recorded and the next one runs. The plan runs within
`--budget-s`; a step whose estimate no longer fits is deferred, and the last step (the resumable Table-3 suite) gets
what is left and is stopped by SIGTERM, which checkpoints it. After every step the state (`campaign.json`) is
written atomically; at the end records, logs and state are packed into one archive, `campaign.tar.gz` in `--out`
(a device call brings back at most 8 files). `--continue ARCHIVE` unpacks an earlier call's archive first and runs
only the steps not yet done. `--dry-run` runs the same plan with the debug models on the CPU in about a minute, so
that the GPU call can fail on nothing but the GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.errors import UsageError
from bench.store import write_atomic, write_text_atomic

DEIT = ("deit_ti", "deit_s", "deit_b", "deit_b_384", "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384")
STATE = "campaign.json"
MIN_RESUMABLE_S = 30  # a resumable step starts only with this much left (a shorter start would only checkpoint)
ARCHIVE = "campaign.tar.gz"


@dataclass(frozen=True)
class Step:
    """One measurement: a command (argv after the interpreter), what it gives, and a wall-time estimate."""

    name: str
    argv: tuple[str, ...]
    estimate_s: float
    what: str
    resumable: bool = False  # stopped by SIGTERM when the budget ends; the next call continues it
    unavailable: str = ""  # why this step cannot run in this call (e.g. no timm benchmark.py given)


@dataclass
class Outcome:
    status: str  # done | failed | deferred | stopped | unavailable
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
        data = json.loads(path.read_text())
        return cls(data["device"], data["dry_run"], {k: Outcome(**v) for k, v in data["outcomes"].items()})


def plan(work: Path, *, device: str, dry_run: bool, timm_benchmark: Path | None) -> list[Step]:
    """The steps in priority order: (1) the paper's protocol for the eight DeiT variants, (2) DeiT-Ti/S/B at their
    best modern setting with NVML telemetry beside timm's own benchmark.py, (3) the training step against an
    official-style loop, (4) the cifar10-scale Table 3 as far as the budget reaches. Dry run: the debug models."""
    records = str(work / "records")
    bench = ("-m", "bench", "run", "--device", device, "--results-dir", records)
    steps = []
    if dry_run:  # the same commands at a size that runs in seconds on a CPU
        steps += [Step(f"paper_protocol_{v}", (*bench, "--variant", v, "--metrics", "size,speed", "--batch-size", "4",
                                               "--iters", "3", "--warmup", "1"), 15, "dry run of step 1")
                  for v in ("debug", "debug_dist")]
        steps += [Step(f"best_{v}", (*bench, "--variant", v, "--metrics", "size,speed", "--precision", "fp32",
                                     "--batch-size", "8", "--iters", "3", "--warmup", "1"), 15, "dry run of step 2")
                  for v in ("debug",)]
        timm_models, timm_args = ("test_vit",), ("--bench", "inference", "-b", "2")
    else:
        steps += [Step(f"paper_protocol_{v}", (*bench, "--variant", v, "--protocol", "paper"), 60,
                       "Table 5/10 beside the V100: fp32, the largest batch, mean of 30") for v in DEIT]
        steps += [Step(f"best_{v}", (*bench, "--variant", v, "--precision", "amp_bf16", "--compile", "--batch-size",
                                     "max", "--max-batch-cap", "2048"), 90,
                       "bf16, torch.compile, the largest batch; NVML clocks, power, energy per image, MFU")
                  for v in ("deit_ti", "deit_s", "deit_b")]
        timm_models = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
        timm_args = ("--bench", "inference", "--amp", "--amp-dtype", "bfloat16", "--torchcompile", "-b", "1024")
    for model in timm_models:
        argv = (str(timm_benchmark), "--model", model, *timm_args, "--device", device,
                "--results-file", str(work / "timm" / f"{model}.csv")) if timm_benchmark else ()
        steps.append(Step(f"timm_benchmark_{model}", argv, 15 if dry_run else 120,
                          "timm's own benchmark.py, its best setting, same card and call",
                          unavailable="" if timm_benchmark else "no --timm-benchmark PATH (timm's benchmark.py is "
                          "not in its pip package: pass the file from a timm checkout)"))
    step_args = (("--experiment", "debug_hard", "--batch-size", "16", "--steps", "3", "--warmup", "1") if dry_run else
                 ("--experiment", "deit_s_hard", "--set", "compile=true", "--batch-size", "128", "--steps", "30",
                  "--warmup", "10"))
    steps.append(Step("training_step_vs_official_loop",
                      ("-m", "reproduce", "step-speed", *step_args, "--device", device,
                       "--results-dir", str(work / "records" / "step-speed")), 20 if dry_run else 120,
                      "one training step of DeiT-S with hard distillation from RegNetY-16GF: ours against an "
                      "official-style fp16 eager loop, img/s side by side"))
    scale = "debug" if dry_run else "cifar10"
    steps.append(Step(f"table3_{scale}", ("-m", "reproduce", "suite", "table3", "--scale", scale, "--root",
                                          str(work / "runs"), "--results-dir", str(work / "records" / f"table3-{scale}")),
                      30 if dry_run else 300, f"Table 3 at {scale} scale: teacher and four trainings of seed 0",
                      resumable=True))
    return steps


def run(out: Path, *, device: str, budget_s: float, dry_run: bool, timm_benchmark: Path | None,
        previous: Path | None, log) -> State:
    """Run what is not done of the plan within the budget; pack everything into `out/campaign.tar.gz`."""
    if timm_benchmark is not None and not timm_benchmark.is_file():
        raise UsageError(f"--timm-benchmark {timm_benchmark}: no such file (timm's benchmark.py from a timm checkout)")
    if previous is not None and not previous.is_file():
        raise UsageError(f"--continue {previous}: no such archive")
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if previous is not None:
        with tarfile.open(previous) as tar:
            tar.extractall(work, filter="data")
    state = State.load(work / STATE) if (work / STATE).exists() else State(device, dry_run)
    if (state.device, state.dry_run) != (device, dry_run):
        raise UsageError(f"--continue: that campaign ran with device={state.device}, dry_run={state.dry_run}")
    for folder in ("logs", "timm"):  # timm's benchmark.py does not make its results file's folder
        (work / folder).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    steps = plan(work, device=device, dry_run=dry_run, timm_benchmark=timm_benchmark)
    state.outcomes = {s.name: state.outcomes[s.name] for s in steps if s.name in state.outcomes}  # this plan's only
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
            state.outcomes[step.name] = _run_step(step, work / "logs" / f"{step.name}.log", left)
        outcome = state.outcomes[step.name]
        log(f"[{i}/{len(steps)}] {step.name}: {outcome.status}"
            + (f" in {outcome.wall_s:.0f} s" if outcome.wall_s else "") + (f" ({outcome.note})" if outcome.note else ""))
        state.save(work / STATE)
    state.outcomes = {s.name: state.outcomes[s.name] for s in steps if s.name in state.outcomes}  # plan order
    state.save(work / STATE)
    _pack(work, out / ARCHIVE)
    return state


def _run_step(step: Step, log_path: Path, left_s: float) -> Outcome:
    """The step as a child process; past the time left, SIGTERM (a training run checkpoints), then SIGKILL."""
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
            return Outcome("stopped", time.monotonic() - start, rc, "the budget ran out; --continue resumes it")
        except KeyboardInterrupt:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if rc else []
    return Outcome("done" if rc == 0 else "failed", time.monotonic() - start, rc, tail[0][:300] if tail else "")


def _pack(work: Path, archive: Path) -> None:
    """Records, logs, timm's CSVs and the state in one archive (no checkpoints: they exceed what a call returns)."""
    def pack(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for part in ("records", "logs", "timm", STATE):
                if (work / part).exists():
                    tar.add(work / part, arcname=part)
    write_atomic(archive, pack)


def summary(state: State) -> str:
    width = max(map(len, state.outcomes), default=10)
    return "\n".join(f"{name:{width}s}  {o.status:11s} {o.wall_s:7.0f} s  {o.note}" for name, o in state.outcomes.items())


def clean_work(out: Path) -> None:
    """Remove the working folder once the archive holds everything (a device call returns at most 8 files)."""
    shutil.rmtree(out / "work", ignore_errors=True)
