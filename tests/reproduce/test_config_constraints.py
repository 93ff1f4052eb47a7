"""Issue #32: every TrainConfig field declares what it accepts once (`config.ACCEPTS`), and `check()` enforces it on
every resolved config. A new field without an entry, or a bound that lets nan, inf or a negative through, fails here."""

import dataclasses
import re
import typing

import pytest

from reproduce import cli, experiments
from reproduce.config import (
    ACCEPTS,
    INTERPOLATIONS,
    SCHEDULERS,
    ConfigError,
    Number,
    TrainConfig,
    check,
    check_ready,
    override,
)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
NUMBERS = {name: rule for name, rule in ACCEPTS.items() if isinstance(rule, Number)}


def debug() -> TrainConfig:
    return experiments.get("debug").build()


def test_every_config_field_declares_what_it_accepts():
    assert sorted(ACCEPTS) == sorted(FIELDS)


def test_every_numeric_field_has_a_numeric_rule():
    hints = typing.get_type_hints(TrainConfig)
    numeric = {name for name, hint in hints.items()
               if typing.get_origin(hint) is not tuple and {int, float} & {hint, *typing.get_args(hint)}}
    assert numeric == set(NUMBERS)
    for name, rule in NUMBERS.items():
        assert rule.kind in (hints[name], *typing.get_args(hints[name])), name
        assert rule.optional == (type(None) in typing.get_args(hints[name])), name


def test_the_words_for_evaluation_protocols_name_every_protocol_bench_has():
    from bench.data import EVAL_PROTOCOLS

    assert all(protocol in ACCEPTS["eval_protocol"].words for protocol in EVAL_PROTOCOLS)


def test_every_default_is_accepted():
    check(TrainConfig())


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_every_registered_experiment_passes_the_checks(name):
    check(experiments.get(name).build())


def _refused(name: str) -> list[str]:
    """Values that `--set` parses for the field but that its rule must refuse: nan, ±inf, a negative, and just past
    each bound."""
    rule = NUMBERS[name]
    values = ["nan", "inf", "-inf", "-1"] if rule.kind is float else ["-1", str(-2**70)]
    step = 1 if rule.kind is int else 1e-9
    values.append(str(rule.low) if rule.open_low else str(rule.low - step))
    if rule.high is not None:
        values.append(str(rule.high) if rule.open_high else str(rule.high + step))
    return values


@pytest.mark.parametrize("name,text", [(n, v) for n in sorted(NUMBERS) for v in _refused(n)])
def test_a_numeric_field_refuses_nan_inf_negatives_and_values_past_its_bounds(name, text):
    with pytest.raises(ConfigError, match=f"^{name}=.* is not accepted: must be {re.escape(NUMBERS[name].words)}"):
        override(debug(), [f"{name}={text}"])


@pytest.mark.parametrize("name", sorted(NUMBERS))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "1", True])
def test_a_config_built_in_python_is_checked_the_same(name, value):
    """Experiments build configs in Python, where no parser stands between a typo and the field."""
    with pytest.raises(ConfigError, match=f"^{name}=.* is not accepted: must be"):
        check(dataclasses.replace(debug(), **{name: value}))


@pytest.mark.parametrize("name", [n for n in sorted(NUMBERS) if NUMBERS[n].kind is int])
def test_an_int_field_refuses_a_float(name):
    with pytest.raises(ConfigError, match=f"^{name}=2.5 is not accepted: must be an int"):
        check(dataclasses.replace(debug(), **{name: 2.5}))


@pytest.mark.parametrize("name", [n for n in FIELDS if n not in NUMBERS])
def test_a_non_numeric_field_refuses_a_value_of_another_type(name):
    with pytest.raises(ConfigError, match=f"^{name}=.* is not accepted"):
        check(dataclasses.replace(debug(), **{name: 12345}))


