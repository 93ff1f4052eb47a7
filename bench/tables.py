"""`bench tables`: the paper's tables regenerated from result records, ours beside the paper's numbers.

A pure function of the records: the same records give byte-identical files (no clocks, fixed order). A row
without a record says "not run"; a paper number never stands in for ours. Accuracy of `bench` records counts
only for official or hub weights (records of checkpoints made here say they are not reproductions).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import paper
from bench.ablations import ABLATIONS
from bench.protocols import TIMING_PROTOCOLS
from bench.record import Record
from bench.registry import VARIANTS
from bench.store import write_text_atomic
from bench.trained import amp_of, machine_of, train_runs

NOT_RUN = "not run"  # what we did not measure
PAPER_NONE = "–"  # what the paper does not print, as it prints it
DEIT = ("deit_ti", "deit_s", "deit_b", "deit_b_384", "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384")


@dataclass(frozen=True)
class Table:
    name: str  # file stem under results/tables/
    title: str
    frame: pd.DataFrame
    footer: tuple[str, ...]


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return NOT_RUN if value is None else format(value, spec)


def _paper(value: float | None, spec: str = ".1f") -> str:
    """A paper cell: its number, or the paper's own "–" where it prints none ("not run" is for what we measure)."""
    return PAPER_NONE if value is None else format(value, spec)


def _mean_std(values: list[float]) -> str:
    if not values:
        return NOT_RUN
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


class FooterLine(str):
    """A footer line that also holds the records it counts, so the results page can list them (bench/site.py);
    written out, it is the plain line."""

    records: tuple[Record, ...] = ()

    @classmethod
    def of(cls, text: str, records: list[Record]) -> FooterLine:
        line = cls(text)
        line.records = tuple(records)
        return line


def footer(records: Iterable[Record]) -> tuple[str, ...]:
    """Hardware, software and protocol of the records a table used, each distinct value once; the first line
    holds the records themselves (`FooterLine`)."""
    records = list(records)
    if not records:
        return ("No records: every 'ours' cell is not run.",)
    def distinct(fn):
        return ", ".join(sorted({str(fn(r)) for r in records}))
    return (FooterLine.of(f"{len(records)} records. Hardware: {distinct(machine_of)} "
                          f"(threads: {distinct(lambda r: r.env.num_threads)}).", records),
            f"Software: torch {distinct(lambda r: r.env.torch)}, timm {distinct(lambda r: r.env.timm)}; "
            f"git {distinct(lambda r: (r.env.git_sha or '?')[:7] + ('+dirty' if r.env.git_dirty else ''))}.",
            f"Protocol: {distinct(_protocol)}.")


def _protocol(r: Record) -> str:
    s = r.settings
    if r.kind == "train":
        c = s["config"]
        return f"train {c['epochs']} epochs, global batch {s['global_batch_size']}, amp {amp_of(r)}, {s['device']}"
    if r.kind == "disagree":
        return f"final top-1 of {' / '.join(s['experiments'].values())} ({s['suite']})"
    return f"{s.get('protocol')} {s.get('precision')} batch {s.get('batch_size')} {s.get('stat')} on {s.get('device')}"


def latest(records: list[Record], variant: str, *, img_size: int | None = None, protocol: str | None = None,
            key: str = "infer_img_per_s", column: SpeedKey | None = None) -> Record | None:
    """The newest bench record of a variant with metric `key`; `column` keeps only one machine and precision. A
    timing shorter than its protocol's loop is no speed figure, but its params and GMACs are as good as any."""
    hits = [r for r in records if r.kind == "bench" and r.variant == variant and key in r.metrics
            and (img_size is None or r.settings.img_size == img_size)
            and (protocol is None or r.settings.protocol == protocol)
            and (column is None or speed_key(r) == column) and (not key.startswith("infer_") or _full_loop(r))]
    # a batch-size sweep's records (bench run --batch-size N) must not replace the protocol's own batch in a
    # column that other rows fill at that batch: prefer records at the protocol's default for their device
    usual = [r for r in hits if _at_protocol_batch(r)]
    return (usual or hits)[-1] if hits else None


