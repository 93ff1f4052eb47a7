"""Suites: a paper table as a list of registered experiments, run idempotently over seeds.

`reproduce suite table3 --scale mini --seeds 3` trains the scale's CNN teacher once (it is reused by every
row and seed), then each Table-3 row per seed. A finished row (result.json present) is skipped, an interrupted
one resumed from its checkpoint, so re-running the command after a crash or Ctrl-C finishes the job.
Each finished seed also gets a Table-4 record: how often the teacher, the undistilled student and the
distillation-token student's heads disagree on the test images. Where the suite is given its teacher's weights
(imagenet scale: `--set teacher_checkpoint=FILE`), it first evaluates that teacher on the validation images,
as `bench run --metrics accuracy --save-predictions` would, so a missing or wrong file fails before any training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.disagree import disagreement, top1_columns
from bench.errors import not_a_file
from bench.record import Record, load_records, portable_paths, write_record
from bench.scales import SCALE_PREFIX, TABLE3_EXPERIMENTS, experiment_name, teacher_experiment
from bench.store import hold_folder, write_text_atomic
from reproduce import experiments
from reproduce.checkpoints import busy_warning, config_differences, run_env, unrecorded
from reproduce.config import LABEL_TEACHER, ConfigError, override
from reproduce.reads import unread_fields
from reproduce.train import train


@dataclass(frozen=True)
class Suite:
    name: str  # e.g. "table3-mini": the folder under the suite root and under results/runs
    teacher: str | None  # experiment that trains the teacher first, None when its weights are given
    rows: tuple[str, ...]  # experiments, in order
    table4: tuple[tuple[str, str], ...] = ()  # (undistilled row, distillation-token row) pairs whose
    # predictions, with the teacher's, make a Table-4 record per seed (one pair per student size)


def table3(scale: str, variants: tuple[str, ...] = ("ti",)) -> Suite:
    """Table 3's four trainings (six rows) at a scale; at imagenet scale one set per DeiT size."""
    if scale not in SCALE_PREFIX:
        raise ConfigError(f"unknown --scale {scale!r}; accepted: {', '.join(SCALE_PREFIX)}")
    unknown = [v for v in variants if v not in ("ti", "s", "b")]
    if scale == "imagenet" and (unknown or not variants):
        raise ConfigError(f"--variants {','.join(variants)!r}: accepted is a comma list of ti, s, b")
    if len(set(variants)) < len(variants):  # each row would be listed, and counted, twice (a hostile pass)
        raise ConfigError(f"--variants {','.join(variants)!r} names a size twice; give each once")
    if scale != "imagenet" and tuple(variants) != ("ti",):  # it trained Ti while the user asked for another size
        raise ConfigError(f"--variants {','.join(variants)!r}: the {scale} scale trains its one student size (ti); "
                          "--variants chooses sizes at --scale imagenet only")
    sizes = variants if scale == "imagenet" else ("ti",)
    rows = tuple(experiment_name(scale, r, v) for v in sizes for r in TABLE3_EXPERIMENTS)
    pairs = tuple((experiment_name(scale, "none", v), experiment_name(scale, "hard", v)) for v in sizes)
    teacher = teacher_experiment(scale)
    return Suite(f"table3-{scale}", teacher, rows, table4=pairs)


SUITES: dict[str, Callable[..., Suite]] = {"table3": table3}


@dataclass(frozen=True)
class RowOutcome:
    experiment: str
    seed: int
    status: str  # "trained", "resumed", "skipped"
    wall_s: float
    record: Path | None


def run_suite(suite: Suite, root: Path, *, seeds: int, sets: list[str], data: str | None, results_dir: Path,
              log=print) -> list[RowOutcome]:
    """Train what is missing: the teacher (once; or evaluate the given one), then every row for seeds 0 … seeds-1.
    The suite's folder is held for the whole run (a second suite on it is refused), each row's run
    folder by its training."""
    with _held(root / suite.name, log):
        return _run_suite(suite, root / suite.name, seeds=seeds, sets=sets, data=data, results_dir=results_dir, log=log)