@pytest.mark.parametrize("name,text,message", [
    ("variant", "deit_bb", "Did you mean 'deit_b'"),
    ("teacher", "regnety_16", "Did you mean"),
    ("dataset", "imagenet", "must be one of folder, cifar10"),
    ("sched", "plateau", "must be one of cosine, tanh, step, constant, multistep, poly"),
    ("sched", "none", "must be one of cosine"),
    ("opt", "nope", "must be a timm optimizer name"),
    ("opt", "adamww", "did you mean adamw"),
    ("opt", "my_adamw", "must be a timm optimizer name"),  # timm itself would read it as adamw
    ("opt", "adahessian", "create_graph=True"),
    ("opt", "bnbadamw", "cannot run here"),
    ("train_interpolation", "cubic", "must be one of bicubic"),
    ("auto_augment", "bogus", "timm cannot build it"),
    ("auto_augment", "rand-m9-foo", "section 'foo' has no number"),
    ("auto_augment", "rand-m9.5", "timm cannot build it"),
    ("eval_protocol", "fast", "one of bench's evaluation protocols"),
    ("no_decay", "pos embed", "parameter names separated by commas"),
    ("train_crop_scale", "0.5", "two numbers low,high"),
    ("train_crop_scale", "0.5,0.9,1.0", "two numbers low,high"),
    ("train_crop_scale", "0.9,0.5", "0 < low <= high <= 1"),
    ("train_crop_scale", "nan,1", "0 < low <= high <= 1"),
    ("train_crop_scale", "0,1", "0 < low <= high <= 1"),
    ("attn_blocks", "1,1", "block 1 is given twice"),
    ("attn_blocks", "-1,0,-1,0", "block -1, 0 is given twice"),
    ("no_decay", "pos_embed,pos_embed", "pos_embed is given twice"),
    ("device", "gpu", "auto, cpu, cuda or cuda:N"),
    ("img_size", "33", "a multiple of debug's patch size (4 px)"),
    ("num_classes", "1", "one class would score 100 % with nothing learned"),
])
def test_names_and_tuples_outside_their_rule_are_refused_naming_the_field(name, text, message):
    with pytest.raises(ConfigError, match=f"^{name}=") as info:
        override(debug(), [f"{name}={text}"])
    assert message in str(info.value)


@pytest.mark.parametrize("name,text", [
    ("opt", "sgd"), ("opt", "lookahead_adamw"), ("opt", "lamb"), ("opt", "AdamW"),
    ("auto_augment", ""), ("auto_augment", "original-mstd0.5"), ("auto_augment", "augmix-m5"),
    ("auto_augment", "rand-m7-n3-mstd0.5-inc1"), ("no_decay", ""),
    ("no_decay", "pos_embed, cls_token, blocks.0.norm1.weight"), ("img_size", "64"), ("img_size", "none"),
    ("layer_decay", "0.65"), ("clip_grad", "none"), ("ema_decay", "0.99996"), ("seed", "4294967295"),
])
def test_values_inside_their_rule_are_accepted(name, text):
    override(debug(), [f"{name}={text}"])


def test_teacher_settings_are_for_runs_that_distil():
    """A hostile pass: --set teacher_checkpoint=/etc/passwd on a run without distillation exited 0, and the record
    kept the path."""
    hard = override(debug(), ["distillation=hard"])
    assert override(hard, ["teacher=labels"]).teacher == "labels"
    for assignment in ("teacher_checkpoint=/etc/passwd", "teacher=labels", "distill_alpha=0.9", "kl_norm=batchmean"):
        with pytest.raises(ConfigError, match=r"would go unread \(distillation=none trains without a teacher\)"):
            override(debug(), [assignment])
    with pytest.raises(ConfigError, match="teacher=labels distils from the labels, which have no weights"):
        override(hard, ["teacher=labels", "teacher_checkpoint=t.pth"])


