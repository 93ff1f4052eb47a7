"""Issue #32: a run folder is owned by one process, its log survives a torn write, and a full or read-only disk
is named as such with what was kept. Real locks, real processes and real small filesystems where the machine
allows mounting them."""

import contextlib
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.errors import FolderInUse, StorageError, UsageError, check_folder
from bench.store import append_line, hold_folder, write_atomic, write_text_atomic
from reproduce import cli
from reproduce import train as train_mod
from reproduce.checkpoints import CheckpointState, RunFiles
from reproduce.cli import resolve_config
from reproduce.config import ConfigError, Preempted, TrainConfig
from reproduce.distill import MemoTeacher, memo_path
from reproduce.train import train

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m", read_only: bool = False):
    """A real small filesystem at `path` (root may mount one; elsewhere the test is skipped, saying why)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'mount failed'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lock until its stdin closes."""
    code = ("import sys; from pathlib import Path; from bench.store import hold_folder\n"
            f"with hold_folder(Path({str(folder)!r})):\n    print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


# row 9: two `reproduce train … --output C` started together both exited 0 and interleaved log.jsonl


def test_a_second_train_into_a_run_folder_in_use_exits_2_naming_the_folder_and_the_holders_pid(tmp_path, capsys):
    run, records = tmp_path / "run", tmp_path / "records"
    first = subprocess.Popen([sys.executable, "-m", "reproduce", "train", "--experiment", "debug", "--set", "epochs=1",
                              "--output", str(run), "--results-dir", str(records)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = run / ".lock"
    while first.poll() is None and not (lock.is_file() and lock.read_text().strip()):
        time.sleep(0.1)
    assert first.poll() is None, "the first run ended before it took the run folder's lock"
    code = cli.main(["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(run),
                     "--results-dir", str(records)])
    err = capsys.readouterr().err
    assert code == 2 and str(run) in err and f"pid {first.pid}" in err, err
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines].count("epoch") == 1  # one run's lines, not two interleaved
    assert len(list(records.glob("*.json"))) == 1
    # released when the first ended: the folder is usable again
    assert cli.main(["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(run),
                     "--results-dir", str(records), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err


def test_a_run_folders_lock_is_released_when_its_holder_is_killed(tmp_path):
    proc = holder(tmp_path / "run")
    with pytest.raises(FolderInUse, match=f"pid {proc.pid}"):
        with hold_folder(tmp_path / "run"):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with hold_folder(tmp_path / "run"):  # flock ends with its process: no stale lock to clear by hand
        pass
    with hold_folder(tmp_path / "run"):  # and with the block, in one process (a suite's rows)
        pass
    proc.stdin.close()


def test_a_released_folder_keeps_what_was_written_and_nothing_of_the_lock(tmp_path):
    with hold_folder(tmp_path / "new" / "run") as folder:
        assert (folder / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
    assert not (tmp_path / "new").exists()  # a start refused before its first write leaves nothing behind
    with hold_folder(tmp_path / "new" / "run") as folder:
        (folder / "log.jsonl").write_text("{}\n")
    assert [p.name for p in (tmp_path / "new" / "run").iterdir()] == ["log.jsonl"]


def test_a_failed_training_start_releases_its_run_folder(tmp_path):
    cfg = resolve_config("debug", None, ["epochs=1"])
    train(cfg, tmp_path / "run", experiment="debug", resume=False, log=lambda _: None)
    with pytest.raises(Exception, match="pass --resume"):
        train(cfg, tmp_path / "run", experiment="debug", resume=False, log=lambda _: None)
    with hold_folder(tmp_path / "run"):
        pass


def test_a_second_suite_on_the_same_root_is_refused_before_any_work(tmp_path):
    from reproduce.suite import Suite, run_suite

    suite = Suite("table3-debug", "debug_teacher", ("debug",))
    proc = holder(tmp_path / "runs" / suite.name)
    try:
        with pytest.raises(FolderInUse, match=f"pid {proc.pid}"):
            run_suite(suite, tmp_path / "runs", seeds=1, sets=["epochs=1"], data=None,
                      results_dir=tmp_path / "records", log=lambda _: None)
    finally:
        proc.stdin.close()
        proc.wait()
    assert not (tmp_path / "runs" / suite.name / "teacher").exists()


# row 10: a half-written last line in log.jsonl made --resume crash with JSONDecodeError


def test_a_torn_last_log_line_is_dropped_with_a_warning_and_the_checkpoint_resumes(tmp_path, monkeypatch):
    cfg = resolve_config("debug", None, ["epochs=1", "log_every=1"])
    calls = {"n": 0}

    def stop_after_3_steps(self, procs):
        calls["n"] += 1
        return calls["n"] == 3

    with monkeypatch.context() as patch:
        patch.setattr(train_mod._PreemptionFlag, "requested", stop_after_3_steps)
        with pytest.raises(Preempted):
            train(cfg, tmp_path / "run", experiment="debug", resume=False, log=lambda _: None)
    log_file = tmp_path / "run" / "log.jsonl"
    with log_file.open("a") as f:
        f.write('{"type": "step", "epoch": 0, "st')  # a write cut short (SIGKILL, a full disk)
    said = []
    record = train(cfg, tmp_path / "run", experiment="debug", resume=True, log=said.append)
    assert record is not None and record.metrics["epochs"] == 1
    assert any("torn" in line and str(log_file) in line for line in said), said
    steps = [json.loads(x)["step"] for x in log_file.read_text().splitlines() if '"step"' in x]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]


def test_unreadable_log_lines_are_dropped_naming_the_file_and_line(tmp_path):
    files = RunFiles(tmp_path, main=True)
    lines = [{"type": "step", "epoch": 0, "step": 1}, "not json", {"type": "step", "epoch": "zero", "step": 2},
             {"type": "epoch", "epoch": 0}, {"type": "step", "epoch": 1, "step": 1}]
    files.log_file.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    said = []
    files.trim_log(CheckpointState("debug", {}, epoch=1, step=0), log=said.append)
    kept = [json.loads(x) for x in files.log_file.read_text().splitlines()]
    assert kept == [lines[0], lines[3]]  # the last one is past the checkpoint
    assert len(said) == 1 and str(files.log_file) in said[0] and "lines 2, 3" in said[0]


@pytest.mark.parametrize("content", [None, "", json.dumps({"type": "step", "epoch": 3, "step": 1}) + "\n"])
def test_a_log_emptied_or_missing_before_a_resume_is_said(tmp_path, content):
    """A hostile pass: `: > log.jsonl` before --resume was accepted silently, its 42 earlier lines gone."""
    files = RunFiles(tmp_path, main=True)
    if content is not None:
        files.log_file.write_text(content)
    said = []
    files.trim_log(CheckpointState("debug", {}, epoch=1, step=0), log=said.append)
    assert len(said) == 1 and str(files.log_file) in said[0] and "(epoch 1, step 0)" in said[0]
    assert "the log of the steps before it is lost" in said[0]


def test_a_log_line_is_appended_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    append_line(path, '{"a": 1}')
    real_write = os.write

    def disk_full_half_way(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", disk_full_half_way)
    with pytest.raises(StorageError, match="full"):
        append_line(path, '{"b": 2}')
    monkeypatch.undo()
    assert path.read_text() == '{"a": 1}\n'


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()])
def test_a_failed_write_takes_back_the_folders_it_made(tmp_path, failure):
    """A hostile pass: `bench run --results-dir` on a full disk left an empty results folder behind."""
    (tmp_path / "kept").mkdir()

    def fails(tmp):
        raise failure

    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else StorageError):
        write_atomic(tmp_path / "kept" / "new" / "deeper" / "record.json", fails)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not any((tmp_path / "kept").iterdir())
    (tmp_path / "kept" / "new").mkdir()
    (tmp_path / "kept" / "new" / "theirs.json").write_text("{}")  # another writer's file: its folder stays
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else StorageError):
        write_atomic(tmp_path / "kept" / "new" / "deeper" / "record.json", fails)
    assert [p.name for p in (tmp_path / "kept" / "new").iterdir()] == ["theirs.json"]


def test_folders_a_failed_mkdir_made_part_of_are_taken_back(tmp_path):
    """A review: mkdir(parents=True) failing part-way made `new` but not `new/deeper`, and the clean-up stopped at
    the missing one, leaving `new`."""
    from bench.store import remove_if_empty

    (tmp_path / "new").mkdir()
    remove_if_empty([tmp_path / "new" / "deeper", tmp_path / "new"])
    assert list(tmp_path.iterdir()) == []


# row 11: a checkpoint onto a full disk said `enforce fail at inline_container.cc … unexpected pos`, exit 1


def test_a_full_disk_is_named_and_the_previous_file_is_kept(tmp_path):
    with tmpfs(tmp_path / "small", "2m") as disk:
        target = disk / "checkpoint.pth"
        torch.save(torch.zeros(10), target)
        before = target.read_bytes()
        with pytest.raises(StorageError) as caught:
            write_atomic(target, lambda tmp: torch.save(torch.zeros(1_000_000), tmp))  # 4 MB onto 2 MB
        message = str(caught.value)
        assert "disk is full" in message and str(target) in message and "unchanged" in message
        assert "inline_container" not in message.split("(")[0]
        assert target.read_bytes() == before and [p.name for p in disk.iterdir()] == ["checkpoint.pth"]
        assert isinstance(caught.value, OSError)  # callers that handle OSError still do


def test_a_read_only_disk_is_named_as_such(tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as disk:
        write_text_atomic(disk / "result.json", "{}")
        remount_read_only(disk)
        with pytest.raises(StorageError, match="read-only") as caught:
            write_text_atomic(disk / "result.json", '{"new": 1}')
        assert str(disk / "result.json") in str(caught.value) and "unchanged" in str(caught.value)
        with pytest.raises(StorageError, match="read-only"):
            append_line(disk / "log.jsonl", "{}")
        with pytest.raises(UsageError, match=f"--output {disk / 'run'}: {disk} is on a read-only disk"):
            check_folder(disk / "run", "--output")  # a command's folders are checked before any work


def test_a_folder_where_a_file_is_written_is_named(tmp_path):
    for name in ("result.json", "log.jsonl", ".lock"):
        (tmp_path / name).mkdir()
    with pytest.raises(StorageError, match=f"cannot write {tmp_path / 'result.json'}: it is a folder"):
        write_text_atomic(tmp_path / "result.json", "{}")
    with pytest.raises(StorageError, match="log.jsonl: it is a folder"):
        append_line(tmp_path / "log.jsonl", "{}")
    with pytest.raises(StorageError, match=r"\.lock: it is a folder"):
        with hold_folder(tmp_path):
            pass


def test_training_onto_a_full_disk_exits_2_saying_so_and_what_was_kept(tmp_path, capsys):
    """The debug checkpoint is 1.3 MB: the first fits a 2 MB disk, its replacement (written beside it) does not."""
    with tmpfs(tmp_path / "small", "2m") as disk:
        code = cli.main(["train", "--experiment", "debug", "--output", str(disk / "run"),
                         "--results-dir", str(tmp_path / "records")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "disk is full" in err and f"the last checkpoint {disk / 'run' / 'checkpoint.pth'} is intact" in err
        assert "Traceback" not in err
        kept = torch.load(disk / "run" / "checkpoint.pth", weights_only=True)
        assert (kept["epoch"], kept["step"]) == (1, 0)


def test_a_run_finished_but_not_recorded_writes_its_record_on_resume(tmp_path, monkeypatch):
    """A full disk at result.json: training is done and checkpointed; --resume (after freeing space) records it."""
    cfg = resolve_config("debug", None, ["epochs=1"])
    real = RunFiles.finish

    def disk_full(self, *args, **kwargs):
        raise StorageError(f"cannot write {self.result}: the disk is full")

    monkeypatch.setattr(RunFiles, "finish", disk_full)
    with pytest.raises(StorageError):
        train(cfg, tmp_path / "run", experiment="debug", resume=False, log=lambda _: None)
    monkeypatch.setattr(RunFiles, "finish", real)
    said = []
    record = train(cfg, tmp_path / "run", experiment="debug", resume=True, log=said.append)
    assert record is not None and (tmp_path / "run" / "result.json").is_file()
    assert any("record was not written" in line for line in said), said


# row 4 (resume half): --resume was refused forever for a config holding nan, as nan != nan


def test_resume_compares_a_nan_in_the_config_as_equal_to_itself(tmp_path):
    cfg = dataclasses.replace(resolve_config("debug", None, []), hflip=float("nan"))
    files = RunFiles(tmp_path, main=True)
    state = CheckpointState.fresh(cfg, "debug")
    torch.save({"model": {}, "optimizer": {}, "lr_scheduler": {}, "scaler": None, "model_ema": None, "epoch": 1,
                "step": 0, "experiment": "debug", "config": state.config, "history": [], "train_img_per_s": []},
               files.checkpoint)
    assert files.load(True, cfg, "debug").epoch == 1
    other = dataclasses.replace(cfg, hflip=0.5)
    with pytest.raises(Exception, match=r"hflip \(saved nan, now 0.5\)"):
        files.load(True, other, "debug")


# row 13: a corrupt teacher-logit memo gave a traceback not naming it; a read-only teacher folder failed after epoch 1


def test_a_corrupt_teacher_memo_is_named_and_rebuilt(tmp_path):
    path = tmp_path / "memo.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    said = []
    memo = MemoTeacher(torch.nn.Identity(), path, log=said.append)
    assert memo.memo == {} and len(said) == 1 and str(path) in said[0] and "rebuilt" in said[0]
    memo(torch.ones(2, 3))
    memo.save()
    assert MemoTeacher(torch.nn.Identity(), path, log=said.append).memo.keys() == memo.memo.keys()
    torch.save(["not", "a", "memo"], path)
    assert MemoTeacher(torch.nn.Identity(), path, log=said.append).memo == {} and "rebuilt" in said[-1]


def test_a_read_only_teacher_folder_puts_the_memo_in_the_run_folder_before_training(tmp_path):
    with tmpfs(tmp_path / "teachers", "1m") as folder:
        teacher = folder / "teacher.pth"
        teacher.write_bytes(b"weights")
        shared, _ = memo_path(str(teacher), "ab" * 32, "none", 0, 1, run_folder=tmp_path / "run")
        assert shared.parent == folder / "teacher-logits"
        remount_read_only(folder)
        path, note = memo_path(str(teacher), "ab" * 32, "none", 0, 1, run_folder=tmp_path / "run")
        assert path.parent == tmp_path / "run" / "teacher-logits" and path.name == shared.name
        assert str(folder) in note and "read-only" in note and str(path.parent) in note


def test_an_interrupted_suite_row_says_to_rerun_the_suite_not_to_pass_resume(tmp_path, monkeypatch):
    """`reproduce suite` has no --resume (it resumes by itself); its rows' interrupt message named it."""
    from reproduce import suite

    files = RunFiles(tmp_path / "run", main=True)
    files.checkpoint.write_bytes(b"")
    assert "--resume continues from it" in files.kept()
    seen = {}

    def fake_train(cfg, output, **kwargs):
        seen.update(kwargs)
        return None
    monkeypatch.setattr(suite, "train", fake_train)
    suite._run_one("debug", tmp_path / "row", [], None, seed=0, results_dir=tmp_path / "r", log=lambda m: None)
    hinted = RunFiles(tmp_path / "run", main=True, resume_hint=seen["resume_hint"])
    assert "the same `reproduce suite` command continues from it" in hinted.kept() and "--resume" not in hinted.kept()


def test_a_run_stopped_mid_epoch_resumes_only_on_as_many_processes_as_wrote_it():
    """A hostile pass resumed a 2-process checkpoint, stopped mid-epoch, in 1 process: silently, with another data
    position and other random draws."""
    from reproduce.checkpoints import CheckpointState
    from reproduce.config import ConfigError

    resumed = [{"path": "run/checkpoint.pth", "sha256": "ab", "epoch": 16, "step": 7, "world_size": 2}]
    mid_epoch = CheckpointState("debug", {}, epoch=16, step=7, resumed_from=resumed, world_size=2)
    with pytest.raises(ConfigError, match="written by 2 process.*middle of epoch 17; resume it on 2"):
        mid_epoch.check_world(1, log=lambda _: None)
    said = []
    CheckpointState("debug", {}, epoch=17, step=0, resumed_from=resumed, world_size=2).check_world(1, said.append)
    assert "at an epoch boundary" in said[0]
    mid_epoch.check_world(2, log=said.append)  # the same world: nothing to say
    assert len(said) == 1


def test_a_run_stopped_in_its_first_log_line_may_start_afresh(tmp_path):
    """A review: a log.jsonl whose only line was torn by the kill was refused as not ours."""
    files = RunFiles(tmp_path, main=True)
    files.log_file.write_text('{"type": "step", "epoch": 0, "st')
    assert files.load(resume=False, cfg=TrainConfig(), experiment="debug") is None
    files.log_file.write_text("my notes\n")
    with pytest.raises(ConfigError, match="not a log of `reproduce train`"):
        files.load(resume=False, cfg=TrainConfig(), experiment="debug")
