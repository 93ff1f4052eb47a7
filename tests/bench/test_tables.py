"""bench tables / figures on committed fixture records (real records of this project's runs)."""

import copy
import dataclasses
import filecmp
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import ablations, cli, figures, tables, trained, trained_tables
from bench.record import load_records

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tables"
RECORDS = FIXTURES / "records"
ATTENTION = ablations.get("table_attention_mini")
AVX2_FINGERPRINT = {"device": "cpu", "cpu_vendor": "AuthenticAMD", "cpu_family": "25", "cpu_model": "17",
                    "cpu_stepping": "1", "cpu_name": "AMD EPYC", "isa": ["avx", "avx2", "fma"], "cores": 2, "threads": 2,
                    "torch": "2.14.1", "timm": "1.0.31", "cpu_capability": "AVX2"}  # this machine's, as a record holds it


@pytest.fixture(scope="module")
def records():
    return load_records(RECORDS)


def test_tables_from_fixture_records_match_the_golden_markdown(tmp_path, records):
    """After an intended change of a table, regenerate with UPDATE_GOLDEN=1 and review the diff."""
    for table in tables.build_all(records):
        tables.write(table, tmp_path)
    written = sorted(tmp_path.glob("*.md"))
    assert len(written) == 17
    for md in written:
        golden = FIXTURES / "golden" / md.name
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(exist_ok=True)
            shutil.copy(md, golden)
        assert md.read_text() == golden.read_text(), md.name


def test_the_same_records_give_identical_files(tmp_path, capsys):
    for out in ("a", "b"):
        assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / out / "t"),
                         "--figures", str(tmp_path / out / "f")]) == 0
    comparison = filecmp.dircmp(tmp_path / "a" / "t", tmp_path / "b" / "t")
    assert comparison.left_list and not comparison.diff_files
    figs = filecmp.dircmp(tmp_path / "a" / "f", tmp_path / "b" / "f")
    assert figs.left_list and not figs.diff_files


def test_rows_without_records_say_not_run_never_a_paper_number(records):
    t5 = tables.table5(records).frame
    assert (t5["im/s ours, paper protocol"] == tables.NOT_RUN).all()  # only timm-protocol records in the fixture
    assert (t5["top-1 ours"] == tables.NOT_RUN).all()  # no official weights here
    assert t5.loc[t5["model"] == "DeiT-B", "params ours"].item() == "86,567,656"
    t3 = trained_tables.table3(records, "cifar10").frame
    assert (t3["ours top-1 (cifar10)"] == tables.NOT_RUN).all()


def test_seeds_are_averaged_but_a_changed_config_is_not(records):
    run = max((r for r in records if r.settings.get("experiment") == "mini_none"), key=lambda r: r.env["created"])
    seed1 = dataclasses.replace(run, settings={**run.settings, "config": {**run.settings["config"], "seed": 1}},
                                metrics={**run.metrics, "final_val_top1": run.metrics["final_val_top1"] + 2})
    changed = dataclasses.replace(run, settings={**run.settings, "config": {**run.settings["config"], "lr": 9.0}},
                                  env={**run.env, "created": "2000-01-01T00:00:00+00:00"})
    frame = trained_tables.table3([run, seed1, changed], "mini").frame
    value = run.metrics["final_val_top1"]
    assert frame.loc[0, "ours top-1 (mini)"] == f"{value + 1:.2f} ± 1.41 (2 seeds)"


def test_a_copy_of_a_runs_record_counts_once(records):
    """A hostile pass: `reproduce train --resume` of a finished run with another --results-dir wrote a second,
    identical record of it; read with the first, that seed weighed double in the row's mean and spread."""
    run = max((r for r in records if r.settings.get("experiment") == "mini_none"), key=lambda r: r.env["created"])
    seed1 = dataclasses.replace(run, settings={**run.settings, "config": {**run.settings["config"], "seed": 1}},
                                metrics={**run.metrics, "final_val_top1": run.metrics["final_val_top1"] + 2})
    value = run.metrics["final_val_top1"]
    frame = trained_tables.table3([run, seed1, copy.deepcopy(seed1)], "mini").frame
    assert frame.loc[0, "ours top-1 (mini)"] == f"{value + 1:.2f} ± 1.41 (2 seeds)"


def test_records_of_one_checkpoint_under_other_seeds_count_once_and_are_named(records, tmp_path):
    """A hostile pass: the five mini_hard_cls records copied with seed + 10 made the row "10 seeds" and its Holm p
    0.047, "yes", where the five runs give 0.209, "no"; the copies named the very checkpoints of the originals."""
    from bench import trained

    run = max((r for r in records if r.settings.get("experiment") == "mini_none"), key=lambda r: r.env["created"])
    runs = [dataclasses.replace(run, settings={**run.settings, "config": {**run.settings["config"], "seed": seed}},
                                metrics={**run.metrics, "final_val_top1": 50.0 + seed, "checkpoint_sha256": f"{seed:064x}"})
            for seed in (0, 1)]
    copy10 = dataclasses.replace(runs[1], settings={**runs[1].settings,
                                                    "config": {**runs[1].settings["config"], "seed": 11}})
    frame = trained_tables.table3([*runs, copy10], "mini").frame
    assert frame.loc[0, "ours top-1 (mini)"] == "50.50 ± 0.71 (2 seeds)"
    [note] = trained.copied_runs([(tmp_path / "a.json", runs[1]), (tmp_path / "b.json", copy10),
                                  (tmp_path / "c.json", runs[0])])
    assert note.startswith(f"{tmp_path / 'a.json'}, {tmp_path / 'b.json'} name one checkpoint") and "seeds 1, 11" in note