def _full_loop(r: Record) -> bool:
    """At least its protocol's warm-up and timed forwards: a `--warmup 0 --iters 1` smoke test timed a one-off setup
    (8 im/s against 99) and, as the newest record, replaced a proper run in the protocol's column (a hostile pass).
    Records that time nothing (size, accuracy) have nothing to check."""
    protocol = TIMING_PROTOCOLS.get(r.settings.protocol)
    device = str(r.settings.device or "").split(":")[0]
    if protocol is None or "infer_img_per_s" not in r.metrics or device not in protocol.warmup:
        return True
    warmup, iters = r.settings.get("warmup"), r.settings.get("iters")
    return (warmup is None or warmup >= protocol.warmup[device]) and (iters is None or iters >= protocol.iters[device])


def _at_protocol_batch(r: Record) -> bool:
    protocol = TIMING_PROTOCOLS.get(r.settings.protocol)
    if protocol is None:
        return False
    default = protocol.batch_size.get(str(r.settings.device or "").split(":")[0])
    return r.settings.batch_policy == "max" if default == "max" else r.settings.batch_size == default


def _official_accuracy(records: list[Record], variant: str, img_size: int) -> Record | None:
    """The newest accuracy of official or hub weights measured in fp32 (the paper's precision, and what `bench run`
    evaluates in on every machine unless told otherwise: a bf16 top-1 depends on the CPU that ran it)."""
    hits = [r for r in records if r.kind == "bench" and r.variant == variant and "top1" in r.metrics
            and r.settings.img_size == img_size and r.accuracy_precision == "fp32"
            and not any("not an official release" in n for n in r.notes)]
    return hits[-1] if hits else None


def table5(records: list[Record]) -> Table:
    """Table 1/5: the DeiT variants; size and speed from `bench run` records, accuracy from official weights. The
    paper prints parameters in whole millions and no FLOPs: exact counts and GMACs are ours (timm's models)."""
    cells = [(name, VARIANTS[name].img_size) for name in DEIT]
    speed, used = _speed_columns(records, cells)
    rows = []
    for i, (name, img_size) in enumerate(cells):
        p = VARIANTS[name].paper
        acc = _official_accuracy(records, name, img_size)
        size = latest(records, name, img_size=img_size, key="params")  # a speed-only record has no size
        used = _unique([*used, size, acc])
        params = size.metrics.params if size else None
        rows.append({"model": p.label, "params paper (M)": f"{p.params_m:g}", "params ours": _fmt(params, ","),
                     "paper's M from ours": _paper_millions(params, p.params_m),
                     "GMACs ours": _fmt(size and size.metrics.gmacs, ".3f"), "im/s paper (V100)": f"{p.img_per_s:.1f}",
                     **{header: _speed_cell(column[i], header) for header, column in speed.items()},
                     "top-1 paper": f"{p.top1:.1f}", "top-1 ours": _fmt(acc and acc.metrics.top1, ".2f"),
                     "ReaL paper": _paper(p.real), "ReaL ours": _fmt(acc and acc.metrics.real_top1, ".2f"),
                     "V2 paper": _paper(p.v2)})
    return Table("table5_variants", "Table 1/5: DeiT variants", pd.DataFrame(rows), SPEED_NOTES + footer(used))


def table5_comparison(records: list[Record]) -> Table:
    """Table 5's other networks (ResNets, RegNetYs, EfficientNets, ViTs): the paper's numbers beside our size and
    speed records of timm's implementation, and whether the paper's parameter count (whole millions) is ours
    truncated or rounded."""
    cells = [(name, VARIANTS[name].img_size) for name in paper.TABLE5_COMPARISON]
    speed, used = _speed_columns(records, cells)
    rows = []
    for i, (name, img_size) in enumerate(cells):
        v, p = VARIANTS[name], VARIANTS[name].paper
        size = latest(records, name, img_size=img_size, key="params")
        used = _unique([*used, size])
        params = size.metrics.params if size else None
        rows.append({"model": p.label, "timm model": v.model, "image size": img_size,
                     "params paper (M)": f"{p.params_m:g}", "params ours": _fmt(params, ","),
                     "paper's M from ours": _paper_millions(params, p.params_m),
                     "GMACs ours": _fmt(size and size.metrics.gmacs, ".3f"), "im/s paper (V100)": f"{p.img_per_s:.1f}",
                     **{header: _speed_cell(column[i], header) for header, column in speed.items()},
                     "top-1 paper": _paper(p.top1), "ReaL paper": _paper(p.real), "V2 paper": _paper(p.v2)})
    return Table("table5_comparison", "Table 5: convnets and ViT against DeiT (the DeiT rows: table5_variants)",
                 pd.DataFrame(rows), SPEED_NOTES + footer(used))


