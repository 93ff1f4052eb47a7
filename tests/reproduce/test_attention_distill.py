"""Issue #23: attention distillation as one more loss component (not the paper's method)."""

import json
import math

import pytest
import torch

from bench.registry import VARIANTS
from reproduce import cli
from reproduce.cli import resolve_config
from reproduce.config import TrainConfig, override
from reproduce.distill import AttentionTap, attention_divergence
from reproduce.train import train


def test_the_divergence_is_kl_of_teacher_to_student_by_hand():
    s = torch.tensor([[[0.5, 0.25, 0.25]], [[0.2, 0.3, 0.5]]])  # [batch 2, heads 1, patches 3]
    t = torch.tensor([[[0.25, 0.25, 0.5]], [[0.2, 0.3, 0.5]]])
    by_hand = (0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1) + 0.5 * math.log(0.5 / 0.25) + 0.0) / 2
    assert attention_divergence([s], [t], per_head=False).item() == pytest.approx(by_hand)


def test_heads_are_matched_one_by_one_only_when_asked_and_the_counts_agree():
    s = torch.tensor([[[0.5, 0.5], [0.9, 0.1]]])  # one image, 2 heads, 2 patches
    t = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]])
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))  # noqa: E731
    per_head = (kl([0.9, 0.1], [0.5, 0.5]) + kl([0.5, 0.5], [0.9, 0.1])) / 2
    assert attention_divergence([s], [t], per_head=True).item() == pytest.approx(per_head)
    assert attention_divergence([s], [t], per_head=False).item() == pytest.approx(0.0, abs=1e-7)  # same mean map
    three_heads = torch.full((1, 3, 2), 0.5)
    # 2 heads against 3: the head-averaged maps, [0.7, 0.3] against [0.5, 0.5]
    assert attention_divergence([s], [three_heads], per_head=True).item() == pytest.approx(kl([0.5, 0.5], [0.7, 0.3]))


@pytest.mark.parametrize("variant", ["debug", "debug_dist"])
def test_the_tapped_map_is_the_blocks_own_attention_on_the_matmul_and_the_sdpa_path(variant):
    torch.manual_seed(0)
    model = VARIANTS[variant].build().eval()
    images = torch.randn(2, 3, 32, 32)
    seen = {}
    for block in model.blocks:
        block.attn.fused_attn = False  # the matmul path: the softmax passes through attn_drop
    model.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, i, o: seen.setdefault("attn", o))
    tap = AttentionTap(model, (-1,))
    with torch.no_grad():
        model(images)
    own = seen["attn"][:, :, 0, model.num_prefix_tokens:]
    own = own / own.sum(-1, keepdim=True)
    assert torch.allclose(tap.maps()[0], own, atol=1e-6)
    for block in model.blocks:
        block.attn.fused_attn = True
    with torch.no_grad():
        model(images)
    assert torch.allclose(tap.maps()[0], own, atol=1e-6)  # SDPA computes the same attention
    assert tap.maps()[0].shape == (2, 2, 64) and torch.allclose(tap.maps()[0].sum(-1), torch.ones(2, 2))


def test_the_tap_works_through_torch_compile_with_its_gradient():
    """`compile=true` compiles the student after the taps' hooks are registered: the compiled forward must fill
    them with the same maps, still attached to the graph (aot_eager traces what inductor would, without a C++
    build)."""
    torch.manual_seed(0)
    model = VARIANTS["debug_dist"].build().train()
    images, other = torch.randn(2, 2, 3, 32, 32)
    tap = AttentionTap(model, (0, -1))
    model(images)
    eager = [m.detach().clone() for m in tap.maps()]
    model(other)  # the tap now holds other maps: only a compiled forward that runs the hooks brings these back
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    compiled(images)
    maps = tap.maps()
    assert all(torch.allclose(m, e, atol=1e-6) for m, e in zip(maps, eager))
    sum(m.square().sum() for m in maps).backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_a_convnet_teacher_with_attention_is_a_usage_error(tmp_path, capsys):
    ckpt = tmp_path / "cnn.pth"
    torch.save({"model": VARIANTS["cifar_resnet10"].build(num_classes=10).state_dict()}, ckpt)
    code = cli.main(["train", "--experiment", "debug", "--set", "attn_distill=true", "--set", "teacher=cifar_resnet10",
                     "--set", f"teacher_checkpoint={ckpt}", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "needs a ViT teacher" in err and "no attention maps" in err


def test_attention_and_hard_distillation_train_together_from_a_vit_teacher(tmp_path):
    teacher = tmp_path / "teacher"
    train(resolve_config("debug", None, ["epochs=1"]), teacher, experiment="debug", resume=False, log=lambda _: None)
    sets = ["attn_distill=true", "teacher=debug", f"teacher_checkpoint={teacher / 'checkpoint.pth'}",
            "attn_per_head=true", "epochs=1"]
    said = []
    record = train(resolve_config("debug_hard", None, sets), tmp_path / "run", experiment="debug_hard", resume=False,
                   log=said.append)
    assert "(hard distillation, token; attention distillation, blocks [-1]; teacher " in said[0]  # names both
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
             if '"step"' in line]
    assert record.metrics.final_val_top1 is not None and all(s["loss_distill"] > 0 for s in steps)
    assert record.settings.config["attn_distill"] is True


def test_attention_with_a_remembered_teacher_is_refused():
    with pytest.raises(Exception, match="teacher_memo"):
        resolve_config("mini_attn", None, ["teacher_memo=true"])


@pytest.mark.parametrize("sets,words", [
    ([], "no distillation"),
    (["distillation=hard", "distill_token=true"], "hard distillation, token"),
    (["attn_distill=true", "attn_blocks=-2,-1"], "attention distillation, blocks [-2, -1]"),
    (["distillation=soft", "attn_distill=true"], "soft distillation; attention distillation, blocks [-1]"),
])
def test_the_banner_names_the_teacher_signals_that_train(sets, words):
    assert override(TrainConfig(), sets).teacher_signals() == words


def test_a_compiled_teacher_still_gives_its_attention_maps():
    """`compile=true` puts the teacher behind bench.compiling's wrapper: the tap must reach its blocks through it
    (it raised "has no attention blocks"), and the frozen, compiled forward must fill the tap with the eager maps."""
    from reproduce.distill import teacher_logits
    from reproduce.models import unwrap
    from reproduce.train import Processes, place_teacher

    torch.manual_seed(0)
    teacher = VARIANTS["debug"].build().eval().requires_grad_(False)
    images = torch.randn(2, 3, 32, 32)
    placed, _ = place_teacher(teacher, None, TrainConfig(compile=True), Processes(0, 1, "cpu"), "none", None,
                              log=lambda _: None)
    tap = AttentionTap(unwrap(placed), (-1,))
    assert tap is not None and unwrap(placed) is teacher
    teacher_logits(teacher, images)
    eager = [m.clone() for m in tap.maps()]
    torch._dynamo.reset()
    try:
        teacher_logits(placed, images)
        assert all(torch.allclose(m, e, atol=1e-5) for m, e in zip(tap.maps(), eager))
    finally:
        torch._dynamo.reset()
