"""`reproduce`: train DeiT variants with the paper's recipe. Thin: parse, look up, call, report.

    reproduce ls                                   experiments with their paper row and number
    reproduce train --experiment NAME --output DIR [--data PATH] [--set key=value …] [--resume]
    reproduce suite table3 --scale mini --seeds 3  every row not yet finished (idempotent)
    torchrun --nproc_per_node 8 -m reproduce train …   (one process per GPU; gloo on CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
from pathlib import Path

from bench.errors import (
    CheckpointError,
    DataError,
    Parser,
    StorageError,
    Terminated,
    UsageError,
    check_folder,
    exit_at_once_on_another_stop,
    kind_of,
    message_of,
    path_arg,
    plain_streams,
    sigterm_interrupts,
    stop_handlers_restored,
)
from bench.store import interrupts_deferred
from reproduce import experiments
from reproduce.config import (
    ACCEPTS,
    LABEL_TEACHER,
    CommandLineError,
    ConfigError,
    Interrupted,
    NonFiniteLoss,
    PeerLost,
    Preempted,
    TrainConfig,
    check_compile,
    check_ready,
    override,
    valid_device,
)
from reproduce.released import render_released

MAX_SEEDS = 100  # each seed trains every row again: more is a typo, not a study (the paper reports one seed)


def _data_arg(text: str) -> str:
    return str(path_arg(text))  # an empty --data (an unset variable) was left out silently: the default data ran


def _parser() -> argparse.ArgumentParser:
    # not read from __doc__, which `python -OO` removes (every command crashed, a hostile pass)
    parser = Parser(prog="reproduce", description="`reproduce`: train DeiT variants with the paper's recipe.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,ls,suite,step-speed}")
    train = sub.add_parser("train", help="train one experiment; writes checkpoint, log.jsonl and a result record")
    train.add_argument("--experiment", required=True, help="a registered experiment (see `reproduce ls`)")
    train.add_argument("--output", type=path_arg, required=True, help="run folder: checkpoint.pth, log.jsonl, result.json")
    train.add_argument("--data", type=_data_arg, help="dataset root (sets the config field `data`)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (repeatable); `reproduce ls --fields` lists them")
    train.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    # a flag, not a config field: watching a run changes neither what it trains nor its record, and may be switched
    # on at a --resume (a config change refuses one)
    train.add_argument("--tensorboard", action="store_true",
                       help='also write the log\'s scalars as TensorBoard events into --output (pip install -e ".[tb]")')
    train.add_argument("--results-dir", type=path_arg, default=Path("results/runs/train"),
                       help="where the result record goes (default results/runs/train)")
    suite = sub.add_parser("suite", help="train a paper table's rows (skips finished rows, resumes interrupted ones)")
    suite.add_argument("table", choices=["table3"], help="the paper table")
    suite.add_argument("--scale", default="mini", help="debug (seconds, tiny models), mini (default; 2 CPU cores), "
                       "cifar10 (one GPU) or imagenet (the paper's)")
    suite.add_argument("--variants", default="ti", help="imagenet scale: comma list of ti,s,b (default ti)")
    suite.add_argument("--seeds", type=int, default=1, help=f"seeds per row (0 … N-1; default 1, at most {MAX_SEEDS})")
    suite.add_argument("--root", type=path_arg, default=Path("runs/suites"), help="where run folders go (default runs/suites)")
    suite.add_argument("--data", type=_data_arg, help="dataset root for every row")
    suite.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field in every row")
    suite.add_argument("--results-dir", type=path_arg, default=None,
                       help="where records go (default results/runs/<table>-<scale>)")
    step = sub.add_parser("step-speed", help="time our training step against an official-style loop, side by side")
    step.add_argument("--experiment", required=True, help="a distillation experiment, e.g. deit_s_hard")
    step.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    step.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    step.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    step.add_argument("--steps", type=int, default=20, help="timed steps of each loop (default 20)")
    step.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    step.add_argument("--results-dir", type=path_arg, default=Path("results/runs/step-speed"),
                      help="where the record goes (default: %(default)s, from the current folder)")
    ls = sub.add_parser("ls", help="list experiments (paper table/row and number)")
    what = ls.add_mutually_exclusive_group()
    what.add_argument("--fields", action="store_true",
                      help="list the config fields, their types, defaults and accepted values instead")
    what.add_argument("--released", action="store_true",
                      help="print how our defaults differ from the released DeiT code (docs/released-code.md)")
    what.add_argument("--show", metavar="EXPERIMENT", help="print one experiment's fully resolved config")
    ls.add_argument("--lr-figure", type=path_arg, metavar="FILE",
                    help="with --show: draw the learning rate of every epoch as training sets it (PNG or SVG)")
    ls.add_argument("--record", type=path_arg, metavar="DIR",
                    help="with --show: also write the resolved config as a record (kind config; Table 9 reads it)")
    return parser


def resolve_config(name: str, data: str | None, assignments: list[str]) -> TrainConfig:
    """The experiment's config with the command line's settings; a mistake in them is a CommandLineError."""
    try:
        cfg = experiments.get(name).build()
    except KeyError as exc:
        raise CommandLineError(exc.args[0]) from None
    # --data is the field `data`, set with the --set values and checked with them (checked before them, `--data X
    # --set dataset=folder` was refused as "data must be '' with dataset=synthetic", a hostile pass)
    if data and any(a.partition("=")[0].strip() == "data" for a in assignments):
        raise CommandLineError("--data and --set data= both give the data: give one")
    try:
        return override(cfg, [*([f"data={data}"] if data else []), *assignments])
    except ConfigError as exc:  # the settings' values and how they combine; no file is read
        raise CommandLineError(str(exc)) from None


def _ls(args) -> int:
    if args.show is not None and not args.show.strip():  # listed every experiment, exit 0 (a hostile pass)
        raise UsageError("--show '' names no experiment (an unset shell variable?); reproduce ls lists them")
    if (args.record or args.lr_figure) and not args.show:
        raise UsageError(f"{'--record' if args.record else '--lr-figure'} needs --show EXPERIMENT")
    if args.released:
        print(render_released(), end="")
        return 0
    if args.fields:
        print(f"{'field':22s} {'type':20s} {'default':28s} accepted")
        for f in dataclasses.fields(TrainConfig):
            print(f"{f.name:22s} {f.type:20s} {f.default!r:28s} {ACCEPTS[f.name].words}")
        return 0
    if args.lr_figure and args.lr_figure.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--lr-figure {args.lr_figure}: give a .png or .svg file name")
    if args.record:  # before any output: the config printed, then refused (a hostile pass)
        check_folder(args.record, "--record")
    if args.lr_figure:
        check_folder(args.lr_figure.parent, "--lr-figure's folder")
    if args.show:
        cfg = resolve_config(args.show, None, [])
        for key, value in dataclasses.asdict(cfg).items():
            print(f"{key:22s} {value!r}")
        if args.record:
            print(f"record: {_config_record(args.show, cfg, args.record)}", file=sys.stderr)
        if args.lr_figure:
            print(f"figure: {_lr_figure(args.show, cfg, args.lr_figure)}", file=sys.stderr)
        return 0
    width = max(map(len, experiments.EXPERIMENTS))
    for exp in experiments.EXPERIMENTS.values():
        number = f"{exp.paper_top1:.1f} %" if exp.paper_top1 is not None else "–"
        print(f"{exp.name:{width}s}  {exp.table:42s} paper {number:7s} {exp.doc}")
    return 0


def _lr_figure(name: str, cfg: TrainConfig, path: Path) -> Path:
    """The experiment's learning rate per epoch, warm-up and decay at a glance (written atomically); the same
    figure `bench tables` draws from the config record."""
    from bench.figures import lr_schedule_figure, plt
    from bench.store import write_atomic

    fig = lr_schedule_figure(name, dataclasses.asdict(cfg), _lr_points(cfg))
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix[1:].lower()))
    plt.close(fig)
    return path


def _lr_points(cfg: TrainConfig) -> list[tuple[float, float]]:
    from reproduce.schedule import lr_schedule

    return lr_schedule(cfg, steps_per_epoch=20)


def _config_record(name: str, cfg: TrainConfig, folder: Path) -> Path:
    """The resolved config as a record of kind `config`: the reports read the recipe from records, not from code."""
    from bench.record import Record, collect_env, cpu_model, portable_paths, write_record
    from bench.registry import VARIANTS

    # paths inside the repository from its root, as a trained record's config keys read them: a committed config
    # record names no one's checkout
    settings = {"experiment": name, "config": portable_paths(dataclasses.asdict(cfg)), "device": "config",
                "lr_schedule": [list(point) for point in _lr_points(cfg)]}
    record = Record(cfg.variant, VARIANTS[cfg.variant].model, settings, {}, collect_env(cpu_model()), kind="config")
    return write_record(record, folder)


_WRITTEN: list[Path] = []  # the record `reproduce train` wrote, for a stop that lands after it


def _train(args) -> int:
    from bench.record import write_record  # late: torch and timm load only for the commands that train
    from reproduce.checkpoints import busy_warning, unrecorded
    from reproduce.train import train

    cfg = check_ready(resolve_config(args.experiment, args.data, args.set))
    _check_cuda(cfg.device, f"device={cfg.device}")
    check_folder(args.output, "--output")
    check_folder(args.results_dir, "--results-dir")
    checkpoint = args.output / "checkpoint.pth"
    # a folder, a link to /dev/zero or a loop of links there read as "does not exist" (a hostile pass)
    if os.path.lexists(checkpoint) and not checkpoint.is_file():
        raise UsageError(f"{checkpoint} is not a checkpoint file ({kind_of(checkpoint)}); move it away, or choose "
                         "another --output")
    if args.resume and not checkpoint.is_file():
        raise UsageError(f"--resume: nothing to resume, {checkpoint} does not exist; "
                         "leave out --resume to start the run")
    record = train(cfg, args.output, experiment=args.experiment, resume=args.resume,
                   log=lambda msg: print(msg, file=sys.stderr), tensorboard=args.tensorboard)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun every other rank's train() returns None too
    if record is None and main and (record := unrecorded(args.output / "result.json", args.results_dir)) is not None:
        print(f"its record is not in {args.results_dir}: writing it there (the run may have stopped between its two "
              "writes; if an earlier call put its record elsewhere, this is a copy of the same run, and the tables count "
              "a run once)", file=sys.stderr)
    if record is not None:
        try:
            with interrupts_deferred():  # a stop as the record is linked in said "no record was written" (a hostile
                path = write_record(record, args.results_dir)  # pass): it is answered once the path is known
                _WRITTEN.append(path)
        except StorageError as exc:  # a full or read-only disk after training: the record is not lost
            raise StorageError(f"{exc}; the run's record is still kept in {args.output / 'result.json'}: copy it "
                               f"into {args.results_dir} once there is room") from None
        top = {k: round(v, 2) for k, v in record.metrics.items() if k.startswith("final_val_top1")}
        print(f"record: {path}  {top}", file=sys.stderr)
        if (busy := busy_warning(record)) is not None:
            print(f"warning: {busy}", file=sys.stderr)
    return 0


def _step_speed(args) -> int:
    from bench.machine import check_input_fits
    from bench.processes import resolve_device
    from bench.record import Record, write_record
    from bench.registry import VARIANTS
    from reproduce import stepspeed
    from reproduce.checkpoints import run_env

    for label, value in (("--batch-size", args.batch_size), ("--steps", args.steps)):
        if value < 1:
            raise UsageError(f"{label} must be at least 1, got {value}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if not valid_device(args.device):
        raise UsageError(f"--device {args.device!r}: accepted auto, cpu, cuda or cuda:N")
    _check_cuda(args.device, f"--device {args.device}")
    # fields step-speed sets itself or never reads: a --set of them would be recorded and not used (a hostile pass:
    # --set batch_size=4 timed 64, --set device=cuda ran on the CPU, a garbage teacher_checkpoint was recorded)
    unread = {"batch_size": "--batch-size", "device": "--device", "teacher_checkpoint": "random teacher weights",
              "teacher_memo": "no memo: every step runs its teacher", "data": "synthetic batches",
              "dataset": "synthetic batches", "epochs": "--steps"}
    given = [item.partition("=")[0].strip() for item in args.set]
    if refused := [f"{k} ({unread[k]})" for k in given if k in unread]:
        raise UsageError(f"step-speed sets or ignores {', '.join(refused)}: leave --set {refused[0].split()[0]} out")
    cfg = resolve_config(args.experiment, None, args.set)
    check_compile(cfg)
    if cfg.teacher == LABEL_TEACHER:  # a KeyError traceback from the registry, a hostile pass
        raise UsageError("step-speed times a step that runs a teacher network; teacher=labels has none (the labels "
                         "stand in): leave it out")
    if cfg.compile and args.warmup < 1:
        raise UsageError("compile=true compiles in the first step, which must not be timed: --warmup must be at least "
                         f"1, got {args.warmup}")
    check_folder(args.results_dir, "--results-dir")
    device = resolve_device(args.device)  # checked above
    if device == "cpu":  # an allocator's RuntimeError traceback for --batch-size 100000000 (a hostile pass)
        try:
            check_input_fits(args.batch_size, cfg.img_size or VARIANTS[cfg.variant].img_size)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    env = run_env(device)
    try:
        result = stepspeed.measure(cfg, device=device, batch_size=args.batch_size, steps=args.steps,
                                   warmup=args.warmup, fingerprint=env["fingerprint"])
    except RuntimeError as exc:  # activations beyond memory: torch's allocators, CPU or CUDA
        if not any(words in str(exc) for words in ("allocate memory", "out of memory")):
            raise
        raise UsageError(f"--batch-size {args.batch_size}: a training step of {args.experiment} does not fit in this "
                         "machine's memory; give a smaller batch") from None
    settings = {"experiment": args.experiment, "config": dataclasses.asdict(cfg), "device": device,
                "batch_size": result.batch_size, "steps": result.steps, "warmup": args.warmup,
                "amp_ours": result.ours_amp, "amp_official": result.official_amp}
    metrics = {"ours_img_per_s": result.ours_img_per_s, "official_img_per_s": result.official_img_per_s,
               "ratio": result.ratio, "gflop_per_image": result.gflop_per_image, "ours_mfu": result.ours_mfu,
               "official_mfu": result.official_mfu, "ours_peak_tflops_measured": result.ours_peak_tflops,
               "official_peak_tflops_measured": result.official_peak_tflops,
               "timed_other_cores": None if result.timed_other_cores is None else round(result.timed_other_cores, 3),
               "timed_busy": result.timed_busy}
    path = write_record(Record(cfg.variant, cfg.variant, settings, metrics, env, kind="stepspeed"), args.results_dir)
    mfu = {k: "no usable peak" if v is None else f"MFU {100 * v:.1f} %"
           for k, v in (("ours", result.ours_mfu), ("official", result.official_mfu))}
    amp = {k: "fp32" if v == "none" else f"amp {v}" for k, v in (("ours", result.ours_amp),  # amp=none read as
                                                                  ("official", result.official_amp))}  # a missing value
    print(f"{args.experiment} on {device}, batch {result.batch_size}, {result.gflop_per_image:.3g} GFLOP per image: "
          f"ours {result.ours_img_per_s:,.1f} img/s ({amp['ours']}, {mfu['ours']}), official-style "
          f"{result.official_img_per_s:,.1f} img/s ({amp['official']}, {mfu['official']}), ratio "
          f"{result.ratio:.2f}\nMFU: of this machine's measured GEMM peak in each loop's precision (bench/peak.py)"
          f"\nrecord: {path}")
    if result.timed_busy:
        print(f"warning: other processes kept {result.timed_other_cores:.1f} cores busy while the loops were timed, "
              "one after the other: the ratio compares two loops on two different machines' worth of CPU (the record "
              "says so). Time it again on a quiet machine.", file=sys.stderr)
    return 0


def _check_cuda(device: str, named: str) -> None:
    """A CUDA device that this machine does not have is a usage error, not torch's traceback after the run began."""
    from bench.processes import resolve_device

    try:
        resolve_device(device, named)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _suite(args) -> int:
    import time

    from reproduce.suite import run_suite, table3

    if not 1 <= args.seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds must be 1 to {MAX_SEEDS}, got {args.seeds}")
    suite = table3(args.scale, tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    results_dir = args.results_dir or Path("results/runs") / suite.name
    check_folder(args.root, "--root")
    check_folder(results_dir, "--results-dir")
    start = time.perf_counter()
    outcomes = run_suite(suite, args.root, seeds=args.seeds, sets=args.set, data=args.data, results_dir=results_dir,
                         log=lambda msg: print(msg, file=sys.stderr))
    for o in outcomes:
        print(f"{o.experiment:16s} seed {o.seed}  {o.status:8s} {o.wall_s / 60:6.1f} min  {o.record or ''}")
    print(f"suite {suite.name}: {len(outcomes)} runs, {(time.perf_counter() - start) / 60:.1f} min wall")
    return 0


def _another_rank() -> str | None:
    """Under torchrun, this process's rank when it is not rank 0: a mistake in the command line, the same on every
    rank, is then said once, by rank 0, not once per rank (a hostile pass)."""
    rank = os.environ.get("RANK", "0")
    return rank if rank != "0" and os.environ.get("WORLD_SIZE", "1") != "1" else None


def main(argv: list[str] | None = None) -> int:
    plain_streams()
    rank = _another_rank()
    with contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
        args = _parser().parse_args(argv)  # argparse's usage errors, said by rank 0
    with stop_handlers_restored():
        return _main(args, rank)


def _shut_down_processes() -> None:
    """A rank of a finished run that left with its process group up was once killed by SIGABRT at exit, after the
    run's record ("terminate called without an active exception"; a hostile pass, 1 of 30 runs), and torchrun called
    the run failed. Only after success: with a peer gone, NCCL's shutdown may wait for ever (pytorch#75097), and
    torchrun ends the other ranks of a failed run itself."""
    if "torch.distributed" in sys.modules and sys.modules["torch.distributed"].is_initialized():
        sys.modules["torch.distributed"].destroy_process_group()


def _main(args: argparse.Namespace, rank: str | None) -> int:
    try:
        with sigterm_interrupts():  # until training's own handler takes SIGTERM as a pre-emption: it stops the
            # command as Ctrl-C does (a SIGTERM in the first seconds killed it silently, -15; a hostile pass)
            code = {"ls": _ls, "train": _train, "suite": _suite, "step-speed": _step_speed}[args.command](args)
        _shut_down_processes()
        return code
    except CommandLineError as exc:  # every rank has the same
        if not rank:
            print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, DataError, CheckpointError, UsageError) as exc:  # may differ between machines: each says its
        print(f"reproduce{f' (rank {rank})' if rank else ''}: error: {message_of(exc)}", file=sys.stderr)
        return 2
    except NonFiniteLoss as exc:
        print(f"reproduce: {exc}", file=sys.stderr)
        return 1
    except PeerLost as exc:
        print(f"reproduce{f' (rank {rank})' if rank else ''}: {exc}", file=sys.stderr)
        return 1
    except Preempted as exc:
        exit_at_once_on_another_stop(3)  # the checkpoint is written: a second SIGTERM keeps exit 3
        again = "run the same command again" if args.command == "suite" else "continue with --resume"
        print(f"reproduce: {exc}; {again}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        exit_at_once_on_another_stop()  # the first Ctrl-C was answered: a second one ends the exit, quietly
        print(f"\nreproduce: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt as exc:  # outside the training loop: before the first step or while writing the record
        exit_at_once_on_another_stop()
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        if _WRITTEN:  # after the run's last write it cost nothing, as in `bench run`
            print(f"\nreproduce: {how} once the run was done; its record was written: {_WRITTEN[-1]}", file=sys.stderr)
            return 0
        print(f"\nreproduce: {how}; no record was written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # `reproduce ls | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
