"""The tables of trained models (paper Tables 3, 4, 7, 8, 9 and the ablations of `bench.ablations`): mean ± std
over seeds from `reproduce` records, each row against its control by Welch's test with Holm's correction
(`bench.trained`, `bench.stats`). Rendered by `bench tables` with the measured tables of `bench.tables`; like them, a
pure function of the records, "not run" where no record is.
"""

from __future__ import annotations

import statistics

import pandas as pd

from bench import paper, trained
from bench.ablations import Ablation, Paired, Row, Versus
from bench.record import Record
from bench.registry import VARIANTS
from bench.scales import experiment_name, teacher_experiment
from bench.tables import NOT_RUN, Table, _mean_std, _unique, footer
from bench.trained import Arm, arms, compare, control_of, stat_notes, train_runs, trained_on

# Table 3's six rows: (method, label column, teacher signal, row experiment suffix, metric, paper column index)
TABLE3_LAYOUT = (
    ("DeiT, no distillation", "✓", "none", "none", "final_val_top1", 0),
    ("DeiT, usual distillation (class token)", "✗", "soft", "soft_cls", "final_val_top1", 1),
    ("DeiT, hard distillation (class token)", "✗", "hard", "hard_cls", "final_val_top1", 2),
    ("DeiT⚗, class embedding", "✓", "hard", "hard", "final_val_top1_cls", 3),
    ("DeiT⚗, distillation embedding", "✓", "hard", "hard", "final_val_top1_dist", 4),
    ("DeiT⚗, class + distillation", "✓", "hard", "hard", "final_val_top1_fused_logits", 5),
)


def table3_arms(records: list[Record], scale: str, every_kind: bool = True) -> list[Arm]:
    """Table 3's rows in the main kind, then the rows trained in another (each compared within its own kind)."""
    return arms(records, [(method, experiment_name(scale, suffix), metric)
                          for method, _, _, suffix, metric, _ in TABLE3_LAYOUT], every_kind)


def table3(records: list[Record], scale: str) -> Table:
    """Table 3 at one scale: mean ± std over seeds of each row and its difference to row 1 of the same kind, with
    Welch's test and Holm's correction (`stats.RULE`); rows trained in another precision follow the six."""
    found = table3_arms(records, scale)
    controls = control_of(found, experiment_name(scale, "none"))
    cells = compare([None if a.experiment == experiment_name(scale, "none") else (a, controls.get(a.kind))
                     for a in found])
    layout = {(experiment_name(scale, suffix), metric): row for row in TABLE3_LAYOUT
              for _, _, _, suffix, metric, _ in [row]}
    paper_ti, rows = paper.TABLE3["Ti"], []
    for arm, cell in zip(found, cells):
        method, label, signal, _, _, col = layout[(arm.experiment, arm.metric)]
        # the paper prints each row's top-1, not their differences: the Δ is ours, computed from its values
        rows.append({"method": method, "label": label, "teacher": signal, "paper Ti (ImageNet)": f"{paper_ti[col]:.1f}",
                     "Δ row 1 of paper Ti (computed here)": "" if col == 0 else f"{paper_ti[col] - paper_ti[0]:+.1f}",
                     f"ours top-1 ({scale})": _mean_std(arm.values), **{f"ours {k}": v for k, v in cell.items()},
                     "trained in": arm.kind or "", "trained on": trained_on(list(arm.runs))})
    teacher_name = teacher_experiment(scale)
    teacher = (train_runs(records, teacher_name, kind=found[0].kind) or train_runs(records, teacher_name)
               if teacher_name else [])
    notes = [f"Teacher ({teacher_name}): top-1 {teacher[-1].metrics.final_val_top1:.2f}."] if teacher else []
    used = _unique(r for a in found for r in a.runs)
    title = f"Table 3 ({scale} scale): distillation strategies; the paper's column is DeiT-Ti on ImageNet"
    return Table(f"table3_{scale}", title, pd.DataFrame(rows), tuple(notes) + stat_notes(cells) + footer(used + teacher))


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


