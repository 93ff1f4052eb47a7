"""Figures from records (seaborn; PNG and SVG under results/figures/), for what people would rather look at.

- `fig1_throughput_vs_top1`: the paper's Figure 1: top-1 against throughput (log axis), a line per family
  (EfficientNet, ViT, DeiT, DeiT⚗) through the paper's V100 points, and ours (our throughput beside the paper's
  top-1 until our own accuracy exists);
- `resolution_sweep`: DeiT-B throughput at each test resolution (Table 10), the paper's and ours per timing protocol;
- `table3_curves_<scale>`: Table 3's six rows: validation top-1 against epoch (mean ± std over seeds) and every
  seed's final top-1, so differences read against the seed spread;
- `attention_mini` (and the figure any other ablation of `bench.ablations` names): the same for an ablation's
  rows under its teachers;
- `throughput_vs_batch`: images/s against batch size per variant, from `bench run --batch-size N` records;
- `gallery_<scale>`: test images where the teacher, the class head and the distillation head disagree;
- `lr_schedule_<experiment>`: the learning rate of every epoch as training sets it (warm-up and decay at a glance),
  from the experiment's newest config record (`reproduce ls --show E --record results/runs/config`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "deit-bench"  # fixed SVG ids: same records, same file
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.ablations import ABLATIONS, Versus
from bench.errors import StorageError
from bench.paper import FIGURE1_FAMILIES, TABLE10
from bench.record import Record  # noqa: E402
from bench.registry import VARIANTS  # noqa: E402
from bench.scales import experiment_name, teacher_experiment
from bench.store import interrupts_deferred, storage_error
from bench.tables import latest, speed_key, timed_as_protocol  # noqa: E402
from bench.trained import Arm, machine_of, train_runs  # noqa: E402
from bench.trained_tables import table3_arms, versus_arms  # noqa: E402

_SVG_META = {"Date": None}  # no timestamp: the same records give the same SVG
_PNG_META = {"Software": None}


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    # bbox_inches="tight" would lay the figure out twice per file to find the box; find it once for both
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    for path, options in zip(paths, ({"dpi": 120, "metadata": _PNG_META}, {"metadata": _SVG_META})):
        try:
            fig.savefig(path, bbox_inches=box, **options)
        except OSError as exc:  # a full disk: one line naming it, not matplotlib's traceback
            raise (storage_error(path, exc, existed=False) or exc) from exc
    plt.close(fig)
    return paths


def _speed_records(records: list[Record]) -> list[Record]:
    """The protocol's timings of a quiet machine: a busy machine's figure (`timed_busy`) is marked in the tables, and
    is no point on a curve."""
    return [r for r in records if r.kind == "bench" and "infer_img_per_s" in r.metrics and timed_as_protocol(r)
            and not r.metrics.get("timed_busy")]


def fig1(records: list[Record], out_dir: Path) -> list[Path]:
    """The paper's Figure 1: top-1 against throughput (log axis), one line per family (EfficientNet, ViT, DeiT,
    DeiT⚗) through the paper's V100 points, each labelled; our throughput of the same models, where measured, as a
    dashed line of the same colour at the paper's top-1 (our own top-1 needs the official weights). Each of our
    lines is one machine and one timing protocol (`_one_line`)."""
    rows = []
    for family, names in FIGURE1_FAMILIES.items():
        ours = _one_line(records, names)
        for name in names:
            p = VARIANTS[name].paper
            rows.append({"family": family, "model": p.label, "im/s": p.img_per_s, "top-1": p.top1, "ours": False,
                         "line": "paper (V100)"})
            if (r := ours.get(name)) is not None:
                rows.append({"family": family, "model": p.label, "im/s": r.metrics.infer_img_per_s, "top-1": p.top1,
                             "ours": True, "line": f"ours: {machine_of(r)}, {r.settings.precision}, "
                                                   f"{r.settings.protocol} protocol"})
    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    palette = dict(zip(FIGURE1_FAMILIES, sns.color_palette("deep", len(FIGURE1_FAMILIES))))
    for (family, ours), part in frame.groupby(["family", "ours"], sort=False):
        part = part.sort_values("im/s")
        ax.plot(part["im/s"], part["top-1"], marker="o" if not ours else "x", ls="--" if ours else "-",
                color=palette[family], label=f"{family}, {part['line'].iloc[0]}")
        if not ours:
            for _, row in part.iterrows():
                ax.annotate(row["model"], (row["im/s"], row["top-1"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=palette[family])
    ax.set_xscale("log")
    ax.set(xlabel="throughput, images/s (log)", ylabel="ImageNet top-1 % (the paper's)",
           title="Throughput and accuracy (Figure 1): the paper's V100 points and our measurements")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7, frameon=False)
    return _save(fig, out_dir, "fig1_throughput_vs_top1")


def _one_line(records: list[Record], names: tuple[str, ...]) -> dict[str, Record]:
    """Our records for one family's line, all from one machine and one timing protocol (a line through two
    machines' or two protocols' points would draw a trend that is not there): the pair that covers the most
    models, then the one measured last (today's machine), then the paper's protocol (the paper's points')."""
    speed = _speed_records(records)
    best, best_key = {}, None
    for column in sorted({speed_key(r) for r in speed if r.variant in names}):  # one machine and precision
        mine = [r for r in speed if speed_key(r) == column]
        for protocol in ("paper", "timm"):
            line = {n: r for n in names if (r := latest(mine, n, img_size=VARIANTS[n].img_size, protocol=protocol))}
            if not line:
                continue
            key = (len(line), max(r.created for r in line.values()), protocol == "paper")
            if best_key is None or key > best_key:
                best, best_key = line, key
    return best


def resolution_sweep(records: list[Record], out_dir: Path) -> list[Path]:
    rows = [{"resolution": size, "im/s": speed, "source": "paper (V100)"} for size, (speed, _) in TABLE10.items()]
    speed = sorted(_speed_records(records), key=lambda r: r.created)
    for protocol in ("timm", "paper"):  # one line per protocol, machine and precision, never a mix of them
        for column in dict.fromkeys(speed_key(r) for r in speed if r.variant == "deit_b"):
            for size in TABLE10:
                r = latest(speed, "deit_b", img_size=size, protocol=protocol, column=column)
                if r is not None:
                    rows.append({"resolution": size, "im/s": r.metrics.infer_img_per_s,
                                 "source": f"ours, {protocol} protocol ({column[0]}, {column[2]})"})
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=pd.DataFrame(rows), x="resolution", y="im/s", hue="source", marker="o", ax=ax)
    ax.set_yscale("log")
    ax.set(title="DeiT-B throughput by test resolution (Table 10)", ylabel="images/s (log)")
    return _save(fig, out_dir, "resolution_sweep")


def lr_schedule_figure(experiment: str, config: dict, points: list) -> plt.Figure:
    """The learning rate at the start of every epoch (or step), as `(epoch, lr)` points, on a log axis; the title
    names the schedule, the warm-up and when the scheduler steps. `reproduce ls --show E --lr-figure FILE` draws
    the same figure straight from the config."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.step([e for e, _ in points], [lr for _, lr in points], where="post", color="C0")
    ax.set(xlabel="epoch", ylabel="learning rate (log)", yscale="log",
           title=f"{experiment}: {config['sched']}, {config['warmup_epochs']} warm-up epochs, "
                 f"sched_timing={config['sched_timing']}{', per step' if config['sched_per_step'] else ''}")
    ax.grid(alpha=0.3)
    return fig


def lr_schedules(records: list[Record], out_dir: Path) -> list[Path]:
    """One `lr_schedule_<experiment>` per experiment that has a config record with its schedule (the newest)."""
    newest: dict[str, Record] = {}
    for r in records:
        if r.kind == "config" and r.settings.lr_schedule:
            if r.settings.experiment not in newest or r.created > newest[r.settings.experiment].created:
                newest[r.settings.experiment] = r
    return [path for name, r in sorted(newest.items())
            for path in _save(lr_schedule_figure(name, r.settings.config, r.settings.lr_schedule), out_dir,
                              f"lr_schedule_{name}")]


def table3_curves(records: list[Record], out_dir: Path, scale: str) -> list[Path]:
    """Table 3's six rows side by side (`seed_curves`), in the table's main kind (precision, device, torch)."""
    teacher = train_runs(records, teacher_experiment(scale))
    return seed_curves(records, out_dir, f"table3_curves_{scale}", f"Table 3 at {scale} scale",
                       [(a.label, a) for a in table3_arms(records, scale, every_kind=False) if a.runs],
                       [("teacher", teacher)])


def ablation_curves(records: list[Record], out_dir: Path, spec: Versus) -> list[Path]:
    """A `Versus` ablation's rows side by side under its teachers (`seed_curves`), titled as the spec says. Each row
    and teacher names the precision it ran in, and a row trained in more than one kind (`trained.train_kind`) is
    one line per kind."""
    teachers, students = versus_arms(records, spec)
    short = {row.experiment: row.short or row.experiment for row in spec.teachers + spec.rows}
    rows = [(f"{short[a.experiment]} ({_precision(a)})", a) for a in students if a.runs]
    teacher_lines = [(f"teacher: {short[a.experiment]}, {_precision(a)}", list(a.runs)) for a in teachers if a.runs]
    name, title = spec.figure
    return seed_curves(records, out_dir, name, title, rows, teacher_lines)


def _precision(arm: Arm) -> str:
    return arm.kind.split(",")[0]  # `train_kind` starts with the precision the run used


def seed_curves(records: list[Record], out_dir: Path, name: str, title: str, rows: list[tuple[str, Arm]],
                teachers: list[tuple[str, list[Record]]]) -> list[Path]:
    """Rows of (label, arm) side by side: validation top-1 against epoch (mean over seeds, ± std band) and the final
    top-1 of every seed, so a difference between rows can be read against the seed spread; each teacher's
    (label, runs) final top-1 is a grey line (dashed, then dotted)."""
    points = []
    for label, arm in rows:
        key = arm.metric.removeprefix("final_")  # val_top1 or val_top1_<head>
        for r in arm.runs:
            for entry in r.settings.history or []:
                if key in entry:
                    points.append({"row": label, "seed": r.settings.config["seed"], "epoch": entry["epoch"],
                                   "top-1": entry[key], "final": entry["epoch"] == r.settings.config["epochs"]})
    if not points:
        return []
    frame = pd.DataFrame(points)
    order = list(dict.fromkeys(frame["row"]))
    fig, (curves, finals) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(1.1, 1))
    sns.lineplot(data=frame, x="epoch", y="top-1", hue="row", hue_order=order, errorbar="sd", marker="o",
                 ax=curves)
    for (label, teacher), style in zip(teachers, ("--", ":", "-.")):
        if teacher:
            top1 = teacher[-1].metrics.final_val_top1
            curves.axhline(top1, color="grey", ls=style, lw=1, label=f"{label} ({top1:.1f})")
    curves.legend(fontsize=7, loc="lower right")
    curves.set(title="validation top-1 (mean over seeds, band: ± std)")
    last = frame[frame["final"]]
    sns.stripplot(data=last, y="row", x="top-1", hue="row", order=order, hue_order=order, legend=False, size=6,
                  jitter=False, alpha=0.7, ax=finals)  # seaborn's jitter draws from the global RNG: not reproducible
    sns.pointplot(data=last, y="row", x="top-1", order=order, errorbar="sd", color="black", markers="|",
                  linestyles="none", capsize=0.3, ax=finals)
    finals.set(title="final top-1 per seed (black: mean ± std)", ylabel="")
    counts = last.groupby("row")["seed"].nunique()
    span = "–".join(str(n) for n in sorted({counts.min(), counts.max()}))  # "5", or "3–5" when rows differ
    fig.suptitle(f"{title} ({span} seeds per row)")
    fig.tight_layout()
    return _save(fig, out_dir, name)