def _paper_millions(params: int | None, paper_m: float | None) -> str:
    """Whether the paper's whole-million parameter count is ours truncated or rounded (`paper.params_rounding`),
    else how far ours is from it."""
    if params is None or paper_m is None:
        return NOT_RUN
    how = paper.params_rounding(params, paper_m)
    return f"yes, {how}" if how else f"no: ours {params / 1e6:.2f} M ({100 * (params / 1e6 / paper_m - 1):+.1f} %)"


def table1(records: list[Record]) -> Table:
    """Table 1: the DeiT variants' architecture (the paper's), with our parameter count and throughput from records."""
    cells = [(name, VARIANTS[name].img_size) for name in paper.TABLE1]
    speed, used = _speed_columns(records, cells, protocols=("timm",))
    rows = []
    for i, (name, (dim, heads, layers)) in enumerate(paper.TABLE1.items()):
        v, p = VARIANTS[name], VARIANTS[name].paper
        size = latest(records, name, img_size=v.img_size, key="params")
        used = _unique([*used, size])
        rows.append({"model": p.label, "embedding dim": dim, "heads": heads, "layers": layers,
                     "params paper": f"{p.params_m:g}M", "params ours": _fmt(size and size.metrics.params, ","),
                     "resolution": v.img_size, "im/s paper (V100)": f"{p.img_per_s:.0f}",
                     **{header: _speed_cell(column[i], header) for header, column in speed.items()}})
    return Table("table1_architecture", "Table 1: DeiT variants (patch 16, MLP ratio 4, head dim 64)",
                 pd.DataFrame(rows), SPEED_NOTES + footer(used))


SpeedKey = tuple[str, int, str]  # (machine and torch, torch threads, precision): what one speed column holds
SPEED_NOTES = ("Each 'im/s ours' column holds one timing protocol, one machine, one torch version, one precision and "
               "one thread count, named in its header; a record from another machine or torch adds a column and "
               "changes no other.",
               "Each 'im/s ours' cell is one run, not a comparison: on these shared VMs six back-to-back runs of "
               "DeiT-B spanned 8 %, and two runs of one model hours apart differed by -24 to +31 % (README, "
               "results/REPORT.md), so a difference between two cells of a column within that drift is not resolved "
               "(a distilled model shown faster than its plain twin is such a case). Rank models by paired rounds: "
               "`bench run --metrics relspeed` times each against one reference workload, alternating.")


def speed_key(r: Record) -> SpeedKey:
    """The machine, torch and precision of a speed record: cells of one column, or points of one line, share it.
    The torch version is part of it: records from before fingerprints name only the CPU, and two sessions' "AMD
    EPYC [ISA not recorded]" under torch 2.15.0 and 2.14.1 stood in one column as if timed alike (an audit)."""
    return f"{machine_of(r)}, torch {str(r.env.torch).split('+')[0]}", r.env.num_threads, r.settings.precision


