"""Human-readable views: the registry table and a run's summary, ours beside the paper's numbers.

A "paper" column holds only what the paper prints (params in whole millions, no FLOPs); how we measured a number
(spread, batch, peak) stands in its own column, and the exact counts of timm's implementation in columns of their
own, labelled as the reference's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import peak
from bench.machine import Fingerprint
from bench.paper import params_rounding
from bench.protocols import setting_label
from bench.record import Record, load_record_files
from bench.registry import VARIANTS, Variant, at_resolution


def load_frame(path: Path | str = "results/runs") -> pd.DataFrame:
    """Every record under a folder (recursively), or one record file, as one DataFrame for a notebook: a row per
    record, oldest first; nested sections flattened to dotted columns (`metrics.top1`, `env.torch`,
    `settings.config.lr`); columns typed by pandas' nullable dtypes (Int64, Float64, boolean, string; lists stay
    objects), so a key a record lacks is <NA>, not a float NaN that turned its ints into floats. `path` names the
    file and `created` is the run's time as a UTC datetime. Unreadable files raise `RecordError` naming them, as
    `bench tables` does (docs/notebooks.md)."""
    pairs = load_record_files(Path(path))
    rows = [{"path": str(f), "created": r.created, **r.to_dict()} for f, r in pairs]
    frame = pd.json_normalize(rows, sep=".") if rows else pd.DataFrame(columns=["path", "created"])
    frame = frame.convert_dtypes()
    frame["created"] = pd.to_datetime(frame["created"], utc=True)
    return frame


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def registry_table(role: str | None = None) -> str:
    """`bench ls`: every registered entry with its timm name, the paper's numbers and, for the DeiT rows, the exact
    size of timm's implementation (not the paper's: it prints params in whole millions and no FLOPs)."""
    rows = []
    for v in VARIANTS.values():
        if role and v.role != role:
            continue
        p = v.paper
        rows.append({
            "name": v.name, "timm model": v.model, "role": v.role, "img": v.img_size,
            "distilled": "yes" if v.distilled else "", "classes": v.num_classes,
            "paper": p.label if p else "", "table": p.table if p else "",
            "params (paper, rounded)": f"{p.params_m:g}M" if p and p.params_m else "",
            "V100 im/s": _num(p and p.img_per_s, ".1f"),
            "top-1": _num(p and p.top1, ".1f"), "ReaL": _num(p and p.real, ".1f"), "V2": _num(p and p.v2, ".1f"),
            "params, exact (timm reference)": _num(v.reference_params, ","),
            "GMACs (timm reference)": _num(v.reference_gmacs, ".3f"),
        })
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def summary(record: Record, variant: Variant) -> str:
    """A few lines a person reads after `bench run`: what was measured, how, and the paper's value."""
    s, m = record.settings, record.metrics
    row = at_resolution(variant, s.img_size)  # the paper's row at the resolution that ran, if it has one
    p = row.paper if row else None
    table = (p.table + ("" if row is variant else f", {row.name}")) if p else f"no paper row at {s.img_size} px"
    ran = s.get("metrics", ["speed"])
    timed, timed_any = "speed" in ran, bool({"speed", "relspeed"} & set(ran))
    head = (f"{variant.name} ({record.model}) at {s.img_size} px on {record.env.device_name}"
            f" [{s.device}, {record.env.num_threads} thread{'' if record.env.num_threads == 1 else 's'}]"
            + (f"\nprotocol {s.protocol}: {s.precision}, batch {s.batch_size} ({s.batch_policy}), "
               f"{s.warmup} warm-up + {s.iters} timed, {s.stat}"
               f"{_compile_label(s)}" if timed else "")
            + (f"\nprecision {s.precision}: {s.precision_why}" if s.precision_why and timed_any else "")
            + (f"\naccuracy in {record.accuracy_precision}: {_accuracy_why(s)}" if "top1" in m else "")
            + (f"\nmachine {record.env.fingerprint['id']}" if record.env.fingerprint else ""))
    rows = _size_rows(m, p, row, vit=variant.patch_size is not None) if "params" in m else []
    if "infer_img_per_s" in m:
        # the paper's figure is at the variant's own resolution; at another size it would be no comparison
        paper_speed = p.img_per_s if p else None
        ours_setting = f"{s.precision}{_compile_label(s)}, batch {s.batch_size}"
        rows.append((f"throughput, im/s ({s.stat})", f"{m.infer_img_per_s:,.1f}", ours_setting,
                     "" if paper_speed is None else f"{paper_speed:,.1f} (V100, fp32, max batch)",
                     "" if paper_speed is None else f"x{m.infer_img_per_s / paper_speed:.3f} (not like with like: "
                                                    "other hardware, precision and batch)"))
        one = len(m.get("batch_ms_samples") or ()) == 1  # one sample has no spread: "IQR 0.0" claimed one (a hostile pass)
        rows.append(("batch time, ms", f"{m['batch_ms_median']:,.1f} median",
                     "one timed batch: no spread to show" if one else
                     f"IQR {m['batch_ms_iqr']:,.1f}, min {m['batch_ms_min']:,.1f}, max {m['batch_ms_max']:,.1f}",
                     "", ""))
        rows.append(("latency p50/p90/p99, ms",
                     f"{m['latency_ms_p50']:,.1f} / — / —" if one else
                     f"{m['latency_ms_p50']:,.1f} / {m['latency_ms_p90']:,.1f} / {m['latency_ms_p99']:,.1f}",
                     f"per batch of {m.infer_batch_size}", "", ""))
        if m.peak_mem_mib is not None:
            searched = m.peak_mem_kind == "process_peak_rss" and s.get("search")  # torch.compile's code stays loaded
            rows.append(("peak memory, MiB", f"{m.peak_mem_mib:,.0f}", m.peak_mem_kind + (
                ", in the process that searched (its compiler stays loaded)" if searched else ""), "", ""))
        if "mfu" in m:
            mfu = "unknown card" if m.mfu is None else f"{100 * m.mfu:.1f} %"
            rows.append(("MFU", mfu, f"peak {m.peak_tflops_datasheet} TFLOP/s (datasheet)", "", ""))
        if m.achieved_tflops is not None:
            measured = "—" if m.mfu_measured is None else f"{100 * m.mfu_measured:.1f} %"
            rows.append(("TFLOP/s achieved; MFU", f"{m.achieved_tflops:.3g}; {measured}", _peak_why(record), "", ""))
        elif m.gmacs is None and m.infer_img_per_s is not None:  # FLOP/s need the forward's MACs: counted by size
            rows.append(("TFLOP/s achieved; MFU", "—", "not computed: the GMACs are counted with --metrics size "
                         "(add it: --metrics size,speed)", "", ""))
        if m.energy_j_per_img is not None:
            rows.append(("energy, J/img", f"{m.energy_j_per_img:.4f}",
                         f"mean {m['gpu_power_w_mean']:.0f} W, SM {m['gpu_sm_clock_mhz']} MHz, "
                         f"{m['gpu_temperature_c']} °C; " + (", ".join(m["gpu_throttle_reasons"]) or "no throttling"),
                         "", ""))
    rows += _relspeed_rows(m)
    rows += _accuracy_rows(record, p)
    columns = ["metric", "ours", "how", f"paper ({table})", "delta"]
    if any(len(r) > len(columns) for r in rows):  # the size rows of a variant with a reference implementation
        columns += [f"reference (timm {row.model})", "delta vs reference"]
        rows = [(*r, *[""] * (len(columns) - len(r))) for r in rows]
    body = pd.DataFrame(rows, columns=columns).to_markdown(index=False, disable_numparse=True)
    notes = "".join(f"\nnote: {n}" for n in record.notes if not n.startswith("checkpoint sha256"))
    if "timed_busy" in m and m.timed_busy is None:  # a hostile pass: unreadable counters recorded a quiet machine
        notes += ("\nnote: /proc/stat could not be read, so whether other processes used the machine while this was "
                  "timed is unknown (the record says null)")
    if m.get("timed_busy"):
        notes += (f"\nwarning: other processes kept {m.timed_other_cores:.1f} cores busy while this was timed: the "
                  "throughput is a busy machine's (the record says so; `bench tables` prefers a quiet record). Time it "
                  "again on a quiet machine.")
    search = f"\n\n{search_table(s['search'], variant.name)}" if s.get("search") else ""
    return f"{head}\n\n{body}{search}{notes}"