def throughput_vs_batch(records: list[Record], out_dir: Path) -> list[Path]:
    rows = [{"variant": r.variant, "batch": r.settings.batch_size, "im/s": r.metrics.infer_img_per_s,
             "device": machine_of(r)} for r in _speed_records(records)
            if r.settings.protocol == "timm" and isinstance(r.settings.batch_size, int)]
    frame = pd.DataFrame(rows)
    if frame.empty or frame.groupby("variant")["batch"].nunique().max() < 2:
        return []
    frame = frame.groupby(["variant", "batch", "device"], as_index=False)["im/s"].median()
    frame = frame[frame.groupby("variant")["batch"].transform("nunique") > 1]
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=frame, x="batch", y="im/s", hue="variant", style="device", marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # Ti and B differ 10x: on a linear axis B's curve is flat
    ax.set(title="Inference throughput by batch size (median of records)", ylabel="images/s (log)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return _save(fig, out_dir, "throughput_vs_batch")


def gallery(records: list[Record], out_dir: Path, scale: str, count: int = 12) -> list[Path]:
    """Test images on which the teacher, the class head and the distillation head disagree, with the true label
    and each one's top-1. Reads the runs' predictions.pt and the images; skipped where the run folders are gone."""
    found = {}
    for role, experiment in (("teacher", teacher_experiment(scale)), ("hard", experiment_name(scale, "hard"))):
        runs = [r for r in train_runs(records, experiment)
                if (Path(r.settings.output) / "predictions.pt").exists()]
        if not runs:
            return []
        found[role] = min(runs, key=lambda r: (r.settings.config["seed"], r.created))  # seed 0 first
    config = found["hard"].settings.config
    if config["dataset"] != "cifar10":
        return []
    from bench.cifar10 import cifar10_tree
    from bench.predictions import Predictions  # late: torch loads only when there are predictions to show

    test_root = (Path(config["data"]) if config["data"] else cifar10_tree()) / "test"
    classes = sorted(p.name for p in test_root.iterdir() if p.is_dir())
    teacher = Predictions.load(Path(found["teacher"].settings.output) / "predictions.pt")
    student = Predictions.load(Path(found["hard"].settings.output) / "predictions.pt")
    t_top = dict(zip(teacher.names, teacher.top5[""][:, 0].tolist()))
    by_class: dict[int, list[tuple]] = {}
    for i, name in enumerate(student.names):
        cls, dist = student.top5["cls"][i, 0].item(), student.top5["dist"][i, 0].item()
        if name in t_top and len({t_top[name], cls, dist}) > 1:
            truth = student.targets[i].item()
            by_class.setdefault(truth, []).append((name, truth, t_top[name], cls, dist))
    picks = []  # round-robin over the true classes, so the gallery is not ten airplanes
    for k in range(max(map(len, by_class.values()), default=0)):
        picks += [items[k] for _, items in sorted(by_class.items()) if k < len(items)]
    picks = picks[:count]
    if not picks:
        return []
    from PIL import Image

    cols = 6
    fig, axes = plt.subplots((len(picks) + cols - 1) // cols, cols, figsize=(cols * 1.9, 2.5 * ((len(picks) + cols - 1) // cols)))
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])  # no tick labels to lay out (they were half the drawing time)
        ax.axis("off")
    for ax, (name, truth, t, c, d) in zip(axes.flat, picks):
        with Image.open(test_root / name) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_title(f"true {classes[truth]}\nteacher {classes[t]}\nclass {classes[c]}\ndistil {classes[d]}", fontsize=7)
    fig.suptitle(f"{scale} scale: where teacher, class head and distillation head disagree", fontsize=9)
    return _save(fig, out_dir, f"gallery_{scale}")