@pytest.mark.parametrize("assignments, why", [
    (["attn_blocks=0"], "attn_distill=false"),
    (["attn_per_head=true"], "attn_distill=false"),
    (["mixup=0", "cutmix=0", "mixup_prob=0.3"], "mixup=0 and cutmix=0 mix nothing"),
    (["cutmix=0", "mixup_switch_prob=0.3"], "only one of mixup and cutmix is on"),
    (["color_jitter=0.4"], "turns timm's color jitter off"),
    (["momentum=0.5"], "opt=adamw has no momentum"),
    (["opt=sgd", "opt_eps=0.1"], "opt=sgd has no epsilon"),
    (["sched=constant", "min_lr=0"], "sched=constant does not decay to a minimum"),
    (["subset_seed=5"], "there is none"),
    (["train_subset=100", "subset_seed=5"], "dataset=synthetic generates its images"),
    (["val_subset=10", "subset_seed=5"], "there is none"),  # the validation subset has a seed of its own
])
def test_a_setting_the_run_never_reads_is_refused_rather_than_recorded(assignments, why):
    """A hostile pass: each of these trained, exit 0, and the record kept a value nothing read."""
    with pytest.raises(ConfigError, match="would go unread") as refused:
        override(debug(), assignments)
    assert why in str(refused.value)


@pytest.mark.parametrize("assignments", [["opt=sgd", "momentum=0.8"], ["auto_augment=", "color_jitter=0.4"],
                                         ["dataset=cifar10", "train_subset=100", "subset_seed=5"],
                                         ["opt=lookahead_sgd", "momentum=0.8"], ["sched=constant", "lr=5e-6"]])
def test_the_same_setting_is_accepted_where_the_run_reads_it(assignments):
    override(debug(), assignments)


def test_the_label_teacher_on_a_row_that_names_a_checkpoint_is_taken_once_the_checkpoint_is_cleared():
    """REPORT's label-teacher runs: `--set teacher=labels --set teacher_checkpoint=` on a row that names its teacher's
    checkpoint (a review: the unread-field rule refused the cleared checkpoint as well)."""
    hard = dataclasses.replace(override(debug(), ["distillation=hard"]), teacher_checkpoint="runs/t/checkpoint.pth")
    with pytest.raises(ConfigError, match="teacher_checkpoint='.*/runs/t/checkpoint.pth' would go unread"):
        override(hard, ["teacher=labels"])
    assert override(hard, ["teacher=labels", "teacher_checkpoint="]).teacher_checkpoint == ""


def test_a_field_given_twice_is_refused_not_the_last_taken():
    with pytest.raises(ConfigError, match="--set epochs is given twice"):
        override(debug(), ["epochs=1", "epochs=3"])


def test_a_list_given_with_spaces_keeps_the_names_exact():
    """`no_decay=pos_embed, cls_token` kept ' cls_token', which matches no parameter: its decay was silently on."""
    assert override(debug(), ["no_decay=pos_embed, cls_token"]).no_decay == ("pos_embed", "cls_token")


@pytest.mark.parametrize("sched", SCHEDULERS)
@pytest.mark.parametrize("per_step", [False, True])
def test_every_accepted_schedule_drives_the_training_loop(sched, per_step):
    from reproduce.schedule import lr_schedule

    for epochs, warmup in ((1, 0), (1, 1), (2, 1), (10, 5)):
        cfg = check(dataclasses.replace(debug(), sched=sched, epochs=epochs, warmup_epochs=warmup,
                                        sched_per_step=per_step))
        points = lr_schedule(cfg, steps_per_epoch=3)
        assert points and all(lr >= 0 for _, lr in points)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_every_accepted_interpolation_builds_the_training_transform(interpolation):
    from PIL import Image

    from reproduce.data import train_transform

    cfg = check(dataclasses.replace(debug(), train_interpolation=interpolation))
    assert train_transform(cfg, 32)(Image.new("RGB", (40, 36))).shape == (3, 32, 32)


def test_device_data_is_refused_with_randaugment_before_any_data_is_read():
    with pytest.raises(ConfigError, match="device_data=true has no batched RandAugment"):
        override(debug(), ["device_data=true"])


