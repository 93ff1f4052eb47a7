"""Issue #20: the paper rows default to the released code's schedule timing and class-token initialisation, and
the table of every known difference is generated from the config."""

from pathlib import Path

import pytest
import torch
from timm.scheduler import create_scheduler_v2

from reproduce import cli, models
from reproduce.cli import resolve_config
from reproduce.config import TrainConfig, override
from reproduce.released import RELEASED_CODE, render_released
from reproduce.schedule import epoch_lr

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
        base = resolve_config(row.experiment, None, []) if row.experiment else TrainConfig()
        override(base, [f"{k}={v}" for k, v in row.settings().items()])
    assert cli.main(["ls", "--released"]) == 0
    out = capsys.readouterr().out
    assert out == render_released() == (ROOT / "docs" / "released-code.md").read_text()
    assert "| learning-rate schedule timing |" in out and "`sched_timing=official` | yes |" in out
    assert "`repeated_aug=3` | no |" in out  # a difference that remains is listed as one
    # a hostile pass: the fine-tuning recipe differs from the released command, and the page did not say so
    assert "`epochs=25`, `warmup_epochs=0` (deit_b_384) | no | `--set epochs=30` `--set warmup_epochs=5`" in out


def test_the_lr_figure_draws_the_schedule_training_sets(tmp_path, capsys):
    from reproduce.schedule import lr_schedule

    cfg = resolve_config("deit_b", None, ["epochs=10", "warmup_epochs=3"])
    assert [lr for _, lr in lr_schedule(cfg)][:3] == pytest.approx([1e-6, 1e-6, 1e-3 / 3 + 1e-6 * 2 / 3], rel=1e-6)
    assert cli.main(["ls", "--show", "debug", "--lr-figure", str(tmp_path / "lr.png")]) == 0
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["ls", "--lr-figure", str(tmp_path / "x.png")]) == 2
    assert cli.main(["ls", "--show", "debug", "--lr-figure", str(tmp_path / "x.txt")]) == 2
    assert "give a .png or .svg" in capsys.readouterr().err and not (tmp_path / "x.txt").exists()


def test_bench_tables_draws_the_schedule_from_the_config_record(tmp_path):
    """`reproduce ls --show E --record DIR` stores the schedule; `bench tables` draws it from that record alone."""
    from bench import figures
    from bench.record import load_records
    from reproduce.schedule import lr_schedule

    assert cli.main(["ls", "--show", "deit_b", "--record", str(tmp_path / "runs")]) == 0
    (record,) = load_records(tmp_path / "runs")
    expected = lr_schedule(resolve_config("deit_b", None, []), steps_per_epoch=20)
    assert record.settings.lr_schedule == [list(point) for point in expected]
    assert record.settings.lr_schedule[:2] == [[0.0, 1e-6], [1.0, 1e-6]]  # sched_timing=official: two warm-up lrs
    fig = figures.lr_schedule_figure("deit_b", record.settings.config, record.settings.lr_schedule)
    assert list(fig.axes[0].lines[0].get_ydata()) == [lr for _, lr in expected]
    figures.plt.close(fig)
    paths = figures.lr_schedules([record], tmp_path / "figures")
    assert [p.name for p in paths] == ["lr_schedule_deit_b.png", "lr_schedule_deit_b.svg"]


def test_a_config_record_names_paths_inside_the_repository_from_its_root(tmp_path, monkeypatch):
    """deit_b_384 fine-tunes `runs/deit_b/checkpoint.pth`; the config resolves it against the current folder, and the
    record keeps it from the repository's root, so a committed config record names no one's checkout."""
    from bench.record import load_records

    monkeypatch.chdir(ROOT)
    assert resolve_config("deit_b_384", None, []).finetune == str(ROOT / "runs/deit_b/checkpoint.pth")
    assert cli.main(["ls", "--show", "deit_b_384", "--record", str(tmp_path / "runs")]) == 0
    (record,) = load_records(tmp_path / "runs")
    assert record.settings.config["finetune"] == "runs/deit_b/checkpoint.pth"