def _compile_label(s) -> str:
    mode = s.get("compile_mode") or ("default" if s.compile else "off")  # older records: no compile_mode
    attention = "" if s.get("attention") in (None, "sdpa") else f", {s.attention} attention"
    return ("" if mode == "off" else ", torch.compile" + ("" if mode == "default" else f" ({mode})")) + attention


def search_table(search: dict, variant: str = "V") -> str:
    """`--best`: every setting tried, the side-by-side re-timing first, the chosen one marked; the agreement check,
    how clear the win was, and the command that times the choice again."""
    rejected = {a["candidate"] for a in search["agreement"] if not a["passed"]}
    trials = sorted(search["trials"], key=lambda t: (t["stage"] != "confirm", -(t["img_per_s"] or 0)))
    chosen, marked, rows = search["chosen"], False, []
    for t in trials:
        mark = not marked and all(t[k] == chosen[k] for k in chosen)
        marked |= mark
        label = setting_label(t["precision"], t["compile"], t["batch_size"], t["attention"])
        status = t["status"] + (", rejected: differs from fp32 eager" if label in rejected else "")
        rows.append(("→" if mark else "", t["precision"], t["compile"], t["attention"], t["batch_size"],
                     "" if t["img_per_s"] is None else f"{t['img_per_s']:,.1f}", status, t["stage"],
                     f"{t['seconds']:.0f}"))
    table = pd.DataFrame(rows, columns=["", "precision", "compile", "attention", "batch", "im/s", "status", "stage",
                                        "s"])
    tried = [t for t in search["trials"] if t["stage"] != "confirm"]
    timed = sum(t["img_per_s"] is not None for t in tried)
    last = search["agreement"][-1]
    lines = [f"--best: {len(tried)} settings, {timed} timed, in {search['spent_s']:.0f} s (budget {search['budget_s']:g} "
             f"s of trials); 'confirm': the fastest timed again side by side; → the chosen one, timed above with the "
             f"full protocol",
             table.to_markdown(index=False, disable_numparse=True),
             f"agreement with fp32 eager on {last['inputs']}, weights: {search['weights']}: top-1 "
             f"{100 * last['top1_agreement']:.1f} % ({last['near_tie_flips']} near-tie flips, "
             f"{last['confident_flips']} beyond), median logit error {last['median_rel_error']:.2g} "
             f"(tolerance {last['tolerance']:g})" + (f"; {len(rejected)} faster setting(s) rejected by it"
                                                     if rejected else "")]
    lead = search.get("lead")
    if lead is not None:
        lines.append(f"side by side it led the next setting by {100 * (lead - 1):.1f} %"
                     + (": a tie within this machine's noise, either is as fast" if lead < 1.03 else ""))
    if search.get("busy"):
        lines.append(f"warning: other processes kept {search['other_cores']:.1f} cores busy during the search; its "
                     "ranking may be wrong")
    flags = [f"--precision {chosen['precision']}", f"--batch-size {chosen['batch_size']}"]
    flags += [] if chosen["compile"] == "off" else [f"--compile {chosen['compile']}"]
    flags += [] if chosen["attention"] in ("sdpa", "none") else [f"--attention {chosen['attention']}"]
    lines.append(f"time this setting again: bench run --variant {variant} {' '.join(flags)}")
    return "\n".join(lines)



