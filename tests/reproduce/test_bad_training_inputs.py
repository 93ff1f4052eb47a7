"""Issues #19 and #32, the training side: each defect a hostile user found, with the test that failed before the fix."""

import os
import pickle

import pytest
import torch
from helpers import folder_tree

from bench.data import find_samples
from reproduce import cli
from reproduce.config import TrainConfig
from reproduce.data import datasets


def test_a_non_finite_loss_in_the_first_epoch_does_not_promise_a_checkpoint(tmp_path, monkeypatch, capsys):
    """#19 row 5: lr=inf died at step 1 saying "the last good checkpoint R/checkpoint.pth is kept" (there was none)."""
    from reproduce.distill import Distiller

    real_call = Distiller.__call__
    monkeypatch.setattr(Distiller, "__call__", lambda self, *a: real_call(self, *a)._replace(total=torch.tensor(float("nan"))))
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite loss nan at epoch 1, step 1" in err
    assert "no checkpoint had been written yet" in err and "is intact" not in err
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_ctrl_c_in_the_first_epoch_does_not_promise_a_checkpoint(tmp_path, monkeypatch, capsys):
    """#19 row 5: Ctrl-C in the first epoch said "the last epoch's checkpoint is intact"."""
    from reproduce.distill import Distiller

    calls = {"n": 0}
    real_call = Distiller.__call__

    def interrupt_at_step_3(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_call(self, *args)

    monkeypatch.setattr(Distiller, "__call__", interrupt_at_step_3)
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted; no checkpoint had been written yet" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoint.pth").exists()
    import signal

    # a second Ctrl-C exits at once while the command stops; main() called in-process gives the caller its own back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_an_epoch_is_evaluated_names_where_the_checkpoint_stands(tmp_path, monkeypatch, capsys):
    """A hostile pass: Ctrl-C while epoch 2 was evaluated said "interrupted in epoch 3 after step 0" of a checkpoint
    holding epoch 1: the loop counts an epoch before it evaluates and saves it."""
    from reproduce import train as train_mod

    real_evaluate, calls = train_mod.evaluate, {"n": 0}

    def interrupted_at_the_second(run, save_to=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(run, save_to=save_to)

    monkeypatch.setattr(train_mod, "evaluate", interrupted_at_the_second)
    code = cli.main(["train", "--experiment", "debug", "--set", "epochs=3", "--set", "eval_every=1",
                     "--output", str(tmp_path / "run"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 130 and f"{tmp_path / 'run' / 'checkpoint.pth'} is intact (1 epoch done, 0 steps of the next;" in err


def test_resume_without_a_checkpoint_is_refused_rather_than_starting_afresh(tmp_path, capsys):
    """#19 row 8: --resume with no checkpoint silently trained from scratch."""
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume: nothing to resume" in err and "checkpoint.pth does not exist" in err
    assert not (tmp_path / "run").exists()


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content,message", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.write_text("hello, not a checkpoint"), "is not a torch checkpoint"),
    (lambda p: p.write_bytes(_saved(p, {"model": {}})[:200]), "is truncated or corrupt"),
    (lambda p: torch.save({"weight": torch.zeros(2)}, p), "is not a checkpoint of `reproduce train` (it lacks model"),
    (lambda p: p.write_bytes(pickle.dumps(_Evil(), protocol=2)), "holds Python objects besides tensors"),
    # a hostile pass: 8 bytes overwritten in the middle were read without a word, and the resumed run ended at 10 %
    (lambda p: p.write_bytes(_damaged(_saved(p, {"model": {"w": torch.arange(4096.0)}}))),
     "is damaged: its part checkpoint/data/0 fails the archive's CRC check"),
])
def test_resume_from_a_bad_checkpoint_explains_itself(tmp_path, capsys, content, message):
    """#19 row 8: truncated, plain-state-dict and malicious checkpoints gave RuntimeError / KeyError /
    UnpicklingError tracebacks."""
    run = tmp_path / "run"
    run.mkdir()
    content(run / "checkpoint.pth")
    before = (run / "checkpoint.pth").read_bytes()
    code = cli.main(["train", "--experiment", "debug", "--output", str(run), "--resume"])
    captured = capsys.readouterr()
    assert code == 2 and message in captured.err and str(run / "checkpoint.pth") in captured.err
    assert "Traceback" not in captured.err and "this must never run" not in captured.out
    assert "\x1b[" not in captured.err  # torch's terminal bold codes, pasted into the message (a hostile pass)
    assert (run / "checkpoint.pth").read_bytes() == before  # refused, not overwritten


def _damaged(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(8) + data[middle + 8:]


def _saved(path, obj) -> bytes:
    torch.save(obj, path)
    return path.read_bytes()


def test_a_validation_subset_is_class_balanced(tmp_path):
    """#19 row 4: val_subset=256 took the first 256 images in class order, nearly all of one class."""
    folder_tree(tmp_path / "train", {"a": 2, "b": 2, "c": 2})
    folder_tree(tmp_path / "val", {"a": 6, "b": 6, "c": 6})
    cfg = TrainConfig(dataset="folder", data=str(tmp_path), num_classes=3, val_subset=6)
    _, val = datasets(cfg, None, None)
    assert sorted(label for _, label in val.samples) == [0, 0, 1, 1, 2, 2]
    again = datasets(cfg, None, None)[1]
    assert again.samples == val.samples  # a fixed choice: every run of the config is scored on the same images


def test_validation_labels_follow_the_training_classes_when_a_class_has_no_validation_folder(tmp_path):
    """A val/ tree without one of the training classes must not shift the others' labels."""
    folder_tree(tmp_path / "train", {"a": 2, "b": 2, "c": 2})
    folder_tree(tmp_path / "val", {"a": 1, "c": 1})
    cfg = TrainConfig(dataset="folder", data=str(tmp_path), num_classes=3)
    train, val = datasets(cfg, None, None)
    assert [(p.parent.name, label) for p, label in val.samples] == [("a", 0), ("c", 2)]
    assert train.classes == ("a", "b", "c")


def test_find_samples_indexes_folders_by_the_names_it_is_given(tmp_path):
    folder_tree(tmp_path, {"cat": 1, "dog": 1})
    samples, _ = find_samples(tmp_path, class_names=("airplane", "cat", "dog"))
    assert [label for _, label in samples] == [1, 2]


@pytest.mark.parametrize("argv,message", [
    (["train", "--experiment", "debug", "--set", "device=tpu"], "device='tpu' is not accepted"),
    (["step-speed", "--experiment", "debug_hard", "--device", "tpu"], "--device 'tpu'"),
    (["step-speed", "--experiment", "debug_hard", "--steps", "0"], "--steps must be at least 1"),
    (["step-speed", "--experiment", "debug_hard", "--batch-size", "100000000"], "GiB for its input alone"),
    (["ls", "--show", ""], "--show '' names no experiment"),
    (["train", "--experiment", "debug_hard", "--set", "teacher_checkpoint=/"],  # said "no such file" (a hostile pass)
     "teacher_checkpoint=/: a folder, not a file"),
    # a hostile pass: each was recorded and not used
    (["step-speed", "--experiment", "debug_hard", "--set", "batch_size=4"], "step-speed sets or ignores batch_size"),
    (["step-speed", "--experiment", "debug_hard", "--set", "device=cpu"], "device (--device)"),
    (["step-speed", "--experiment", "debug_hard", "--set", "teacher_checkpoint=x.pth"], "random teacher weights"),
    (["step-speed", "--experiment", "debug_hard", "--set", "teacher=labels"], "teacher=labels has none"),  # KeyError
    (["step-speed", "--experiment", "debug_hard", "--warmup", "0", "--set", "compile=true"],  # timed the compiling
     "--warmup must be at least 1, got 0"),
    (["ls", "--lr-figure", "x.png"], "--lr-figure needs --show EXPERIMENT"),
    (["ls", "--released", "--lr-figure", "x.png"], "--lr-figure needs --show EXPERIMENT"),  # was ignored, exit 0
    (["suite", "table3", "--scale", "imagenet", "--variants", "x"], "accepted is a comma list of ti, s, b"),
    (["suite", "table3", "--scale", "imagenet", "--variants", "ti,ti"], "names a size twice; give each once"),
    (["suite", "table3", "--scale", "mini", "--variants", "b"], "--variants chooses sizes at --scale imagenet only"),
    (["suite", "table3", "--scale", "mini", "--seeds", "1000"], "--seeds must be 1 to 100, got 1000"),  # was unbounded
    (["suite", "table3", "--scale", "mini", "--seeds", "0"], "--seeds must be 1 to 100, got 0"),
    # both missing inputs named at once: the data used to surface only after the weights were given
    (["suite", "table3", "--scale", "imagenet"], "--set teacher_checkpoint=FILE (official: regnety_160-a5fe301d.pth);"
     " and evaluating the given teacher needs the rows' image folders"),
    (["train", "--experiment", "mini_none", "--data", "/nonexistent"], "--data /nonexistent does not exist"),
    # a hostile pass: a ValueError traceback, exit 1; and the data was not checked before the teacher
    (["suite", "table3", "--scale", "imagenet", "--data", "/nonexistent", "--set", "teacher_checkpoint=/no/x.pth"],
     "teacher_checkpoint=/no/x.pth: no such file; and --data /nonexistent has no val/ folder (/nonexistent does not "
     "exist)"),
])
def test_more_bad_requests_exit_2(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = [*argv, "--output", str(tmp_path / "run")]
    if argv[0] == "suite":
        argv = [*argv, "--root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "records")]
    assert cli.main(argv) == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--experiment", "debug", "--output", ""],
                                  ["suite", "table3", "--scale", "mini", "--root", " "]])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and "an empty path" in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_ls_takes_one_of_released_fields_and_show(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ls", "--released", "--fields"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("setting,message", [
    # row 3: gradient ascent / a uniform target, exit 0 and a record
    ("clip_grad=-1", "clip_grad=-1.0 is not accepted: must be positive and finite or None"),
    ("smoothing=2", "smoothing=2.0 is not accepted: must be in [0, 1)"),
    # row 4: trained to the end, then result.json refused nan (exit 1), and --resume refused forever
    ("hflip=nan", "hflip=nan is not accepted: must be in [0, 1]"),
    ("color_jitter=nan", "color_jitter=nan is not accepted: must be non-negative and finite"),
    ("distill_tau=inf", "distill_tau=inf is not accepted: must be positive and finite"),
    # row 5: tracebacks with exit 1, some after an epoch
    ("weight_decay=-1", "weight_decay=-1.0 is not accepted: must be non-negative and finite"),
    ("opt_eps=-1", "opt_eps=-1.0 is not accepted: must be positive and finite"),
    ("drop_path=1.5", "drop_path=1.5 is not accepted: must be in [0, 1)"),
    ("num_classes=0", "num_classes=0 is not accepted: must be at least 2"),
    ("opt=nope", "opt='nope' is not accepted: must be a timm optimizer name"),
    ("val_subset=-5", "val_subset=-5 is not accepted: must be non-negative"),
    ("eval_batch_size=0", "eval_batch_size=0 is not accepted: must be at least 1"),
    # row 15: accepted and trained
    ("attn_blocks=1,1", "attn_blocks=(1, 1) is not accepted: block 1 is given twice"),
    ("layer_decay=-1", "layer_decay=-1.0 is not accepted: must be in (0, 1] or None"),
    ("mixup=-1", "mixup=-1.0 is not accepted: must be non-negative and finite"),
    ("mixup_prob=5", "mixup_prob=5.0 is not accepted: must be in [0, 1]"),
])
def test_a_nonsensical_setting_exits_2_before_any_work(tmp_path, capsys, setting, message):
    """#32 rows 3, 4, 5 and 15: each was trained (exit 0), or failed with a traceback and exit 1."""
    code = cli.main(["train", "--experiment", "debug", "--set", setting, "--set", "epochs=1",
                     "--output", str(tmp_path / "run"), "--results-dir", str(tmp_path / "records")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "records").exists()


def test_attention_distillation_without_teacher_weights_names_attn_distill(tmp_path, capsys):
    """#32 row 15: it said "distillation=none needs the teacher's weights"."""
    code = cli.main(["train", "--experiment", "debug", "--set", "attn_distill=true", "--set", "teacher=debug",
                     "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "attn_distill=true needs the teacher's weights: --set teacher_checkpoint=FILE" in err
    assert "distillation=none" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("available,count,device,message", [
    (False, 0, "cuda", "device=cuda: torch sees no CUDA device here"),
    (True, 1, "cuda:3", "device=cuda:3: this machine has 1 CUDA device(s), cuda:0 to cuda:0"),
])
def test_a_cuda_device_the_machine_lacks_exits_2_before_any_work(tmp_path, capsys, monkeypatch, available, count,
                                                                 device, message):
    """#32 hostile pass: device=cuda on a CPU machine was torch's "Found no NVIDIA driver" traceback, exit 1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    code = cli.main(["train", "--experiment", "debug", "--set", f"device={device}", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and not (tmp_path / "run").exists()


# ---- #32 follow-ups: the gate for configs built in Python, names that match nothing, blocks named twice ----


def _debug(**changes) -> TrainConfig:
    from dataclasses import replace

    from reproduce import experiments

    return replace(experiments.get("debug").build(), **changes)


def test_a_config_built_in_python_passes_the_gate_the_cli_passes(tmp_path):
    """#32: train() trusted its caller, so a suite, a test or a user's script skipped check() and check_ready():
    clip_grad=-1 trained by gradient ascent to exit 0."""
    from reproduce.config import ConfigError
    from reproduce.train import train

    with pytest.raises(ConfigError, match=r"clip_grad=-1.0 is not accepted"):
        train(_debug(clip_grad=-1.0, epochs=1), tmp_path / "run", experiment="debug", resume=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="attn_distill=true needs the teacher's weights"):
        train(_debug(attn_distill=True, teacher="debug"), tmp_path / "run", experiment="debug", resume=False,
              log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_building_a_teacher_without_weights_names_the_setting_that_needs_it():
    """#32 row 15, in models.build_teacher too: it said "distillation=none needs the teacher's weights"."""
    from reproduce import models
    from reproduce.config import ConfigError

    with pytest.raises(ConfigError, match="^attn_distill=true needs the teacher's weights"):
        models.build_teacher(_debug(attn_distill=True, teacher="debug"))


def test_a_no_decay_name_matching_no_parameter_is_refused_before_any_step(tmp_path, capsys):
    """#32: no_decay=pos_embd matched nothing, so pos_embed silently kept its weight decay."""
    code = cli.main(["train", "--experiment", "debug", "--set", "no_decay=pos_embd", "--set", "epochs=1",
                     "--output", str(tmp_path / "run"), "--results-dir", str(tmp_path / "records")])
    err = capsys.readouterr().err
    assert code == 2 and "no_decay" in err and "'pos_embd'" in err and "pos_embed" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "records").exists()


def test_the_default_no_decay_tokens_may_be_absent_from_a_convnet_but_other_names_may_not():
    from bench.registry import VARIANTS
    from reproduce import models
    from reproduce.config import ConfigError

    convnet = VARIANTS["cifar_resnet10"].build(num_classes=10)
    assert models.no_decay_groups(convnet, 0.05, TrainConfig().no_decay)  # the ViT tokens: nothing to exempt here
    with pytest.raises(ConfigError, match="'fc_weight' matches no parameter of the student.*fc.weight"):
        models.no_decay_groups(convnet, 0.05, ("fc_weight",))


@pytest.mark.parametrize("blocks,message", [
    ((5,), "attn_blocks=5: block 5 is out of range for the student debug's 2 blocks"),
    ((-1, 1), "attn_blocks=-1,1 name block 1 twice in the student debug's 2 blocks"),
])
def test_attention_blocks_are_checked_against_the_depth_when_the_student_is_built(blocks, message):
    """#32: a block past the depth was refused only after the data was built; -1,1 in a 2-block model tapped
    block 1 twice."""
    from reproduce import models
    from reproduce.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.build_student(_debug(attn_distill=True, teacher="debug", teacher_checkpoint="t.pth", attn_blocks=blocks))


def test_a_record_that_cannot_be_filed_says_the_run_keeps_it(tmp_path, capsys, monkeypatch):
    """#32: a full --results-dir after training named the failed write only, not result.json, which still holds
    the record."""
    from bench import record as record_mod
    from bench.errors import StorageError

    def full_disk(record, folder):
        raise StorageError(f"no space left on the device writing into {folder}")

    monkeypatch.setattr(record_mod, "write_record", full_disk)
    code = cli.main(["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(tmp_path / "run"),
                     "--results-dir", str(tmp_path / "records")])
    err = capsys.readouterr().err
    assert code == 2 and "no space left" in err and str(tmp_path / "run" / "result.json") in err
    assert (tmp_path / "run" / "result.json").is_file()


def test_an_epoch_count_past_any_schedule_is_refused(tmp_path, capsys):
    """A hostile pass: epochs=99999999999999999999999 was accepted and would never end."""
    assert cli.main(["train", "--experiment", "debug", "--set", "epochs=99999999999999999999999",
                     "--output", str(tmp_path / "run")]) == 2
    assert "epochs=99999999999999999999999 is not accepted" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_unreadable_image_in_a_loader_worker_is_one_line_naming_what_is_kept(tmp_path, capsys):
    """A hostile pass: with workers=2 (every real experiment has 8) a fake .jpg printed the worker's traceback, 15
    frames, where workers=0 printed one line."""
    for split in ("train", "val"):
        folder_tree(tmp_path / "data" / split, {"a": 20, "b": 20})
    (tmp_path / "data" / "train" / "a" / "fake.jpg").write_text("not a JPEG")
    code = cli.main(["train", "--experiment", "debug", "--data", str(tmp_path / "data"), "--set", "dataset=folder",
                     "--set", "workers=2", "--set", "num_classes=2", "--output", str(tmp_path / "run"),
                     "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "fake.jpg" in err and "Original Traceback" not in err and "Traceback" not in err
    assert "no checkpoint had been written yet" in err and len(err.strip().splitlines()[-1]) < 500


def test_labels_beyond_num_classes_are_refused_before_training(tmp_path, capsys):
    """A hostile pass: 10 class folders under num_classes=5 crashed in timm's one-hot, 'index 7 is out of bounds'."""
    for split in ("train", "val"):
        folder_tree(tmp_path / "data" / split, {f"c{i}": 1 for i in range(7)})
    code = cli.main(["train", "--experiment", "debug", "--data", str(tmp_path / "data"), "--set", "dataset=folder",
                     "--set", "num_classes=5", "--set", "workers=0", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "has 7 classes, but num_classes=5: give --set num_classes=7" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_more_classes_or_subsets_than_the_data_has_are_said(tmp_path, capsys):
    """A hostile pass: num_classes=50 on 10 classes, and train_subset=999999, trained without a word."""
    for split in ("train", "val"):
        folder_tree(tmp_path / "data" / split, {f"c{i}": 2 for i in range(4)})
    code = cli.main(["train", "--experiment", "debug", "--data", str(tmp_path / "data"), "--set", "dataset=folder",
                     "--set", "num_classes=6", "--set", "train_subset=999", "--set", "workers=0", "--set", "epochs=1",
                     "--set", "batch_size=4", "--output", str(tmp_path / "run"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 0 and "warning: the data has 4 classes and num_classes=6: 2 outputs are never a target" in err
    assert "warning: train_subset=999, but the data has 8 images: all are used" in err


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_stop_to_the_process_group_with_loader_workers_checkpoints_and_exits_3(tmp_path, stop):
    """A hostile pass: SLURM, `docker stop` and systemd send SIGTERM to every process of the job; the DataLoader's
    workers died of it, and "worker killed by signal: Terminated" crashed the run (exit 1, a traceback) before its
    pre-emption checkpoint. With workers=2, as every real experiment has (8), the run now stops at a step boundary.
    So it does when the terminal closes (SIGHUP to the group; a review: the workers died of it at once)."""
    import signal
    import subprocess
    import sys

    for split in ("train", "val"):
        folder_tree(tmp_path / "data" / split, {"a": 40, "b": 40})
    proc = subprocess.Popen([sys.executable, "-m", "reproduce", "train", "--experiment", "debug", "--data",
                             str(tmp_path / "data"), "--set", "dataset=folder", "--set", "num_classes=2", "--set",
                             "workers=2", "--set", "epochs=300", "--set", "batch_size=4", "--output",
                             str(tmp_path / "run"), "--results-dir", str(tmp_path / "r")],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:  # the second epoch's bar: the workers are running
        if "epoch 2/300" in line:
            break
    os.killpg(proc.pid, getattr(signal, stop))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "stopped by signal" in err and "Traceback" not in err, err[-2000:]
    assert (tmp_path / "run" / "checkpoint.pth").is_file()


@pytest.mark.parametrize("train, val, num_classes, message", [
    ({"cat": 4}, {"cat": 2}, 2, "has 1 class folder: cat; a classifier needs at least 2"),  # trained to "100 %"
    ({"cat": 4, "dog": 4, "zebra": 0}, {"cat": 2, "dog": 2, "zebra": 0}, 2,
     "has 3 class folders (zebra without images), but num_classes=2"),  # 3 names in the checkpoint, 2 outputs
])
def test_a_label_space_the_model_cannot_be_trained_on_is_refused(tmp_path, capsys, train, val, num_classes, message):
    folder_tree(tmp_path / "data" / "train", train)
    folder_tree(tmp_path / "data" / "val", val)
    code = cli.main(["train", "--experiment", "debug", "--data", str(tmp_path / "data"), "--set", "dataset=folder",
                     "--set", f"num_classes={num_classes}", "--set", "workers=0", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_a_class_without_training_images_is_said(tmp_path):
    from reproduce.data import caveats

    folder_tree(tmp_path / "data" / "train", {"bird": 0, "cat": 3, "dog": 3})
    folder_tree(tmp_path / "data" / "val", {"bird": 2, "cat": 2, "dog": 2})
    cfg = TrainConfig(dataset="folder", data=str(tmp_path / "data"), num_classes=3)
    train, val = datasets(cfg, None, None)
    assert "class bird has no training images: never learned, but counted in the validation top-1" in caveats(
        cfg, train, val)


def test_a_loader_still_alive_at_exit_does_not_hang_the_process():
    """Workers that leave SIGTERM to the main process (above) ignored multiprocessing's SIGTERM at exit too, and its
    unbounded join hung a process whose loader was still alive then (the test run itself, once)."""
    import subprocess
    import sys

    script = ("from bench.data import WorkerLoader\n"
              "it = iter(WorkerLoader(list(range(100)), batch_size=4, num_workers=2, persistent_workers=True)); "
              "next(it); print('exiting')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "exiting" and "Traceback" not in done.stderr, done.stderr


def test_a_sigterm_while_a_loader_s_workers_start_does_not_kill_them():
    """A hostile pass: SIGTERM to the process group as an evaluation's workers started killed one in 5 of 30 tries
    (all at 80-110 ms after the epoch's training): torch's worker puts in its own SIGTERM handler (death, unless the parent
    sent it) before any worker_init_fn runs, and the loader's "worker exited unexpectedly" crashed the run before its
    pre-emption checkpoint. Here the window is widened to a second (`random.seed`, which the worker calls between
    the two) and another process sends the SIGTERM inside it: the worker must outlive it and the loader finish."""
    import subprocess
    import sys

    script = """
import os, random, signal, subprocess, sys, time
from bench.data import WorkerLoader
from bench.processes import stop_reporting_dead_workers

parent, seed = os.getpid(), random.seed
def slow_seed(*args):  # in the worker only: its start, between torch's handler and ours, takes a second
    seed(*args)
    if os.getpid() != parent:
        print("window", flush=True)
        time.sleep(1)
random.seed = slow_seed
signal.signal(signal.SIGTERM, lambda s, f: stop_reporting_dead_workers())  # as training's pre-emption flag does
loader = WorkerLoader(list(range(16)), batch_size=4, num_workers=1)
it = iter(loader)
time.sleep(0.5)
subprocess.run(["kill", "-TERM", str(it._workers[0].pid)], check=True)  # not the parent: torch's handler dies
print(sum(len(batch) for batch in it), "images")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["window", "16", "images"], done.stderr[-600:]


def test_resume_after_the_training_images_changed_is_refused(tmp_path, capsys):
    """A hostile pass: 10 images added under train/ (or 15 deleted) between a stop and `--resume` were trained on
    without a word, the epoch's steps and the sampler's order now another dataset's."""
    from helpers import jpeg

    for split in ("train", "val"):
        folder_tree(tmp_path / "data" / split, {"a": 6, "b": 6})
    args = ["train", "--experiment", "debug", "--data", str(tmp_path / "data"), "--set", "dataset=folder", "--set",
            "num_classes=2", "--set", "workers=0", "--set", "epochs=1", "--set", "batch_size=4", "--output",
            str(tmp_path / "run"),
            "--results-dir", str(tmp_path / "r")]
    assert cli.main(args) == 0
    jpeg(tmp_path / "data" / "train" / "a" / "new.jpg", seed=99)
    assert cli.main([*args, "--resume"]) == 2
    assert "the training images changed since the checkpoint (12 then, 13 now)" in capsys.readouterr().err
    (tmp_path / "data" / "train" / "a" / "new.jpg").rename(tmp_path / "data" / "train" / "b" / "new.jpg")
    (tmp_path / "data" / "train" / "a" / "0.jpg").unlink()
    assert cli.main([*args, "--resume"]) == 2
    assert "(12 both times, but not the same files)" in capsys.readouterr().err
    (tmp_path / "data" / "train" / "b" / "new.jpg").unlink()
    jpeg(tmp_path / "data" / "train" / "a" / "0.jpg", seed=1)  # the same name and label: the list is as it was
    assert cli.main([*args, "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_a_command_line_mistake_is_said_by_rank_0_alone(tmp_path, capsys, monkeypatch, rank):
    """A hostile pass: `torchrun --nproc-per-node 2 -m reproduce train … --set epochs=-1` printed the error once per
    rank. A data error, which can differ between machines, is still said by every rank, named."""
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["train", "--experiment", "debug", "--output", str(tmp_path / "run")]
    assert cli.main([*argv, "--set", "epochs=-1"]) == 2
    assert ("epochs=-1 is not accepted" in capsys.readouterr().err) == (rank == "0")
    with pytest.raises(SystemExit):
        cli.main(["train", "--experiment", "debug"])  # argparse: --output is required
    assert ("required: --output" in capsys.readouterr().err) == (rank == "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # RANK set outside torchrun: no rank is silenced (a review)
    assert cli.main([*argv, "--set", "epochs=-1"]) == 2 and "epochs=-1 is not accepted" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    from bench.errors import DataError

    def missing_data(args):
        raise DataError(f"{tmp_path / 'missing'} does not exist")

    monkeypatch.setattr(cli, "_train", missing_data)  # as a rank whose machine lacks the data would find
    assert cli.main([*argv, "--set", "dataset=folder", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "missing") in err and ("(rank 1)" in err) == (rank == "1")


@pytest.mark.parametrize("name,make,resume,message", [
    ("checkpoint.pth", lambda p: p.mkdir(), True, "checkpoint.pth is not a checkpoint file (a folder)"),
    ("checkpoint.pth", lambda p: p.symlink_to("/dev/zero"), True, "is not a checkpoint file (a character device)"),
    ("checkpoint.pth", lambda p: p.symlink_to(p), True, "is not a checkpoint file (a link to nothing, or a loop"),
    ("log.jsonl", lambda p: p.mkdir(), False, "log.jsonl is not a regular file (a folder)"),
    ("result.json", lambda p: p.mkdir(), False, "result.json is not a regular file (a folder)"),
])
def test_something_other_than_a_file_where_the_run_keeps_one_is_named(tmp_path, capsys, name, make, resume, message):
    """A hostile pass: a folder or a link to /dev/zero at checkpoint.pth was "does not exist"; a folder at log.jsonl
    an IsADirectoryError traceback; at result.json, every epoch trained before "cannot write … it is a folder"."""
    run = tmp_path / "run"
    run.mkdir()
    make(run / name)
    code = cli.main(["train", "--experiment", "debug", "--output", str(run), "--results-dir", str(tmp_path / "r"),
                     *(["--resume"] if resume else [])])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and "epoch 1" not in err


def test_a_checkpoint_saved_without_crcs_is_not_called_damaged(tmp_path):
    """A review: `torch.serialization.set_crc32_options(False)` writes CRC 0, which the CRC check read as damage."""
    from bench.checkpoint import load_torch_file

    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"model": {"w": torch.arange(4096.0)}}, tmp_path / "nocrc.pth")
    finally:
        torch.serialization.set_crc32_options(True)
    assert torch.equal(load_torch_file(tmp_path / "nocrc.pth", "a checkpoint")["model"]["w"], torch.arange(4096.0))


def test_ls_checks_where_it_would_write_before_it_prints_the_config(tmp_path, capsys):
    """A hostile pass: the 67-line config went to stdout, then the refusal of --record, exit 2."""
    (tmp_path / "afile").write_text("")
    assert cli.main(["ls", "--show", "deit_b", "--record", str(tmp_path / "afile")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "is a file; give a folder" in err


def test_a_stop_as_the_record_is_written_says_the_record_was_written(tmp_path, monkeypatch, capsys):
    """A hostile pass: SIGTERM just as `reproduce train` linked its record printed "no record was written", exit 143,
    beside the record it had written. The stop is held until the path is known, and the run counts as done."""
    import signal

    from bench import record as records

    written = records.write_record

    def write_then_stop(record, folder):
        path = written(record, folder)
        os.kill(os.getpid(), signal.SIGTERM)  # lands before write_record's caller knows the path
        return path

    monkeypatch.setattr(records, "write_record", write_then_stop)
    monkeypatch.setattr(cli, "_WRITTEN", [])
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run"),
                     "--results-dir", str(tmp_path / "records")])
    err = capsys.readouterr().err
    (path,) = (tmp_path / "records").glob("*.json")
    assert code == 0 and "no record was written" not in err and f"its record was written: {path}" in err, err


@pytest.mark.parametrize("command", ["train", "step-speed"])
def test_compile_true_switched_off_by_the_environment_is_refused(command, monkeypatch, tmp_path, capsys):
    """A hostile pass: compile=true under TORCH_COMPILE_DISABLE=1 trained eager, the record saying compiled."""
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    where = ["--output", str(tmp_path / "run")] if command == "train" else []
    code = cli.main([command, "--experiment", "debug_hard" if command == "step-speed" else "debug", *where,
                     "--results-dir", str(tmp_path / "records"), "--set", "compile=true"])
    err = capsys.readouterr().err
    assert code == 2 and "TORCH_COMPILE_DISABLE=1 in the environment turns torch.compile off" in err, err
    assert not (tmp_path / "records").exists()


def test_too_few_open_files_for_the_loader_s_workers_is_one_line(tmp_path):
    """A hostile pass: `ulimit -n 16` with workers=2 ended in an OSError traceback (Too many open files), or hung."""
    import subprocess
    import sys

    command = (f'ulimit -n 16; "{sys.executable}" -m reproduce train --experiment debug --set workers=2 --output '
               f'"{tmp_path}/run" --results-dir "{tmp_path}/records"')
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 2 and "needs about 128 open files, and this process may open 16 at most" in done.stderr
    done = subprocess.run(["bash", "-c", command.replace("ulimit -n 16", "ulimit -S -n 16")], capture_output=True,
                          text=True, timeout=300)  # a low soft limit under a higher hard one is raised: the run trains
    assert done.returncode == 0, done.stderr[-2000:]