def _speed_columns(records: list[Record], cells: list[tuple[str, int]], protocols: tuple[str, ...] = ("timm", "paper")
                   ) -> tuple[dict[str, list[Record | None]], list[Record]]:
    """Our throughput of each (variant, image size) in `cells`: a column per protocol, machine, precision and thread
    count, each header naming them once. A column never mixes machines or precisions, so a record from
    a new machine adds its own column and leaves the others byte for byte; columns of one protocol stand side by
    side, the machine measured first on the left. A protocol without records keeps one column of 'not run'.
    Returns the columns and the records they hold."""
    columns: dict[str, list[Record | None]] = {}
    for protocol in protocols:
        hits = sorted((r for r in records if r.kind == "bench" and "infer_img_per_s" in r.metrics and timed_as_protocol(r)
                       and r.settings.protocol == protocol and (r.variant, r.settings.img_size) in cells
                       and _full_loop(r)),  # a header names no machine whose every timing was a smoke test
                      key=lambda r: r.created)
        first_seen = {speed_key(r): None for r in hits}  # insertion order: the machine measured first comes first
        for machine_name, threads, precision in first_seen:
            quiet = [r for r in hits if not r.metrics.get("timed_busy")]  # a busy run never hides a quiet one,
            known = [r for r in quiet if not load_unknown(r)]  # nor one of unknown load a quiet one (a review)
            column = [next((r for rs in (known, quiet, hits) if (r := latest(
                rs, v, img_size=s, protocol=protocol, column=(machine_name, threads, precision))) is not None), None)
                for v, s in cells]
            batches = {r.settings.batch_size for r in column if r is not None}
            batch = f"batch {batches.pop()}, " if len(batches) == 1 else ""
            threads_used = f"{threads} threads" if threads else "threads not recorded"
            columns[f"im/s ours, {protocol} protocol: {machine_name}, {precision}, {batch}{threads_used}"] = column
        if not first_seen:
            columns[f"im/s ours, {protocol} protocol"] = [None] * len(cells)
    return columns, _unique(r for column in columns.values() for r in column if r is not None)


def _weights_note(search: dict) -> str:
    """Random weights agree with fp32 on the numerics, not on what a trained model sees in the images (a hostile
    pass: "of 32 real images" read like an accuracy check)."""
    weights = search.get("weights")
    return ", random weights: numerics only" if weights in (None, "random initialisation") else ""


def timed_as_protocol(r: Record) -> bool:
    """Timed as the protocol times: eager, timm's fused attention. A compiled or `--best` record is not the protocol's
    figure: it goes to `table_best_speed`, even when its search chose eager (its batch and its trials were searched,
    not the protocol's)."""
    return (not r.settings.compile and r.settings.get("attention") in (None, "sdpa")
            and not r.settings.get("search"))


def table_best(records: list[Record]) -> Table:
    """The fastest setting `bench run --best` found per model and machine, and how far it is from that machine's
    measured GEMM peak: what an engineer choosing hardware compares."""
    # oldest first, and a busy search before every quiet one: the newest quiet search wins, a busy one only alone
    hits = sorted((r for r in records if r.kind == "bench" and r.settings.get("search")),
                  key=lambda r: (not _busy_search(r), r.created))
    newest = {(r.variant, r.settings.img_size, machine_of(r), r.env.num_threads): r for r in hits}
    rows = []
    for (variant, img_size, machine_name, threads), r in sorted(newest.items(), key=lambda kv: kv[0][:3]):
        m, s, check = r.metrics, r.settings, r.settings.search["agreement"][-1]
        rows.append({
            "model": variant, "img": img_size, "machine": f"{machine_name}, {threads} threads",
            "setting": f"{s.precision}, compile {s.get('compile_mode', 'default' if s.compile else 'off')}, "
                       f"{s.get('attention') or 'no'} attention, batch {s.batch_size}"
                       + ("; busy machine: measure again" if _busy_search(r) else ""),
            "im/s": f"{m.infer_img_per_s:,.1f}", "TFLOP/s": _fmt(m.achieved_tflops, ".3f"),
            "of measured peak": "" if m.mfu_measured is None else f"{100 * m.mfu_measured:.0f} % of "
                                f"{m.peak_tflops_measured:.3g} ({m.peak_column})",
            "top-1 agreement with fp32 eager": f"{100 * check['top1_agreement']:.1f} % of {check['images']} "
                                               + ("real images" if "noise" not in check["inputs"] else "noise images")
                                               + _weights_note(s.search),
            "settings tried": str(sum(t["stage"] != "confirm" for t in s.search["trials"]))})
    if not rows:
        rows.append({"model": NOT_RUN})
    notes = ("One row per model and machine: the newest `bench run --best` record, its chosen setting timed with the "
             "full protocol; the record lists every setting tried (docs/benchmarking.md).",
             "TFLOP/s: 2 FLOPs per MAC of the forward at the row's im/s; the peak is that machine's measured dense-GEMM "
             "peak in the precision that bounds the setting (bench/peak.py).")
    return Table("table_best_speed", "The fastest honest setting per machine (bench run --best)", pd.DataFrame(rows),
                 notes + footer(list(newest.values())))


