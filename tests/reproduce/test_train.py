"""`reproduce train` end to end on the debug experiment: seconds each, CPU, synthetic data."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import schema
from bench.record import Record, load_records, read_record
from reproduce import cli, models
from reproduce import train as train_mod
from reproduce.cli import resolve_config
from reproduce.config import ConfigError
from reproduce.train import Preempted, train

GOLDEN = Path(__file__).parent / "golden" / "debug_loss_trace.json"


def step_losses(output: Path) -> list[float]:
    lines = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if line["type"] == "step"]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A cifar_resnet10 teacher trained for 2 debug epochs on the synthetic data (10 classes)."""
    out = tmp_path_factory.mktemp("teacher")
    train(resolve_config("debug", None, ["variant=cifar_resnet10", "epochs=1"]), out, experiment="debug",
          resume=False, log=lambda _: None)
    return out / "checkpoint.pth"


def test_the_debug_run_writes_checkpoint_log_and_a_train_record(tmp_path, capsys):
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run"),
                     "--results-dir", str(tmp_path / "records")])
    assert code == 0, capsys.readouterr().err
    (record,) = load_records(tmp_path / "records")
    assert record.kind == "train" and record.settings["config"]["variant"] == "debug"
    assert record.settings["global_batch_size"] == 32 and record.settings["batch_size_per_gpu"] == 32
    assert record.metrics["epochs"] == 2 and 0 <= record.metrics["final_val_top1"] <= 100
    assert "best_val_top1" in record.metrics and record.metrics["train_img_per_s"] > 0
    assert (tmp_path / "run" / "result.json").exists()
    epochs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1] and {"lr", "loss_base", "loss_distill", "val_top1"} <= set(epochs[0])
    assert "teacher_agree" not in epochs[0]  # no teacher, no agreement to report


def test_golden_loss_trace_of_the_debug_experiment(tmp_path):
    """Guards refactors: the same seed must give the same per-step losses. After an intended change of the
    recipe, regenerate with UPDATE_GOLDEN=1 and say why in the commit."""
    train(resolve_config("debug", None, []), tmp_path, experiment="debug", resume=False, log=lambda _: None)
    trace = step_losses(tmp_path)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"experiment": "debug", "torch": torch.__version__, "losses": trace}, indent=1))
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert len(trace) == len(golden) == 16
    assert trace == pytest.approx(golden, rel=1e-4, abs=1e-5)


def epoch_losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [x[k] for x in lines if x["type"] == "epoch" for k in ("loss", "loss_base", "loss_distill")]


def test_an_interrupted_then_resumed_run_continues_the_same_loss_trace(tmp_path, monkeypatch):
    cfg = resolve_config("debug", None, ["epochs=3", "ema_decay=0.9"])
    train(cfg, tmp_path / "whole", experiment="debug", resume=False, log=lambda _: None)

    calls = {"n": 0}

    def stop_after_11_steps(self, procs):  # SIGTERM at step 11 of 24, mid-epoch 2
        calls["n"] += 1
        return calls["n"] == 11

    with monkeypatch.context() as patch:
        patch.setattr(train_mod._PreemptionFlag, "requested", stop_after_11_steps)
        with pytest.raises(Preempted, match="in epoch 2 after step 3"):
            train(cfg, tmp_path / "split", experiment="debug", resume=False, log=lambda _: None)
    assert len(step_losses(tmp_path / "split")) == 11
    train(cfg, tmp_path / "split", experiment="debug", resume=True, log=lambda _: None)
    assert step_losses(tmp_path / "split") == step_losses(tmp_path / "whole")  # exactly, not approximately
    # the interrupted epoch's line is the mean over all its steps, not over those after the resume (a hostile pass)
    assert epoch_losses(tmp_path / "split") == pytest.approx(epoch_losses(tmp_path / "whole"), rel=1e-12)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pth", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoint.pth", weights_only=True)
    for key in ("model", "model_ema"):
        assert all(torch.equal(whole[key][k], split[key][k]) for k in whole[key])


def test_a_record_lost_between_result_json_and_the_results_folder_is_written_on_resume(tmp_path, capsys):
    """A hostile pass: a kill after result.json and before the record lost the record for good ("already finished"),
    and the killed write's temporary files were never removed."""
    args = ["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(tmp_path / "run"),
            "--results-dir", str(tmp_path / "r")]
    assert cli.main(args) == 0
    (record,) = (tmp_path / "r").glob("*.json")
    record.unlink()  # as if killed between the two writes
    (tmp_path / "run" / ".tmp-x1y2z3w4.pth").write_bytes(b"half a checkpoint")
    (tmp_path / "run" / ".tmp-notes.txt").write_text("a user's")  # not ours: kept (a hostile pass saw it removed)
    assert cli.main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "writing it there" in err and "removed" in err and not (tmp_path / "run" / ".tmp-x1y2z3w4.pth").exists()
    assert (tmp_path / "run" / ".tmp-notes.txt").exists()
    assert len(list((tmp_path / "r").glob("*.json"))) == 1
    assert cli.main([*args, "--resume"]) == 0 and len(list((tmp_path / "r").glob("*.json"))) == 1  # not twice


