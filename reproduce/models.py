"""Student, teacher and fine-tuning start: registry entries with weights, checked against the config."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from bench import checkpoint
from bench.errors import not_a_file
from bench.registry import Variant, resolve
from bench.store import writer_of
from reproduce.config import LABEL_TEACHER, ConfigError, TrainConfig, teacher_users
from reproduce.distill import LabelTeacher, block_indices


def variant_of(cfg: TrainConfig) -> Variant:
    try:
        return resolve(cfg.variant)
    except KeyError as exc:
        raise ConfigError(f"variant={cfg.variant!r}: {exc.args[0]}") from None


def build_student(cfg: TrainConfig) -> tuple[nn.Module, Variant, int]:
    """The student with random weights (or the fine-tuning start), the variant, and its resolution."""
    variant = variant_of(cfg)
    if cfg.distill_token and not variant.distilled:
        raise ConfigError(f"distill_token=true needs a student with a distillation token, but {cfg.variant} has only "
                          f"a class token; use {cfg.variant}_dist (if registered) or distill_token=false (Table 3 rows 2–3)")
    if variant.distilled and not cfg.distill_token:
        raise ConfigError(f"{cfg.variant} has a distillation token, which nothing would train with distill_token=false; "
                          "set distill_token=true with distillation=hard|soft, or use the variant without _dist")
    img_size = cfg.img_size or variant.img_size
    kwargs = {"num_classes": cfg.num_classes}
    if variant.family == "vit":
        kwargs.update(img_size=img_size, drop_path_rate=cfg.drop_path, drop_rate=cfg.dropout)
    model = variant.build(**kwargs)
    # the names and blocks the optimiser and the attention taps will use, refused before any data is read
    check_no_decay(model, cfg.no_decay)
    check_attention_blocks(model, cfg, f"the student {cfg.variant}")
    if cfg.cls_token_init == "official" and getattr(model, "cls_token", None) is not None:
        init_cls_token_officially(model)
    if not cfg.fused_attn:
        use_matmul_attention(model)
    if variant.distilled:
        model.set_distilled_training(True)  # train mode returns (cls, dist) logits, not their mean
    if cfg.finetune:
        load_finetune_start(model, Path(cfg.finetune))
    return model, variant, img_size


def init_cls_token_officially(model: nn.Module) -> None:
    """The class token as the released code initialises it (timm 0.3.2: `trunc_normal_(cls_token, std=.02)`, like
    the distillation token), not timm >= 0.9's N(0, 1e-6), which starts a distilled model's two prefix tokens at
    scales 20,000x apart. Drawn after the rest of the model, so no other weight changes."""
    from timm.layers import trunc_normal_

    with torch.no_grad():
        trunc_normal_(model.cls_token, std=0.02)


def use_matmul_attention(model: nn.Module) -> None:
    """Switch timm's attention blocks from `F.scaled_dot_product_attention` to explicit matmuls (q·kᵀ, softmax, ·v).

    Same mathematics, other kernels. On CPU under bf16 autocast, SDPA's flash kernel is slow for small heads: in a
    training step of the mini-scale ViT (batch 64, 65 tokens, 3 heads of 32) its backward took 51 % of the time, and
    the matmul path made the whole step 2.3x faster (tests/benchmarks/test_attention_speed.py). Per module, so other
    models in the process keep timm's default.
    """
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False


def load_finetune_start(model: nn.Module, path: Path) -> None:
    """Weights from a trained checkpoint: positional embeddings resized bicubically to the new grid (paper's ↑384,
    official `--finetune` without antialiasing); head layers whose shape differs (new label space) keep their
    fresh initialisation (Table 6/7 transfer)."""
    if not path.is_file():
        raise ConfigError(f"finetune={path}: {not_a_file(path)}")
    state, _ = checkpoint.read_state_dict(path)
    own = model.state_dict()
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        grid = model.patch_embed.grid_size
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=list(grid),
                                                    num_prefix_tokens=model.num_prefix_tokens,
                                                    interpolation="bicubic", antialias=False)
    for key in ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias", "fc.weight", "fc.bias"):
        if key in state and key in own and state[key].shape != own[key].shape:
            state[key] = own[key]
    checkpoint.load_into(model, state, f"finetune {path.name}")


def build_teacher(cfg: TrainConfig) -> tuple[nn.Module | None, str | None]:
    """The frozen teacher (eval mode, no gradients): a convnet, or a ViT for attention distillation; the ground truth
    in its place (`teacher=labels`), or None without distillation. And the sha256 of its checkpoint, taken once as
    the file is read (None without a file): the record and the logit memo use it (one hash, not one per reader)."""
    if not teacher_users(cfg):
        return None, None
    if cfg.teacher == LABEL_TEACHER:
        return LabelTeacher(), None
    if not cfg.teacher_checkpoint:  # config.check_ready says so first; this names the same setting
        raise ConfigError(f"{teacher_users(cfg)} needs the teacher's weights: "
                          f"--set teacher_checkpoint=FILE (a {cfg.teacher} checkpoint)")
    path = Path(cfg.teacher_checkpoint)
    if not path.is_file():
        raise ConfigError(f"teacher_checkpoint={path}: {not_a_file(path)} (train or download the {cfg.teacher} teacher "
                          "first)")
    try:
        variant = resolve(cfg.teacher)
    except KeyError as exc:
        raise ConfigError(f"teacher={cfg.teacher!r}: {exc.args[0]}") from None
    if cfg.attn_distill and variant.family != "vit":
        raise ConfigError(f"attn_distill=true needs a ViT teacher, but teacher={cfg.teacher} is a convnet: it has no "
                          "attention maps (the paper's teacher signal is its logits, through the distillation token)")
    if (writer := writer_of(path.parent)) is not None:  # a student distilled from a teacher in its first epochs,
        # whose checkpoint changes every epoch, without a word (a hostile pass)
        raise ConfigError(f"teacher_checkpoint={path} belongs to a run still training ({writer}): its weights change "
                          "with every epoch; wait for it to finish, or copy the checkpoint and name the copy")
    state, info = checkpoint.read_state_dict(path)
    if info.num_classes is not None and info.num_classes != cfg.num_classes:
        raise ConfigError(f"the teacher {path.name} predicts {info.num_classes} classes but the student has "
                          f"{cfg.num_classes}: distillation needs the same label space")
    teacher = variant.build(num_classes=cfg.num_classes)
    check_attention_blocks(teacher, cfg, f"the teacher {cfg.teacher}")
    checkpoint.load_into(teacher, state, f"teacher {path.name}")
    teacher.eval().requires_grad_(False)
    return teacher, info.sha256


def check_attention_blocks(model: nn.Module, cfg: TrainConfig, whose: str) -> None:
    """With attn_distill, refuse a model without attention blocks, and `attn_blocks` out of its depth or naming a
    block twice (-1,1 in 2 blocks), when the model is built: before, a block past the depth was refused only after
    the data was built, and a block named twice counted double. Each model resolves negative indices against
    its own depth (-1 is the teacher's last block and the student's)."""
    if not cfg.attn_distill:
        return
    if not hasattr(model, "blocks"):
        raise ConfigError(f"attn_distill=true needs attention blocks, but {whose} has none (a convnet has no "
                          "attention maps); use a ViT or attn_distill=false")
    try:
        block_indices(cfg.attn_blocks, len(model.blocks), f"{whose}'s")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def no_decay_groups(model: nn.Module, weight_decay: float, no_decay: tuple[str, ...]) -> list[dict]:
    """AdamW parameter groups as the official code makes them: no weight decay for biases, norm weights and the
    named tokens (pos_embed, cls_token); everything else, the distillation token included, decays. timm's own
    `no_weight_decay()` would also exempt dist_token, so the list is passed explicitly."""
    from timm.optim import param_groups_weight_decay

    check_no_decay(model, no_decay)
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay)


def check_no_decay(model: nn.Module, no_decay: tuple[str, ...]) -> None:
    """Refuse a `no_decay` name that is no parameter of `model`: timm matches whole names, so a misspelt one
    (pos_embd) silently left pos_embed decaying. The default tokens may be absent (a convnet has neither)."""
    names = [name for name, _ in model.named_parameters()]
    for name in no_decay:
        if name in names or name in TrainConfig.no_decay:
            continue
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        tokens = [n for n in names if "." not in n]  # the top-level tensors: position embedding, tokens
        hint = (f"did you mean {', '.join(close)}?" if close else f"its top-level parameters are {', '.join(tokens)}"
                if tokens else f"its parameters begin {', '.join(names[:4])}")
        raise ConfigError(f"no_decay={','.join(no_decay)}: {name!r} matches no parameter of the student, so nothing "
                          f"named so would be exempt from weight decay; {hint} (whole names, as model.named_parameters() "
                          "gives them)")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP, torch.compile and bench.compiling wrappers (compared with None: a compiled
    module's truth value asks the model under it for its length)."""
    while True:
        inner = getattr(model, "module", None)
        inner = getattr(model, "_orig_mod", None) if inner is None else inner
        if inner is None:
            return model
        model = inner


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU, and CUDA when in use).

    Not `torch.manual_seed`: on a CUDA build without CUDA in use it queues lazy seeding calls for CUDA, XPU and
    MTIA, formatting a stack trace each time (~0.7 ms); per image that halved the debug run's speed.
    """
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
