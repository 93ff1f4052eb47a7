"""`bench`: measure DeiT models and report. Thin: parse, resolve, call, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import report
from bench.check import Tolerances
from bench.registry import resolve
from bench.run import METRICS, PROTOCOLS, BatchDoesNotFit, measure, resolve_settings
from bench.speed import PRECISIONS


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit code 2, no traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split(".")[0] + ".")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,ls,check}")

    run = sub.add_parser("run", help="measure one model and write a result record")
    run.add_argument("--variant", required=True,
                     help="registry alias (deit_b, …) or timm name, or a comma list (one record each); see `bench ls`")
    run.add_argument("--metrics", default="size,speed", help=f"comma list of {','.join(METRICS)} (default: both)")
    run.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    run.add_argument("--precision", default=None, choices=list(PRECISIONS),
                     help="fp32 (strict, TF32 off), tf32, pure bf16/fp16 weights, or autocast amp_bf16/amp_fp16")
    run.add_argument("--protocol", default="timm", choices=list(PROTOCOLS),
                     help="timm: fixed batch, median (default); paper: fp32, largest batch, mean of 30 runs")
    run.add_argument("--batch-size", default=None, help="images per forward, or 'max' (GPU only); "
                     "default 256 on cuda, 16 on cpu; the paper protocol defaults to max")
    run.add_argument("--img-size", type=int, default=None, help="input resolution (default: the variant's)")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (compile time not timed)")
    run.add_argument("--warmup", type=int, default=None, help="untimed forwards first (default 10 cuda, 2 cpu)")
    run.add_argument("--iters", type=int, default=None, help="timed forwards (default 40 cuda, 8 cpu; paper 30)")
    run.add_argument("--max-batch-cap", type=int, default=4096, help="upper bound of the --batch-size max search")
    run.add_argument("--results-dir", type=Path, default=Path("results/runs"), help="where the record goes")
    run.add_argument("--json", action="store_true", help="print the record (only) on stdout")
    run.set_defaults(func=_run)

    check = sub.add_parser("check", help="compare records with a baseline: exit 0 pass, 1 regression, 2 usage")
    check.add_argument("--baseline", type=Path, required=True, help="baseline JSON, e.g. results/baselines/cpu.json")
    check.add_argument("--current", type=Path, default=Path("results/runs"),
                       help="a record file or a folder of records (default results/runs)")
    check.add_argument("--write-baseline", action="store_true",
                       help="write --baseline from the --current records instead of comparing")
    check.add_argument("--speed-floor", type=float, default=Tolerances.speed_floor,
                       help="with --write-baseline: relative slowdown always tolerated (default 0.10)")
    check.add_argument("--accuracy-tol", type=float, default=Tolerances.accuracy_points,
                       help="with --write-baseline: tolerated |Δ top-1/top-5| in points (default 0.1)")
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    check.set_defaults(func=_check)

    ls = sub.add_parser("ls", help="list the registry: variants, teachers, debug models, paper numbers")
    ls.add_argument("--role", choices=["student", "teacher", "debug"], help="only entries of this role")
    ls.set_defaults(func=_ls)
    return parser


def _run(args: argparse.Namespace) -> None:
    from bench.record import write_record  # late: keeps `bench ls` and --help quick

    try:  # check every name and option before measuring anything
        plans = []
        for name in args.variant.split(","):
            variant = resolve(name.strip())
            plans.append((variant, resolve_settings(
                variant, device=args.device, precision=args.precision, batch_size=args.batch_size,
                img_size=args.img_size, protocol=args.protocol, compile=args.compile, warmup=args.warmup,
                iters=args.iters, metrics=args.metrics, max_batch_cap=args.max_batch_cap)))
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    records = []
    for variant, settings in plans:
        try:
            record = measure(variant, settings)
        except BatchDoesNotFit as exc:
            raise UsageError(str(exc)) from None
        path = write_record(record, args.results_dir)
        records.append(record)
        if args.json:
            print(f"record written to {path}", file=sys.stderr)
        else:
            print(report.summary(record, variant))
            print(f"\nrecord: {path}\n")
    if args.json:  # exactly the record; a JSON list of them when several variants were asked for
        sys.stdout.write(records[0].to_json() if len(records) == 1 else
                         "[\n" + ",\n".join(r.to_json().rstrip() for r in records) + "\n]\n")


def _check(args: argparse.Namespace) -> int:
    import json

    from bench import check
    from bench.record import load_records

    if not args.current.exists():
        raise UsageError(f"--current {args.current} does not exist; give a record file or a folder of records")
    try:
        records = load_records(args.current)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot read the records in {args.current}: {exc}") from None
    if not records:
        raise UsageError(f"no records (*.json) in {args.current}; make some with `bench run`")
    try:
        if args.write_baseline:
            tol = check.Tolerances(accuracy_points=args.accuracy_tol, speed_floor=args.speed_floor)
            baseline = check.make_baseline(records, args.baseline.stem, tol)
            check.write_baseline(baseline, args.baseline)
            print(f"baseline {args.baseline}: {len(baseline['entries'])} entries from {len(records)} records")
            return 0
        rows = check.compare(check.load_baseline(args.baseline), records)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    failed = sum(r.failed for r in rows)
    if args.json:
        print(json.dumps({"baseline": str(args.baseline), "failed": failed,
                          "rows": [dict(r.__dict__, failed=r.failed) for r in rows]}, indent=2))
    else:
        print(check.format_rows(rows))
        print(f"\n{failed} of {len(rows)} gates failed" if failed else f"\nall {len(rows)} gates pass "
              f"({sum(r.verdict == 'skipped' for r in rows)} skipped)")
    return 1 if failed else 0


def _ls(args: argparse.Namespace) -> None:
    print(report.registry_table(args.role))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = args.func(args) or 0
    except UsageError as exc:
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nbench {args.command}: interrupted; no record was written", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