def _size_rows(m, p, row, *, vit: bool) -> list[tuple[str, ...]]:
    """params and GMACs: beside the paper's params, which it prints in whole millions (so the delta is checked to that
    rounding only), and its lack of FLOPs; and beside the reference implementation's exact counts where the registry
    has them (`reference_params`, `reference_gmacs`), the exact check. Seven cells with a reference, else five."""
    params_m = p.params_m if p else None
    paper_params = paper_delta = ""
    if params_m is not None:
        how = params_rounding(m.params, params_m)
        paper_params = f"{params_m:g}M (as printed)"
        paper_delta = f"{m.params / 1e6 - params_m:+.2f} M, " + (
            f"agrees to the paper's rounding ({how})" if how else "beyond the paper's rounding")
    rows = [("params", f"{m.params:,}", "", paper_params, paper_delta),
            ("GMACs (batch 1)", f"{m.gmacs:.3f}", "fvcore" + (", attention matmuls counted" if vit else ""),
             "none: the paper prints no FLOPs" if p else "", "")]
    if row is None or row.reference_params is None:
        return rows
    # the registry keeps the reference's GMACs to 3 decimals: within that rounding it agrees, whatever the % says
    gmacs_delta = ("agrees (the reference is stored to 3 decimals)" if abs(m.gmacs - row.reference_gmacs) <= 5e-4
                   else f"{100 * (m.gmacs / row.reference_gmacs - 1):+.2f} %")
    return [(*rows[0], f"{row.reference_params:,}", f"{m.params - row.reference_params:+,}"),
            (*rows[1], f"{row.reference_gmacs:.3f}", gmacs_delta)]