def test_a_seed_trained_again_counts_once_by_its_newest_run_and_is_named(records, tmp_path):
    """A hostile pass: a copy of a seed's record with another `created` made a row "6 seeds" (p 0.042 became 0.028)
    without a word. A second run of a seed is no second sample: the newest counts, and `bench tables` names both."""
    run = max((r for r in records if r.settings.get("experiment") == "mini_none"), key=lambda r: r.env["created"])
    seed1 = dataclasses.replace(run, settings={**run.settings, "config": {**run.settings["config"], "seed": 1}},
                                metrics={**run.metrics, "final_val_top1": run.metrics["final_val_top1"] + 2})
    again = dataclasses.replace(seed1, env={**seed1.env, "created": "2030-01-01T00:00:00+00:00"},
                                metrics={**seed1.metrics, "final_val_top1": 99.0})
    value = run.metrics["final_val_top1"]
    frame = trained_tables.table3([run, seed1, again], "mini").frame
    mean, spread = (value + 99.0) / 2, abs(99.0 - value) / 2 ** 0.5
    assert frame.loc[0, "ours top-1 (mini)"] == f"{mean:.2f} ± {spread:.2f} (2 seeds)"
    found = [(tmp_path / "a.json", run), (tmp_path / "b.json", seed1), (tmp_path / "c.json", again)]
    assert trained.repeated_seeds(found) == [
        f"experiment mini_none, seed 1: trained 2 times in one configuration ({tmp_path / 'b.json'}, "
        f"{tmp_path / 'c.json'}); a table counts its newest run at most once"]


def test_seeds_that_ran_in_another_precision_are_not_averaged(records):
    """`amp=auto` is one config but bf16 on one machine and fp32 on the next: those seeds are not one row."""
    run = max((r for r in records if r.settings.get("experiment") == "mini_none"), key=lambda r: r.env["created"])
    def seed(n, amp, created, top1):
        return dataclasses.replace(run, settings={**run.settings, "amp": amp, "config": {**run.settings["config"],
                                   "amp": "auto", "seed": n}}, metrics={**run.metrics, "final_val_top1": top1},
                                   env={**run.env, "created": created})
    bf16 = [seed(n, "bf16", "2026-11-20T00:00:00+00:00", 50.0 + n) for n in range(3)]
    fp32 = [seed(n, "none", "2026-12-01T00:00:00+00:00", 60.0 + n) for n in range(2)]
    assert trained.train_runs(bf16 + fp32, "mini_none") == fp32
    assert trained_tables.table3(bf16 + fp32, "mini").frame.loc[0, "ours top-1 (mini)"] == "60.50 ± 0.71 (2 seeds)"


def test_table4_averages_the_seeds_of_the_newest_configuration(records):
    (run,) = [r for r in records if r.kind == "disagree"]
    def variant(seed, shift, key, created):
        matrix = {a: {b: v + shift if a != b else 0.0 for b, v in row.items()} for a, row in run.metrics["disagreement"].items()}
        return dataclasses.replace(run, settings={**run.settings, "seed": seed, "config_key": key},
                                   metrics={**run.metrics, "disagreement": matrix}, env={**run.env, "created": created})
    older = variant(0, 0.3, "older", "2000-01-01T00:00:00+00:00")
    frame = trained_tables.table4([run, variant(1, 0.02, run.settings["config_key"], run.env["created"]), older], "mini").frame
    teacher_vs_deit = run.metrics["disagreement"]["convnet"]["DeiT"]
    assert frame.loc[frame["model"] == "convnet", "DeiT"].item() == f"0.133 / {teacher_vs_deit + 0.01:.3f} ± 0.014"
    assert (trained_tables.table4(records, "cifar10").frame["DeiT"].str.endswith("not run")).all()


def test_figures_are_png_and_svg_and_not_empty(tmp_path, records):
    paths = figures.build_all(records, tmp_path)
    names = {p.name for p in paths}
    assert {"fig1_throughput_vs_top1.png", "resolution_sweep.svg", "table3_curves_mini.png"} <= names
    assert all(p.stat().st_size > 1000 for p in paths)


def test_a_missing_records_folder_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["tables", "--records", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_figures_render_the_same_files_in_parallel_and_in_one_process(tmp_path, records):
    serial = figures.build_all(records, tmp_path / "serial", jobs=1)
    parallel = figures.build_all(records, tmp_path / "parallel", jobs=2)
    assert [p.name for p in serial] == [p.name for p in parallel]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(serial, parallel))


def test_the_gallery_shows_test_images_where_teacher_and_heads_disagree(tmp_path, records):
    """Real prediction files and images made here; the fixture records are pointed at them."""
    import torch
    from PIL import Image

    from bench.predictions import Predictions

    classes = ["cat", "dog", "frog"]
    names = [f"{c}/{i:05d}.png" for c in classes for i in range(4)]
    for k, name in enumerate(names):
        (tmp_path / "data" / "test" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (20 * k, 100, 200 - 10 * k)).save(tmp_path / "data" / "test" / name)
    targets = torch.tensor([classes.index(n.split("/")[0]) for n in names])
    wrong = (targets + 1) % 3
    top5 = {"teacher": {"": torch.stack([targets, wrong], 1)},
            "hard": {"cls": torch.stack([wrong, targets], 1), "dist": torch.stack([targets, wrong], 1)}}
    pointed = []
    for role in ("teacher", "hard"):
        run = max((r for r in records if r.settings.get("experiment") == f"mini_{role}"), key=lambda r: r.env["created"])
        Predictions(names, targets, top5[role], 0.0).save(tmp_path / role / "predictions.pt")
        pointed.append(dataclasses.replace(run, settings={**run.settings, "output": str(tmp_path / role),
                                                          "config": {**run.settings["config"], "data": str(tmp_path / "data")}}))
    paths = figures.gallery(pointed, tmp_path / "f", "mini", count=5)
    assert [p.name for p in paths] == ["gallery_mini.png", "gallery_mini.svg"]
    svg = paths[1].read_text()
    assert svg.count("<image") == 5  # 5 of the 12 disagreements, round-robin over the true classes


def speed_columns(frame, protocol: str) -> list[str]:
    return [c for c in frame.columns if c.startswith(f"im/s ours, {protocol} protocol")]


