"""`bench check` as a user runs it: records against baselines (bench/check.py, bench/baselines.py), the working
tree against a reference measured now (bench/ab.py), or both; the verdicts printed with what to do next, and the
exit code (0 pass, 1 regression, 2 usage, 3 inconclusive: docs/regression-gate.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

from bench import baselines, check
from bench.errors import UsageError, check_folder, kind_of
from bench.protocols import AB_ROUNDS
from bench.record import AB_ROUNDS_FILE, MAX_JSON_BYTES, other_file, read_regular_text
from bench.store import hold_folder

# The smallest slowdown the gate may be asked to tell from no change: below a percent, these machines' paired
# rounds cannot resolve it (docs/regression-gate.md: power), and a floor of 0 turns every noise into a verdict.
MIN_SPEED_FLOOR = 0.01


def run(args: argparse.Namespace) -> int:
    """`bench check`'s verdicts for its arguments, printed (or as JSON), and its exit code (bench/check.py)."""
    ab = args.against is not None or args.against_python is not None
    if args.baseline is None and not ab:
        raise UsageError("give --baseline (compare records with baselines) or --against REF / --against-python "
                         "PYTHON (measure the working tree against a reference now)")
    if ab and args.write_baseline:
        raise UsageError("--write-baseline writes a baseline from records; it does not go with --against")
    _refuse_unread(args, ab)
    args.speed_floor = check.Tolerances.speed_floor if args.speed_floor is None else args.speed_floor
    args.accuracy_tol = check.Tolerances.accuracy_points if args.accuracy_tol is None else args.accuracy_tol
    args.rounds = AB_ROUNDS if args.rounds is None else args.rounds
    if not (math.isfinite(args.speed_floor) and MIN_SPEED_FLOOR <= args.speed_floor < 1):
        # a floor of 0 (1e-400 reads as 0.0) undid the busy-machine rule, and an unchanged tree read as "improved"
        raise UsageError(f"--speed-floor must be a number from {MIN_SPEED_FLOOR} to below 1 (a fraction: 0.06 is "
                         f"6 %), got {args.speed_floor}")
    rows = _baseline_rows(args) if args.baseline is not None else []
    if args.baseline is not None and args.write_baseline:
        return 0
    if ab:
        rows += _ab_rows(args)
    return _report(args, rows)


def _refuse_unread(args: argparse.Namespace, ab: bool) -> None:
    """An option the chosen mode would not read is a usage error, not a silent no-op (a hostile pass: --speed-floor
    0.5 looked like it loosened a comparison with --baseline, whose stored floor decides; --ab-record wrote nothing)."""
    unread = [why for given, read, why in (
        (args.speed_floor is not None, ab or args.write_baseline, "--speed-floor is read by --against and stored by "
         "--write-baseline; a comparison with --baseline uses the floor stored in the baseline"),
        (args.accuracy_tol is not None, args.write_baseline, "--accuracy-tol is stored by --write-baseline; a "
         "comparison uses the tolerance stored in the baseline"),
        (args.rounds is not None, ab, "--rounds counts the rounds of --against"),
        (args.ab_record is not None, ab, "--ab-record writes the rounds of --against")) if given and not read]
    if unread:
        raise UsageError("; ".join(unread) + ": drop it, or add the option that reads it")


