"""Model size: exact parameter count and multiply-accumulates counted by fvcore, attention included."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore's focal_loss calls torch.jit.script at import (deprecated in torch 2.x)
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape


def sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for `aten::scaled_dot_product_attention`, which fvcore otherwise scores as zero.

    Counts the two matrix products, Q·Kᵀ (… × L × S × E) and softmax(·)·V (… × L × S × Ev), as fvcore
    counts a matmul: one multiply-accumulate per product term. Softmax and scaling are elementwise and
    left out, as fvcore leaves out elementwise ops everywhere else (paper.md, "FLOPs").
    """
    q, k, v = (get_shape(t) for t in inputs[:3])
    *batch, length, head_dim = q
    source_length, value_dim = k[-2], v[-1]
    return math.prod(batch) * length * source_length * (head_dim + value_dim)


def count_params(model: nn.Module) -> int:
    """Every parameter, trainable or not (the timm / paper convention)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, img_size: int, batch_size: int = 1) -> float:
    """GMACs of one forward pass at `img_size`, per batch of `batch_size`, with fvcore.

    The model is traced in eval mode on its own device and dtype; its mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    first = next(model.parameters())
    example = torch.zeros(batch_size, 3, img_size, img_size, device=first.device, dtype=first.dtype)
    analysis = FlopCountAnalysis(model, example)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    analysis.unsupported_ops_warnings(False)  # add/gelu/div: elementwise, not counted by convention
    analysis.uncalled_modules_warnings(False)
    try:
        with warnings.catch_warnings():  # jit tracer warnings about python control flow: not the user's concern
            warnings.simplefilter("ignore")
            return analysis.total() / 1e9
    finally:
        model.train(was_training)