def test_table10_keeps_each_timing_protocol_in_its_own_column(records):
    """A paper-protocol record (mean of 30, the batch given) fills its own column, never the timm one."""
    timm_run = next(r for r in records if r.kind == "bench" and r.variant == "deit_b"
                    and r.settings.get("img_size") == 224 and r.settings.get("protocol") == "timm")
    paper = tables.TIMING_PROTOCOLS["paper"]  # the paper protocol fixes its loop
    paper_run = dataclasses.replace(timm_run, settings={**timm_run.settings, "protocol": "paper", "stat": "mean",
                                                        "warmup": paper.warmup["cpu"], "iters": paper.iters["cpu"]},
                                    metrics={**timm_run.metrics, "infer_img_per_s": 123.4},
                                    env={**timm_run.env, "created": "2099-01-01T00:00:00+00:00"})
    frame = tables.table10([*records, paper_run]).frame
    (paper_column,), (timm_column,) = speed_columns(frame, "paper"), speed_columns(frame, "timm")
    row = frame.set_index("test size").loc[224]
    assert row[paper_column] == "123.4"
    assert row[timm_column] == f"{timm_run.metrics['infer_img_per_s']:,.1f}"
    assert tables.table10(records).frame.set_index("test size").loc[224, "im/s ours, paper protocol"] == tables.NOT_RUN


def test_a_batch_sweep_record_does_not_replace_the_protocols_batch_in_table5(records):
    """`bench run --batch-size 64` records (the throughput-vs-batch figure) leave Table 5 at the protocol's batch 16."""
    b16 = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    b64 = dataclasses.replace(b16, settings={**b16.settings, "batch_size": 64},
                              metrics={**b16.metrics, "infer_img_per_s": 99.9},
                              env={**b16.env, "created": "2099-01-01T00:00:00+00:00"})
    frame = tables.table5([*records, b64]).frame
    (column,) = speed_columns(frame, "timm")
    assert "batch 16" in column and frame.set_index("model").loc["DeiT-Ti", column] == f"{b16.metrics['infer_img_per_s']:.1f}"
    alone = tables.table5([r for r in records if r is not b16] + [b64]).frame
    (column,) = speed_columns(alone, "timm")  # the only record of DeiT-Ti still counts, its batch in its cell
    assert alone.set_index("model").loc["DeiT-Ti", column] == "99.9 (batch 64)"


def test_a_best_search_that_chose_eager_stays_out_of_the_protocol_columns(records):
    """`bench run --best` may choose eager with timm's fused attention; its batch and trials were still searched, so
    its figure is `table_best_speed`'s, never Table 5's (CI caught this when a noisy search chose eager)."""
    b16 = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    searched = dataclasses.replace(b16, settings={**b16.settings, "compile": False, "attention": "sdpa",
                                                  "search": {"chosen": {"compile": "off"}}},
                                   metrics={**b16.metrics, "infer_img_per_s": 99.9},
                                   env={**b16.env, "created": "2099-01-01T00:00:00+00:00"})
    assert tables.timed_as_protocol(b16) and not tables.timed_as_protocol(searched)
    (column,) = speed_columns(tables.table5([*records, searched]).frame, "timm")
    assert tables.table5([*records, searched]).frame.set_index("model").loc["DeiT-Ti", column] == \
        f"{b16.metrics['infer_img_per_s']:.1f}"


def test_a_busy_machines_timing_never_hides_a_quiet_one_and_alone_it_says_busy(records):
    """The README's first `bench run`, made while another process ran, replaced a quiet cell with a third of it."""
    b16 = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    busy = dataclasses.replace(b16, metrics={**b16.metrics, "infer_img_per_s": 9.9, "timed_busy": True,
                                             "timed_other_cores": 1.0},
                               env={**b16.env, "created": "2099-01-01T00:00:00+00:00"})
    (column,) = speed_columns(tables.table5([*records, busy]).frame, "timm")
    assert tables.table5([*records, busy]).frame.set_index("model").loc["DeiT-Ti", column] == \
        f"{b16.metrics['infer_img_per_s']:.1f}"
    alone = tables.table5([r for r in records if r is not b16] + [busy]).frame
    (column,) = speed_columns(alone, "timm")
    assert alone.set_index("model").loc["DeiT-Ti", column] == "9.9 (busy machine)"
    assert busy not in figures._speed_records([*records, busy]) and b16 in figures._speed_records(records)


def test_a_speed_only_record_leaves_the_size_of_an_earlier_one_in_table5(records):
    """`bench run --metrics speed` (no params/GMACs) is newer than the size record: the size columns keep it."""
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    speed = dataclasses.replace(sized, metrics={k: v for k, v in sized.metrics.items() if k not in ("params", "gmacs")}
                                | {"infer_img_per_s": 77.7}, env={**sized.env, "created": "2099-01-01T00:00:00+00:00"})
    frame = tables.table5([*records, speed]).frame
    row = frame.set_index("model").loc["DeiT-Ti"]
    assert row["params ours"] == f"{sized.metrics['params']:,}" and row["GMACs ours"] == f"{sized.metrics['gmacs']:.3f}"
    assert row[speed_columns(frame, "timm")[0]] == "77.7"


def test_a_speed_column_names_its_machine_by_its_vector_units_not_only_its_name(records):
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    new = dataclasses.replace(sized, env={**sized.env, "fingerprint": AVX2_FINGERPRINT, "created": "2099-01-01T00:00:00+00:00"})
    old = dataclasses.replace(sized, env={k: v for k, v in sized.env.items() if k != "fingerprint"})
    assert speed_columns(tables.table5([new]).frame, "timm") == [
        "im/s ours, timm protocol: AMD EPYC AVX2 [f25m17s1, 2 cores], torch 2.15.0, fp32, batch 16, 2 threads"]
    assert "[ISA not recorded]" in speed_columns(tables.table5([old]).frame, "timm")[0]


def test_two_machines_whose_vector_units_and_name_agree_fill_two_columns(records):
    """A hostile pass: a 64-core family 25 model 1 record, twice as fast, replaced the 2-core model 17 machine's cell in
    its column, the header naming only "AMD EPYC AVX2"."""
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    big = AVX2_FINGERPRINT | {"cpu_model": "1", "cores": 64}
    here = dataclasses.replace(sized, env={**sized.env, "fingerprint": AVX2_FINGERPRINT})
    there = dataclasses.replace(sized, metrics={**sized.metrics, "infer_img_per_s": 2 * sized.metrics["infer_img_per_s"]},
                                env={**sized.env, "fingerprint": big, "created": "2099-01-01T00:00:00+00:00"})
    frame = tables.table5([here, there]).frame.set_index("model")
    columns = speed_columns(frame, "timm")
    assert [c.split(": ", 1)[1].split(",")[0] for c in columns] == ["AMD EPYC AVX2 [f25m17s1", "AMD EPYC AVX2 [f25m1s1"]
    assert "64 cores]" in columns[1]
    assert frame.loc["DeiT-Ti", columns[0]] == _shown(here) and frame.loc["DeiT-Ti", columns[1]] == _shown(there)