def versus_arms(records: list[Record], spec: Versus) -> tuple[list[Arm], list[Arm]]:
    """The teachers' arms and the rows' arms of a `Versus` table, every kind each was trained in, in the order the
    rows are declared."""
    def in_order(rows: tuple[Row, ...]) -> list[Arm]:
        order = [row.experiment for row in rows]
        found = arms(records, [(row.label, row.experiment, row.metric) for row in rows], every_kind=True)
        return sorted(found, key=lambda a: order.index(a.experiment))
    return in_order(spec.teachers), in_order(spec.rows)


def ablation(records: list[Record], spec: Ablation) -> Table:
    """An ablation declared in `bench.ablations`: mean ± std over seeds of each row and its difference to what the
    spec compares it with, by Welch's test with Holm's correction (`stats.RULE`)."""
    return _paired(records, spec) if isinstance(spec, Paired) else _versus(records, spec)


def _versus(records: list[Record], spec: Versus) -> Table:
    """Each row against the control trained in its own kind (precision, device, torch): a row trained in a kind
    without such a control gets no verdict. The teachers head the table, compared with nothing."""
    teachers, students = versus_arms(records, spec)
    controls = control_of(students, spec.control)
    cells = compare([None] * len(teachers) + [None if a.experiment == spec.control else (a, controls.get(a.kind))
                                               for a in students])
    rows = [{"row": a.label, "experiment": a.experiment, spec.value: _mean_std(a.values),
             **{k.replace("Δ", f"Δ {spec.versus}"): v for k, v in cell.items()},
             "trained in": a.kind or "", "trained on": trained_on(list(a.runs))}
            for a, cell in zip(teachers + students, cells)]
    used = _unique(r for a in teachers + students for r in a.runs)
    return Table(spec.name, spec.title, pd.DataFrame(rows), spec.notes + stat_notes(cells) + footer(used))


def _paired(records: list[Record], spec: Paired) -> Table:
    """A row per head: the changed experiment against the base one, both in the table's main kind."""
    (base_header, base), (changed_header, changed) = spec.base, spec.changed
    rows = [(label, experiment, metric) for label, metric in spec.heads for experiment in (base, changed)]
    found = arms(records, rows, every_kind=False)
    bases, changes = found[0::2], found[1::2]
    cells = compare(list(zip(changes, bases)))
    rows = [{spec.head: b.label, base_header: _mean_std(b.values), changed_header: _mean_std(c.values),
             **{k.replace("Δ", f"Δ {spec.versus}"): v for k, v in cell.items()}, "trained in": b.kind or "",
             "trained on": trained_on([*b.runs, *c.runs])}  # a hostile pass: mixed threads went unnamed here
            for b, c, cell in zip(bases, changes, cells)]
    used = _unique(r for a in found for r in a.runs)
    return Table(spec.name, spec.title, pd.DataFrame(rows), stat_notes(cells) + footer(used))


# The + EMA row is the EMA weights' top-1: the raw weights train as in the default row (the same seed gives the same
# number), so their top-1 could never show the row's change (a hostile pass found the row read them).
TABLE8_METRIC = {"ema": "final_ema_val_top1"}


def table8(records: list[Record]) -> Table:
    """Table 8: recipe ablations of DeiT-B, each row a registered experiment."""
    rows, used = [], []
    for key, (change, top1) in paper.TABLE8.items():
        name = "deit_b" if key == "default" else f"deit_b_{key}"
        metric = TABLE8_METRIC.get(key, "final_val_top1")
        runs = train_runs(records, name, metric=metric)
        used += runs
        rows.append({"change": change, "experiment": name, "top-1 paper @224": f"{top1:.1f}",
                     "top-1 ours": _mean_std([r.metrics[metric] for r in runs])})
    notes = ("+ EMA: ours is the top-1 of the EMA weights (final_ema_val_top1); every other row, the raw weights'.",)
    return Table("table8_ablations", "Table 8: ablations of the training recipe (DeiT-B)", pd.DataFrame(rows),
                 notes + footer(used))


def table9(records: list[Record]) -> Table:
    """Table 9: the hyper-parameters of the `deit_b` experiment, from the newest record of its resolved config
    (`reproduce ls --show deit_b --record DIR`, or a training record of deit_b)."""
    runs = trained.runs_of(records, "deit_b", kinds=("config", "train"))
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
        newest = max(runs, key=lambda r: r.created).settings.config_key
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