def _peak_why(record: Record) -> str:
    m = record.metrics
    if m.mfu_measured is not None:
        return f"of this machine's measured {m.peak_column} GEMM peak, {m.peak_tflops_measured:.3g} TFLOP/s"
    fingerprint = record.env.fingerprint
    native = fingerprint is not None and m.peak_column in peak.columns(Fingerprint.from_dict(fingerprint))
    return (f"no MFU: the {m.peak_column} peak was measured on a busy machine" if native else
            f"no MFU: {m.peak_column} is not native here, no peak to divide by")


def _relspeed_rows(m: dict) -> list[tuple[str, ...]]:
    """The gate's measurement, as a table of its rows (not only the ratio in the JSON)."""
    if "relspeed_ratio" not in m:
        return []
    ratios, busy = m.relspeed_ratios, sum(m.relspeed_contended or [])
    return [("relative speed: model / reference time", f"{m.relspeed_ratio:.4f}",
             f"median of {len(ratios)} rounds in {m.get('relspeed_processes', 1)} processes, "
             f"range {min(ratios):.4f}–{max(ratios):.4f}; {busy} round(s) on a busy machine", "", ""),
            ("reference", m.relspeed_reference, m.relspeed_clock or "", "", "")]


def _accuracy_why(s) -> str:
    if s.accuracy_precision is None:  # an older record, without accuracy_precision
        return "the run's precision (records without accuracy_precision evaluated in it)"
    if s.precision_requested == "auto":
        return "accuracy's default on every machine (`auto` chooses for timing only; --precision names another)"
    return "as asked (--precision)"


def _top5_label(classes: int) -> str:
    """Top-5 over fewer than 5 classes counts every class (timm's accuracy() does the same): 100 % by construction."""
    return "top-5 %" if classes >= 5 else f"top-5 % (of {classes} classes: every class, 100 by construction)"


def _accuracy_rows(record: Record, p) -> list[tuple[str, ...]]:
    m = record.metrics
    if "top1" not in m:
        return []
    ev = record.settings.eval
    # The paper's ImageNet numbers apply to a 1000-class ImageNet evaluation; V2 has its own column.
    v2 = ev["dataset"] == "imagenet-v2"
    paper_top1 = None if not p or ev["num_classes"] != 1000 else p.v2 if v2 else p.top1
    prep = ev["preprocess"]
    scope = f"{m.images:,} images, {ev['dataset']}, {prep['protocol']} crop {prep['crop_pct']}, {record.accuracy_precision}"

    # weights that are not the paper's (a user's or random checkpoint) get no delta: -72 points against the paper
    # says nothing about them (a hostile pass); their note says why, the paper's number stays beside them
    reproduction = not any("not a reproduction" in n for n in record.notes)

    def row(label, key, paper=None):
        delta = "" if paper is None or m.get(key) is None else f"{m[key] - paper:+.2f} pt" if reproduction else \
            "not compared: not the paper's weights"
        return (label, _num(m.get(key), ".2f"), "", _num(paper, ".1f"), delta)

    # the paper's V2 top-1 is of V2's 10,000 images (this said "50,000 ImageNet val" beside it, a hostile pass)
    evaluated = "" if not paper_top1 else "10,000 ImageNet-V2 matched frequency" if v2 else "50,000 ImageNet val"
    rows = [("evaluated on", scope, "", evaluated, ""),
            row("top-1 %", "top1", paper_top1), row(_top5_label(ev["num_classes"]), "top5")]
    if "top1_cls" in m:
        rows += [row("top-1 %, class head", "top1_cls"), row("top-1 %, distillation head", "top1_dist"),
                 row("top-1 %, mean of logits (official)", "top1_fused_logits"),
                 row("top-1 %, sum of softmaxes (paper text)", "top1_fused_probs")]
    if "real_top1" in m:
        rows.append(row(f"ReaL top-1 % ({m.real_images:,} counted)", "real_top1", p.real if paper_top1 else None))
    rows.append(("loss (cross-entropy)", f"{m.loss:.4f}", "", "", ""))
    rows.append(("eval images/s (loading included)", f"{m.eval_img_per_s:,.1f}", "", "", ""))
    if m.eval_img_per_s_steady:
        rows.append(("eval images/s after the first batch", f"{m.eval_img_per_s_steady:,.1f}", "", "", ""))
    return rows