def test_a_record_of_unknown_load_is_marked_and_never_hides_a_quiet_one(records):
    """A review: a timing made where /proc/stat could not be read (timed_busy null) stood in a column as a quiet one,
    unmarked, and a newer one replaced a quiet record."""
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    quiet = dataclasses.replace(sized, metrics={**sized.metrics, "timed_busy": False, "timed_other_cores": 0.0})
    unknown = dataclasses.replace(sized, metrics={**sized.metrics, "infer_img_per_s": 99.0, "timed_busy": None,
                                                  "timed_other_cores": None},
                                  env={**sized.env, "created": "2099-01-01T00:00:00+00:00"})
    column = speed_columns(tables.table5([unknown]).frame, "timm")[0]
    assert tables.table5([unknown]).frame.set_index("model").loc["DeiT-Ti", column].startswith("99.0 (load unknown)")
    assert tables.table5([quiet, unknown]).frame.set_index("model").loc["DeiT-Ti", column] == _shown(quiet)


def test_records_without_a_fingerprint_from_two_torch_versions_fill_two_columns(records):
    """Two sessions' "AMD EPYC" records, from before fingerprints, under torch 2.15.0 and 2.14.1, stood in one column
    as if timed alike (an audit): the machine may differ and the software does; each version has its column."""
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    env = {k: v for k, v in sized.env.items() if k != "fingerprint"}
    old = dataclasses.replace(sized, env={**env, "torch": "2.15.0+cu132"})
    new = dataclasses.replace(sized, metrics={**sized.metrics, "infer_img_per_s": 12.5},
                              env={**env, "torch": "2.14.1+cu130", "created": "2099-01-01T00:00:00+00:00"})
    frame = tables.table5([old, new]).frame.set_index("model")
    columns = speed_columns(frame, "timm")
    assert columns == [f"im/s ours, timm protocol: AMD EPYC [ISA not recorded], torch {v}, fp32, batch 16, 2 threads"
                       for v in ("2.15.0", "2.14.1")]
    assert frame.loc["DeiT-Ti", columns[1]] == "12.5" and frame.loc["DeiT-Ti", columns[0]] == _shown(old)


def test_no_speed_column_mixes_machines_or_precisions_and_a_new_machine_changes_no_column(records, tmp_path):
    """Issue #36: records of two machines and two precisions fill four columns per protocol, each one machine and
    one precision; a record from a third machine adds its own column and leaves every other cell as it was."""
    bench = [r for r in records if r.kind == "bench" and "infer_img_per_s" in r.metrics]
    amx = AVX2_FINGERPRINT | {"cpu_vendor": "GenuineIntel", "cpu_name": "Intel Xeon", "cpu_family": "6",
                              "cpu_model": "143", "isa": ["avx", "avx2", "fma", "avx512f", "amx_bf16"]}
    def on(r, fingerprint, precision, created, factor):
        return dataclasses.replace(r, settings={**r.settings, "precision": precision},
                                   metrics={**r.metrics, "infer_img_per_s": r.metrics["infer_img_per_s"] * factor},
                                   env={**r.env, "fingerprint": fingerprint, "created": created})
    two = [on(r, AVX2_FINGERPRINT, "fp32", "2098-01-01T00:00:00+00:00", 1.0) for r in bench]
    two += [on(r, amx, "amp_bf16", "2098-06-01T00:00:00+00:00", 3.0) for r in bench if r.variant in ("deit_ti", "deit_s")]
    two += [on(r, amx, "fp32", "2098-07-01T00:00:00+00:00", 1.5) for r in bench if r.variant == "deit_ti"]
    for table in (tables.table1, tables.table5, tables.table5_comparison, tables.table10, tables.table2):
        frame = table(two).frame
        for column in [c for c in frame.columns if "im/s ours" in c]:
            cells = frame[column][frame[column] != tables.NOT_RUN]
            holders = [r for r in two if any(_shown(r) == cell for cell in cells)]
            assert len({tables.speed_key(r) for r in holders}) <= 1, (table.__name__, column)
    before = tables.table5(two).frame
    assert speed_columns(before, "timm") == ["im/s ours, timm protocol: AMD EPYC AVX2 [f25m17s1, 2 cores], torch 2.15.0, fp32, batch 16, 2 threads",
                                             "im/s ours, timm protocol: Intel Xeon AVX-512 bf16 [f6m143s1, 2 cores], torch 2.15.0, amp_bf16, batch 16, 2 threads",
                                             "im/s ours, timm protocol: Intel Xeon AVX-512 bf16 [f6m143s1, 2 cores], torch 2.15.0, fp32, batch 16, 2 threads"]
    third = on(next(r for r in bench if r.variant == "deit_b"), AVX2_FINGERPRINT | {"threads": 1}, "fp32",
               "2099-01-01T00:00:00+00:00", 0.5)
    third = dataclasses.replace(third, env={**third.env, "num_threads": 1})
    after = tables.table5([*two, third]).frame
    assert set(after.columns) - set(before.columns) == {"im/s ours, timm protocol: AMD EPYC AVX2 [f25m17s1, 2 cores], torch 2.15.0, fp32, batch 16, 1 threads"}
    assert after[list(before.columns)].equals(before)
    for table in (tables.table5, tables.table10):
        tables.write(table(two), tmp_path / "before")
        tables.write(table([*two, third]), tmp_path / "after")
    for csv in (tmp_path / "before").glob("*.csv"):
        old, new = pd.read_csv(csv, dtype=str), pd.read_csv(tmp_path / "after" / csv.name, dtype=str)
        assert new[list(old.columns)].equals(old), csv.name


def _shown(r) -> str:
    speed = r.metrics["infer_img_per_s"]
    return f"{speed:,.1f}" if speed >= 1 else f"{speed:.2g}"