def _run_suite(suite: Suite, base: Path, *, seeds: int, sets: list[str], data: str | None, results_dir: Path,
               log) -> list[RowOutcome]:
    outcomes = []
    teacher_sets = list(sets)
    if any(s.partition("=")[0].strip() == "seed" for s in sets):
        raise ConfigError("--set seed: a suite trains seeds 0 to N-1 itself; give --seeds N")
    nowhere = {s.partition("=")[0].strip() for s in sets}  # each row drops what it never reads: no row may read it
    for name in ([suite.teacher] if suite.teacher else []) + list(suite.rows):
        nowhere &= set(unread_fields(override(experiments.get(name).build(), sets, refuse_unread=False)))
    if nowhere:
        raise ConfigError(f"--set {', '.join(sorted(nowhere))}: no row of {suite.name} reads it, so it would change "
                          "nothing: leave it out")
    if suite.teacher is not None and any(s.partition("=")[0].strip() == "teacher_checkpoint" for s in sets):
        raise ConfigError(f"--set teacher_checkpoint: this scale trains its own teacher ({suite.teacher}), which its "
                          "rows distil from; a given teacher is read at the imagenet scale only: leave it out")
    if suite.teacher is not None:
        outcome = _run_one(suite.teacher, base / "teacher", sets, data, seed=0, results_dir=results_dir, log=log)
        outcomes.append(outcome)
        teacher_sets.append(f"teacher_checkpoint={base / 'teacher' / 'checkpoint.pth'}")
    elif suite.table4:
        outcomes.append(_evaluate_given_teacher(suite.table4[0][1], base / "teacher", sets, data,
                                                results_dir=results_dir, log=log))
    for seed in range(seeds):
        for name in suite.rows:
            outcomes.append(_run_one(name, base / f"seed{seed}" / name, teacher_sets, data, seed=seed,
                                     results_dir=results_dir, log=log))
        for pair in suite.table4:
            path = write_disagreement(suite, base, seed, pair, results_dir)
            if path is not None:
                log(f"[table 4 seed {seed}] {path}")
    return outcomes


def _evaluate_given_teacher(row: str, output: Path, sets: list[str], data: str | None, *, results_dir: Path,
                            log) -> RowOutcome:
    """The teacher of distillation row `row`, from its `teacher_checkpoint`, scored on the rows' validation images
    by bench's accuracy measurement (its own preprocessing); the predictions and the record land in `output` like a
    trained run's, and the record in `results_dir` too (where `bench tables` finds the teacher's top-1)."""
    cfg = override(dataclasses.replace(experiments.get(row).build(), **({"data": data} if data else {})), sets)
    with _held(output, log):
        return _evaluate_teacher(cfg, row, output, results_dir, log)


def _held(folder: Path, log):
    """`folder` held by the first process of a launch, the one that writes."""
    return hold_folder(folder, log=log) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()


