"""How busy the machine was while a run trained: its own data-loading workers and local ranks are its work, any
other process makes `train_img_per_s` a busy machine's figure (bench's rule, bench/load.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.load import family_cpu_s
from bench.processes import Processes
from bench.record import load_records
from reproduce import cli, meter
from reproduce.meter import EpochMeter

BURN = "import time\nwhile time.process_time() < {s}: pass"


def _burner_outside_this_process_tree():
    """A CPU-bound process that is not ours: started by a child that exits at once, so init adopts it (its output
    goes nowhere, or it would hold our pipe open)."""
    start = ("import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', 'while True: pass'], "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    return int(subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, check=True).stdout)


def test_a_process_familys_cpu_time_counts_a_child_while_it_runs_and_after_it_has_ended():
    before, own = family_cpu_s(os.getpid()), time.process_time()
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6)])
    deadline = time.monotonic() + 30
    while family_cpu_s(os.getpid()) - before < 0.2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None and family_cpu_s(os.getpid()) - before >= 0.2  # live: its own counters
    child.wait()  # reaped: the child's time is now in our cutime, not lost with it
    assert family_cpu_s(os.getpid()) - before >= 0.6 + (time.process_time() - own) - 0.05
    assert family_cpu_s(1) >= family_cpu_s(os.getpid())  # every process descends from init


def test_under_torchrun_the_agents_family_is_the_runs_and_another_launchers_ranks_are_not_judged(monkeypatch):
    roots = []
    monkeypatch.setattr(meter, "family_cpu_s", lambda root: roots.append(root) or 1.0)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert meter._load_now().own_cpu_s == 1.0 and roots == [os.getpid()]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert meter._load_now() is None and roots == [os.getpid()]  # its sibling ranks would read as others
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert meter._load_now() is not None and roots == [os.getpid(), os.getppid()]


@pytest.mark.parametrize("device, busy", [("cpu", True), ("cuda", False)])
def test_an_epoch_beside_a_cpu_bound_process_is_busy_on_a_cpu_and_not_on_a_gpu(device, busy):
    burner = _burner_outside_this_process_tree()
    try:
        time.sleep(0.2)
        epoch = EpochMeter()
        time.sleep(0.6)
        line = epoch.means(Processes(0, 1, device))
    finally:
        os.kill(burner, signal.SIGKILL)
    assert line["train_other_cores"] > 0.5 and line["train_busy"] is busy


def test_an_epochs_own_cpu_bound_children_count_as_its_own_work_not_as_other_processes():
    """Before, a run's own process alone was its work: two DataLoader workers made a quiet machine's training read
    as 1-2 cores busy. (Load-independent: what counts as ours, not what the machine did meanwhile.)"""
    start, own = meter._load_now(), time.process_time()
    subprocess.run([sys.executable, "-c", BURN.format(s=1.0)], check=True)  # as a DataLoader worker's work
    end = meter._load_now()
    assert end.own_cpu_s - start.own_cpu_s >= 1.0 + (time.process_time() - own) - 0.05


def test_a_run_trained_beside_a_busy_process_records_and_says_it(tmp_path, capsys):
    (record,) = _busy_record(tmp_path)
    assert record.metrics["timed_busy"] is True and record.metrics["timed_other_cores"] > 0.5
    assert "busy machine's figure" in capsys.readouterr().err


def test_a_suite_row_trained_on_a_busy_machine_says_so(tmp_path, monkeypatch):
    from reproduce import suite

    (record,) = _busy_record(tmp_path)
    monkeypatch.setattr(suite, "train", lambda *args, **kwargs: record)
    said = []
    suite._train_row("debug", tmp_path / "row", None, 0, tmp_path / "records", said.append)
    assert any("[debug seed 0] warning: other processes kept up to" in line for line in said), said


def _busy_record(tmp_path):
    burner = _burner_outside_this_process_tree()
    try:
        assert cli.main(["train", "--experiment", "debug", "--set", "epochs=1", "--output", str(tmp_path / "run"),
                         "--results-dir", str(tmp_path / "busy")]) == 0
    finally:
        os.kill(burner, signal.SIGKILL)
    return load_records(tmp_path / "busy")