def test_each_of_our_figure1_lines_is_one_machine_and_one_protocol(records):
    """Two machines' points on one line would draw a trend that is not there: the line takes the machine and protocol
    that cover the most of the family, then the newest; the other machine's record is left out, not mixed in."""
    ti = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    def on(fingerprint, variant, created, protocol="timm"):
        return dataclasses.replace(ti, variant=variant, settings={**ti.settings, "protocol": protocol},
                                   env={**ti.env, "fingerprint": fingerprint, "created": created})
    a = AVX2_FINGERPRINT
    b = a | {"isa": ["avx", "avx2", "avx512f", "avx512_bf16", "fma"]}
    old = [on(b, "deit_ti", "2098-01-01T00:00:00+00:00"), on(b, "deit_s", "2098-01-01T00:00:01+00:00")]
    new = on(a, "deit_ti", "2099-01-01T00:00:00+00:00")
    line = figures._one_line([*old, new], ("deit_ti", "deit_s"))
    assert set(line) == {"deit_ti", "deit_s"} and all(r in old for r in line.values())
    line = figures._one_line([*old, new, on(a, "deit_s", "2099-01-01T00:00:01+00:00")], ("deit_ti", "deit_s"))
    assert {trained.machine_of(r) for r in line.values()} == {"AMD EPYC AVX2 [f25m17s1, 2 cores]"}  # equal cover: the newer machine
    paper = on(a, "deit_ti", "2099-01-01T00:00:02+00:00", protocol="paper")
    assert figures._one_line([*old, new, paper], ("deit_ti", "deit_s"))["deit_ti"] in old  # never two protocols


def test_the_table3_figure_does_not_depend_on_the_global_random_state(tmp_path, records):
    """Every `bench tables` process starts from another global RNG state; with two seeds per row nothing drawn
    from it (seaborn's strip jitter did) may reach the files."""
    second = [dataclasses.replace(r, settings={**r.settings, "config": {**r.settings["config"], "seed": 1}},
                                  metrics={**r.metrics, **{k: v + 1 for k, v in r.metrics.items() if k.startswith("final_val_top1")}},
                                  env={**r.env, "created": r.env["created"].replace("2026", "2025")})
              for r in records if r.kind == "train" and r.settings.get("experiment", "").startswith("mini_")]
    for seed in (0, 1):
        np.random.seed(seed)
        figures.table3_curves([*records, *second], tmp_path / str(seed), "mini")
        figures.ablation_curves([*records, *second], tmp_path / str(seed), ATTENTION)
    for name in ("table3_curves_mini.png", "table3_curves_mini.svg", "attention_mini.png", "attention_mini.svg"):
        assert (tmp_path / "0" / name).read_bytes() == (tmp_path / "1" / name).read_bytes(), name


def test_the_attention_figure_draws_the_attention_rows_under_both_teachers(tmp_path, records, monkeypatch):
    def renamed(r, experiment):
        return dataclasses.replace(r, settings={**r.settings, "experiment": experiment})
    none = next(r for r in records if r.kind == "train" and r.settings.get("experiment") == "mini_none")
    teacher = next(r for r in records if r.kind == "train" and r.settings.get("experiment") == "mini_teacher")
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, name: drawn.setdefault(name, fig) and [])
    figures.ablation_curves([*records, renamed(none, "mini_attn"), renamed(teacher, "mini_vit_teacher")], tmp_path,
                            ATTENTION)
    curves, finals = drawn["attention_mini"].axes
    assert [t.get_text() for t in finals.get_yticklabels()] == ["mini_none (fp32)", "mini_hard (fp32)",
                                                                "mini_attn (fp32)"]
    teachers = [t.get_text() for t in curves.get_legend().get_texts() if t.get_text().startswith("teacher")]
    assert teachers == [f"teacher: convnet, fp32 ({teacher.metrics['final_val_top1']:.1f})",
                        f"teacher: ViT, 9 blocks, fp32 ({teacher.metrics['final_val_top1']:.1f})"]
    assert "not the paper's method" in drawn["attention_mini"]._suptitle.get_text()
    figures.plt.close(drawn["attention_mini"])  # _save, stubbed here, closes it otherwise
    assert figures.ablation_curves([r for r in records if r.kind != "train"], tmp_path, ATTENTION) == []
    bf16 = dataclasses.replace(none, settings={**none.settings, "amp": "bf16"},
                               env={**none.env, "created": "2099-01-01T00:00:00+00:00"})
    drawn.clear()
    figures.ablation_curves([*records, bf16], tmp_path, ATTENTION)  # a row trained in two precisions: a line for each
    labels = [t.get_text() for t in drawn["attention_mini"].axes[1].get_yticklabels()]
    figures.plt.close(drawn["attention_mini"])
    assert labels[:2] == ["mini_none (fp32)", "mini_none (bf16)"]  # the kind that covers most rows first


def _seeds(run, experiment, amp, values, *, created="2099-01-01T00:00:00+00:00", env=None, metric="final_val_top1"):
    return [dataclasses.replace(run, settings={**run.settings, "experiment": experiment, "amp": amp,
                                               "config": {**run.settings["config"], "seed": n}},
                                metrics={**run.metrics, metric: v}, env={**run.env, "created": created, **(env or {})})
            for n, v in enumerate(values)]


def test_a_delta_is_tested_only_within_one_precision_and_says_what_differs_otherwise(records):
    """Issue #30: a row trained in fp32 is not given a verdict against a bf16 control; within one kind the cell holds
    the difference, its 95 % interval, Welch's p and the Holm-adjusted p, and the rule is written under the table."""
    run = next(r for r in records if r.kind == "train" and r.settings.get("experiment") == "mini_none")
    bf16_none = _seeds(run, "mini_none", "bf16", [55.31, 56.20, 56.32, 55.28, 55.97])
    bf16_hard = _seeds(run, "mini_hard_cls", "bf16", [56.44, 57.24, 57.57, 55.73, 56.95])
    fp32_soft = _seeds(run, "mini_soft_cls", "none", [58.0, 58.1, 58.2])
    table = trained_tables.table3([*bf16_none, *bf16_hard, *fp32_soft], "mini")
    frame = table.frame.set_index("method")
    hard = frame.loc["DeiT, hard distillation (class token)"]
    assert hard["ours Δ [95 % CI]"] == "+0.97 [+0.05, +1.89]"
    assert hard["ours p Welch; Holm"] == "0.042; 0.042" and hard["ours finding"] == "yes"  # the only test
    soft = frame.loc["DeiT, usual distillation (class token)"]
    assert soft["ours Δ [95 % CI]"] == "no control trained in fp32, cpu, torch 2.15" and soft["ours finding"] == "not tested"
    assert soft["trained in"] == "fp32, cpu, torch 2.15" and hard["trained in"] == "bf16, cpu, torch 2.15"
    assert stats_rule_in(table)