def build_all(records: list[Record], out_dir: Path, jobs: int | None = None) -> list[Path]:
    """Every figure the records allow, in a fixed order.

    The figures are independent and each costs matplotlib ~0.5-1 s (the gallery also torch's import), so they
    render in `jobs` forked processes (default: one per core; 1, or a platform without fork: in this process).
    The records reach the workers by the fork itself, not by pickling.
    """
    global _RECORDS, _OUT_DIR
    sns.set_theme(style="whitegrid")
    tasks = [(fig1,), (resolution_sweep,), (throughput_vs_batch,), (lr_schedules,)]
    tasks += [(ablation_curves, spec) for spec in ABLATIONS if isinstance(spec, Versus) and spec.figure]
    tasks += [(function, scale) for scale in ("mini", "cifar10") for function in (table3_curves, gallery)]
    jobs = min(jobs or os.cpu_count() or 1, len(tasks))
    _RECORDS, _OUT_DIR = records, out_dir
    try:
        if jobs == 1 or "fork" not in multiprocessing.get_all_start_methods():
            return [path for task in tasks for path in _render(*task)]
        slowest_first = sorted(range(len(tasks)), key=lambda i: tasks[i][0] is not gallery)
        rendered = _in_processes(tasks, [slowest_first[k::jobs] for k in range(jobs)])
        return [path for i in range(len(tasks)) for path in rendered[i]]
    finally:
        _RECORDS, _OUT_DIR = [], Path()