def load_unknown(r: Record) -> bool:
    """A CPU timing made where /proc/stat could not be read: whether the machine was busy is not known."""
    return "timed_busy" in r.metrics and r.metrics.timed_busy is None and r.metrics.get("timer") == "perf_counter"


def _busy_search(r: Record) -> bool:
    return bool(r.settings.search.get("busy") or r.metrics.get("timed_busy"))


def _unique(records: Iterable[Record | None]) -> list[Record]:
    """Records in order, each once, none of the Nones (records hold dicts: not hashable)."""
    unique: list[Record] = []
    for r in records:
        unique += [] if r is None or r in unique else [r]
    return unique


def _speed_cell(r: Record | None, header: str) -> str:
    """A throughput without its machine (the column's header names it); its batch where the header does not."""
    if r is None:
        return NOT_RUN
    speed = r.metrics.infer_img_per_s  # two significant digits under 1 im/s: 0.27 and 0.30 are not both "0.3"
    shown = f"{speed:,.1f}" if speed >= 1 else f"{speed:.2g}"
    shown += " (busy machine)" if r.metrics.get("timed_busy") else " (load unknown)" if load_unknown(r) else ""
    return shown if f"batch {r.settings.batch_size}," in header else f"{shown} (batch {r.settings.batch_size})"


def table10(records: list[Record]) -> Table:
    """Table 10: DeiT-B trained at 224 and fine-tuned to each test size, 160/224/320/384 (`bench run --variant deit_b
    --img-size N`, with that size's checkpoint for the top-1: a 224 checkpoint's position embedding fits no other)."""
    cells = [("deit_b", size) for size in paper.TABLE10]
    speed, used = _speed_columns(records, cells)
    rows = []
    for i, (size, (paper_speed, top1)) in enumerate(paper.TABLE10.items()):
        acc = _official_accuracy(records, "deit_b", size)
        used = _unique([*used, acc])
        rows.append({"test size": size, "im/s paper (V100)": f"{paper_speed:.2f}",
                     **{header: _speed_cell(column[i], header) for header, column in speed.items()},
                     "top-1 paper": f"{top1:.1f}", "top-1 ours": _fmt(acc and acc.metrics.top1, ".2f")})
    return Table("table10_resolution", "Table 10: DeiT-B at other test resolutions", pd.DataFrame(rows),
                 SPEED_NOTES + footer(used))


def table2(records: list[Record]) -> Table:
    """Table 2: the RegNetY teachers (their size/speed from bench records) and the DeiT-B⚗ students they train."""
    cells = [(name, VARIANTS[name].img_size) for name in paper.TABLE2_STUDENTS]
    speed, used = _speed_columns(records, cells, protocols=("timm",))
    rows = []
    for i, (name, (student, student_384)) in enumerate(paper.TABLE2_STUDENTS.items()):
        trained = train_runs(records, "deit_b_hard", teacher=name)
        used += trained
        rows.append({"teacher": VARIANTS[name].paper.label, "teacher top-1 paper": f"{VARIANTS[name].paper.top1:.1f}",
                     **{header.replace("im/s ours", "teacher im/s ours"): _speed_cell(column[i], header)
                        for header, column in speed.items()},
                     "student top-1 paper": f"{student:.1f}",
                     "student top-1 ours": _mean_std([r.metrics.final_val_top1 for r in trained]),
                     "student ↑384 paper": f"{student_384:.1f}"})
    return Table("table2_teachers", "Table 2: teachers for DeiT-B⚗", pd.DataFrame(rows), SPEED_NOTES + footer(used))