def stats_rule_in(table) -> bool:
    from bench import stats
    return stats.RULE in table.footer


def test_holm_counts_every_tested_row_of_a_table(records):
    run = next(r for r in records if r.kind == "train" and r.settings.get("experiment") == "mini_none")
    none = _seeds(run, "mini_none", "bf16", [55.31, 56.20, 56.32, 55.28, 55.97])
    hard = _seeds(run, "mini_hard_cls", "bf16", [56.44, 57.24, 57.57, 55.73, 56.95])
    soft = _seeds(run, "mini_soft_cls", "bf16", [55.78, 56.03, 57.30, 56.42, 56.85])
    frame = trained_tables.table3([*none, *hard, *soft], "mini").frame.set_index("method")
    assert frame.loc["DeiT, hard distillation (class token)", "ours p Welch; Holm"] == "0.042; 0.083"
    assert frame.loc["DeiT, hard distillation (class token)", "ours finding"] == "no"
    assert frame.loc["DeiT, usual distillation (class token)", "ours p Welch; Holm"] == "0.099; 0.099"


def test_the_attention_table_compares_each_row_with_the_control_of_its_own_kind_and_marks_another_cpu(records):
    """The bf16 control of another machine is never the fp32 rows' control; an fp32 control of the same torch on
    another CPU is, marked ‡ with its note; rows keep one line per kind."""
    run = next(r for r in records if r.kind == "train" and r.settings.get("experiment") == "mini_none")
    bf16 = _seeds(run, "mini_none", "bf16", [55.31, 56.20, 56.32, 55.28, 55.97], created="2098-01-01T00:00:00+00:00")
    attn = _seeds(run, "mini_attn", "none", [58.18, 57.99, 58.01], env={"fingerprint": AVX2_FINGERPRINT})
    only_bf16 = trained_tables.ablation([*bf16, *attn], ATTENTION).frame.set_index("experiment")
    assert only_bf16.loc["mini_attn", "Δ no distillation [95 % CI]"].startswith("no control trained in fp32")
    avx512 = AVX2_FINGERPRINT | {"isa": ["avx", "avx2", "fma", "avx512f", "avx512_bf16"]}
    fp32 = _seeds(run, "mini_none", "none", [57.0, 57.4, 56.8, 57.2, 57.1], env={"fingerprint": avx512})
    table = trained_tables.ablation([*bf16, *attn, *fp32], ATTENTION)
    frame = table.frame
    assert list(frame.loc[frame["experiment"] == "mini_none", "trained in"]) == ["fp32, cpu, torch 2.15",
                                                                                "bf16, cpu, torch 2.15"]
    row = frame.set_index("experiment").loc["mini_attn"]
    assert row["Δ no distillation [95 % CI]"].startswith("+0.96 [+0.67, +1.25]") and row["Δ no distillation [95 % CI]"].endswith(" ‡")
    assert row["finding"] == "yes"
    assert trained.OTHER_CPU_NOTE in table.footer


def test_a_control_seed_from_a_machine_of_the_same_name_and_vector_units_is_marked_and_the_paired_table_names_it(records):
    """A hostile pass: one control seed from a 96-core family 26 machine went unmarked ("AMD EPYC AVX2" on both), and
    the class-token table, whose sides mixed 1 and 2 threads, said nothing of where it trained."""
    run = next(r for r in records if r.kind == "train" and r.settings.get("experiment") == "mini_none")
    *here, there = _seeds(run, "mini_none", "none", [57.0, 57.4, 56.8, 57.2, 57.1], env={"fingerprint": AVX2_FINGERPRINT})
    there = dataclasses.replace(there, env={**there.env, "fingerprint": AVX2_FINGERPRINT | {"cpu_family": "26",
                                                                                           "cores": 96}})
    attn = _seeds(run, "mini_attn", "none", [58.18, 57.99, 58.01], env={"fingerprint": AVX2_FINGERPRINT})
    frame = trained_tables.ablation([*here, there, *attn], ATTENTION).frame.set_index("experiment")
    assert frame.loc["mini_attn", "Δ no distillation [95 % CI]"].endswith(" ‡")
    assert "96 cores" in frame.loc["mini_none", "trained on"]
    heads = ("final_val_top1_cls", "final_val_top1_dist", "final_val_top1_fused_logits")
    timm, official = ([dataclasses.replace(r, metrics={**r.metrics, **{h: r.metrics["final_val_top1"] for h in heads}})
                       for r in _seeds(run, experiment, "none", values, env={"fingerprint": AVX2_FINGERPRINT})]
                      for experiment, values in (("mini_hard_init_timm", [55.2, 55.3]),
                                                 ("mini_hard_init_official", [55.1, 55.0])))
    paired = trained_tables.ablation([*timm, *official], ablations.get("table_cls_init_mini")).frame
    assert set(paired["trained on"]) == {"AMD EPYC AVX2 [f25m17s1, 2 cores], 2 threads"}


def test_table5s_top1_is_only_an_fp32_accuracy_of_official_weights(records):
    """A bf16 top-1 depends on the CPU that ran it (issue #30): it never fills the column beside the paper's."""
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    def accuracy(precision, top1, created):
        return dataclasses.replace(sized, settings={**sized.settings, "precision": "amp_bf16",
                                                    "accuracy_precision": precision},
                                   metrics={**sized.metrics, "top1": top1}, env={**sized.env, "created": created})
    fp32, bf16 = accuracy("fp32", 72.1, "2098-01-01T00:00:00+00:00"), accuracy("amp_bf16", 70.0, "2099-01-01T00:00:00+00:00")
    assert tables.table5([fp32, bf16]).frame.set_index("model").loc["DeiT-Ti", "top-1 ours"] == "72.10"
    assert tables.table5([bf16]).frame.set_index("model").loc["DeiT-Ti", "top-1 ours"] == tables.NOT_RUN