def _baseline_rows(args: argparse.Namespace) -> list:
    from bench.record import load_record_files

    if not args.current.exists():
        raise UsageError(f"--current {args.current} does not exist; give a record file or a folder of records")
    try:  # a gate must not pass or fail on a partial reading: a bad file stops it, named (types too)
        files = load_record_files(args.current, check=check.check_record)
    except ValueError as exc:
        where = f"cannot read the records in {args.current}: " if args.current.is_dir() else ""
        raise UsageError(f"{where}{exc}") from None
    if not files:
        raise UsageError(f"no records (*.json) in {args.current}; make some with `bench run`")
    conflict = check.same_instant_conflict(files) or check.exact_disagreement(files)
    if conflict:
        raise UsageError(conflict)
    records = [record for _, record in files]
    try:
        if args.write_baseline:
            if not (math.isfinite(args.accuracy_tol) and 0 <= args.accuracy_tol < 100):
                raise UsageError(f"--accuracy-tol must be a finite number in [0, 100), got {args.accuracy_tol}")
            _check_writable(args.baseline)
            _refuse_inside(args.baseline, args.current)
            tol = check.Tolerances(accuracy_points=args.accuracy_tol, speed_floor=args.speed_floor)
            # one writer at a time: two at once each kept the other's models from the exact.json they read, and the
            # second rename dropped the first's (a hostile pass; both said "1 entries", exit 0)
            with hold_folder(args.baseline) if baselines.is_folder(args.baseline) else contextlib.nullcontext():
                for line in baselines.write_baselines(records, args.baseline, tol):
                    print(f"baseline {line}")
            return []
        rows = check.compare(baselines.load_baselines(args.baseline), records)
        # passed over in silence beside "all 20 gates pass" (a hostile pass): named in the report and its JSON
        args.not_gated = sorted({check.record_key(r) for r in records if r.kind == "bench"} - {row.key for row in rows})
        if not rows:
            raise UsageError(f"nothing to gate: no model and metric of --baseline {args.baseline} is in the records "
                             f"of --current {args.current}, nor is one due there; a gate of nothing does not pass")
        return rows
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # unwritable or unreadable baseline paths: a usage problem (exit 2), never "regression"
        name = exc.filename or args.baseline
        raise UsageError(f"--baseline {args.baseline}: {exc.strerror or exc} ({name})") from None