@pytest.mark.parametrize("sets,message", [
    (["attn_distill=true", "teacher=debug"], "attn_distill=true needs the teacher's weights"),
    (["distillation=soft"], "distillation=soft needs the teacher's weights"),
    (["distillation=hard", "attn_distill=true", "teacher=debug"],
     "distillation=hard and attn_distill=true needs the teacher's weights"),
])
def test_a_run_without_its_teachers_weights_names_the_setting_that_needs_them(sets, message):
    """#32 row 15: attention distillation without a teacher checkpoint said 'distillation=none needs ...'."""
    with pytest.raises(ConfigError, match=message):
        check_ready(override(debug(), sets))
    check_ready(override(debug(), ["distillation=hard", "teacher=labels"]))  # the label control needs none


def test_ls_fields_prints_what_every_field_accepts(capsys):
    assert cli.main(["ls", "--fields"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == FIELDS
    for line, name in zip(lines, FIELDS):
        assert line.endswith(ACCEPTS[name].words)


@pytest.mark.parametrize("sets,message", [
    # the hostile pass of #32 on other fields: each trained, silently doing something else than asked
    (["lr=1e-7"], "min_lr=1e-05 is not accepted: must be at most the peak learning rate (lr = 1e-07)"),
    (["lr=1e-7", "min_lr=0"], "warmup_lr=1e-06 is not accepted: must be at most the peak learning rate"),
    (["data=/my/images"], "data='/my/images' is not accepted: must be '' with dataset=synthetic"),
    # failed only after the data and the models were built
    (["batch_size=3"], "batch_size=3 is not accepted: must be even with mixup=0.8, cutmix=1.0"),
])
def test_fields_that_contradict_each_other_are_refused(sets, message):
    with pytest.raises(ConfigError) as info:
        override(debug(), sets)
    assert message in str(info.value)


def test_the_peak_learning_rate_scales_with_the_global_batch():
    assert TrainConfig(lr=5e-4, batch_size=1024).peak_lr() == 1e-3
    assert TrainConfig(lr=5e-4, batch_size=1024, lr_scale_batch=False).peak_lr() == 5e-4
    override(debug(), ["lr=1e-7", "min_lr=0", "warmup_lr=0"])  # both ends at or below the peak: accepted
    override(TrainConfig(), ["lr=5e-6", "batch_size=512", "min_lr=5e-6"])  # deit_b_384's equal ends


def test_data_given_as_a_flag_is_checked_with_the_set_values_not_before_them(tmp_path):
    """A hostile pass: `--data X --set dataset=folder` was refused as "data must be '' with dataset=synthetic"."""
    from reproduce.cli import resolve_config

    cfg = resolve_config("debug", str(tmp_path), ["dataset=folder"])
    assert (cfg.data, cfg.dataset) == (str(tmp_path), "folder")
    with pytest.raises(ConfigError, match="must be '' with dataset=synthetic"):
        resolve_config("debug", str(tmp_path), [])


def test_paths_are_kept_absolute_so_a_resume_from_another_folder_is_refused(tmp_path, monkeypatch):
    """A hostile pass: `--data ds` was kept as typed; resumed from another folder holding another `ds`, the run
    trained its last epochs on other images, exit 0, and the record said data: "ds"."""
    import dataclasses

    from reproduce.checkpoints import config_differences
    from reproduce.cli import resolve_config

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    started = resolve_config("debug_hard", "ds/", ["dataset=folder", "teacher_checkpoint=t.pth"])
    assert started.data == str(tmp_path / "a" / "ds") and started.teacher_checkpoint == str(tmp_path / "a" / "t.pth")
    saved = dataclasses.asdict(started)
    assert config_differences(saved, resolve_config("debug_hard", "ds", ["dataset=folder", "teacher_checkpoint=t.pth"])) == ""
    old_run = {**saved, "data": "ds", "teacher_checkpoint": "t.pth"}  # a run from before: relative to where it began
    assert config_differences(old_run, started) == ""
    monkeypatch.chdir(tmp_path / "b")
    differ = config_differences(saved, resolve_config("debug_hard", "ds", ["dataset=folder", "teacher_checkpoint=t.pth"]))
    assert differ.startswith(f"data (saved {str(tmp_path / 'a' / 'ds')!r}, now {str(tmp_path / 'b' / 'ds')!r})")
