"""`bench tables`: the paper's tables regenerated from result records, ours beside the paper's numbers.

A pure function of the records: the same records give byte-identical files (no clocks, fixed order). A row
without a record says "not run"; a paper number never stands in for ours. Accuracy of `bench` records counts
only for official or hub weights (records of checkpoints made here say they are not reproductions).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import machine, paper
from bench.protocols import TIMING_PROTOCOLS
from bench.record import Record
from bench.registry import VARIANTS
from bench.scales import experiment_name
from bench.schema import CONFIG_BEFORE_FIELD
from bench.store import write_text_atomic

NOT_RUN = "not run"
DEIT = ("deit_ti", "deit_s", "deit_b", "deit_b_384", "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384")


@dataclass(frozen=True)
class Table:
    name: str  # file stem under results/tables/
    title: str
    frame: pd.DataFrame
    footer: tuple[str, ...]


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return NOT_RUN if value is None else format(value, spec)


def _mean_std(values: list[float]) -> str:
    if not values:
        return NOT_RUN
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def footer(records: Iterable[Record]) -> tuple[str, ...]:
    """Hardware, software and protocol of the records a table used, each distinct value once."""
    records = list(records)
    if not records:
        return ("No records: every 'ours' cell is not run.",)
    def distinct(fn):
        return ", ".join(sorted({str(fn(r)) for r in records}))
    return (f"{len(records)} records. Hardware: {distinct(machine_of)} "
            f"(threads: {distinct(lambda r: r.env.num_threads)}).",
            f"Software: torch {distinct(lambda r: r.env.torch)}, timm {distinct(lambda r: r.env.timm)}; "
            f"git {distinct(lambda r: (r.env.git_sha or '?')[:7] + ('+dirty' if r.env.git_dirty else ''))}.",
            f"Protocol: {distinct(_protocol)}.")


def machine_of(r: Record) -> str:
    """The record's machine as tables and figures name it: the CPU's name alone does not tell machines apart."""
    return machine.label(r.env.fingerprint, r.env.device_name)


def _amp(r: Record) -> str:
    """The precision a training run used (older records say only what was asked)."""
    return r.settings.amp or r.settings.config["amp"]


def _protocol(r: Record) -> str:
    s = r.settings
    if r.kind == "train":
        c = s["config"]
        return f"train {c['epochs']} epochs, global batch {s['global_batch_size']}, amp {_amp(r)}, {s['device']}"
    if r.kind == "disagree":
        return f"final top-1 of {' / '.join(s['experiments'].values())} ({s['suite']})"
    return f"{s.get('protocol')} {s.get('precision')} batch {s.get('batch_size')} {s.get('stat')} on {s.get('device')}"


def latest(records: list[Record], variant: str, *, img_size: int | None = None, protocol: str | None = None,
            key: str = "infer_img_per_s") -> Record | None:
    hits = [r for r in records if r.kind == "bench" and r.variant == variant and key in r.metrics
            and (img_size is None or r.settings.img_size == img_size)
            and (protocol is None or r.settings.protocol == protocol)]
    # a batch-size sweep's records (bench run --batch-size N) must not replace the protocol's own batch in a
    # column that other rows fill at that batch: prefer records at the protocol's default for their device
    usual = [r for r in hits if _at_protocol_batch(r)]
    return (usual or hits)[-1] if hits else None


def _at_protocol_batch(r: Record) -> bool:
    protocol = TIMING_PROTOCOLS.get(r.settings.protocol)
    if protocol is None:
        return False
    default = protocol.batch_size.get(str(r.settings.device or "").split(":")[0])
    return r.settings.batch_policy == "max" if default == "max" else r.settings.batch_size == default


def _official_accuracy(records: list[Record], variant: str, img_size: int) -> Record | None:
    hits = [r for r in records if r.kind == "bench" and r.variant == variant and "top1" in r.metrics
            and r.settings.img_size == img_size
            and not any("not an official release" in n for n in r.notes)]
    return hits[-1] if hits else None


def table5(records: list[Record]) -> Table:
    """Table 1/5: the DeiT variants; size and speed from `bench run` records, accuracy from official weights."""
    rows, used = [], []
    for name in DEIT:
        v, p = VARIANTS[name], VARIANTS[name].paper
        timm_run = latest(records, name, img_size=v.img_size, protocol="timm")
        paper_run = latest(records, name, img_size=v.img_size, protocol="paper")
        acc = _official_accuracy(records, name, v.img_size)
        size = latest(records, name, img_size=v.img_size, key="params")  # a speed-only record has no size
        used += [r for r in (size, timm_run, paper_run, acc) if r and r not in used]
        rows.append({
            "model": p.label, "params (paper)": f"{p.params:,}", "params (ours)": _fmt(size and size.metrics.params, ","),
            "GMACs (ours)": _fmt(size and size.metrics.gmacs, ".3f"),
            "im/s paper (V100)": f"{p.img_per_s:.1f}",
            "im/s ours, timm protocol": _run_speed(timm_run), "im/s ours, paper protocol": _run_speed(paper_run),
            "top-1 paper": f"{p.top1:.1f}", "top-1 ours": _fmt(acc and acc.metrics.top1, ".2f"),
            "ReaL paper": _fmt(p.real), "ReaL ours": _fmt(acc and acc.metrics.real_top1, ".2f"),
            "V2 paper": _fmt(p.v2),
        })
    return Table("table5_variants", "Table 1/5: DeiT variants", pd.DataFrame(rows), footer(used))


def table5_comparison(records: list[Record]) -> Table:
    """Table 5's other networks (ResNets, RegNetYs, EfficientNets, ViTs): the paper's numbers beside our size and
    speed records of timm's implementation, and whether its parameter count is the paper's (to the paper's
    rounding: within 1 M)."""
    rows, used = [], []
    for name in paper.TABLE5_COMPARISON:
        v, p = VARIANTS[name], VARIANTS[name].paper
        size = latest(records, name, img_size=v.img_size, key="params")
        timm_run = latest(records, name, img_size=v.img_size, protocol="timm")
        paper_run = latest(records, name, img_size=v.img_size, protocol="paper")
        used += [r for r in (size, timm_run, paper_run) if r and r not in used]
        params = size.metrics.params if size else None
        check = NOT_RUN if params is None else "yes" if abs(params / 1e6 - p.params_m) < 1 else \
            f"no: {100 * (params / 1e6 / p.params_m - 1):+.1f} %"
        rows.append({"model": p.label, "timm model": v.model, "image size": v.img_size,
                     "params paper (M)": f"{p.params_m:g}", "params ours": _fmt(params, ","),
                     "same size?": check, "GMACs ours": _fmt(size and size.metrics.gmacs, ".3f"),
                     "im/s paper (V100)": f"{p.img_per_s:.1f}", "im/s ours, timm protocol": _run_speed(timm_run),
                     "im/s ours, paper protocol": _run_speed(paper_run), "top-1 paper": _fmt(p.top1),
                     "ReaL paper": _fmt(p.real), "V2 paper": _fmt(p.v2)})
    return Table("table5_comparison", "Table 5: convnets and ViT against DeiT (the DeiT rows: table5_variants)",
                 pd.DataFrame(rows), footer(used))


def table1(records: list[Record]) -> Table:
    """Table 1: the DeiT variants' architecture (the paper's), with our parameter count and throughput from records."""
    rows, used = [], []
    for name, (dim, heads, layers) in paper.TABLE1.items():
        v, p = VARIANTS[name], VARIANTS[name].paper
        size = latest(records, name, img_size=v.img_size, key="params")
        speed = latest(records, name, img_size=v.img_size, protocol="timm")
        used += [r for r in (size, speed) if r and r not in used]
        rows.append({"model": p.label, "embedding dim": dim, "heads": heads, "layers": layers,
                     "params paper": f"{p.params_m:g}M", "params ours": _fmt(size and size.metrics.params, ","),
                     "resolution": v.img_size, "im/s paper (V100)": f"{p.img_per_s:.0f}",
                     "im/s ours, timm protocol": _run_speed(speed)})
    return Table("table1_architecture", "Table 1: DeiT variants (patch 16, MLP ratio 4, head dim 64)",
                 pd.DataFrame(rows), footer(used))


def _run_speed(r: Record | None) -> str:
    if r is None:
        return NOT_RUN
    speed = r.metrics.infer_img_per_s  # two significant digits under 1 im/s: 0.27 and 0.30 are not both "0.3"
    shown = f"{speed:,.1f}" if speed >= 1 else f"{speed:.2g}"
    return f"{shown} ({machine_of(r)}, {r.settings.precision}, b{r.settings.batch_size})"


def table10(records: list[Record]) -> Table:
    """Table 10: DeiT-B trained at 224, tested at 160/224/320/384 (`bench run --variant deit_b --img-size N`)."""
    rows, used = [], []
    for size, (speed, top1) in paper.TABLE10.items():
        timm_run = latest(records, "deit_b", img_size=size, protocol="timm")
        paper_run = latest(records, "deit_b", img_size=size, protocol="paper")
        acc = _official_accuracy(records, "deit_b", size)
        used += [r for r in (timm_run, paper_run, acc) if r]
        rows.append({"test size": size, "im/s paper (V100)": f"{speed:.2f}",
                     "im/s ours, timm protocol": _run_speed(timm_run), "im/s ours, paper protocol": _run_speed(paper_run),
                     "top-1 paper": f"{top1:.1f}", "top-1 ours": _fmt(acc and acc.metrics.top1, ".2f")})
    return Table("table10_resolution", "Table 10: DeiT-B at other test resolutions", pd.DataFrame(rows), footer(used))


def table2(records: list[Record]) -> Table:
    """Table 2: the RegNetY teachers (their size/speed from bench records) and the DeiT-B⚗ students they train."""
    rows, used = [], []
    for name, (student, student_384) in paper.TABLE2_STUDENTS.items():
        run = latest(records, name)
        trained = train_runs(records, "deit_b_hard", teacher=name)
        used += ([run] if run else []) + trained
        rows.append({"teacher": VARIANTS[name].paper.label, "teacher top-1 paper": f"{VARIANTS[name].paper.top1:.1f}",
                     "teacher im/s ours": _run_speed(run), "student top-1 paper": f"{student:.1f}",
                     "student top-1 ours": _mean_std([r.metrics.final_val_top1 for r in trained]),
                     "student ↑384 paper": f"{student_384:.1f}"})
    return Table("table2_teachers", "Table 2: teachers for DeiT-B⚗", pd.DataFrame(rows), footer(used))


def gap_to(values: list[float], base: list[float]) -> tuple[str, str]:
    """The difference of two rows' seed means, and whether it exceeds the seed spread (the larger of the two rows'
    standard deviations); empty where a row has no runs."""
    if not values or not base:
        return "", ""
    diff = statistics.mean(values) - statistics.mean(base)
    spread = max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in (values, base))
    return f"{diff:+.2f}", ("yes" if abs(diff) > spread else "no") if spread > 0 else "one seed"


def train_runs(records: list[Record], experiment: str, teacher: str | None = None,
                metric: str = "final_val_top1") -> list[Record]:
    """The seeds of one experiment's newest configuration: runs whose config differs other than by `seed` (a
    `--set` change), or that ran in another precision (`amp=auto` is bf16 on one machine, fp32 on the next), are
    another experiment in all but name and are never averaged in."""
    runs = [r for r in records if r.kind == "train" and r.settings.experiment == experiment
            and r.metrics.get(metric) is not None and (teacher is None or r.settings.config["teacher"] == teacher)]
    if not runs:
        return []
    def key(r: Record) -> str:
        config = {**CONFIG_BEFORE_FIELD, **r.settings.config}  # a field added since: what the older run did
        return json.dumps({**{k: v for k, v in config.items() if k != "seed"}, "amp": _amp(r)}, sort_keys=True)
    newest = key(max(runs, key=lambda r: r.env.created))
    return [r for r in runs if key(r) == newest]


# Table 3's six rows: (method, label column, teacher signal, row experiment suffix, metric, paper column index)
TABLE3_LAYOUT = (
    ("DeiT, no distillation", "✓", "none", "none", "final_val_top1", 0),
    ("DeiT, usual distillation (class token)", "✗", "soft", "soft_cls", "final_val_top1", 1),
    ("DeiT, hard distillation (class token)", "✗", "hard", "hard_cls", "final_val_top1", 2),
    ("DeiT⚗, class embedding", "✓", "hard", "hard", "final_val_top1_cls", 3),
    ("DeiT⚗, distillation embedding", "✓", "hard", "hard", "final_val_top1_dist", 4),
    ("DeiT⚗, class + distillation", "✓", "hard", "hard", "final_val_top1_fused_logits", 5),
)


def table3(records: list[Record], scale: str) -> Table:
    """Table 3 at one scale: mean ± std over seeds of each row, its gap to row 1, and whether the gap exceeds
    the seed spread (the larger of the two rows' standard deviations)."""
    rows, used = [], []
    base_values: list[float] = []
    for i, (method, label, signal, suffix, metric, col) in enumerate(TABLE3_LAYOUT):
        name = experiment_name(scale, suffix)
        runs = train_runs(records, name, metric=metric)
        used += [r for r in runs if r not in used]
        values = [r.metrics[metric] for r in runs]
        base_values = values if i == 0 else base_values
        gap, beyond = gap_to(values, base_values) if i > 0 else ("", "")
        paper_ti = paper.TABLE3["Ti"]
        rows.append({"method": method, "label": label, "teacher": signal, "paper Ti (ImageNet)": f"{paper_ti[col]:.1f}",
                     "paper Δ row 1": "" if i == 0 else f"{paper_ti[col] - paper_ti[0]:+.1f}",
                     f"ours top-1 ({scale})": _mean_std(values), "ours Δ row 1": gap, "Δ > seed spread": beyond})
    teacher_name = experiment_name(scale, "teacher")
    teacher = train_runs(records, teacher_name)
    notes = [f"Teacher ({teacher_name}): top-1 {teacher[-1].metrics.final_val_top1:.2f}."] if teacher else []
    title = f"Table 3 ({scale} scale): distillation strategies; the paper's column is DeiT-Ti on ImageNet"
    return Table(f"table3_{scale}", title, pd.DataFrame(rows), tuple(notes) + footer(used + teacher))


def table_cls_init(records: list[Record], scale: str = "mini") -> Table:
    """Issue #20's ablation: Table 3 rows 4–6 with the class token initialised as timm >= 0.9 does (N(0, 1e-6)) and
    as the released code does (truncated normal, std 0.02); mean ± std over seeds, and the difference."""
    heads = (("class embedding", "final_val_top1_cls"), ("distillation embedding", "final_val_top1_dist"),
             ("class + distillation", "final_val_top1_fused_logits"))
    runs = {init: train_runs(records, f"{experiment_name(scale, 'hard')}_init_{init}", metric=heads[0][1])
            for init in ("timm", "official")}
    rows = []
    for label, metric in heads:
        values = {init: [r.metrics[metric] for r in rs] for init, rs in runs.items()}
        diff, beyond = gap_to(values["official"], values["timm"])
        rows.append({"DeiT⚗ head": label, "cls token N(0, 1e-6) (timm)": _mean_std(values["timm"]),
                     "cls token trunc. normal 0.02 (released code)": _mean_std(values["official"]),
                     "Δ released − timm": diff, "Δ > seed spread": beyond})
    title = f"Class-token initialisation, Table 3 rows 4–6 ({scale} scale; issue #20)"
    return Table(f"table_cls_init_{scale}", title, pd.DataFrame(rows), footer(runs["timm"] + runs["official"]))


def table7(records: list[Record]) -> Table:
    """Tables 6/7: transfer, each model fine-tuned on each dataset (paper | ours, mean ± std over seeds), and the
    CIFAR-10 rows trained from scratch."""
    rows, used = [], []
    for model, paper_top1s in paper.TABLE7.items():
        row = {"model": VARIANTS[model].paper.label}
        for target, top1 in zip(paper.TRANSFER_DATASETS, paper_top1s):
            runs = train_runs(records, f"{model}_transfer_{target}")
            used += runs
            row[f"{target} paper"] = f"{top1:.1f}"
            row[f"{target} ours"] = _mean_std([r.metrics.final_val_top1 for r in runs])
        rows.append(row)
    for model, top1 in paper.TABLE7_SCRATCH.items():
        runs = train_runs(records, f"{model}_scratch_cifar10")
        used += runs
        rows.append({"model": f"{VARIANTS[model].paper.label}, from scratch", "cifar10 paper": f"{top1:.1f}",
                     "cifar10 ours": _mean_std([r.metrics.final_val_top1 for r in runs])})
    frame = pd.DataFrame(rows).fillna("")
    return Table("table7_transfer", "Tables 6/7: transfer to other datasets (top-1 %)", frame, footer(used))


ATTENTION_ROWS = (  # (row, experiment, metric): issue #23's ablation beside Table 3's rows at mini scale
    ("no distillation (Table 3 row 1)", "mini_none", "final_val_top1"),
    ("hard, CNN teacher, distillation token (Table 3 rows 4–6, class + distil)", "mini_hard",
     "final_val_top1_fused_logits"),
    ("the same row again: issue #20's timm-init seeds, another machine", "mini_hard_init_timm",
     "final_val_top1_fused_logits"),
    ("attention distillation only, ViT teacher", "mini_attn", "final_val_top1"),
    ("hard, ViT teacher, distillation token (class + distil)", "mini_vit_hard", "final_val_top1_fused_logits"),
    ("attention + hard, ViT teacher (class + distil)", "mini_attn_hard", "final_val_top1_fused_logits"),
)


def _trained_on(runs: list[Record]) -> str:
    """Machine and precision of a row's runs: rows trained on different machines or precisions sit side by side
    only with that said."""
    return "; ".join(sorted({f"{machine_of(r)}, amp {_amp(r)}" for r in runs}))


ATTENTION_TEACHERS = (  # (row, experiment, metric): the teachers' own top-1 heads the table, compared with nothing
    ("teacher of the CNN rows: convnet", "mini_teacher", "final_val_top1"),
    ("teacher of the ViT rows: ViT, 9 blocks", "mini_vit_teacher", "final_val_top1"),
)


def table_attention(records: list[Record]) -> Table:
    """Issue #23: distillation through the teacher's attention maps, which is NOT the paper's method (the paper's
    teacher is a convnet and its signal goes through a distillation token), beside the committed Table-3 rows and
    under both teachers' own top-1. Each student row is compared with the first (no distillation)."""
    rows, used, base = [], [], None
    for label, name, metric in ATTENTION_TEACHERS + ATTENTION_ROWS:
        runs = train_runs(records, name, metric=metric)
        used += runs
        values = [r.metrics[metric] for r in runs]
        student = (label, name, metric) in ATTENTION_ROWS
        gap, beyond = gap_to(values, base) if student and base is not None else ("", "")
        base = values if student and base is None else base
        rows.append({"row": label, "experiment": name, "top-1 (mini)": _mean_std(values), "Δ no distillation": gap,
                     "Δ > seed spread": beyond, "trained on": _trained_on(runs)})
    notes = ("Not the paper's method: the paper distils a convnet's logits through a distillation token; this "
             "table matches a ViT teacher's attention maps (issue #23).",)
    return Table("table_attention_mini", "Attention distillation at mini scale (an ablation, not the paper's method)",
                 pd.DataFrame(rows), notes + footer(used))


def table8(records: list[Record]) -> Table:
    """Table 8: recipe ablations of DeiT-B, each row a registered experiment."""
    rows, used = [], []
    for key, (change, top1) in paper.TABLE8.items():
        name = "deit_b" if key == "default" else f"deit_b_{key}"
        runs = train_runs(records, name)
        used += runs
        rows.append({"change": change, "experiment": name, "top-1 paper @224": f"{top1:.1f}",
                     "top-1 ours": _mean_std([r.metrics.final_val_top1 for r in runs])})
    return Table("table8_ablations", "Table 8: ablations of the training recipe (DeiT-B)", pd.DataFrame(rows), footer(used))


def table9(records: list[Record]) -> Table:
    """Table 9: the hyper-parameters of the `deit_b` experiment, from the newest record of its resolved config
    (`reproduce ls --show deit_b --record DIR`, or a training record of deit_b)."""
    runs = sorted((r for r in records if r.kind in ("config", "train") and r.settings.experiment == "deit_b"),
                  key=lambda r: r.env.created)
    cfg = runs[-1].settings.config if runs else {}
    rows = [{"hyper-parameter": label, "paper (DeiT-B)": value,
             "ours (reproduce ls --show deit_b)": repr(_as_config_value(cfg[f])) if f in cfg else NOT_RUN}
            for f, (label, value) in paper.TABLE9.items()]
    note = (f"From the resolved deit_b config recorded at git {(runs[-1].env.git_sha or '?')[:7]} "
            "(reproduce ls --show deit_b --record results/runs/config)." if runs else
            "No config record of deit_b: make one with reproduce ls --show deit_b --record results/runs/config.")
    return Table("table9_hparams", "Table 9: hyper-parameters (from the deit_b config)", pd.DataFrame(rows), (note,))


def _as_config_value(value):
    """A config value as the dataclass holds it (JSON turned its tuples into lists)."""
    return tuple(value) if isinstance(value, list) else value


def table4(records: list[Record], scale: str) -> Table:
    """Table 4 at one scale: the fraction of test images two models classify differently, the paper's (ImageNet
    val, RegNetY teacher) beside ours, mean ± std over the seeds of the newest configuration (at imagenet scale one
    student size: the one last run). `reproduce suite table3` writes one `disagree` record per seed and size (its
    teacher, row 1 and the heads of rows 4–6)."""
    runs = [r for r in records if r.kind == "disagree" and r.settings.scale == scale]
    if runs:
        newest = max(runs, key=lambda r: r.env.created).settings.config_key
        runs = [r for r in runs if r.settings.config_key == newest]
    rows = []
    for a, paper_row in zip(paper.TABLE4_MODELS, paper.TABLE4):
        row = {"model": a}
        for b, paper_value in zip(paper.TABLE4_MODELS, paper_row):
            values = [r.metrics.disagreement[a][b] for r in runs]
            ours = NOT_RUN if not values else f"{statistics.mean(values):.3f}" + (
                f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")
            row[b] = f"{paper_value:.3f} / {ours}"
        rows.append(row)
    notes = ()
    if runs:
        images = ", ".join(sorted({f"{r.metrics.images:,}" for r in runs}))
        seeds = f"mean ± std of {len(runs)} seeds" if len(runs) > 1 else "1 seed"
        students = ", ".join(sorted({r.variant for r in runs}))
        notes = (f"Each cell: paper (ImageNet val, DeiT-B⚗) / ours ({scale} scale, {students}, {images} test images, "
                 f"{seeds}).",)
    title = f"Table 4 ({scale} scale): disagreement, the fraction of test images two models classify differently"
    return Table(f"table4_{scale}", title, pd.DataFrame(rows), notes + footer(runs))


def build_all(records: list[Record]) -> list[Table]:
    return [table1(records), table5(records), table5_comparison(records), table10(records), table2(records), table3(records, "mini"), table3(records, "cifar10"),
            table3(records, "imagenet"), table4(records, "mini"), table4(records, "cifar10"), table4(records, "imagenet"),
            table7(records), table8(records), table9(records), table_cls_init(records, "mini"),
            table_attention(records)]


def write(table: Table, out_dir: Path) -> list[Path]:
    """Markdown, CSV and LaTeX files for one table (deterministic content)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = f"### {table.title}\n\n{table.frame.to_markdown(index=False, disable_numparse=True)}\n\n"
    md += "".join(f"- {line}\n" for line in table.footer)
    tex = table.frame.to_latex(index=False, caption=table.title, label=f"tab:{table.name}")
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("md", "csv", "tex")]
    for path, text in zip(paths, (md, table.frame.to_csv(index=False), tex)):
        write_text_atomic(path, text)
    return paths