def test_the_transfer_rows_carry_the_authors_recipe():
    from bench import paper

    for model in paper.TABLE7:
        for target in paper.TRANSFER_DATASETS:
            cfg = resolve_config(f"{model}_transfer_{target}", None, [])
            assert (cfg.opt, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == ("sgd", 0.01, 1e-4, 768, 1000)
            assert cfg.reprob == 0.0 and cfg.drop_path == 0.0 and cfg.finetune
            assert cfg.distill_token == ("dist" in model)


def test_a_torchvision_dataset_gives_items_subsets_and_a_clear_error_when_absent(tmp_path, monkeypatch):
    """Flowers-102 as torchvision loads it: train and val splits together for training, test for evaluation."""
    import torchvision
    from PIL import Image

    from reproduce.config import TrainConfig
    from reproduce.data import DataError, datasets

    class FakeFlowers102:
        def __init__(self, root, download, split):
            n = {"train": 4, "val": 2, "test": 3}[split]
            self._labels = [i % 2 for i in range(n)]
            self.split = split

        def __len__(self):
            return len(self._labels)

        def __getitem__(self, i):
            return Image.new("RGB", (40, 30), (i, 0, 0)), self._labels[i]

    cfg = TrainConfig(dataset="flowers102", data=str(tmp_path), num_classes=2)
    with pytest.raises(DataError, match="Flowers102 not found"):
        datasets(cfg, lambda img: img, lambda img: img)
    monkeypatch.setattr(torchvision.datasets, "Flowers102", FakeFlowers102)
    train, val = datasets(cfg, lambda img: img.size, lambda img: img.size)
    assert len(train) == 6 and len(val) == 3
    assert [label for _, label, _ in train.samples] == [0, 1, 0, 1, 0, 1]
    assert train[4] == ((40, 30), 0, 4)  # the val split's first image
    subset = datasets(TrainConfig(dataset="flowers102", data=str(tmp_path), num_classes=2, val_subset=2),
                      lambda img: img, lambda img: img)[1]
    assert sorted(label for _, label, _ in subset.samples) == [0, 1]


def test_step_speed_times_ours_and_the_official_style_loop_and_writes_a_record(tmp_path, capsys):
    from bench.record import load_records

    code = cli.main(["step-speed", "--experiment", "debug_hard", "--device", "cpu", "--batch-size", "8", "--steps", "2",
                     "--warmup", "1", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    (record,) = load_records(tmp_path)
    assert code == 0 and record.kind == "stepspeed" and "official-style" in out
    assert record.metrics.ratio == pytest.approx(record.metrics.ours_img_per_s / record.metrics.official_img_per_s)
    assert record.settings.amp_official == "none"  # the released loop's fp16 needs CUDA
    assert record.metrics.timed_other_cores >= 0 and isinstance(record.metrics.timed_busy, bool)
    m = record.metrics  # each MFU with the peak it divides by, so a reader can recompute it (a hostile pass could not)
    for side in ("ours", "official"):
        if m[f"{side}_mfu"] is not None:
            assert m[f"{side}_mfu"] == pytest.approx(m.gflop_per_image * m[f"{side}_img_per_s"] / 1e3
                                                     / m[f"{side}_peak_tflops_measured"])
    assert cli.main(["step-speed", "--experiment", "debug", "--device", "cpu", "--results-dir", str(tmp_path)]) == 2
    assert "give an experiment with a teacher" in capsys.readouterr().err


def test_step_speed_on_a_busy_machine_says_so_and_its_record_keeps_it(tmp_path, capsys, monkeypatch):
    """A hostile pass: one busy loop made the ratio 0.22 where the quiet machine gave 1.04, and neither the output nor
    the record said the machine was busy."""
    from bench.record import load_records
    from reproduce import stepspeed

    monkeypatch.setattr(stepspeed, "is_contended", lambda *load, cuda: True)
    assert cli.main(["step-speed", "--experiment", "debug_hard", "--device", "cpu", "--batch-size", "4", "--steps",
                     "1", "--warmup", "1", "--results-dir", str(tmp_path)]) == 0
    assert "cores busy while the loops were timed" in capsys.readouterr().err
    (record,) = load_records(tmp_path)
    assert record.metrics.timed_busy is True


def test_every_config_field_newer_than_the_committed_records_says_what_they_did():
    """bench.schema.CONFIG_BEFORE_FIELD fills the fields older training records lack, so tables pool their seeds
    with newer runs of the same configuration; a field added without an entry would split them silently."""
    import dataclasses
    import json

    from bench.schema import CONFIG_BEFORE_FIELD

    oldest = set(dataclasses.asdict(TrainConfig()))
    for path in ROOT.glob("results/runs/**/*.json"):
        data = json.loads(path.read_text())
        if data.get("kind") == "train":
            oldest &= set(data["settings"]["config"])
    assert set(dataclasses.asdict(TrainConfig())) - oldest <= set(CONFIG_BEFORE_FIELD)
