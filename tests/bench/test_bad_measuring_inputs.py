"""Issue #19, the measuring side: each defect a hostile user found, with the test that failed before the fix."""

import dataclasses
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import at_speed, folder_tree
from test_accuracy import CIFAR10, known_checkpoint, run_json

from bench import cli, tables
from bench.predictions import Predictions
from bench.record import load_records, write_record

FIXTURE_RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "tables" / "records"
RELSPEED_RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "relspeed_deit_ti_cpu" / "quiet"


def test_a_subset_of_classes_is_scored_in_the_models_label_space(tmp_path, capsys):
    """#19 row 1: cat/ and dog/ alone were labelled 0 and 1 and scored against a CIFAR-10 head (3 and 5), exit 0."""
    root = folder_tree(tmp_path / "two_cls", {"cat": 2, "dog": 3})
    ckpt = known_checkpoint(tmp_path / "k.pth", variant="debug", class_names=CIFAR10)
    code, rec, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                              "--checkpoint", str(ckpt), "--results-dir", str(tmp_path / "r"),
                              "--save-predictions", str(tmp_path / "p.pt"))
    assert code == 0, err
    assert Predictions.load(tmp_path / "p.pt").targets.tolist() == [3, 3, 5, 5, 5]
    assert rec["settings"]["eval"]["label_space"] == "by class name, from the checkpoint"
    assert rec["settings"]["eval"]["classes_present"] == 2


def test_a_subset_of_classes_without_the_models_class_names_is_refused(tmp_path, capsys):
    root = folder_tree(tmp_path / "two_cls", {"cat": 1, "dog": 1})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", variant="debug")),
                            "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "has 2 class folders (cat, dog) but the model has 10 classes" in err
    assert "an empty folder stands for a class without images" in err and not (tmp_path / "r").exists()


def test_empty_folders_keep_a_subset_in_the_sorted_label_space(tmp_path, capsys):
    root = folder_tree(tmp_path / "data", {name: (1 if name in ("cat", "dog") else 0) for name in CIFAR10})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", variant="debug")),
                            "--results-dir", str(tmp_path / "r"), "--save-predictions", str(tmp_path / "p.pt"))
    assert code == 0, err
    assert Predictions.load(tmp_path / "p.pt").targets.tolist() == [3, 5]


def test_folders_the_checkpoint_does_not_name_are_refused(tmp_path, capsys):
    root = folder_tree(tmp_path / "data", {"cat": 1, "zebra": 1})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", "debug", class_names=CIFAR10)),
                            "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "class folders zebra" in err and "not among the 10 classes" in err


def test_imagenet_class_folders_are_matched_by_wordnet_id(tmp_path):
    """A 1000-class model with a few WordNet-id folders (ImageNet val re-arranged, some classes only)."""
    from bench.data import find_samples, label_space

    root = folder_tree(tmp_path, {"n01443537": 1, "n15075141": 1})  # ImageNet classes 1 and 999
    names, how = label_space(root, "folder", 1000, None)
    assert how == "by WordNet id, in ImageNet-1k order"
    assert [label for _, label in find_samples(root, "folder", class_names=names)[0]] == [1, 999]


def test_the_root_of_an_extracted_dataset_is_pointed_to_its_val_folder(tmp_path):
    """A hostile pass: --data at the folder holding val/ and the labels file was told to give 1000 class folders."""
    from bench.data import label_space
    from bench.errors import DataError

    root = folder_tree(tmp_path / "imagenet-val-1300", {"val": 2})
    with pytest.raises(DataError, match=f"holds one folder, val/: give --data {root / 'val'}"):
        label_space(root, "folder", 1000, None)


def test_imagenet_v2_on_folders_named_by_class_says_what_it_expects(tmp_path, capsys):
    """#19 row 6: `ValueError: invalid literal for int()` traceback."""
    root = folder_tree(tmp_path / "data", {"cat": 1, "dog": 1})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--dataset", "imagenet-v2", "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", "debug")),
                            "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "expects class folders named by class index (0 … 999)" in err and "found cat, dog" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_text("hello"), "is not a torch checkpoint"),
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
])
def test_a_file_that_is_no_checkpoint_is_named_and_explained(tmp_path, capsys, make, message):
    """#19 row 10: "KeyError: 101" for a text file, a blank "EOFError: " for an empty one."""
    make(tmp_path / "c.pth")
    root = folder_tree(tmp_path / "data", {f"c{i}": 1 for i in range(10)})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(tmp_path / "c.pth"), "--results-dir", str(tmp_path / "r"))
    assert code == 2 and f"{tmp_path / 'c.pth'} {message}" in err and "Traceback" not in err