def _evaluate_teacher(cfg, row: str, output: Path, results_dir: Path, log) -> RowOutcome:
    from bench.accuracy import EvalOptions
    from bench.registry import resolve
    from bench.run import measure, resolve_settings
    from reproduce.train import start_processes

    if (output / "result.json").exists():
        scored = Record.from_json((output / "result.json").read_text()).settings.eval["checkpoint"]
        if os.path.abspath(scored) != cfg.teacher_checkpoint:  # an older suite's is as typed, from where it ran
            raise ConfigError(f"{output} holds the evaluation of teacher {scored}, not {cfg.teacher_checkpoint}; "
                              "Table 4 would mix teachers: use another --root or remove that folder")
        log(f"[teacher {cfg.teacher}] evaluated already: {output / 'result.json'}")
        return RowOutcome(cfg.teacher, 0, "skipped", 0.0, None)
    if cfg.teacher == LABEL_TEACHER:
        raise ConfigError("teacher=labels has no weights to evaluate, and Table 4 needs a teacher; run the label "
                          "control with `reproduce train --set teacher=labels`, not as a suite")
    missing = []  # everything at once: a user should not learn of the data only after finding the weights
    if not cfg.teacher_checkpoint:
        missing.append(f"the {row} row distils from {cfg.teacher}: give its weights with --set "
                       "teacher_checkpoint=FILE (official: regnety_160-a5fe301d.pth)")
    elif not Path(cfg.teacher_checkpoint).is_file():  # was a ValueError traceback, exit 1 (a hostile pass)
        missing.append(f"teacher_checkpoint={cfg.teacher_checkpoint}: {not_a_file(cfg.teacher_checkpoint)}")
    if cfg.dataset != "folder" or not cfg.data:
        missing.append(f"evaluating the given teacher needs the rows' image folders (dataset=folder, --data ROOT "
                       f"with ROOT/val); this suite has dataset={cfg.dataset}, data={cfg.data or 'none'}")
    elif not (Path(cfg.data) / "val").is_dir():
        missing.append(f"--data {cfg.data} has no val/ folder" + ("" if Path(cfg.data).exists() else
                                                                  f" ({cfg.data} does not exist)"))
    if missing:
        raise ConfigError("; and ".join(missing))
    start = time.perf_counter()
    procs = start_processes(cfg.device)
    log(f"[teacher {cfg.teacher}] evaluating {cfg.teacher_checkpoint} on {Path(cfg.data) / 'val'}")
    variant = resolve(cfg.teacher)
    opts = EvalOptions(data=Path(cfg.data) / "val", checkpoint=Path(cfg.teacher_checkpoint),
                       protocol=cfg.eval_protocol, workers=cfg.workers, save_predictions=output / "predictions.pt")
    try:
        opts.check()
    except ValueError as exc:  # what bench run --checkpoint refuses: a usage error here too, not a traceback
        raise ConfigError(str(exc)) from None
    settings = resolve_settings(variant, device=procs.device, batch_size=cfg.eval_batch_size, metrics="accuracy")
    record = measure(variant, settings, eval_opts=opts, log=log if procs.main else (lambda _: None))
    if not procs.main:
        return RowOutcome(cfg.teacher, 0, "evaluated", time.perf_counter() - start, None)
    record = dataclasses.replace(record, notes=[*record.notes, f"Table-4 teacher of {row}"])
    path = write_record(record, results_dir)
    write_text_atomic(output / "result.json", record.to_json())
    return RowOutcome(cfg.teacher, 0, "evaluated", time.perf_counter() - start, path)


TABLE4_ROLES = ("convnet", "DeiT", "DeiT⚗")  # the paper's names for the teacher, row 1 and rows 4–6


