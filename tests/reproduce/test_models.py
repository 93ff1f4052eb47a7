"""The student builder's attention switch: the same function, other kernels."""

from dataclasses import replace

import torch

from reproduce import models
from reproduce.config import TrainConfig


def _student(fused: bool):
    cfg = TrainConfig(variant="cifar_vit_dist", dataset="cifar10", num_classes=10, distillation="hard", distill_token=True,
                      drop_path=0.0)
    torch.random.default_generator.manual_seed(0)
    model, _, _ = models.build_student(replace(cfg, fused_attn=fused))
    return model


def test_matmul_attention_computes_what_sdpa_computes_forward_and_backward():
    fused, matmul = _student(True), _student(False)
    matmul.load_state_dict(fused.state_dict())
    flags = [m.fused_attn for m in matmul.modules() if hasattr(m, "fused_attn")]
    assert len(flags) == 6 and not any(flags)  # every block switched
    assert all(m.fused_attn for m in fused.modules() if hasattr(m, "fused_attn"))
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for model in (fused, matmul):
        cls, dist = model(x)  # training mode: both heads
        (cls.square().mean() + dist.mean()).backward()
        grads.append((cls.detach(), model.blocks[0].attn.qkv.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
    assert grads[0][1].abs().sum() > 0  # the comparison is not between two zeros