def check_record(r: Record) -> None:
    """What the tables read beyond the schema's types (`load_records(check=...)`): a Table-4 record's matrix holds
    every pair of Table 4's models; a size or speed is positive and an accuracy a percentage (a hand-edited
    `infer_img_per_s: -5` was printed, a hostile pass). Raises ValueError naming what is wrong."""
    if r.kind == "bench":
        if r.variant not in VARIANTS:  # its rows are the registry's: it was left out without a word (a hostile pass)
            raise ValueError(f"variant {r.variant!r:.60} is not in the registry (bench ls): no table has a row for it")
        for key, value in r.metrics.items():
            positive = key in ("params", "gmacs") or key.startswith(("infer_img_per_s", "latency_ms"))
            percent = key.startswith(("top1", "top5", "real_top1", "real_top5"))
            if isinstance(value, (int, float)) and (positive and value <= 0 or percent and not 0 <= value <= 100):
                raise ValueError(f"metrics.{key} = {value}: must be {'positive' if positive else 'in [0, 100]'}")
    if r.kind == "disagree":
        matrix = r.metrics.disagreement or {}
        missing = [f"{a} × {b}" for a in paper.TABLE4_MODELS for b in paper.TABLE4_MODELS
                   if not isinstance(matrix.get(a), dict) or b not in matrix[a]]
        if missing:
            raise ValueError(f"metrics.disagreement lacks {', '.join(missing[:3])}"
                             + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))


def same_instant_conflicts(found: list[tuple[Path, Record]]) -> list[str]:
    """Records of one model on one machine made at the same instant whose settings or metrics differ, named: a cell
    shows the newest record, and between these the file name decided, without a word (a hostile pass; two
    concurrent `bench run`s wrote records of the same second)."""
    seen: dict[tuple, tuple[Path, Record]] = {}
    out = []
    for path, r in found:
        if r.kind != "bench":
            continue
        fingerprint = r.env.fingerprint or {}
        what = (r.variant, r.settings.img_size, r.created, fingerprint.get("id") or r.env.device_name,
                r.settings.protocol, r.settings.precision, r.settings.batch_size, tuple(r.settings.metrics or ()))
        if what in seen and (seen[what][1].metrics, seen[what][1].settings) != (r.metrics, r.settings):
            out.append(f"{seen[what][0]} and {path} are records of {r.variant} on one machine made at the same "
                       f"instant ({r.env.created}) that differ; a cell shows one of them: keep one")
        seen.setdefault(what, (path, r))
    return out


def build_all(records: list[Record]) -> list[Table]:
    from bench.trained_tables import ablation, table3, table4, table7, table8, table9  # they import this module's Table

    return [table1(records), table5(records), table5_comparison(records), table10(records), table2(records), table3(records, "mini"), table3(records, "cifar10"),
            table3(records, "imagenet"), table4(records, "mini"), table4(records, "cifar10"), table4(records, "imagenet"),
            table7(records), table8(records), table9(records), *(ablation(records, spec) for spec in ABLATIONS),
            table_best(records)]


def write(table: Table, out_dir: Path) -> list[Path]:
    """Markdown, CSV and LaTeX files for one table (deterministic content)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # a "|" in a cell (a CPU's name from a record) split its column: 20 pipes in the header, 19 in a row (a hostile
    # pass); escaped, Markdown shows it as text
    cells = table.frame.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    cells.columns = [str(c).replace("|", "\\|") for c in cells.columns]
    md = f"### {table.title}\n\n{cells.to_markdown(index=False, disable_numparse=True)}\n\n"
    md += "".join(f"- {line}\n" for line in table.footer)
    tex = table.frame.to_latex(index=False, caption=table.title, label=f"tab:{table.name}")
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("md", "csv", "tex")]
    for path, text in zip(paths, (md, table.frame.to_csv(index=False), tex)):
        write_text_atomic(path, text)
    return paths
