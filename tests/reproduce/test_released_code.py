"""Issue #20: the paper rows default to the released code's schedule timing and class-token initialisation, and
the table of every known difference is generated from the config."""

from pathlib import Path

import pytest
import torch
from timm.scheduler import create_scheduler_v2

from reproduce import cli, models
from reproduce.cli import resolve_config
from reproduce.config import RELEASED_CODE, TrainConfig, override, render_released
from reproduce.train import epoch_lr

ROOT = Path(__file__).resolve().parents[2]


def _scheduler(epochs=10, warmup=3):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=warmup,
                                       warmup_lr=1e-6, min_lr=1e-5, step_on_epochs=True)
    return optimizer, scheduler


def _lrs(timing: str, epochs=10) -> list[float]:
    optimizer, scheduler = _scheduler(epochs)
    out = []
    for epoch in range(epochs):
        epoch_lr(scheduler, epoch, timing)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_the_official_timing_is_the_released_loop_epoch_for_epoch():
    """main.py: train epoch e with whatever lr is set, then `lr_scheduler.step(epoch)`."""
    optimizer, scheduler = _scheduler()
    released = []
    for epoch in range(10):
        released.append(optimizer.param_groups[0]["lr"])  # the epoch trains at this
        scheduler.step(epoch)
    assert _lrs("official") == released
    assert released[0] == released[1] == 1e-6 and released[2] == pytest.approx(_lrs("start")[1])


def test_the_official_timing_is_stateless_so_a_resumed_run_sets_the_same_lr():
    optimizer, scheduler = _scheduler()
    epoch_lr(scheduler, 7, "official")  # a fresh scheduler, as after --resume at epoch 7
    assert optimizer.param_groups[0]["lr"] == pytest.approx(_lrs("official")[7])


def test_the_start_timing_trains_epoch_e_at_lr_e():
    optimizer, scheduler = _scheduler()
    expected = []
    for epoch in range(10):
        scheduler.step(epoch)
        expected.append(optimizer.param_groups[0]["lr"])
    assert _lrs("start") == expected


@pytest.mark.parametrize("init,std", [("official", 0.02), ("timm", 1e-6)])
def test_the_class_token_is_drawn_as_the_setting_says_and_nothing_else_moves(init, std):
    models.seed_everything(0)
    model, _, _ = models.build_student(resolve_config("debug_hard", None, ["teacher_checkpoint=x",
                                                                          f"cls_token_init={init}"]))
    models.seed_everything(0)
    other, _, _ = models.build_student(resolve_config("debug_hard", None, ["teacher_checkpoint=x"]))
    assert model.cls_token.std().item() == pytest.approx(std, rel=0.5) and model.cls_token.abs().max() < 5 * std
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert name == "cls_token" or torch.equal(a, b), name


def test_the_paper_rows_default_to_the_released_behaviour_and_the_small_scales_say_what_they_keep():
    assert TrainConfig().sched_timing == "official" and TrainConfig().cls_token_init == "official"
    assert resolve_config("deit_ti_hard", None, []).cls_token_init == "official"
    for name in ("mini_hard", "cifar_hard", "debug"):
        cfg = resolve_config(name, None, [])
        assert (cfg.sched_timing, cfg.cls_token_init) == ("start", "timm")


def test_every_released_setting_is_a_valid_override_and_the_doc_is_generated(capsys):
    for row in RELEASED_CODE:
        override(TrainConfig(), [f"{k}={v}" for k, v in row.settings().items()])
    assert cli.main(["ls", "--released"]) == 0
    out = capsys.readouterr().out
    assert out == render_released() == (ROOT / "docs" / "released-code.md").read_text()
    assert "| learning-rate schedule timing |" in out and "`sched_timing=official` | yes |" in out
    assert "`repeated_aug=3` | no |" in out  # a difference that remains is listed as one