def _in_processes(tasks: list[tuple], shares: list[list[int]]) -> dict[int, list[Path]]:
    """Render `tasks` in one forked process per share of their indices; {index: paths}.

    Not a process pool: Ctrl-C reaches the whole process group, and a pool's worker interrupted inside its queue, or
    a pool interrupted while it started, left `bench tables` waiting forever (a hostile pass; both of concurrent.futures'
    and multiprocessing's pools hung so). Here the children ignore Ctrl-C, they start with it held back, and on Ctrl-C
    or an error this process kills them: the figures render into a staging folder that is then dropped
    (bench/site.py: regenerate)."""
    context = multiprocessing.get_context("fork")
    children = []
    try:
        with interrupts_deferred():
            for share in shares:
                receive, send = context.Pipe(duplex=False)
                child = context.Process(target=_render_share, args=(tasks, share, send), daemon=True)
                child.start()
                send.close()
                children.append((child, receive))
        rendered: dict[int, list[Path]] = {}
        for child, receive in children:
            try:
                answer = receive.recv()
            except EOFError:
                raise RuntimeError(f"a figure process died (exit code {child.join() or child.exitcode})") from None
            if isinstance(answer, StorageError):  # a full disk: named, as the same failure in this process is
                raise answer
            if isinstance(answer, str):  # the child's traceback
                raise RuntimeError(f"drawing a figure failed:\n{answer}")
            rendered.update(answer)
        return rendered
    finally:
        for child, receive in children:
            if child.is_alive():
                child.kill()
            child.join()
            receive.close()


def _render_share(tasks: list[tuple], share: list[int], send) -> None:
    for s in (signal.SIGINT, signal.SIGTERM):  # the parent alone answers Ctrl-C and SIGTERM, by killing this process
        signal.signal(s, signal.SIG_IGN)
    try:
        answer = {i: _render(*tasks[i]) for i in share}
    except StorageError as exc:
        answer = StorageError(str(exc))
    except Exception:  # noqa: BLE001 - sent to the parent, which raises it
        answer = traceback.format_exc()
    send.send(answer)
    send.close()


_RECORDS: list[Record] = []
_OUT_DIR = Path()


def _render(function, *args) -> list[Path]:
    return function(_RECORDS, _OUT_DIR, *args)