def test_only_rank_0_writes_a_lost_record_under_torchrun(tmp_path, monkeypatch):
    """Every rank's train() returns None for a finished run; had each written the lost record, two would be kept (a
    review reproduced it; the 2-process test catches it only when the race happens, this one always)."""
    args = ["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(tmp_path / "run"),
            "--results-dir", str(tmp_path / "r")]
    assert cli.main(args) == 0
    (record,) = (tmp_path / "r").glob("*.json")
    record.unlink()
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: None)  # a finished run, on every rank
    monkeypatch.setenv("RANK", "1")
    assert cli.main([*args, "--resume"]) == 0 and not list((tmp_path / "r").glob("*.json"))
    monkeypatch.setenv("RANK", "0")
    assert cli.main([*args, "--resume"]) == 0 and len(list((tmp_path / "r").glob("*.json"))) == 1


def test_a_finished_run_is_not_trained_again_and_a_used_folder_needs_resume(tmp_path, capsys):
    args = ["train", "--experiment", "debug", "--output", str(tmp_path / "run"), "--results-dir", str(tmp_path / "r")]
    assert cli.main(args) == 0
    assert cli.main(args) == 2 and "pass --resume" in capsys.readouterr().err
    assert cli.main([*args, "--resume"]) == 0 and "already finished" in capsys.readouterr().err
    assert len(list((tmp_path / "r").glob("*.json"))) == 1  # a finished run is not recorded twice (#19, item 3)
    assert cli.main([*args, "--resume", "--set", "lr=0.5"]) == 2
    assert "lr (saved 0.001, now 0.5)" in capsys.readouterr().err
    other = [a if a != "debug" else "debug_none" for a in args]  # the same config: the run was credited to it
    assert cli.main([*other, "--resume"]) == 2 and "is a run of debug: give --experiment debug" in capsys.readouterr().err
    (tmp_path / "run" / "result.json").write_text('{"garbage": 1')  # a corrupt record is no record of the run
    assert cli.main([*args, "--resume"]) == 0 and "unreadable" in capsys.readouterr().err
    assert read_record(tmp_path / "run" / "result.json").settings.experiment == "debug"


