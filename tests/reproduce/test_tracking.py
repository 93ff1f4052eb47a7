"""`reproduce train --tensorboard` (reproduce/tracking.py): the debug run's scalars read back with TensorBoard's own
reader, as the TensorBoard UI shows them; a resumed run appends without drawing a step twice."""

import json
import sys
from pathlib import Path

import pytest

from reproduce import cli, tracking
from reproduce import train as train_mod
from reproduce.checkpoints import CheckpointState
from reproduce.cli import resolve_config
from reproduce.train import Preempted, train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason='tensorboard is not installed: pip install -e ".[tb]"')


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) points, as TensorBoard reads the folder's event files."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def log_lines(folder: Path, kind: str) -> list[dict]:
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == kind]


def test_a_two_epoch_debug_run_writes_its_losses_lr_accuracy_and_speed_as_tensorboard_scalars(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--experiment", "debug", "--output", str(run), "--results-dir", str(tmp_path / "r"),
                     "--tensorboard"]) == 0
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    found = scalars(run)
    steps, epochs = log_lines(run, "step"), log_lines(run, "epoch")
    assert len(steps) == 16 and len(epochs) == 2  # debug: 8 steps per epoch, log_every=1
    assert found["train/loss"] == [(s["global_step"] + 1, pytest.approx(s["loss"])) for s in steps]
    assert found["train/lr"] == [(s["global_step"] + 1, pytest.approx(s["lr"])) for s in steps]
    assert [step for step, _ in found["val/top1"]] == [8, 16]  # each epoch at its last step
    assert [v for _, v in found["val/top1"]] == pytest.approx([e["val_top1"] for e in epochs])
    assert [v for _, v in found["val/top5"]] == pytest.approx([e["val_top5"] for e in epochs])
    assert [v for _, v in found["epoch/train_img_per_s"]] == pytest.approx([e["train_img_per_s"] for e in epochs])
    assert [v for _, v in found["epoch/epoch"]] == [1, 2]
    assert {"train/loss_base", "epoch/loss", "epoch/loss_base", "epoch/lr", "val/loss"} <= set(found)


def test_a_resumed_run_appends_and_each_step_is_drawn_once_with_every_head(tmp_path, monkeypatch):
    """A run killed after step 11 whose last checkpoint is epoch 1's (as SIGKILL leaves it): steps 9-11 were logged
    and are trained again on --resume; TensorBoard's reader keeps the second session's."""
    cfg = resolve_config("debug_hard", None, ["teacher=labels"])
    calls = {"n": 0}

    def stop_after_11_steps(self, procs):
        calls["n"] += 1
        return calls["n"] == 11

    save = CheckpointState.save_to

    def only_at_epoch_ends(state, *args, **kwargs):  # the mid-epoch checkpoint of the stop is lost, as in a kill
        if state.step == 0:
            save(state, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_mod._PreemptionFlag, "requested", stop_after_11_steps)
        patch.setattr(CheckpointState, "save_to", only_at_epoch_ends)
        with pytest.raises(Preempted):
            train(cfg, tmp_path, experiment="debug_hard", resume=False, log=lambda _: None, tensorboard=True)
    assert [step for step, _ in scalars(tmp_path)["train/loss"]] == list(range(1, 12))
    train(cfg, tmp_path, experiment="debug_hard", resume=True, log=lambda _: None, tensorboard=True)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    found = scalars(tmp_path)
    steps = log_lines(tmp_path, "step")  # trimmed at the resume, then appended: each step once
    assert found["train/loss"] == [(s["global_step"] + 1, pytest.approx(s["loss"])) for s in steps]
    assert [step for step, _ in found["train/loss"]] == list(range(1, 17))
    for head in ("top1", "top1_cls", "top1_dist", "top1_fused_logits", "top5"):
        assert [step for step, _ in found[f"val/{head}"]] == [8, 16], head
    assert [step for step, _ in found["epoch/teacher_agree"]] == [8, 16]


@pytest.mark.parametrize("on, main", [(False, True), (True, False)], ids=["without the flag", "on rank 1"])
def test_nothing_is_written_without_the_flag_or_on_a_rank_other_than_0(tmp_path, on, main):
    with tracking.tensorboard(tmp_path, on=on, main=main) as sinks:
        assert sinks == []
    assert not list(tmp_path.iterdir())


def test_the_flag_without_tensorboard_installed_is_a_usage_error_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if it were not installed
    code = cli.main(["train", "--experiment", "debug", "--output", str(tmp_path / "run"), "--tensorboard"])
    assert code == 2
    assert 'needs the tensorboard package' in capsys.readouterr().err and 'pip install -e ".[tb]"' in tracking.INSTALL
    assert not (tmp_path / "run").exists()