def test_a_checkpoint_given_to_disagree_is_named_and_explained(tmp_path, capsys):
    """#19 row 10: "KeyError: 'names'" when a checkpoint was passed as predictions."""
    ckpt = known_checkpoint(tmp_path / "k.pth", "debug")
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes())
    code = cli.main(["disagree", str(ckpt), str(other)])
    err = capsys.readouterr().err
    assert code == 2 and f"{ckpt} is not a predictions file" in err and "Traceback" not in err


def test_relspeed_alone_prints_its_ratio():
    """#19 row 11: `--metrics relspeed` printed an empty table; the ratio was only in the JSON. (A real record of
    `bench run --variant deit_ti --metrics relspeed`; running one takes 30 s of spawned processes.)"""
    from bench import report
    from bench.registry import VARIANTS

    record = load_records(RELSPEED_RECORDS)[0]
    out = report.summary(record, VARIANTS["deit_ti"])
    assert "model / reference time" in out and f"{record.metrics.relspeed_ratio:.4f}" in out
    assert f"median of {len(record.metrics.relspeed_ratios)} rounds" in out and "warm-up" not in out


def test_a_torch_file_that_is_not_a_state_dict_says_so(tmp_path, capsys):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    root = folder_tree(tmp_path / "data", {f"c{i}": 1 for i in range(10)})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(tmp_path / "list.pth"), "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "holds no state dict" in err



def _speed_record(variant: str, created: str, img_per_s: float):
    old = next(r for r in load_records(FIXTURE_RECORDS) if r.variant == variant and "infer_img_per_s" in r.metrics
               and r.settings.get("protocol") == "timm")
    return dataclasses.replace(old, metrics=at_speed(old.metrics, img_per_s),
                               env={**old.env, "created": created})


def test_the_latest_record_is_the_newest_by_time_not_by_folder_name(tmp_path):
    """#19 row 2: Table 5 kept the older record of results/runs/cpu/ because "latest" was the last path in sort
    order; moving the new record to results/runs/zz/ changed the cell, and the figure disagreed with the table."""
    new = _speed_record("deit_ti", "2026-12-01T10:00:00+00:00", 1234.5)
    old = _speed_record("deit_ti", "2026-11-01T10:00:00+00:00", 999.9)
    cells = []
    for new_folder, old_folder in (("aa", "zz"), ("zz", "aa")):
        root = tmp_path / new_folder[0] / "runs"
        for record, folder in ((new, new_folder), (old, old_folder)):
            write_record(record, root / folder)
        t5 = tables.table5(load_records(root)).frame
        [column] = [c for c in t5.columns if c.startswith("im/s ours, timm protocol")]  # the header may name the machine
        cells.append(t5.loc[t5["model"] == "DeiT-Ti", column].item())
    assert cells[0] == cells[1] and cells[0].startswith("1,234.5")


