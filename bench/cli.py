"""`bench`: measure DeiT models and report. Thin: parse, resolve, call, print."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from pathlib import Path

from bench.check import Tolerances
from bench.errors import (
    Parser,
    StorageError,
    Terminated,
    UsageError,
    answer_deferred_stop,
    check_folder,
    exit_at_once_on_another_stop,
    message_of,
    outside_imports,
    path_arg,
    plain_streams,
    sigterm_interrupts,
    stop_handlers_restored,
)
from bench.processes import enough_open_files
from bench.protocols import (
    AB_ROUNDS,
    ATTENTIONS,
    COMPILE_MODES,
    DEFAULT_BEST_S,
    METRICS,
    PRECISIONS,
    TIMING_PROTOCOLS,
    Request,
    compile_switched_off,
    refuse_unread_timing,
)
from bench.registry import resolve


def _parser() -> argparse.ArgumentParser:
    # the description is not read from __doc__, which `python -OO` removes (every command crashed, a hostile pass)
    parser = Parser(prog="bench", description="`bench`: measure DeiT models and report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,ls,tables,check,disagree,campaign}")
    for add in (_add_run, _add_check, _add_disagree, _add_tables, _add_campaign, _add_ls):
        add(sub)
    return parser


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="measure one model and write a result record")
    run.add_argument("--variant", required=True,
                     help="registry alias (deit_b, …) or timm name, or a comma list (one record each); see `bench ls`")
    run.add_argument("--metrics", default=None,
                     help=f"comma list of {','.join(METRICS)} (default {Request.metrics}; with --data also accuracy; "
                          "under torchrun accuracy only)")
    run.add_argument("--device", default=Request.device, help="auto (cuda if available), cpu, cuda or cuda:N")
    run.add_argument("--precision", default=None, choices=["auto", *PRECISIONS],
                     help="auto (default: timing in amp_bf16 where bf16 is native, a GPU or a CPU with "
                          "avx512_bf16/AMX, else fp32; accuracy in fp32 on every machine), fp32 (strict, TF32 off), "
                          "tf32, pure bf16/fp16 weights, or autocast amp_bf16/amp_fp16 (a named precision applies to "
                          "accuracy too)")
    timm, paper = TIMING_PROTOCOLS["timm"], TIMING_PROTOCOLS["paper"]
    run.add_argument("--protocol", default=None, choices=list(TIMING_PROTOCOLS),
                     help=f"timm: fixed batch, median (default); paper: fp32, largest batch, mean of "
                          f"{paper.iters['cuda']} runs")
    run.add_argument("--batch-size", default=None, help="speed: images per timed forward, or 'max' (GPU only); "
                     f"default {timm.batch_size['cuda']} on cuda, {timm.batch_size['cpu']} on cpu; the paper protocol "
                     f"defaults to {paper.batch_size['cuda']}. Accuracy uses --eval-batch-size")
    run.add_argument("--img-size", type=int, default=None, help="input resolution (default: the variant's)")
    run.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                     help="torch.compile the model (compile time not timed); MODE: default, freezing (weights "
                          "folded in; inference), max-autotune, or reduce-overhead (CUDA graphs, GPU)")
    run.add_argument("--attention", default=None, choices=ATTENTIONS,
                     help="how a ViT's attention runs: sdpa (one fused call, timm's default) or matmul (q·kᵀ, "
                          "softmax, ·v; faster on some CPUs); --best tries both unless one is given")
    run.add_argument("--best", nargs="?", const=DEFAULT_BEST_S, default=None, type=float, metavar="SECONDS",
                     help="search for the fastest setting (native precision, compile mode, attention, batch unless "
                          "--batch-size) whose logits agree with fp32 eager's (on --data images when given): SECONDS "
                          f"of trials (default {DEFAULT_BEST_S:g}), then the fastest three side by side and the "
                          "agreement check (about a minute more for DeiT-B on 2 cores); the record lists every "
                          "setting tried")
    run.add_argument("--warmup", type=int, default=None,
                     help=f"untimed forwards first (default {timm.warmup['cuda']} cuda, {timm.warmup['cpu']} cpu)")
    run.add_argument("--iters", type=int, default=None, help=f"timed forwards (default {timm.iters['cuda']} cuda, "
                     f"{timm.iters['cpu']} cpu; paper {paper.iters['cuda']})")
    run.add_argument("--max-batch-cap", type=int, default=None,
                     help=f"upper bound of the --batch-size max search and of --best's batch stage (default "
                          f"{Request.max_batch_cap})")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads (default: torch's; 1 for --metrics relspeed on cpu, which times CPU time)")
    run.add_argument("--budget-s", type=float, default=None,
                     help="relspeed: seconds to keep taking rounds while the machine is busy "
                          f"(default {Request.budget_s:g})")
    run.add_argument("--results-dir", type=path_arg, default=Path("results/runs"),
                     help="where the record goes (default: %(default)s, from the current folder)")
    acc = run.add_argument_group("accuracy (--metrics accuracy)")
    acc.add_argument("--data", type=path_arg, help="class-per-folder tree, ImageNet-V2 folder, or flat ILSVRC2012 val folder")
    acc.add_argument("--dataset", choices=["folder", "imagenet-v2", "imagenet-flat"],
                     help="the layout of --data when guessing is not enough (V2: folders 0…999 are class indices)")
    acc.add_argument("--labels", type=path_arg, help="labels file of a flat ILSVRC2012 folder ('name index' lines)")
    acc.add_argument("--real-labels", nargs="?", const="timm", default=None, metavar="JSON",
                     help="also score ImageNet-ReaL (default: the label file timm ships)")
    acc.add_argument("--checkpoint", type=path_arg, help="official DeiT .pth ({'model': …}), timm state dict, or .safetensors")
    acc.add_argument("--pretrained", action="store_true", help="timm hub weights (needs network)")
    acc.add_argument("--eval-protocol", default="official", choices=["official", "timm"],
                     help="official: resize size/0.875, bicubic (DeiT repo); timm: the model's pretrained_cfg crop")
    acc.add_argument("--crop-pct", type=float, help="override the protocol's crop fraction")
    acc.add_argument("--num-classes", type=int, help="label space without a checkpoint (a checkpoint's head decides)")
    acc.add_argument("--limit", type=int, metavar="N", help="at most N images, spread evenly over --data (every class "
                     "of a tree); the record names N (default: every image)")
    # no argparse default (EvalOptions has them): a run without accuracy refuses these only where they were given
    acc.add_argument("--workers", type=int, help="data-loading processes (default 2)")
    acc.add_argument("--eval-batch-size", type=int,
                     help="images per forward while evaluating (default 256; --batch-size is the speed test's)")
    acc.add_argument("--save-predictions", type=path_arg, help="store per-image top-5 of every head (for bench disagree)")
    run.add_argument("--json", action="store_true",
                     help="print only the records on stdout, one JSON object per line (JSON Lines)")
    run.set_defaults(func=_run)


def _add_check(sub) -> None:
    check = sub.add_parser("check", help="compare records with baselines, or the working tree's speed with a reference "
                                         "commit's: exit 0 pass, 1 regression, 2 usage error, 3 inconclusive")
    check.add_argument("--baseline", type=path_arg,
                       help="a baseline folder (results/baselines: exact.json + speed/<machine>.json) or one file")
    check.add_argument("--current", type=path_arg, default=Path("results/runs"),
                       help="a record file or a folder of records (default results/runs)")
    check.add_argument("--write-baseline", action="store_true",
                       help="write --baseline from the --current records instead of comparing")
    check.add_argument("--speed-floor", type=float,
                       help=f"relative slowdown always tolerated, 0.01 to below 1: for --against, and stored by "
                            f"--write-baseline (default {Tolerances.speed_floor})")
    check.add_argument("--accuracy-tol", type=float,
                       help=f"with --write-baseline: tolerated |Δ top-1/top-5| in points (default {Tolerances.accuracy_points})")
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    ab = check.add_argument_group("A/B speed gate: the working tree against a reference, measured in one run, no "
                                  "stored baseline (docs/regression-gate.md)")
    ab.add_argument("--against", metavar="REF", help="a commit (hash, tag, branch) whose code is measured against the "
                                                     "working tree's, e.g. $(tail -n 1 results/baselines/ab-reference)")
    ab.add_argument("--against-python", metavar="PYTHON",
                    help="another environment's interpreter for the reference side (a dependency A/B: a torch or "
                         "timm upgrade); the reference side runs --against's code, or this tree's")
    ab.add_argument("--rounds", type=int,
                    help=f"paired rounds, one fresh process per side each (default {AB_ROUNDS}; 6 to 100)")
    ab.add_argument("--ab-record", type=path_arg, metavar="FILE", help="also write every round's timings here "
                    "(JSON); an existing file is replaced only if it is an earlier A/B record or empty")
    check.set_defaults(func=_check)


def _add_disagree(sub) -> None:
    dis = sub.add_parser("disagree", help="Table 4: how often models disagree, from --save-predictions files")
    dis.add_argument("predictions", nargs="+", type=path_arg, help="files written by bench run --save-predictions")
    dis.add_argument("--json", action="store_true", help="print the matrix as JSON")
    dis.set_defaults(func=_disagree)


def _add_tables(sub) -> None:
    tables = sub.add_parser("tables", help="regenerate the paper's tables, figures and results page from records")
    tables.add_argument("--records", type=path_arg, default=Path("results/runs"), help="records folder (recursive)")
    tables.add_argument("--out", type=path_arg, default=Path("results/tables"),
                        help="Markdown/CSV/LaTeX go here; index.html and constraints.txt into the folder above it")
    tables.add_argument("--figures", type=path_arg, help="PNG/SVG go here (default: figures/ beside --out, so "
                        "results/figures)")
    tables.add_argument("--no-figures", action="store_true",
                        help="tables and constraints.txt only (no figures, so no index.html)")
    tables.set_defaults(func=_tables)


def _add_campaign(sub) -> None:
    camp = sub.add_parser("campaign", help="the whole GPU measurement in one command within a time budget, packed "
                                           "into one archive (docs/gpu-campaign.md)")
    camp.add_argument("--out", type=path_arg, required=True, help="folder for campaign.tar.gz (records, logs, state)")
    camp.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    camp.add_argument("--budget-s", type=float, default=420,
                      help="seconds for the whole plan (default 420: one 8-minute device call with margin)")
    camp.add_argument("--dry-run", action="store_true", help="the same plan with the debug models, on the CPU")
    camp.add_argument("--timm-benchmark", type=path_arg, metavar="FILE", help="timm's benchmark.py, to run beside ours")
    camp.add_argument("--continue", dest="previous", type=path_arg, metavar="ARCHIVE",
                      help="an earlier call's campaign.tar.gz: run only what it has not done")
    camp.add_argument("--force", action="store_true",
                      help="replace an existing --out/campaign.tar.gz of another campaign (default: refuse)")
    camp.add_argument("--keep-work", action="store_true",
                      help="keep this call's working folder --out/campaign-work-* (default: only the archive stays)")
    camp.set_defaults(func=_campaign)


def _add_ls(sub) -> None:
    ls = sub.add_parser("ls", help="list the registry: variants, teachers, debug models, paper numbers")
    ls.add_argument("--role", choices=["student", "teacher", "reference", "debug"],
                    help="only entries of this role (reference: Table 5's other networks)")
    ls.set_defaults(func=_ls)


def _run(args: argparse.Namespace) -> int | None:
    _check_run_args(args)  # the mistakes that need no torch fail in a fraction of a second
    # late: torch and timm load only for the commands that measure (tables, check and ls stay quick)
    from bench.accuracy import EvalOptions
    from bench.predictions import check_destination
    from bench.processes import start_processes
    from bench.run import resolve_settings

    try:
        procs = start_processes(args.device)  # under torchrun: one rank per device, rank 0 writes and prints
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    distributed = procs.world > 1
    metrics = args.metrics if args.metrics is not None else (
        "accuracy" if distributed else f"{Request.metrics},accuracy" if args.data else Request.metrics)
    eval_opts = EvalOptions(
        data=args.data, dataset=args.dataset, labels=args.labels, real_labels=args.real_labels,
        checkpoint=args.checkpoint, pretrained=args.pretrained, protocol=args.eval_protocol,
        crop_pct=args.crop_pct, num_classes=args.num_classes, save_predictions=args.save_predictions, limit=args.limit,
        **{field: value for field, value in (("workers", args.workers), ("batch_size", args.eval_batch_size))
           if value is not None})
    try:  # check every name and option before measuring anything
        plans = []
        for name in args.variant.split(","):
            variant = resolve(name.strip())
            plans.append((variant, resolve_settings(variant, _request(args), device=procs.device, metrics=metrics)))
        if args.attention and all(variant.family != "vit" for variant, _ in plans):  # recorded, and changed nothing
            raise ValueError(f"--attention sets how a ViT's attention runs; {args.variant} has none: leave it out")
        if distributed and plans[0][1].metrics != ("accuracy",):
            raise ValueError("under torchrun only --metrics accuracy is distributed; measure size and speed in "
                             "one process")
        if args.save_predictions and len(plans) > 1:
            raise ValueError("--save-predictions names one file: give one --variant at a time")
        if "accuracy" in plans[0][1].metrics:
            eval_opts.check()
            if eval_opts.workers > 0:  # before the speed timing, not at the evaluation's loader (a review)
                enough_open_files(eval_opts.workers)
        else:
            eval_opts.check_values()
            if unread := eval_opts.unread():
                raise ValueError(f"{', '.join(unread)} {'sets' if len(unread) == 1 else 'set'} how accuracy is "
                                 f"measured; --metrics {','.join(plans[0][1].metrics)} measures none: add accuracy "
                                 "or leave them out")
        if args.save_predictions:
            check_folder(args.save_predictions.parent, "--save-predictions")
            check_destination(args.save_predictions)  # also inside measure(); here with the other up-front checks
        if procs.main:
            check_folder(args.results_dir, "--results-dir")
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ctrl_c = _CtrlC()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in before.items():
        if handler is not signal.SIG_IGN:  # a caller that ignores Ctrl-C (nohup, `cmd &` in a script) keeps doing so
            signal.signal(s, outside_imports(ctrl_c))
    records: list = []
    try:
        code = _measure_plans(args, plans, eval_opts, procs, ctrl_c, records)
        answer_deferred_stop()  # a stop still waiting on an import: answered here, with the message below
    except KeyboardInterrupt as exc:
        if not records:
            raise
        lost = f" during {plans[len(records)][0].name}" if len(records) < len(plans) else ""
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nbench run: {how}{lost}; the {len(records)} record(s) before it were written, each whole",
              file=sys.stderr)
        code = (143 if isinstance(exc, Terminated) else 130) if lost else 0  # after the last record it cost nothing
    finally:
        try:
            answer_deferred_stop()  # leaving by an exception too: never left waiting for an unrelated moment
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)
    if args.json and records:  # once, whatever stopped the run: JSON Lines, one record per line
        sys.stdout.write("".join(json.dumps(json.loads(r.to_json())) + "\n" for r in records))
    return code


class _CtrlC:
    """SIGINT raises KeyboardInterrupt as Python's own handler does (SIGTERM `Terminated`), and remembers it: Python
    ignores an exception raised inside a weakref or GC callback ("Exception ignored in ... WeakValueDictionary"), and
    a search interrupted there went on to write its record (hostile pass, 1 of 9 double Ctrl-Cs)."""

    def __init__(self) -> None:
        self.seen: type[KeyboardInterrupt] | None = None

    def __call__(self, signum, frame) -> None:
        self.seen = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        raise self.seen


def _measure_plans(args: argparse.Namespace, plans: list, eval_opts, procs, ctrl_c: _CtrlC,
                   records: list) -> int | None:
    """Measure each (variant, settings), write its record and add it to `records`; an interrupt keeps the records
    already written."""
    from bench import report
    from bench.best import NothingAgrees
    from bench.data import DataError
    from bench.errors import CheckpointError
    from bench.record import write_record
    from bench.run import BatchDoesNotFit, measure

    for variant, settings in plans:
        try:
            record = measure(variant, settings, eval_opts=eval_opts,
                             log=(lambda m: print(m, file=sys.stderr)) if procs.main else (lambda m: None))
            if ctrl_c.seen:  # a Ctrl-C Python swallowed (raised inside a weakref callback): still no record
                raise ctrl_c.seen
        except (BatchDoesNotFit, CheckpointError, DataError) as exc:
            raise UsageError(message_of(exc)) from None
        except RuntimeError as exc:  # torch's allocators: "can't allocate memory", "CUDA out of memory"
            if not any(words in str(exc) for words in ("allocate memory", "out of memory")):
                raise
            raise UsageError(f"{variant.name}: batch {settings.batch_size} at {settings.img_size} px does not fit in "
                             f"this machine's memory ({str(exc).splitlines()[0][:160]}); give a smaller --batch-size"
                             + (f"; the {len(records)} record(s) before it were written" if records else "")) from None
        except NothingAgrees as exc:  # a fast wrong answer is no result: refused, not recorded
            print(f"bench run: {variant.name}: {exc}; no record was written", file=sys.stderr)
            return 1
        if not procs.main:
            continue
        if record.env.git_sha is None:  # said, not only left null in the record (a hostile pass ran without git)
            print(f"bench run: warning: {variant.name}'s record names no commit: git did not answer here, and "
                  "DEIT_BENCH_GIT_SHA is unset", file=sys.stderr)
        try:
            path = write_record(record, args.results_dir)
            records.append(record)  # counted at once: a Ctrl-C from here on must not say "no record was written"
        except OSError as exc:  # a disk that fills up, or a folder access() approved and mkdir refuses
            before = f"; the {len(records)} record(s) before it were written" if records else ""
            if isinstance(exc, StorageError):  # names the file, the free space and what to do; exit 2 as documented
                print(f"bench run: error: {exc}{before}", file=sys.stderr)
                return 2
            print(f"bench run: error: cannot write {variant.name}'s record into {args.results_dir}: "
                  f"{exc.strerror or exc}; it was not written{before}", file=sys.stderr)
            return 1
        if args.json:
            print(f"record written to {path}", file=sys.stderr)
            if record.metrics.get("timed_busy"):  # the summary's warning, which --json does not print
                print(f"bench run: warning: {variant.name} was timed while other processes kept "
                      f"{record.metrics.timed_other_cores:.1f} cores busy (timed_busy in the record)", file=sys.stderr)
            elif "timed_busy" in record.metrics and record.metrics.timed_busy is None:  # and its note (a review)
                print(f"bench run: note: {variant.name}: /proc/stat could not be read, so whether other processes used "
                      "the machine while it was timed is unknown (timed_busy: null)", file=sys.stderr)
        else:
            print(report.summary(record, variant))
            print(f"\nrecord: {path}\n")


def _request(args: argparse.Namespace) -> Request:
    def given(value, default):
        return default if value is None else value

    return Request(device=args.device, precision=args.precision, batch_size=args.batch_size, img_size=args.img_size,
                   protocol=given(args.protocol, Request.protocol), compile=args.compile is not None,
                   compile_mode=args.compile or Request.compile_mode, attention=args.attention, warmup=args.warmup,
                   iters=args.iters, metrics=given(args.metrics, Request.metrics),
                   max_batch_cap=given(args.max_batch_cap, Request.max_batch_cap), threads=args.threads,
                   budget_s=given(args.budget_s, Request.budget_s), best_s=args.best)


def _check_run_args(args: argparse.Namespace) -> None:
    """Variant names, metric names and numeric bounds (`Request.check`), before torch is imported (it takes
    seconds); `resolve_settings` checks the same again with the rest."""
    try:
        if any(not name.strip() for name in args.variant.split(",")):
            raise ValueError(f"--variant {args.variant!r} has an empty name; give names separated by commas, e.g. "
                             "deit_ti,deit_s")
        built = [resolve(name.strip()).name for name in args.variant.split(",")]
        if len(set(built)) < len(built):  # deit_ti,deit_ti (or an alias and its timm name) measured twice
            raise ValueError(f"--variant {args.variant} names {max(built, key=built.count)} twice; give each once")
        _request(args).check()
        if args.metrics is not None:  # without --metrics, --data adds accuracy: resolved with the device, later
            refuse_unread_timing({"--batch-size": args.batch_size, "--warmup": args.warmup, "--iters": args.iters,
                                  "--attention": args.attention, "--protocol": args.protocol,
                                  "--max-batch-cap": args.max_batch_cap, "--precision": args.precision,
                                  "--threads": args.threads, "--budget-s": args.budget_s}, _request(args).wanted())
        if (off := compile_switched_off()) and (args.compile is not None or args.best is not None):
            what = "--compile" if args.compile is not None else "--best (it searches compile modes)"
            raise ValueError(f"{off} in the environment turns torch.compile off, so {what} would time the eager model "
                             "under a compiled label: unset it, or drop the option")
        searched = args.batch_size == "max" or (args.batch_size is None and (args.best is not None or
                                                                             args.protocol == "paper"))
        if args.max_batch_cap is not None and not searched:  # it was stored beside a batch it never capped
            raise ValueError(f"--max-batch-cap caps --batch-size max and --best's batch search; "
                             f"{'--batch-size ' + str(args.batch_size) if args.batch_size else 'the protocol'} fixes the "
                             "batch, so it would go unread: drop it, or use --batch-size max or --best")
        if args.data is not None and not args.data.is_dir():  # before minutes of building and timing
            raise ValueError(f"--data {args.data} is not a folder")
        if args.data is not None and args.metrics is not None and "accuracy" not in _request(args).wanted() \
                and args.best is None:  # a folder that would go unread, silently
            raise ValueError(f"--data is read by --metrics accuracy and by --best's agreement check; --metrics "
                             f"{args.metrics} without --best would leave {args.data} unread: drop --data, add "
                             "accuracy to --metrics, or add --best")
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check(args: argparse.Namespace) -> int:
    from bench import gate

    return gate.run(args)


def _disagree(args: argparse.Namespace) -> None:
    from bench.disagree import disagreement, top1_columns

    try:
        columns, images, notes = top1_columns(args.predictions)
    except ValueError as exc:  # also a file that is not a torch file, or not one of ours
        raise UsageError(str(exc)) from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    matrix = disagreement(columns)
    if args.json:
        print(matrix.to_json(orient="index", indent=2))
    else:
        print(f"fraction of the {images:,} shared images classified differently (Table 4)\n")
        print(matrix.to_markdown(floatfmt=".3f"))


def _tables(args: argparse.Namespace) -> int | None:
    from bench import site

    if not args.records.exists():
        raise UsageError(f"--records {args.records} does not exist")
    if args.no_figures and args.figures is not None:  # it was ignored in silence (a hostile pass)
        raise UsageError(f"--figures {args.figures} with --no-figures: no figure is drawn; give one of them")
    args.figures = args.figures or args.out.parent / "figures"  # never the repository's when --out is elsewhere
    check_folder(args.out, "--out")
    check_folder(args.figures, "--figures")
    # the tables, the page and constraints.txt were written among the records they describe (a hostile pass)
    if args.records.is_dir():
        for name, folder in (("--out", args.out), ("--out's parent (the page)", args.out.parent),
                             ("--figures", args.figures)):
            if folder.resolve().is_relative_to(args.records.resolve()):
                raise UsageError(f"{name} {folder} is inside --records {args.records}: what bench tables writes would "
                                 "sit among the records it reads; write it elsewhere, e.g. --out results/tables")
    try:
        done = site.regenerate(args.records, args.out, args.figures, draw=not args.no_figures,
                               warn=lambda line: print(f"bench tables: warning: {line}", file=sys.stderr))
    except UnicodeEncodeError as exc:  # a name of bytes that are not UTF-8: "'utf-8' codec can't encode character
        # '\udcff' in position 59", naming nothing (a hostile pass)
        around = exc.object[max(0, exc.start - 60):exc.end + 20] if isinstance(exc.object, str) else ""
        raise UsageError(f"cannot write a name that is not UTF-8 ({around!r}): the tables and the page name their "
                         "records' files; rename the file or folder") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt as exc:  # before the files were put in place (site.regenerate)
        terminated = isinstance(exc, Terminated)
        print(f"\nbench tables: {'terminated (SIGTERM)' if terminated else 'interrupted'}; nothing was replaced",
              file=sys.stderr)
        return 143 if terminated else 130
    print(f"{done.records} records -> {len(done.written)} files in {args.out}" +
          ("" if args.no_figures else f", {args.figures}") + f" and {args.out.parent} ("
          + ("constraints.txt" if args.no_figures else "index.html, constraints.txt") + ")"
          + (f"; {done.skipped} unreadable record file(s) left out, named above: their rows may read 'not run'"
             if done.skipped else "") + ("; interrupted once every file was written" if done.interrupted else ""))
    page = args.out.parent / "index.html"
    if args.no_figures and page.exists():  # rewritten tables under an old page, without a word (a hostile pass)
        print(f"bench tables: warning: {page} and its figures were left as they were and may no longer match "
              "these tables; run without --no-figures to rewrite them", file=sys.stderr)


def _campaign(args: argparse.Namespace) -> int:
    from bench import campaign
    from bench.processes import resolve_device

    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {args.device!r}: accepted auto, cuda, cpu")
    try:  # before anything runs: a machine without a GPU fails here, not in every measurement of the plan
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"{exc}; the dry run works on a CPU: --device cpu --dry-run") from None
    if device == "cpu" and not args.dry_run:
        raise UsageError("the campaign measures a GPU; on a CPU run it with --dry-run (the debug models)")
    if not math.isfinite(args.budget_s) or args.budget_s < 60:
        raise UsageError(f"--budget-s must be at least 60, got {args.budget_s:g}")
    if (off := compile_switched_off()) is not None:  # its compiled steps and timm's --torchcompile would time the
        raise UsageError(f"{off} in the environment turns torch.compile off, and the campaign's plan compiles: unset "
                         "it")  # eager model under compiled labels (a review)
    check_folder(args.out, "--out")
    try:
        call = campaign.Call(args.out, device, args.budget_s, args.dry_run, args.timm_benchmark, args.previous,
                             args.force, args.keep_work)
        state = campaign.run(call, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except campaign.Stopped as exc:  # not "no record was written": say what was kept and where
        print(f"\nbench campaign: {exc}", file=sys.stderr)
        return exc.code
    print(campaign.summary(state))
    print(f"archive: {args.out / campaign.ARCHIVE}")
    return 1 if any(o.status == "failed" for o in state.outcomes.values()) else 0


def _ls(args: argparse.Namespace) -> None:
    from bench import report

    print(report.registry_table(args.role))


def main(argv: list[str] | None = None) -> int:
    plain_streams()
    args = _parser().parse_args(argv)
    with stop_handlers_restored():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        with sigterm_interrupts():
            code = args.func(args) or 0
    except UsageError as exc:
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        exit_at_once_on_another_stop()  # the first stop was answered: a second one ends the exit, quietly
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nbench {args.command}: {how}" + ("; no record was written" if args.command == "run" else ""),
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # `bench ls | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    finally:
        if "torch.distributed" in sys.modules and sys.modules["torch.distributed"].is_initialized():
            sys.modules["torch.distributed"].destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