def write_disagreement(suite: Suite, base: Path, seed: int, pair: tuple[str, str], results_dir: Path) -> Path | None:
    """The Table-4 record of one seed, from the final predictions of the teacher and the pair's two rows; None when
    it is written already (same prediction files), a run is missing, or this is not the first process of a launch."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    runs = [base / "teacher", *(base / f"seed{seed}" / name for name in pair)]
    files = [run / "predictions.pt" for run in runs]
    if not all(f.is_file() and (run / "result.json").is_file() for f, run in zip(files, runs)):
        return None
    digests = {role: hashlib.sha256(f.read_bytes()).hexdigest() for role, f in zip(TABLE4_ROLES, files)}
    for old in (load_records(results_dir) if results_dir.is_dir() else []):
        if old.kind == "disagree" and old.settings.predictions_sha256 == digests:
            return None
    columns, images, made_differently = top1_columns(files, labels=list(TABLE4_ROLES))
    teacher, *students = (Record.from_json((run / "result.json").read_text()) for run in runs)
    settings = {"suite": suite.name, "scale": suite.name.split("-", 1)[-1], "seed": seed, "device": "cpu",
                "experiments": dict(zip(TABLE4_ROLES, (suite.teacher or teacher.variant, *pair))),
                "runs": {role: str(run) for role, run in zip(TABLE4_ROLES, runs)}, "predictions_sha256": digests,
                "config_key": _config_key([r.settings.config for r in students])}
    record = Record(students[-1].variant, students[-1].model, settings,
                    {"images": images, "disagreement": disagreement(columns).to_dict(orient="index")},
                    run_env("cpu"), kind="disagree", notes=made_differently)
    return write_record(record, results_dir)


def _config_key(configs: list[dict]) -> str:
    """The students' configurations less their seed: seeds of one configuration share it."""
    text = json.dumps([{k: v for k, v in portable_paths(c).items() if k != "seed"} for c in configs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_one(name: str, output: Path, sets: list[str], data: str | None, *, seed: int, results_dir: Path,
             log) -> RowOutcome:
    cfg = experiments.get(name).build()
    if data:
        cfg = dataclasses.replace(cfg, data=data)
    # a setting is for the rows that read it (the teacher's for those that distil; a row alone refuses the others)
    unread = unread_fields(override(cfg, sets, refuse_unread=False))
    cfg = override(cfg, [*(s for s in sets if s.partition("=")[0].strip() not in unread), f"seed={seed}"])
    if (output / "result.json").exists():
        # a row finished with other settings would join this table's rows trained with these (a hostile pass:
        # `--set epochs=3` skipped the rows trained with 2 and trained the rest with 3, exit 0)
        try:
            saved = Record.from_json((output / "result.json").read_text()).settings.get("config") or {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # a traceback in a hostile pass
            return _unreadable_result(name, output, cfg, seed, results_dir, exc, log)
        if saved and (differ := config_differences(saved, cfg)):  # (a result.json without its config: older)
            raise ConfigError(f"{output} finished with a different configuration: {differ}; a table must not mix "
                              "them: run the suite as it was run, or give it another --root")
        log(f"[{name} seed {seed}] finished already: {output / 'result.json'}")
        main = int(os.environ.get("RANK", "0")) == 0  # one writer under torchrun
        missing = unrecorded(output / "result.json", results_dir) if main else None  # stopped between the writes
        path = write_record(missing, results_dir) if missing is not None else None
        return RowOutcome(name, seed, "skipped", 0.0, path)
    return _train_row(name, output, cfg, seed, results_dir, log)


def _unreadable_result(name: str, output: Path, cfg, seed: int, results_dir: Path, exc: Exception,
                       log) -> RowOutcome:
    """A finished row whose result.json cannot be read: put back from its record in `results_dir` (the last record
    of this run folder and config), else resumed from its checkpoint, which writes both (a record written again beside
    one that is there would count the seed twice)."""
    result = output / "result.json"
    copies = [r for r in load_records(results_dir, skip_bad=lambda _: None) if r.kind == "train"
              and r.settings.get("output") == str(output) and not config_differences(r.settings.config or {}, cfg)
              ] if results_dir.is_dir() else []
    if copies:
        write_text_atomic(result, copies[-1].to_json())
        log(f"[{name} seed {seed}] {result} was unreadable ({exc}); put back from its record in {results_dir}")
        return RowOutcome(name, seed, "skipped", 0.0, None)
    if not (output / "checkpoint.pth").exists():
        raise ConfigError(f"{result} is unreadable ({exc}), and neither its checkpoint nor a record of it in "
                          f"{results_dir} is left to rebuild it: move {output} away and run the suite again")
    log(f"[{name} seed {seed}] {result} is unreadable ({exc}); resuming the row to write it")
    return _train_row(name, output, cfg, seed, results_dir, log)


def _train_row(name: str, output: Path, cfg, seed: int, results_dir: Path, log) -> RowOutcome:
    status = "resumed" if (output / "checkpoint.pth").exists() else "trained"
    log(f"[{name} seed {seed}] {'resuming' if status == 'resumed' else 'training'} in {output}")
    start = time.perf_counter()
    record: Record | None = train(cfg, output, experiment=name, resume=True, log=log,
                                  resume_hint="the same `reproduce suite` command continues from it")
    path = write_record(record, results_dir) if record is not None else None
    if record is not None and (busy := busy_warning(record)) is not None:  # as `reproduce train` says it
        log(f"[{name} seed {seed}] warning: {busy}")
    return RowOutcome(name, seed, status, time.perf_counter() - start, path)