def test_a_table4_record_missing_a_model_is_skipped_with_a_warning_and_the_tables_still_build(tmp_path, capsys):
    """The schema checks types; a disagreement matrix without its 'ground truth' row is a shape only the tables know."""
    import json

    (src,) = [p for p in RECORDS.rglob("*.json") if json.loads(p.read_text())["kind"] == "disagree"]
    shutil.copytree(RECORDS, tmp_path / "records")
    bad = json.loads(src.read_text())
    del bad["metrics"]["disagreement"]["ground truth"]
    (tmp_path / "records" / "bad.json").write_text(json.dumps(bad))
    assert cli.main(["tables", "--records", str(tmp_path / "records"), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and "bad.json" in err and "ground truth" in err
    assert "1 unreadable record file(s) left out" in out  # the last line says so too, not only a warning above


def test_an_empty_records_folder_is_refused_and_leaves_the_tables_as_they_were(tmp_path, capsys):
    """A hostile pass: a mistyped --records folder wrote 48 empty tables over the real ones, exit 0."""
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()}
    (tmp_path / "empty").mkdir()
    assert cli.main(["tables", "--records", str(tmp_path / "empty"), "--out", str(tmp_path / "t"), "--no-figures"]) == 2
    assert "no readable records" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()} == before


def test_a_smoke_test_shorter_than_its_protocol_never_replaces_a_proper_run_in_the_tables(records):
    """A hostile pass: `bench run --warmup 0 --iters 1`, the newest record, put 8 im/s (a one-off setup timed) into
    the timm-protocol column where a 2 + 8 run had 99."""
    timed = [r for r in records if r.kind == "bench" and "infer_img_per_s" in r.metrics and r.settings.protocol == "timm"
             and r.settings.device == "cpu"]
    proper = timed[-1]
    smoke = dataclasses.replace(proper, settings={**proper.settings, "warmup": 0, "iters": 1},
                                metrics={**proper.metrics, "infer_img_per_s": 8.0},
                                env={**proper.env, "created": "2099-01-01T00:00:00+00:00"})
    assert tables.latest([proper, smoke], proper.variant, protocol="timm") is proper
    assert tables.latest([smoke], proper.variant, protocol="timm") is None


def test_an_interrupted_bench_tables_replaces_no_file_and_leaves_no_staging_folder(tmp_path, monkeypatch, capsys):
    """A hostile pass: Ctrl-C part-way left 51 to 71 of 73 files new beside an old page."""
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t")]) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def interrupted(records, out_dir, jobs=None):
        (out_dir / "fig1.svg").write_text("half a figure set")
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "build_all", interrupted)
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t")]) == 130
    assert "interrupted; nothing was replaced" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # no .lock, no .tmp-* either
    assert not list(tmp_path.rglob(".tmp-*"))
    (tmp_path / "figures" / ".tmp-staging-killed" / "fig1.png").parent.mkdir()  # a SIGKILL's: removed next time
    (tmp_path / "figures" / ".tmp-staging-killed" / "fig1.png").write_text("x")
    (tmp_path / "figures" / ".tmp-users-own").mkdir()  # a folder of someone else's, whatever its name: kept
    monkeypatch.undo()
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t")]) == 0
    assert [p.name for p in tmp_path.rglob(".tmp-*")] == [".tmp-users-own"] and "removed" in capsys.readouterr().err


def test_sigterm_before_bench_tables_puts_its_files_in_place_exits_143(tmp_path, monkeypatch, capsys):
    """A hostile pass: SIGTERM said "interrupted" and exit 130, where every other bench command says 143."""
    from bench.errors import Terminated

    def terminated(records, out_dir, jobs=None):
        raise Terminated

    monkeypatch.setattr(figures, "build_all", terminated)
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t")]) == 143
    assert "bench tables: terminated (SIGTERM); nothing was replaced" in capsys.readouterr().err


def test_a_full_disk_part_way_through_bench_tables_replaces_no_file(tmp_path, monkeypatch, capsys):
    """The last file written is the page: a full disk there used to leave every table and figure new beside the old
    page. Every file is now staged first and renamed into place once all are written."""
    import errno
    import pathlib

    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t")]) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    write_text = pathlib.Path.write_text

    def full_at_the_page(path, *args, **kwargs):
        if path.suffix == ".html":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_at_the_page)
    monkeypatch.setattr(figures, "build_all", lambda records, out_dir, jobs=None: [
        write_text(out_dir / "fig1.svg", "<svg/>") and out_dir / "fig1.svg"])  # a new figure, staged
    assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t")]) != 0
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'index.html'}: the disk is full" in err and err.endswith("nothing was replaced\n")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.rglob(".tmp-*"))


def _sleep(records, out_dir, seconds):
    import time

    time.sleep(seconds)
    return []


def _signal_stops_figure_processes(sig, raised) -> None:
    """`sig` to this process half a second into two minute-long figures: `raised` at once, and no figure process
    left (forked ones; a DataLoader worker an earlier test left ending is not one of them)."""
    import multiprocessing
    import threading
    import time

    timer = threading.Timer(0.5, os.kill, (os.getpid(), sig))
    started = time.perf_counter()
    timer.start()
    with pytest.raises(raised):
        figures._in_processes([(_sleep, 60), (_sleep, 60)], [[0], [1]])
    assert time.perf_counter() - started < 20
    assert not [c for c in multiprocessing.active_children() if type(c).__name__ == "ForkProcess"]


def test_ctrl_c_while_figures_render_in_processes_stops_them_at_once(tmp_path):
    """A hostile pass: Ctrl-C reaches the whole process group, and a process pool it interrupted hung forever."""
    import signal

    _signal_stops_figure_processes(signal.SIGINT, KeyboardInterrupt)