def _ab_rows(args: argparse.Namespace) -> list:
    from bench import ab

    if not 6 <= args.rounds <= 100:
        raise UsageError(f"--rounds must be 6 to 100 (fewer give no 95 % interval; 100 take about half an hour), "
                         f"got {args.rounds}")
    if args.ab_record is not None:
        if args.ab_record.is_dir():
            raise UsageError(f"--ab-record {args.ab_record} is a folder; give a file name, e.g. {args.ab_record / 'ab.json'}")
        _refuse_to_replace(args.ab_record)
        check_folder(args.ab_record.parent, "--ab-record's folder")
    tol = check.Tolerances(speed_floor=args.speed_floor)
    result = ab.run(args.against, args.against_python, tol=tol, rounds=args.rounds,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(ab.describe(result), file=sys.stderr)
    if args.ab_record is not None:
        try:
            ab.write(result, args.ab_record)
        except OSError as exc:  # the verdict stands without its file: a full disk must not turn it into exit 2
            print(f"bench check: warning: the A/B record was not written: {exc}", file=sys.stderr)
    return ab.rows(result)


def _refuse_to_replace(path: Path) -> None:
    """The A/B record is written by renaming a new file over `path`: a FIFO, /dev/null (as root), the README or a
    run's record there would have been replaced (a hostile pass). Only an earlier A/B record may be, or an empty file
    (`mktemp`'s); a link is refused, since the rename would replace the link, not what it points to."""
    if not os.path.lexists(path):
        return
    refuse = f"--ab-record {path}"
    if path.is_symlink():
        raise UsageError(f"{refuse} is a symbolic link, which the record would replace; give the file itself or a new "
                         "name")
    if not path.is_file():
        raise UsageError(f"{refuse} is {kind_of(path)}, which the record would replace; give a new file name")
    size = path.stat().st_size
    if size == 0:
        return
    if size > MAX_JSON_BYTES:  # read whole to be identified: a checkpoint there was read into memory first
        raise UsageError(f"{refuse} exists ({size:,} bytes, more than an A/B record holds); give a new file name")
    try:
        data = json.loads(read_regular_text(path))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not JSON"
        raise UsageError(f"{refuse} exists and cannot be read as an A/B record ({why}); give a new file name") from None
    if other_file(data) != AB_ROUNDS_FILE:
        raise UsageError(f"{refuse} exists and is not an A/B record; it would be replaced: give a new file name")


def _report(args: argparse.Namespace, rows: list) -> int:

    code = check.exit_code(rows)
    failed = sum(r.failed for r in rows)
    if args.json:
        print(json.dumps({"baseline": str(args.baseline) if args.baseline else None, "against": args.against,
                          "against_python": args.against_python, "failed": failed, "exit_code": code,
                          "not_gated": getattr(args, "not_gated", []),
                          "rows": [dict(r.__dict__, failed=r.failed) for r in rows]}, indent=2))
        return code
    print(check.format_rows(rows))
    if getattr(args, "not_gated", None):
        print(f"\nnot gated (no baseline entry): {', '.join(args.not_gated)}")
    counts = {v: sum(r.verdict == v for r in rows) for v in ("skipped", "inconclusive")}
    if failed:
        print(f"\n{failed} of {len(rows)} gates failed")
    elif counts["inconclusive"]:
        # each row's note says why and what would decide it (a quiet machine, more rounds, the baseline's batch); one
        # reason for all of them contradicted rows with another (a hostile pass)
        print(f"\n{counts['inconclusive']} of {len(rows)} gates inconclusive (exit 3): not decided; each row's note "
              "says why, and what would decide it")
    else:
        print(f"\nall {len(rows)} gates pass ({counts['skipped']} skipped)")
    if args.baseline is not None:
        _advise_a_speed_baseline(args, rows)
    return code


def _advise_a_speed_baseline(args: argparse.Namespace, rows: list) -> None:
    """The command that makes a speed baseline for the records' machine, where none matches it."""
    if check.unmatched_machines(rows, timed=False) and not check.unmatched_machines(rows, timed=True):
        sizes: dict[str, list[str]] = {}  # img size -> the baselined variants to time at it (keys: variant@size)
        for r in rows:
            if r.cause == "untimed machine":
                variant, _, img_size = r.key.partition("@")
                sizes.setdefault(img_size, []).append(variant)
        runs = "".join(f"  bench run --variant {','.join(sorted(v))}" + (f" --img-size {size}" if size else "")
                       + f" --metrics relspeed --results-dir {args.current}\n" for size, v in sorted(sizes.items()))
        print("\nthese records hold no relspeed measurement, so speed is not gated; to gate it on this machine, time "
              "it beside them and check again (where no speed baseline matches this machine, that check says how "
              f"to make one):\n{runs}  bench check --baseline {args.baseline} --current {args.current}")
    elif check.unmatched_machines(rows, timed=True):
        folder = args.baseline if args.baseline.is_dir() else args.baseline.parent
        if len({r.machine for r in rows if r.metric == check.SPEED_METRIC}) > 1:  # a baseline is one machine's
            print(f"\nno speed baseline matches some of these machines; to make one, put one machine's relspeed "
                  f"records alone in a folder and run (then commit the file):\n"
                  f"  bench check --write-baseline --baseline {folder} --current FOLDER")
        else:
            print(f"\nno speed baseline matches this machine; to make one from these records (then commit it), or "
                  f"gate without one (--against):\n"
                  f"  bench check --write-baseline --baseline {folder} --current {args.current}")


def _refuse_inside(baseline: Path, current: Path) -> None:
    """A baseline written among the records `--current` reads (they are read from every folder below it) is read as
    a record the next time, and every later check stopped at "record schema 2" (a hostile pass)."""
    if current.is_dir() and baseline.resolve().is_relative_to(current.resolve()):
        raise UsageError(f"--baseline {baseline} is inside --current {current}, whose *.json files are all read as "
                         "records: the baseline would be read as one next time; write it to a folder of its own, e.g. "
                         "results/baselines")


def _check_writable(path: Path) -> None:
    """A baseline path that cannot be written is a usage error before anything is computed."""

    if baselines.is_folder(path):
        check_folder(path, "--baseline")
    else:
        check_folder(path.parent, "--baseline's folder")