def test_one_bad_record_file_is_named_and_skipped_by_tables_but_stops_the_gate(tmp_path, capsys):
    """#19 row 9: one corrupt, schema-99 or non-record JSON blocked every table, and no message named the file."""
    runs = tmp_path / "runs"
    write_record(_speed_record("deit_ti", "2026-12-01T10:00:00+00:00", 1234.5), runs / "good")
    bad = {"corrupt.json": "{bad", "s99.json": '{"schema_version": 99}', "list.json": "[1, 2]",
           "partial.json": '{"schema_version": 1, "kind": "bench"}'}
    for name, text in bad.items():
        (runs / name).write_text(text)
    code = cli.main(["tables", "--records", str(runs), "--out", str(tmp_path / "t"), "--no-figures"])
    err = capsys.readouterr().err
    assert code == 0 and "1,234.5" in (tmp_path / "t" / "table5_variants.md").read_text()
    for name, reason in (("corrupt.json", "not valid JSON"), ("s99.json", "record schema 99"),
                         ("list.json", "not a deit-bench record"), ("partial.json", "not a complete record: missing variant")):
        assert f"skipped {runs / name}: {reason}" in err
    code = cli.main(["check", "--current", str(runs), "--baseline", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and str(runs / "corrupt.json") in err and "Traceback" not in err


@pytest.mark.parametrize("baseline", ["/proc/no-such-folder/b.json", "/proc/no-such-folder/sub/"])
def test_a_baseline_that_cannot_be_written_is_a_usage_error_not_a_regression(tmp_path, capsys, baseline):
    """#19 row 7: a traceback with exit 1, which CI reads as "regression"."""
    runs = tmp_path / "runs"
    write_record(_speed_record("deit_ti", "2026-12-01T10:00:00+00:00", 1.0), runs)
    code = cli.main(["check", "--write-baseline", "--baseline", baseline, "--current", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and "--baseline" in err and "no-such-folder" in err and "Traceback" not in err


def test_ls_into_a_closed_pipe_is_quiet(tmp_path):
    """#19 row 12: `reproduce ls --fields | head` ended in a BrokenPipeError traceback."""
    for argv in (["reproduce", "ls", "--fields"], ["bench", "ls"]):
        run = subprocess.run(f"{shlex.join(argv)} | head -1", shell=True, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr


def test_another_resolution_is_compared_with_the_paper_row_at_that_resolution(tmp_path, capsys):
    """#19: deit_b at 384 px was compared with the 224 px row ("+215.87 % GMACs") though deit_b_384 is that row."""
    assert cli.main(["run", "--variant", "deit_b", "--img-size", "384", "--metrics", "size", "--device", "cpu",
                     "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "paper (Table 5, deit_b_384)" in out and "| agrees (the reference is stored to 3 decimals)" in out
    assert "+215" not in out
    assert cli.main(["run", "--variant", "deit_ti", "--img-size", "320", "--metrics", "size", "--device", "cpu",
                     "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no paper row at 320 px" in out and "%" not in out.split("GMACs (batch 1)")[1].split("\n")[0]


def test_a_size_only_run_prints_no_timing_protocol(tmp_path, capsys):
    """#19: a header about timing was printed for size-only and accuracy-only runs."""
    assert cli.main(["run", "--variant", "debug", "--metrics", "size", "--results-dir", str(tmp_path)]) == 0
    assert "warm-up" not in capsys.readouterr().out


def test_json_prints_one_record_per_line_for_one_variant_or_several(tmp_path, capsys):
    """#19: --json printed an object for one variant and a list for several."""
    for variants, n in (("debug", 1), ("debug,debug_dist", 2)):
        assert cli.main(["run", "--variant", variants, "--metrics", "size", "--json", "--results-dir", str(tmp_path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == n and [json.loads(line)["variant"] for line in lines] == variants.split(",")


def test_evaluation_has_its_own_batch_size(tmp_path, capsys):
    """#19: accuracy ran at the speed test's batch (16 on CPU: 157 img/s against 1,352 at 256)."""
    root = folder_tree(tmp_path / "data", {f"c{i}": 1 for i in range(10)})
    code = cli.main(["run", "--variant", "debug", "--metrics", "accuracy", "--data", str(root), "--workers", "0",
                     "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", "debug")), "--json",
                     "--results-dir", str(tmp_path / "r")])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["settings"]["eval"]["batch_size"] == 256 and record["settings"]["batch_size"] == 16


@pytest.mark.parametrize("argv,message", [
    (["run", "--variant", "debug", "--metrics", "relspeed", "--budget-s", "nan"], "--budget-s must be a finite number"),
    (["check", "--write-baseline", "--baseline", "B", "--current", "C", "--speed-floor", "nan"],
     "--speed-floor must be a number from 0.01 to below 1"),
    (["check", "--write-baseline", "--baseline", "B", "--current", "C", "--accuracy-tol", "-1"],
     "--accuracy-tol must be a finite number in [0, 100)"),
    (["campaign", "--out", "O", "--dry-run", "--device", "cpu", "--budget-s", "inf"], "--budget-s must be at least 60"),
])
def test_non_finite_and_negative_numbers_are_usage_errors_and_nothing_is_written(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a in ("B", "O") else a for a in argv]
    if "C" in argv:
        write_record(_speed_record("deit_ti", "2026-12-01T10:00:00+00:00", 1.0), tmp_path / "C")
        argv = [str(tmp_path / "C") if a == "C" else a for a in argv]
    assert cli.main([*argv, *(["--results-dir", str(tmp_path / "r")] if argv[0] == "run" else [])]) == 2
    assert message in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in ("B", "O", "r"))


def test_saving_predictions_onto_an_existing_folder_is_refused_before_any_work(tmp_path, capsys):
    """#32 row 14: the whole evaluation ran, then a traceback, and the record was lost."""
    root = folder_tree(tmp_path / "data", {f"c{i}": 1 for i in range(10)})
    (tmp_path / "preds").mkdir()
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", "debug")),
                            "--results-dir", str(tmp_path / "r"), "--save-predictions", str(tmp_path / "preds"))
    assert code == 2 and f"--save-predictions {tmp_path / 'preds'} is a folder" in err and "Traceback" not in err
    assert "building" not in err and not (tmp_path / "r").exists()


def test_more_threads_than_cores_are_warned_about_and_noted_in_the_record(tmp_path, capsys):
    """#32 row 15: `--threads 1000` on 2 cores was recorded without a word."""
    cores = len(os.sched_getaffinity(0))
    code, record, err = run_json(capsys, "--variant", "debug", "--metrics", "speed", "--threads", str(cores + 1),
                                 "--batch-size", "1", "--warmup", "0", "--iters", "1", "--results-dir", str(tmp_path))
    assert code == 0, err
    warning = f"--threads {cores + 1} is more than the {cores} cores this process may run on"
    assert warning in err and any(warning in note for note in record["notes"])
    code, record, err = run_json(capsys, "--variant", "debug", "--metrics", "speed", "--threads", str(cores),
                                 "--batch-size", "1", "--warmup", "0", "--iters", "1", "--results-dir", str(tmp_path))
    assert code == 0 and "cores this process" not in err + "".join(record["notes"])
    code, record, err = run_json(capsys, "--variant", "debug", "--metrics", "size", "--threads", str(cores + 1),
                                 "--results-dir", str(tmp_path))  # nothing runs: threads would change no figure
    assert code == 2 and "--precision, --threads set how the model runs; --metrics size runs it not at all" in err


@pytest.mark.parametrize("argv", [["--precision", "bf16"], ["--iters", "50"], ["--batch-size", "4"],
                                  ["--attention", "matmul"], ["--protocol", "paper"], ["--max-batch-cap", "8"]])
def test_timing_options_of_a_run_that_times_nothing_are_refused_not_recorded(tmp_path, capsys, argv):
    """A hostile pass: `--metrics size --precision bf16` wrote a record saying bf16 "as asked"."""
    def run(*args):
        code = cli.main(["run", "--device", "cpu", "--variant", "debug", *args, "--results-dir", str(tmp_path)])
        return code, capsys.readouterr().err

    code, err = run("--metrics", "size", *argv)
    assert code == 2 and f"error: {argv[0]} sets how the model runs" in err and not any(tmp_path.iterdir())
    code, err = run("--metrics", "speed", "--budget-s", "5")
    assert code == 2 and "--budget-s bounds --metrics relspeed's rounds" in err


def test_options_a_run_does_read_are_not_refused(tmp_path, capsys):
    """--precision auto is the default; accuracy evaluates with the --attention asked (a review)."""
    from bench.protocols import refuse_unread_timing

    refuse_unread_timing({"--precision": "auto"}, ("size",))
    refuse_unread_timing({"--attention": "matmul", "--precision": "fp32"}, ("accuracy",))
    with pytest.raises(ValueError, match="--batch-size sets how the model is timed; --metrics accuracy times it"):
        refuse_unread_timing({"--batch-size": "4"}, ("accuracy",))


def test_a_predictions_file_name_without_a_suffix_is_saved(tmp_path, capsys):
    """#32, found in the second hostile pass: torch.save refused the temporary name `.tmp-XXXX` ("invalid file
    name"), after the whole evaluation, and the record was lost."""
    root = folder_tree(tmp_path / "data", {f"c{i}": 1 for i in range(10)})
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(known_checkpoint(tmp_path / "k.pth", "debug")),
                            "--results-dir", str(tmp_path / "r"), "--save-predictions", str(tmp_path / "preds"))
    assert code == 0, err
    assert len(Predictions.load(tmp_path / "preds").names) == 10 and len(load_records(tmp_path / "r")) == 1


def test_an_image_size_beyond_any_model_is_refused_before_anything_is_built(tmp_path, capsys):
    """A hostile pass: --img-size 100000 tried to allocate 160 GB and crashed with a traceback."""
    from bench import cli

    assert cli.main(["run", "--variant", "debug", "--img-size", "100000", "--metrics", "size",
                     "--results-dir", str(tmp_path)]) == 2
    assert "--img-size must be at most 2048" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_metric_named_twice_is_measured_and_recorded_once():
    from bench.registry import VARIANTS
    from bench.run import resolve_settings

    assert resolve_settings(VARIANTS["debug"], device="cpu", metrics="size,size").metrics == ("size",)


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "99999999999"], "needs 1,144,409.2 GiB for its input alone"),
    (["--threads", "100000"], "give at most"),
    (["--metrics", ""], "unknown metrics ''"),
    (["--metrics", "size,speed", "--data", "."], "would leave . unread"),
    (["--metrics", "size,,speed"], "unknown metrics 'size,,speed'"),
    # ran batch 32 and stored max_batch_cap 10 beside it (a hostile pass)
    (["--batch-size", "32", "--max-batch-cap", "10"], "--batch-size 32 fixes the batch, so it would go unread"),
    (["--max-batch-cap", "10"], "the protocol fixes the batch, so it would go unread"),
])
def test_what_no_machine_can_run_is_refused_before_anything_is_built(capsys, tmp_path, argv, message):
    """A hostile pass: a MemoryError traceback, libgomp's 'Out of memory' and a silent default for these."""
    code, _, err = run_json(capsys, "--variant", "debug", *argv, "--results-dir", str(tmp_path))
    assert code == 2 and message in err and "Traceback" not in err and not list(tmp_path.iterdir())


def test_a_forward_that_runs_out_of_memory_is_a_clear_error_and_writes_nothing(capsys, tmp_path, monkeypatch):
    from bench import run

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123 bytes")
    monkeypatch.setattr(run, "measure", out_of_memory)
    code, _, err = run_json(capsys, "--variant", "debug", "--batch-size", "64", "--results-dir", str(tmp_path))
    assert code == 2 and "debug: batch 64 at 32 px does not fit in this machine's memory" in err
    assert "give a smaller --batch-size" in err and "Traceback" not in err and not list(tmp_path.iterdir())


def test_a_ctrl_c_that_python_swallowed_still_writes_no_record(capsys, tmp_path, monkeypatch):
    """Python ignores a KeyboardInterrupt raised inside a weakref callback; a --best search interrupted there went on
    and wrote its record (hostile pass). The handler remembers the Ctrl-C."""
    import signal

    from bench import run

    real = run.measure

    def swallowed(*args, **kwargs):
        record = real(*args, **kwargs)
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # as Python does: "Exception ignored in: <function WeakValueDictionary.__init__.<locals>.remove>"
        return record
    monkeypatch.setattr(run, "measure", swallowed)
    code = cli.main(["run", "--variant", "debug", "--device", "cpu", "--iters", "1", "--warmup", "1",
                     "--results-dir", str(tmp_path)])
    assert code == 130 and not list(tmp_path.iterdir())
    assert "interrupted; no record was written" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored for whoever runs next


def test_a_variant_named_twice_is_refused(capsys, tmp_path):
    code, _, err = run_json(capsys, "--variant", "debug,debug", "--results-dir", str(tmp_path))
    assert code == 2 and "names debug twice" in err and not list(tmp_path.iterdir())


def test_a_speed_record_without_gmacs_says_why_it_has_no_mfu(tmp_path, capsys):
    """A hostile pass: `--metrics speed` left TFLOP/s and MFU out of the summary without a word."""
    assert cli.main(["run", "--variant", "debug", "--metrics", "speed", "--batch-size", "1", "--warmup", "1",
                     "--iters", "1", "--results-dir", str(tmp_path)]) == 0
    assert "not computed: the GMACs are counted with --metrics size" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1, got 0"),
    (["--crop-pct", "7"], "--crop-pct must be in (0, 1], got 7.0"),
    (["--crop-pct", "0.9"], "--crop-pct sets how accuracy is measured; --metrics size measures none"),
    (["--real-labels"], "--real-labels sets how accuracy is measured"),
    (["--eval-protocol", "timm"], "--eval-protocol sets how accuracy is measured"),
    (["--save-predictions", "never-written.pt"], "--save-predictions sets how accuracy is measured"),
    (["--workers", "100000"], "--workers must be in [0, 64] (data-loading processes), got 100000"),
    # a docs-led hostile pass: these two were accepted with --metrics size, and went unread
    (["--workers", "3"], "--workers sets how accuracy is measured"),
    (["--eval-batch-size", "8", "--crop-pct", "0.9"], "--crop-pct, --eval-batch-size set how accuracy is measured"),
])
def test_evaluation_options_without_accuracy_are_checked_and_not_silently_ignored(tmp_path, capsys, flags, message):
    """A hostile pass: `--metrics size --eval-batch-size 0 --crop-pct 7` wrote a record (exit 0)."""
    code = cli.main(["run", "--variant", "debug", "--metrics", "size", *flags, "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_results_folder_that_access_approves_but_cannot_be_made_fails_before_the_measurement(capsys):
    """A hostile pass: `--results-dir /proc/x` passed the up-front check (access() says writable) and the record
    failed with a traceback after the whole measurement."""
    code = cli.main(["run", "--device", "cpu", "--variant", "debug", "--metrics", "size", "--results-dir", "/proc/x"])
    err = capsys.readouterr().err
    assert code == 2 and "nothing can be written in /proc" in err and "Traceback" not in err


def test_attention_on_a_convnet_is_refused_before_anything_is_measured(tmp_path, capsys):
    """A hostile pass: `--variant resnet18 --attention matmul` wrote a record (attention null), exit 0."""
    code = cli.main(["run", "--variant", "resnet18", "--attention", "matmul", "--metrics", "speed", "--iters", "1",
                     "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "resnet18 has none: leave it out" in err and not list(tmp_path.glob("*.json"))


def test_a_folder_given_for_a_checkpoint_is_named_as_a_folder(capsys, tmp_path):
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(tmp_path),
                            "--checkpoint", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert code == 2 and f"--checkpoint {tmp_path}: a folder, not a file" in err, err


def test_why_a_path_is_no_file_to_read():
    from bench.errors import not_a_file

    assert not_a_file("/nonexistent/x.pth") == "no such file"
    assert not_a_file("/") == "a folder, not a file" and not_a_file("/dev/null") == "a character device, not a file"


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "1_6"], "--batch-size must be a positive integer or 'max', got '1_6'"),
    (["--iters", "1_0"], "argument --iters: invalid int value: '1_0'"),
    (["--warmup", "\u0662"], "argument --warmup: invalid int value"),
    (["--budget-s", "1_0.5"], "argument --budget-s: invalid float value: '1_0.5'"),
])
def test_a_number_is_read_only_as_plain_ascii_digits(capsys, tmp_path, argv, message):
    """Python reads `1_6` as 16 and Arabic-Indic digits as digits: `--batch-size 1_6`, a typo, timed batch 16 (a
    hostile pass found it in `reproduce --set epochs=2_0`)."""
    try:
        code, _, err = run_json(capsys, "--variant", "debug", *argv, "--results-dir", str(tmp_path))
    except SystemExit as exc:  # argparse's own refusal
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and message in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("variable", ["TORCH_COMPILE_DISABLE", "TORCHDYNAMO_DISABLE"])
@pytest.mark.parametrize("option", [["--compile"], ["--compile", "freezing"], ["--best", "5"]])
def test_compile_switched_off_by_the_environment_is_refused_not_timed_eager_under_its_name(
        variable, option, monkeypatch, tmp_path, capsys):
    """A hostile pass: under TORCH_COMPILE_DISABLE=1 `--compile` timed the eager model and recorded compile: true."""
    monkeypatch.setenv(variable, "1")
    code = cli.main(["run", "--variant", "debug", *option, "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{variable}=1 in the environment turns torch.compile off" in err, err
    assert not list(tmp_path.rglob("*.json"))
    from bench.compiling import compiled

    with pytest.raises(ValueError, match=f"{variable}=1"):  # and where the command line is not the way in
        compiled(torch.nn.Linear(2, 2), "default")


def test_the_campaign_is_refused_where_the_environment_switches_compile_off(monkeypatch, tmp_path, capsys):
    """A review: its compiled steps, and timm's benchmark.py --torchcompile, would time eager code under their names."""
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    code = cli.main(["campaign", "--dry-run", "--device", "cpu", "--out", str(tmp_path / "c")])
    assert code == 2 and "TORCHDYNAMO_DISABLE=1 in the environment" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