def test_sigterm_while_figures_render_stops_them_and_is_held_back_over_the_renames(tmp_path):
    """A hostile pass: SIGTERM to `bench tables` left its figure process drawing on, orphaned and holding the lock, and
    SIGTERM during the final renames published one new file among 56 old ones."""
    import signal
    import time

    from bench.errors import Terminated, sigterm_interrupts
    from bench.store import interrupts_deferred

    with sigterm_interrupts():
        _signal_stops_figure_processes(signal.SIGTERM, Terminated)
        done = []
        with pytest.raises(Terminated):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                done.append("the block ran to its end")
        assert done
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_figure_that_fails_in_its_process_is_an_error_with_its_traceback():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        figures._in_processes([(_sleep, 0), (lambda records, out: 1 / 0,)], [[0], [1]])


def test_a_full_disk_in_a_figure_process_is_a_one_line_storage_error(tmp_path, monkeypatch):
    """On a real 3 MiB tmpfs, matplotlib's ENOSPC came back from the figure process as a two-page traceback."""
    import errno

    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from bench.errors import StorageError

    def full(self, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(StorageError, match=r"fig\.png: the disk is full"):
        figures._in_processes([(_sleep, 0), (lambda records, out: figures._save(plt.figure(), tmp_path, "fig"),)],
                              [[0], [1]])


def test_a_second_bench_tables_into_the_same_folder_is_refused(tmp_path, capsys):
    """A hostile pass: two at once both exited 0, the page from one and the tables from the other."""
    from bench.store import hold_folder

    with hold_folder(tmp_path / "t"):
        assert cli.main(["tables", "--records", str(RECORDS), "--out", str(tmp_path / "t"), "--no-figures"]) == 2
    assert "being written by another process" in capsys.readouterr().err


def test_a_hand_edited_record_with_an_impossible_speed_is_skipped_not_printed(tmp_path, capsys):
    """A hostile pass: a copy of a DeiT-B record with `infer_img_per_s: -5` and a newer date printed -5 im/s."""
    import json

    shutil.copytree(RECORDS, tmp_path / "records")
    src = next(p for p in (tmp_path / "records").rglob("*.json")
               if json.loads(p.read_text())["metrics"].get("infer_img_per_s"))
    bad = json.loads(src.read_text())
    bad["metrics"]["infer_img_per_s"] = -5
    (tmp_path / "records" / "negative.json").write_text(json.dumps(bad))
    assert cli.main(["tables", "--records", str(tmp_path / "records"), "--out", str(tmp_path / "t"), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "negative.json" in err and "metrics.infer_img_per_s: -5 must be positive" in err


def test_a_paper_cell_holds_what_the_paper_prints_and_its_dash_where_it_prints_none(records):
    """Table 5 prints "–" for EfficientNet-B7's ReaL and V2 and the ViTs' V2; "not run" there read as if the paper's
    number were ours to measure. Table 9 prints "repeated augmentation yes"; the ×3 is the released code's."""
    frame = tables.table5_comparison(records).frame.set_index("model")
    assert frame.loc["EfficientNet-B7", ["top-1 paper", "ReaL paper", "V2 paper"]].tolist() == ["84.3", "–", "–"]
    assert frame.loc["ViT-B/16", ["top-1 paper", "ReaL paper", "V2 paper"]].tolist() == ["77.9", "83.6", "–"]
    hparams = trained_tables.table9(records).frame.set_index("hyper-parameter")
    assert hparams.loc["repeated augmentation", "paper (DeiT-B)"] == "yes"
    assert hparams.loc["dropout", "paper (DeiT-B)"] == "none"  # Table 9 prints it; it has no EMA row (a hostile pass)
    assert "EMA" not in hparams.index


def test_table8s_ema_row_is_the_ema_weights_top1_whose_raw_weights_train_as_the_default(records):
    """A hostile pass: the + EMA row read the raw weights' top-1, which the EMA never changes (the same seed gave the
    default row's number to the bit), where the paper's 81.9 is the EMA model's."""
    run = next(r for r in records if r.kind == "train")
    default = _seeds(run, "deit_b", "bf16", [70.31])
    ema = [dataclasses.replace(r, metrics={**r.metrics, "final_ema_val_top1": 60.16})
           for r in _seeds(run, "deit_b_ema", "bf16", [70.31])]
    table = trained_tables.table8([*default, *ema])
    rows = table.frame.set_index("experiment")["top-1 ours"]
    assert rows["deit_b"] == "70.31 (1 seed)" and rows["deit_b_ema"] == "60.16 (1 seed)"
    assert any("final_ema_val_top1" in note for note in table.footer)


def test_a_smoke_test_timing_keeps_its_size_and_names_no_speed_column(records):
    """A hostile pass: `bench run --iters 2 --warmup 1` gave a record whose params, GMACs and im/s all read 'not run',
    with the footer saying "No records", under an im/s header named after that record's machine."""
    sized = next(r for r in records if r.kind == "bench" and r.variant == "deit_ti" and r.settings.get("img_size") == 224)
    smoke = dataclasses.replace(sized, settings={**sized.settings, "warmup": 1, "iters": 2})
    frame = tables.table5([smoke]).frame.set_index("model")
    assert frame.loc["DeiT-Ti", "params ours"] == f"{sized.metrics['params']:,}"
    assert frame.loc["DeiT-Ti", "GMACs ours"] == f"{sized.metrics['gmacs']:.3f}"
    assert speed_columns(frame, "timm") == ["im/s ours, timm protocol"]  # no machine named, every cell not run
    assert frame.loc["DeiT-Ti", "im/s ours, timm protocol"] == tables.NOT_RUN


def test_a_smoke_test_timing_says_so_in_its_record(tmp_path):
    from bench.registry import VARIANTS
    from bench.run import measure, resolve_settings

    variant = VARIANTS["debug"]
    record = measure(variant, resolve_settings(variant, device="cpu", metrics="speed", precision="fp32", warmup=0,
                                               iters=1), log=lambda m: None)
    assert any("fewer than the timm protocol's 2 + 8; with no warm-up the first forward's one-off setup is timed too"
               in note for note in record.notes)
    full = measure(variant, resolve_settings(variant, device="cpu", metrics="speed", precision="fp32"), log=lambda m: None)
    assert not any("smoke test" in note for note in full.notes)
