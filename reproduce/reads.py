"""What a training config reads: the fields a run never reads, each with why, so that a `--set` of one is refused
rather than recorded as if it had changed something (`config.override` calls `refuse_unread`; a suite leaves such a
setting out of the rows that do not read it)."""

from __future__ import annotations

from reproduce.config import LABEL_TEACHER, NO_MIN_LR, TEACHER_FIELDS, ConfigError, TrainConfig, teacherless


def unread_fields(cfg: TrainConfig) -> dict[str, str]:
    """The fields `cfg` never reads, each with why: a --set of one would be recorded and change nothing (hostile
    passes: `--set teacher_checkpoint=/etc/passwd` on `debug`, `momentum=0.5` with AdamW, `mixup_prob` with Mixup and
    CutMix off, all exit 0). timm decides what an optimizer reads (`get_optimizer_info`) and which schedulers decay to
    min_lr; its RandAugment turns color jitter off unless the policy has "3a"."""
    from timm.optim import get_optimizer_info  # late: `reproduce ls` never loads timm

    unread = {}
    if teacherless(cfg):
        unread.update(dict.fromkeys(TEACHER_FIELDS, "distillation=none trains without a teacher"))
    elif cfg.teacher == LABEL_TEACHER and cfg.distillation != "none" and cfg.teacher_checkpoint:
        unread["teacher_checkpoint"] = f"teacher={LABEL_TEACHER} distils from the labels, which have no weights"
    if not cfg.attn_distill:
        unread.update(dict.fromkeys(("attn_blocks", "attn_per_head"), "attn_distill=false"))
    if cfg.mixup == 0 and cfg.cutmix == 0:
        unread.update(dict.fromkeys(("mixup_prob", "mixup_switch_prob"), "mixup=0 and cutmix=0 mix nothing"))
    elif cfg.mixup == 0 or cfg.cutmix == 0:
        unread["mixup_switch_prob"] = "only one of mixup and cutmix is on: there is nothing to switch between"
    if cfg.auto_augment and "3a" not in cfg.auto_augment:
        unread["color_jitter"] = f"auto_augment={cfg.auto_augment!r} turns timm's color jitter off"
    info = get_optimizer_info(cfg.opt.lower().removeprefix("lookahead_"))  # Lookahead wraps the optimizer it names
    if not info.has_momentum:
        unread["momentum"] = f"opt={cfg.opt} has no momentum"
    if not info.has_eps:
        unread["opt_eps"] = f"opt={cfg.opt} has no epsilon"
    if cfg.sched in NO_MIN_LR:
        unread["min_lr"] = f"sched={cfg.sched} does not decay to a minimum"
    if not cfg.train_subset or cfg.dataset == "synthetic":  # the validation subset has a seed of its own
        unread["subset_seed"] = "it draws the training subset, and there is none" if not cfg.train_subset else \
            "dataset=synthetic generates its images"
    return unread


def refuse_unread(cfg: TrainConfig, before: TrainConfig, changed: set[str]) -> None:
    """A --set that changed a field `cfg` never reads (`unread_fields`); also a switch to the label teacher that
    leaves an experiment's teacher_checkpoint unread. An experiment's own values stay: a scale names its teacher for
    every row, its `none` rows included."""
    unread = unread_fields(cfg)
    refused = [n for n in unread if n in changed or n == "teacher_checkpoint" and "teacher" in changed
               and before.teacher_checkpoint]
    if refused:
        raise ConfigError("; ".join(f"{n}={getattr(cfg, n)!r} would go unread ({unread[n]})" for n in refused)
                          + f": leave {'it' if len(refused) == 1 else 'them'} out, or change what leaves "
                          + ("it" if len(refused) == 1 else "them") + " unread")
