"""How a model runs in each compile mode: itself, or torch.compile with static shapes and inductor's options.

Modes (protocols.COMPILE_MODES):
    default: inductor.
    freezing: inductor with the weights folded in as constants (on a CPU, GEMM weights pre-packed for oneDNN and
        convolution + batch norm fused); inference only.
    max-autotune: inductor benchmarks GEMM kernels and templates; on a GPU with CUDA graphs, as
        torch.compile(mode="max-autotune"); on a CPU with freezing, which its C++ GEMM templates need.
    reduce-overhead: CUDA graphs (GPU).

Freezing has to be on while dynamo traces the model, not only inside inductor: dynamo reads
`torch._inductor.config.freezing` to decide whether parameters become constants of the graph
(`torch._dynamo.utils.is_parameter_freezing`). `torch.compile(options={"freezing": True})` alone therefore compiles
the weights as ordinary graph inputs: nothing is folded or pre-packed, and the mode runs as `default` does while its
name says otherwise (results/REPORT.md, 2026-12-05, tenth session). `Frozen` turns freezing on around every call:
the first call traces and compiles under it, and later calls check dynamo's guards under the same setting.
"""

from __future__ import annotations

import torch
from torch import nn

OPTIONS = {"default": {}, "freezing": {"freezing": True}, "reduce-overhead": {"triton.cudagraphs": True},
           "max-autotune": {"max_autotune": True}}


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """`model` as `mode` runs it ("off" or one of `OPTIONS`): itself, or compiled; a freezing mode behind `Frozen`."""
    if mode == "off":
        return model
    if mode not in OPTIONS:
        raise ValueError(f"unknown compile mode {mode!r}; accepted: off, {', '.join(OPTIONS)}")
    options = dict(OPTIONS[mode])
    if mode == "max-autotune":
        options.update({"triton.cudagraphs": True} if _on_cuda(model) else {"freezing": True})
    runner = torch.compile(model, dynamic=False, options=options or None)
    return Frozen(runner) if options.get("freezing") else runner


class Frozen(nn.Module):
    """A compiled model whose every call runs with inductor's freezing on (module docstring). The weights must not
    change after the first call: they are constants of the compiled code, and only inference mode (or no_grad) uses
    it."""

    def __init__(self, runner: nn.Module):
        super().__init__()
        self.runner = runner

    def forward(self, *args, **kwargs):
        from torch._inductor import config  # imported here: most commands never compile

        with config.patch(freezing=True):
            return self.runner(*args, **kwargs)


def _on_cuda(model: nn.Module) -> bool:
    return next(model.parameters()).is_cuda