def test_hard_distillation_gives_the_teacher_the_mixed_images_the_student_sees(tmp_path, teacher_ckpt, monkeypatch):
    seen = {"student": [], "teacher": []}
    real_build = models.build_teacher

    def spying_teacher(cfg):
        teacher, sha = real_build(cfg)
        teacher.register_forward_hook(lambda m, inputs, out: seen["teacher"].append(inputs[0].clone()))
        return teacher, sha

    real_student = models.build_student

    def spying_student(cfg):
        student, variant, size = real_student(cfg)
        student.register_forward_hook(lambda m, inputs, out: seen["student"].append(inputs[0].clone()))
        return student, variant, size

    monkeypatch.setattr(models, "build_teacher", spying_teacher)
    monkeypatch.setattr(models, "build_student", spying_student)
    cfg = resolve_config("debug_hard", None, [f"teacher_checkpoint={teacher_ckpt}", "epochs=1"])
    train(cfg, tmp_path, experiment="debug_hard", resume=False, log=lambda _: None)
    assert len(seen["teacher"]) == 8
    for s, t in zip(seen["student"], seen["teacher"]):  # the student's training forwards come first, one per step
        assert torch.equal(s, t)
    # mixed: Mixup/CutMix changed the images (a pure batch would repeat exactly when flipped and blended)
    assert not torch.equal(seen["teacher"][0], seen["teacher"][0].flip(0))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_student_record_names_its_teacher_checkpoint_by_sha256(tmp_path, teacher_ckpt, capsys):
    """Issue #30: a path alone does not tie a student to its teacher run; the hash of the file does."""
    code = cli.main(["train", "--experiment", "debug_hard", "--set", f"teacher_checkpoint={teacher_ckpt}",
                     "--set", "epochs=1", "--output", str(tmp_path / "run"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 0, err
    (record,) = load_records(tmp_path / "r")
    assert record.settings.teacher_sha256 == sha256(teacher_ckpt)
    assert f"teacher {teacher_ckpt}, sha256 {sha256(teacher_ckpt)[:12]}" in err  # the banner names it
    teacher_run = Record.from_json((teacher_ckpt.parent / "result.json").read_text())
    assert teacher_run.metrics.checkpoint_sha256 == record.settings.teacher_sha256
    assert record.metrics.checkpoint_sha256 == sha256(tmp_path / "run" / "checkpoint.pth")
    assert record.settings.finetune_sha256 is None and record.settings.resumed_from is None
    for section in ("settings", "metrics", "env"):
        assert schema.undocumented("train", section, list(getattr(record, section))) == []


def test_a_resumed_run_names_the_checkpoint_it_resumed_from_and_refuses_a_changed_teacher(tmp_path, teacher_ckpt,
                                                                                          monkeypatch):
    teacher = tmp_path / "teacher.pth"
    shutil.copy(teacher_ckpt, teacher)
    cfg = resolve_config("debug_hard", None, [f"teacher_checkpoint={teacher}", "epochs=2"])
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train_mod._PreemptionFlag, "requested", lambda self, procs: True)  # stop after one step
        with pytest.raises(Preempted):
            train(cfg, run, experiment="debug_hard", resume=False, log=lambda _: None)
    stopped = sha256(run / "checkpoint.pth")
    other = torch.load(teacher, weights_only=True)
    other["model"]["fc.bias"] += 1
    torch.save(other, teacher)
    with pytest.raises(ConfigError, match="has changed since the run began"):
        train(cfg, run, experiment="debug_hard", resume=True, log=lambda _: None)
    shutil.copy(teacher_ckpt, teacher)
    record = train(cfg, run, experiment="debug_hard", resume=True, log=lambda _: None)
    assert record.settings.resumed_from == [{"path": str(run / "checkpoint.pth"), "sha256": stopped, "epoch": 0,
                                             "step": 1, "world_size": 1}]
    assert record.settings.teacher_sha256 == sha256(teacher_ckpt)


def test_the_label_teacher_trains_without_a_checkpoint_or_memo_and_always_agrees(tmp_path):
    cfg = resolve_config("debug_hard", None, ["epochs=1", "teacher=labels", "teacher_memo=true"])
    record = train(cfg, tmp_path / "run", experiment="debug_hard", resume=False, log=lambda _: None)
    (epoch,) = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
                if json.loads(x)["type"] == "epoch"]
    assert epoch["teacher_agree"] == 1.0 and epoch["loss_distill"] > 0 and "teacher_memo_hits" not in epoch
    assert record.settings["config"]["teacher"] == "labels" and "final_val_top1_dist" in record.metrics
    assert record.settings.teacher_sha256 is None  # no file was loaded


def test_a_remembered_teacher_gives_the_same_losses_and_runs_once_per_distinct_batch(tmp_path, teacher_ckpt):
    ckpt = tmp_path / "teacher.pth"  # a private copy: the memo lives beside the checkpoint
    shutil.copy(teacher_ckpt, ckpt)
    base = ["epochs=1", f"teacher_checkpoint={ckpt}"]

    def run(name, *extra):
        train(resolve_config("debug_hard", None, [*base, *extra]), tmp_path / name, experiment="debug_hard",
              resume=False, log=lambda _: None)
        (epoch,) = [json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()
                    if json.loads(x)["type"] == "epoch"]
        assert 0 <= epoch["teacher_agree"] <= 1  # the teacher's hard labels against the true ones
        return step_losses(tmp_path / name), (epoch.get("teacher_memo_hits"), epoch.get("teacher_memo_misses"))

    plain, counts = run("plain")
    assert counts == (None, None) and not (tmp_path / "teacher-logits").exists()
    first, counts = run("first", "teacher_memo=true")
    assert counts == (0, 8) and first == plain  # 8 steps, all computed, same losses bit for bit
    again, counts = run("again", "teacher_memo=true")
    assert counts == (8, 0) and again == plain  # every batch read back
    _, counts = run("other_seed", "teacher_memo=true", "seed=1")
    assert counts == (0, 8)  # other batches: nothing is wrongly reused


def test_the_teacher_checkpoint_is_hashed_once_per_run_and_never_read_whole(tmp_path, teacher_ckpt, monkeypatch):
    """#32: the teacher was hashed by read_state_dict, again by hash_inputs, and a third time by memo_path, which
    read the whole file into memory."""
    import bench.checkpoint
    from reproduce import checkpoints

    ckpt = tmp_path / "teacher.pth"
    shutil.copy(teacher_ckpt, ckpt)
    hashed, read_whole = [], []
    real_sha, real_read = bench.checkpoint.sha256_of, Path.read_bytes

    def counting_sha(path):
        hashed.append(Path(path))
        return real_sha(path)

    def counting_read(self):
        read_whole.append(self)
        return real_read(self)

    monkeypatch.setattr(bench.checkpoint, "sha256_of", counting_sha)
    monkeypatch.setattr(checkpoints, "sha256_of", counting_sha)
    monkeypatch.setattr(Path, "read_bytes", counting_read)
    cfg = resolve_config("debug_hard", None, ["epochs=1", f"teacher_checkpoint={ckpt}", "teacher_memo=true"])
    record = train(cfg, tmp_path / "run", experiment="debug_hard", resume=False, log=lambda _: None)
    assert hashed.count(ckpt) == 1 and ckpt not in read_whole
    sha = real_sha(ckpt)
    assert record.settings.teacher_sha256 == sha
    (memo,) = (tmp_path / "teacher-logits").iterdir()
    assert sha[:16] in memo.name  # the memo is keyed by the hash taken once


def test_a_read_only_teacher_folder_keeps_the_memo_in_the_run_folder_and_says_so(tmp_path, teacher_ckpt):
    """#32 row 13: EROFS after epoch 1, and again on every resume."""
    from test_run_folder import remount_read_only, tmpfs

    with tmpfs(tmp_path / "teachers", "64m") as folder:
        shutil.copy(teacher_ckpt, folder / "teacher.pth")
        remount_read_only(folder)
        said = []
        cfg = resolve_config("debug_hard", None, ["epochs=1", f"teacher_checkpoint={folder / 'teacher.pth'}",
                                                  "teacher_memo=true"])
        assert train(cfg, tmp_path / "run", experiment="debug_hard", resume=False, log=said.append) is not None
    (memo,) = (tmp_path / "run" / "teacher-logits").iterdir()
    assert any("read-only" in line and str(memo.parent) in line for line in said[:3]), said


def test_two_gloo_processes_finish_with_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                          "-m", "reproduce", "train", "--experiment", "debug", "--output", str(tmp_path / "run"),
                          "--results-dir", str(tmp_path / "records"), "--set", "log_every=1"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = load_records(tmp_path / "records")  # rank 0 alone writes
    assert record.settings["world_size"] == 2 and record.settings["batch_size_per_gpu"] == 16
    assert record.metrics["ranks_identical_weights"] is True
    assert "timed_other_cores" in record.metrics  # the agent's family is the run's: every rank's load is known
    # one epoch line per epoch, its loss the mean over both ranks' steps (each rank printed its own, a hostile pass)
    printed = [line for line in run.stderr.splitlines() if line.startswith("epoch 1/2, loss")]
    logged = next(x for x in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
                  if x["type"] == "epoch")
    assert len(printed) == 1 and f"loss {logged['loss']:.4f}" in printed[0]
    assert run.stderr.count("debug: debug (no distillation)") == 1  # one banner, not one per rank run together
    rank0 = [x["loss"] for x in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
             if x["type"] == "step" and x["epoch"] == 0]  # the step lines are rank 0's
    assert len(rank0) == 8 and abs(logged["loss"] - sum(rank0) / 8) > 1e-6  # not rank 0's mean alone
    (recorded,) = (tmp_path / "records").glob("*.json")
    recorded.unlink()  # as if killed between result.json and the record: rank 0 alone writes it on resume
    again = subprocess.run([*run.args, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((tmp_path / "records").glob("*.json"))) == 1  # not one per rank (a review)


@pytest.mark.parametrize("argv,message", [
    (["--experiment", "debug", "--set", "learning_rate=1"], "no such config field"),
    (["--experiment", "debug", "--set", "lr=fast"], "lr='fast': not a valid float"),
    # read by Python as 20, 10.0 and 2: each trained (a hostile pass)
    (["--experiment", "debug", "--set", "epochs=2_0"], "epochs='2_0': not a valid int (plain ASCII digits)"),
    (["--experiment", "debug", "--set", "lr=1_0"], "lr='1_0': not a valid float"),
    (["--experiment", "debug", "--set", "epochs=\u0662"], "epochs='\u0662': not a valid int"),
    (["--experiment", "debug", "--set", "attn_blocks=-1,1_1"], "attn_blocks='-1,1_1': not a valid tuple"),
    (["--experiment", "debug", "--set", "attn_blocks=(-1,)"], "no brackets (e.g. -1,-2)"),
    (["--experiment", "debug", "--set", "compile=maybe"], "not a valid bool (true/false, yes/no, 1/0)"),
    (["--experiment", "debug", "--set", "lr=inf"], "lr=inf is not accepted: must be positive and finite"),
    (["--experiment", "debug", "--set", "distillation=medium"], "distillation='medium' is not accepted"),
    (["--experiment", "debug", "--set", "epochs"], "expected key=value"),
    (["--experiment", "debugg"], "unknown experiment 'debugg'; did you mean debug"),
    (["--experiment", "debug_hard"], "needs the teacher's weights: --set teacher_checkpoint=FILE"),
    (["--experiment", "debug_hard", "--set", "teacher_checkpoint=/nonexistent/t.pth"], "no such file"),
    (["--experiment", "debug_hard", "--set", "variant=debug", "--set", "teacher_checkpoint=x"],
     "needs a student with a distillation token, but debug has only a class token"),
    (["--experiment", "debug", "--set", "batch_size=7"], "Mixup/CutMix need an even batch per process"),
    (["--experiment", "debug", "--set", "eval_every=0"], "eval_every=0 is not accepted: must be at least 1"),
    (["--experiment", "debug", "--set", "workers=-1"], "workers=-1 is not accepted: must be in [0, 64]"),
    (["--experiment", "debug", "--set", "distill_smoothing=1"], "distill_smoothing=1.0 is not accepted: must be in [0, 1)"),
    (["--experiment", "debug", "--set", "distill_smoothing=0.1"],
     "distill_smoothing=0.1 is not accepted: must be 0 unless distillation=hard"),
    (["--experiment", "debug", "--set", "batch_size=7", "--set", "mixup=0", "--set", "cutmix=0",
      "--set", "train_subset=4"], "cannot fill one batch"),
])
def test_bad_training_requests_exit_2_with_a_clear_message(tmp_path, capsys, argv, message):
    code = cli.main(["train", *argv, "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--output", "--results-dir"])
def test_a_folder_given_as_a_file_is_refused_before_training(tmp_path, capsys, flag):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    argv = {"--output": str(tmp_path / "run"), "--results-dir": str(tmp_path / "records")}
    argv[flag] = str(blocker / "sub")
    code = cli.main(["train", "--experiment", "debug", *(x for kv in argv.items() for x in kv)])
    err = capsys.readouterr().err
    assert code == 2 and f"{flag} {blocker / 'sub'} cannot be made: {blocker} is a file" in err
    assert "Traceback" not in err and sorted(os.listdir(tmp_path)) == ["taken"]


def test_a_teacher_with_another_label_space_is_refused(tmp_path, capsys, teacher_ckpt):
    code = cli.main(["train", "--experiment", "debug_hard", "--set", f"teacher_checkpoint={teacher_ckpt}",
                     "--set", "num_classes=5", "--output", str(tmp_path / "run")])
    assert code == 2 and "predicts 10 classes but the student has 5" in capsys.readouterr().err


def test_fine_tuning_resizes_positional_embeddings_and_replaces_a_new_head(tmp_path, capsys):
    train(resolve_config("debug", None, ["epochs=1"]), tmp_path / "base", experiment="debug", resume=False,
          log=lambda _: None)
    cfg = resolve_config("debug", None, ["epochs=1", "img_size=48", "num_classes=5",
                                         f"finetune={tmp_path / 'base' / 'checkpoint.pth'}"])
    student, _, size = models.build_student(cfg)
    base = torch.load(tmp_path / "base" / "checkpoint.pth", weights_only=True)["model"]
    assert size == 48 and student.pos_embed.shape == (1, 1 + 12 * 12, 64)
    assert torch.equal(student.blocks[0].attn.qkv.weight, base["blocks.0.attn.qkv.weight"])
    assert torch.equal(student.pos_embed[0, 0], base["pos_embed"][0, 0])  # class token position kept as is
    assert student.head.weight.shape == (5, 64)
    record = train(cfg, tmp_path / "tuned", experiment="debug", resume=False, log=lambda _: None)
    assert record.settings.finetune_sha256 == sha256(tmp_path / "base" / "checkpoint.pth")


def test_a_suite_skips_finished_rows_and_resumes_interrupted_ones(tmp_path, monkeypatch):
    from reproduce.suite import Suite, run_suite

    suite = Suite("table3-debug", "debug_teacher", ("debug", "debug_hard"), table4=(("debug", "debug_hard"),))
    kwargs = dict(seeds=1, sets=["epochs=2"], data=None, results_dir=tmp_path / "records", log=lambda _: None)
    calls = {"n": 0}

    def stop_in_the_second_row(self, procs):  # teacher 16 steps + debug 16 steps, then 3 steps of debug_hard
        calls["n"] += 1
        return calls["n"] == 16 + 16 + 3

    with monkeypatch.context() as patch:
        patch.setattr(train_mod._PreemptionFlag, "requested", stop_in_the_second_row)
        with pytest.raises(Preempted):
            run_suite(suite, tmp_path / "runs", **kwargs)
    outcomes = run_suite(suite, tmp_path / "runs", **kwargs)
    assert [(o.experiment, o.status) for o in outcomes] == [("debug_teacher", "skipped"), ("debug", "skipped"),
                                                            ("debug_hard", "resumed")]
    again = run_suite(suite, tmp_path / "runs", **kwargs)
    assert {o.status for o in again} == {"skipped"}
    # a hostile pass: `--set epochs=3` skipped the rows trained with 2 and said nothing, so one table mixed them
    with pytest.raises(ConfigError, match=r"finished with a different configuration: epochs \(saved 2, now 3\)"):
        run_suite(suite, tmp_path / "runs", **{**kwargs, "sets": ["epochs=3"]})
    with pytest.raises(ConfigError, match="this scale trains its own teacher"):  # the given one would go unread
        run_suite(suite, tmp_path / "runs", **{**kwargs, "sets": ["epochs=2", "teacher_checkpoint=t.pth"]})
    records = load_records(tmp_path / "records")  # one record per finished run, and the seed's Table 4; none twice
    assert sorted(r.kind for r in records) == ["disagree", "train", "train", "train"]
    (table4,) = [r for r in records if r.kind == "disagree"]
    none = next(r for r in records if r.settings.get("experiment") == "debug")
    matrix = table4.metrics["disagreement"]
    assert list(matrix) == ["ground truth", "convnet", "DeiT", "DeiT⚗ class", "DeiT⚗ distil", "DeiT⚗ class+distil"]
    assert all(matrix[name][name] == 0 for name in matrix)
    assert matrix["ground truth"]["DeiT"] == pytest.approx(1 - none.metrics["final_val_top1"] / 100, abs=1e-6)
    assert table4.settings["seed"] == 0 and table4.settings["scale"] == "debug"


def test_a_suite_given_its_teacher_evaluates_it_once_and_writes_table4(tmp_path, teacher_ckpt):
    """The imagenet-scale path on a tiny image folder: the given teacher is scored by bench's accuracy measurement,
    its predictions meet the students' by image name, and each seed gets a Table-4 record."""
    from PIL import Image

    from reproduce.suite import Suite, run_suite

    for split, per_class in (("train", 4), ("val", 2)):
        for c in range(10):
            for i in range(per_class):
                (tmp_path / "data" / split / f"c{c}").mkdir(parents=True, exist_ok=True)
                pixels = torch.randint(0, 256, (40, 36, 3), generator=torch.Generator().manual_seed(100 * c + i))
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(tmp_path / "data" / split / f"c{c}" / f"{i}.png")
    suite = Suite("table3-given", None, ("debug", "debug_hard"), table4=(("debug", "debug_hard"),))
    kwargs = dict(sets=["epochs=1", "dataset=folder", "workers=0"], data=str(tmp_path / "data"),
                  results_dir=tmp_path / "records", log=lambda _: None)
    with pytest.raises(ConfigError, match="distils from cifar_resnet10: give its weights with --set teacher_checkpoint"):
        run_suite(suite, tmp_path / "runs", seeds=1, **kwargs)
    with pytest.raises(ConfigError, match="teacher=labels has no weights to evaluate"):
        run_suite(suite, tmp_path / "runs", seeds=1, **{**kwargs, "sets": [*kwargs["sets"], "teacher=labels"]})
    assert not (tmp_path / "runs").exists()  # refused before anything trained
    kwargs["sets"].append(f"teacher_checkpoint={teacher_ckpt}")
    outcomes = run_suite(suite, tmp_path / "runs", seeds=2, **kwargs)
    assert [(o.experiment, o.status) for o in outcomes] == [("cifar_resnet10", "evaluated"), *[(e, "trained") for e in
                                                            ("debug", "debug_hard", "debug", "debug_hard")]]
    again = run_suite(suite, tmp_path / "runs", seeds=2, **kwargs)
    assert {o.status for o in again} == {"skipped"}
    row = tmp_path / "runs" / "table3-given" / "seed1" / "debug" / "result.json"
    row.write_text('{"trunc')  # a hostile pass: a traceback; put back from its record, not recorded twice
    assert {o.status for o in run_suite(suite, tmp_path / "runs", seeds=2, **kwargs)} == {"skipped"}
    assert read_record(row).settings.experiment == "debug"
    other = tmp_path / "other-teacher.pth"
    shutil.copy(teacher_ckpt, other)
    with pytest.raises(ConfigError, match="holds the evaluation of teacher .* Table 4 would mix teachers"):
        run_suite(suite, tmp_path / "runs", seeds=2, **{**kwargs, "sets": [*kwargs["sets"][:-1],
                                                                           f"teacher_checkpoint={other}"]})
    records = load_records(tmp_path / "records")
    assert sorted(r.kind for r in records) == ["bench", "disagree", "disagree", "train", "train", "train", "train"]
    (teacher,) = [r for r in records if r.kind == "bench"]
    assert teacher.variant == "cifar_resnet10" and teacher.metrics["images"] == 20
    assert teacher.settings["eval"]["checkpoint"] == str(teacher_ckpt)
    for table4 in (r for r in records if r.kind == "disagree"):
        matrix = table4.metrics["disagreement"]
        assert table4.metrics["images"] == 20 and table4.settings["experiments"]["convnet"] == "cifar_resnet10"
        assert matrix["ground truth"]["convnet"] == pytest.approx(1 - teacher.metrics["top1"] / 100, abs=1e-6)
        # every file says how it was made (a review: the students' did not, and each record said "written before")
        assert not any("written before" in note for note in table4.notes), table4.notes


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from reproduce.distill import Distiller

    real_call, calls = Distiller.__call__, {"n": 0}

    def nan_at_step_11(self, images, outputs, target):
        calls["n"] += 1
        step = real_call(self, images, outputs, target)
        return step._replace(total=step.total * float("nan")) if calls["n"] == 11 else step

    monkeypatch.setattr(Distiller, "__call__", nan_at_step_11)
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite loss nan at epoch 2, step 3" in err
    assert f"the last checkpoint {tmp_path / 'run' / 'checkpoint.pth'} is intact" in err
    kept = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert (kept["epoch"], kept["step"]) == (1, 0)  # the checkpoint of the last good epoch


def test_layer_decay_gives_deeper_layers_larger_learning_rates(tmp_path):
    """Layer-wise lr decay (fine-tuning): timm's groups scale the lr by decay ** (depth from the top), so the
    patch embedding learns slowest and the head at the full rate."""
    train(resolve_config("debug", None, ["epochs=1", "layer_decay=0.5"]), tmp_path, experiment="debug",
          resume=False, log=lambda _: None)
    groups = torch.load(tmp_path / "checkpoint.pth", weights_only=False)["optimizer"]["param_groups"]
    scales = sorted({round(g["lr_scale"], 6) for g in groups})
    depth = 2  # the debug model's blocks: embeddings, 2 blocks, head -> 4 layers, scales 0.5**3 … 1
    assert scales == [0.5 ** k for k in range(depth + 1, -1, -1)]
    assert all(g["lr"] == pytest.approx(g["lr_scale"] * groups[-1]["lr"] / groups[-1]["lr_scale"]) for g in groups)


def test_a_run_that_never_leaves_warm_up_says_so_before_and_in_its_record(tmp_path, capsys):
    """A hostile pass: `--set epochs=1` of the debug experiment (1 warm-up epoch) trained at 1e-6 without a word."""
    args = ["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(tmp_path / "run"),
            "--results-dir", str(tmp_path / "r")]
    assert cli.main(args) == 0
    assert "warning: warmup_epochs=1 >= epochs=1" in capsys.readouterr().err
    (record,) = load_records(tmp_path / "r")
    assert any("the whole run is warm-up" in note for note in record.notes)
    assert cli.main([*args[:3], "--output", str(tmp_path / "two"), "--results-dir", str(tmp_path / "r2")]) == 0
    assert "warm-up" not in capsys.readouterr().err  # the debug experiment's own 2 epochs leave warm-up


def test_with_compile_the_recorded_speed_leaves_out_each_process_s_compiling_epoch(tmp_path, monkeypatch):
    """A hostile pass: compile=true recorded 191 img/s, the mean of a compiling first epoch (10) and a steady one
    (372), where eager recorded 365. (torch.compile is stubbed: the rule, not inductor, is under test.)"""
    monkeypatch.setattr(train_mod.torch, "compile", lambda model, **kwargs: model)
    record = train(resolve_config("debug", None, ["compile=true"]), tmp_path / "run", experiment="debug",
                   resume=False, log=lambda _: None)
    epochs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "epoch"]
    assert len(epochs) == 2 and record.metrics["train_img_per_s"] == epochs[1]["train_img_per_s"]


def test_a_compiled_teacher_has_its_frozen_weights_folded_in_and_gives_the_eager_logits():
    """`compile=true` compiles the teacher with inductor's freezing (it only runs in inference mode): the logits
    it gives the distillation term are the eager teacher's."""
    from reproduce.config import TrainConfig
    from reproduce.distill import teacher_logits

    teacher = models.resolve("cifar_resnet10").build(num_classes=10).eval().requires_grad_(False)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    eager = teacher_logits(teacher, images)
    cfg = TrainConfig(compile=True)
    placed, memo = train_mod.place_teacher(teacher, None, cfg, train_mod.Processes(0, 1, "cpu"), "none", Path("."),
                                           log=lambda m: None)
    assert memo is None and placed is not teacher
    compiled = teacher_logits(placed, images)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # folded in: a later change to the weights no longer reaches the compiled teacher
        teacher.conv1.weight.add_(1.0)
    assert torch.equal(teacher_logits(placed, images), compiled)
    assert not torch.allclose(teacher_logits(teacher, images), compiled)


def test_a_suite_refuses_a_setting_no_row_reads_and_a_seed_before_anything_trains(tmp_path):
    """Rows differ in what they read (the teacher's fields only where they distil): a setting goes to the rows that
    read it; one that no row reads would change nothing and is refused before anything trains."""
    from reproduce.suite import Suite, run_suite

    suite = Suite("table3-debug", "debug_teacher", ("debug", "debug_hard"), table4=())
    with pytest.raises(ConfigError, match="--set attn_per_head: no row of table3-debug reads it"):
        run_suite(suite, tmp_path / "runs", seeds=1, sets=["attn_per_head=true"], data=None,
                  results_dir=tmp_path / "records", log=lambda _: None)
    with pytest.raises(ConfigError, match="a suite trains seeds 0 to N-1 itself"):
        run_suite(suite, tmp_path / "runs", seeds=1, sets=["seed=3"], data=None, results_dir=tmp_path / "records",
                  log=lambda _: None)
    assert not (tmp_path / "runs" / "table3-debug" / "teacher").exists()


def test_a_fresh_start_replaces_no_file_that_is_not_a_stopped_runs(tmp_path, capsys):
    """A hostile pass: into a folder holding a result.json and a log.jsonl but no checkpoint, a new run replaced both,
    exit 0, and warned that 'the checkpoint is intact', of a checkpoint that never was."""
    run = tmp_path / "run"
    args = ["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(run),
            "--results-dir", str(tmp_path / "r")]
    run.mkdir()
    (run / "result.json").write_text("{}")
    assert cli.main(args) == 2 and "holds result.json but no checkpoint.pth" in capsys.readouterr().err
    (run / "result.json").unlink()
    (run / "log.jsonl").write_text("my notes\nmore notes\n")
    assert cli.main(args) == 2 and "log.jsonl, which is not a log of `reproduce train`" in capsys.readouterr().err
    assert (run / "log.jsonl").read_text() == "my notes\nmore notes\n" and not (tmp_path / "r").exists()
    (run / "log.jsonl").write_text('{"type": "step", "epoch": 0, "step": 3}\n{"type": "ste')  # stopped, torn
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "starting afresh" in err and "checkpoint is intact" not in err


@pytest.mark.parametrize("replace", [False, True], ids=["removed", "removed-and-remade"])
def test_a_run_folder_removed_while_training_stops_the_run_in_one_line(tmp_path, replace):
    """A hostile pass: `rm -rf` of the output folder mid-run crashed at the next log line (FileNotFoundError traceback),
    or the next checkpoint re-made the folder without its log's earlier lines and without a lock."""
    from bench.errors import StorageError

    out = tmp_path / "run"

    def log(msg):
        if msg.startswith("epoch 1/"):
            shutil.rmtree(out)
            if replace:
                out.mkdir()

    with pytest.raises(StorageError, match="was removed or replaced while this run wrote it"):
        train(resolve_config("debug", None, ["epochs=3"]), out, experiment="debug", resume=False, log=log)


def test_sighup_checkpoints_as_sigterm_does_unless_nohup_ignores_it(tmp_path):
    """A hostile pass: the terminal closing (SIGHUP) killed `reproduce train` silently, its epoch's steps lost."""
    import signal

    def hang_up(msg):
        if msg.startswith("epoch 1/"):
            os.kill(os.getpid(), signal.SIGHUP)

    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(Preempted, match="in epoch 2"):
        train(resolve_config("debug", None, ["epochs=3"]), tmp_path / "run", experiment="debug", resume=False,
              log=hang_up)
    assert (tmp_path / "run" / "checkpoint.pth").is_file() and signal.getsignal(signal.SIGHUP) is before
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup: the run goes on
    try:
        assert train(resolve_config("debug", None, ["epochs=2"]), tmp_path / "nohup", experiment="debug",
                     resume=False, log=hang_up) is not None
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_teacher_checkpoint_of_a_run_still_training_is_refused(teacher_ckpt, tmp_path):
    """A hostile pass: a student distilled from a teacher run in its first epochs, whose checkpoint changes every
    epoch, and its record said nothing of it."""
    folder = tmp_path / "teacher-run"
    folder.mkdir()
    shutil.copy(teacher_ckpt, folder / "checkpoint.pth")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "f.write('pid 1 on elsewhere'); f.flush(); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('held', flush=True); time.sleep(60)", str(folder / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = resolve_config("debug_hard", None, [f"teacher_checkpoint={folder / 'checkpoint.pth'}"])
        with pytest.raises(ConfigError, match="belongs to a run still training \\(pid 1 on elsewhere\\)"):
            models.build_teacher(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert models.build_teacher(cfg)[0] is not None  # once it has finished, the same file is a teacher
