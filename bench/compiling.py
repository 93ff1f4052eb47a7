"""How a model runs in each compile mode: itself, or torch.compile with static shapes and inductor's options.

Modes (protocols.COMPILE_MODES):
    default: inductor.
    freezing: inductor with the weights folded in as constants (on a CPU, GEMM weights pre-packed for oneDNN and
        convolution + batch norm fused); inference only.
    max-autotune: inductor benchmarks GEMM kernels and templates; on a GPU exactly torch.compile(mode="max-autotune")
        (CUDA graphs and coordinate-descent tuning too, from `torch._inductor.list_mode_options`); on a CPU with
        freezing, which its C++ GEMM templates need.
    reduce-overhead: CUDA graphs (GPU).

Freezing has to be on while dynamo traces the model, not only inside inductor: dynamo reads
`torch._inductor.config.freezing` to decide whether parameters become constants of the graph
(`torch._dynamo.utils.is_parameter_freezing`; pytorch/pytorch#126093). `torch.compile(options={"freezing": True})`
alone therefore compiles the weights as ordinary graph inputs: nothing is folded or pre-packed, and the mode runs as
`default` does while its name says otherwise (results/REPORT.md, 2026-12-05, tenth session). `Compiled` sets freezing
around every call, on for a freezing mode and off for the others (whatever TORCHINDUCTOR_FREEZING says): the first
call traces and compiles under it, later calls check dynamo's guards under the same setting.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from bench.protocols import compile_switched_off

# inductor's options per mode; max-autotune's tables of every GEMM choice it benchmarked (printed to stderr, dozens
# of lines per model) are left out: the search logs what each mode gained
OPTIONS = {"default": {}, "freezing": {"freezing": True}, "reduce-overhead": {"triton.cudagraphs": True},
           "max-autotune": {"max_autotune": True, "autotune_num_choices_displayed": 0,
                            "max_autotune_report_choices_stats": False}}


class _NoCudaRuntimeOnACpu(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=…", which its C++ extension loader logs on every
    compile of a machine that has a CUDA toolkit and no GPU: true, irrelevant to a CPU compile, and the only line of
    a CPU run that read as an error (a hostile pass). Where a GPU is present the line never arises."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("No CUDA runtime is found") and not torch.cuda.is_available())


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaRuntimeOnACpu())


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """`model` as `mode` runs it ("off" or one of `OPTIONS`): itself, or compiled behind `Compiled`."""
    if mode == "off":
        return model
    if mode not in OPTIONS:
        raise ValueError(f"unknown compile mode {mode!r}; accepted: off, {', '.join(OPTIONS)}")
    if (off := compile_switched_off()) is not None:  # the model would run eager under this mode's name
        raise ValueError(f"{off} in the environment turns torch.compile off; unset it to compile ({mode})")
    options = dict(OPTIONS[mode])
    if mode == "max-autotune":
        from torch._inductor import list_mode_options

        options.update(list_mode_options("max-autotune") if _on_cuda(model) else {"freezing": True})
    return Compiled(torch.compile(model, dynamic=False, options=options or None), bool(options.get("freezing")))


class Compiled(nn.Module):
    """A compiled model whose every call runs with inductor's freezing as its mode says (module docstring). Frozen,
    the weights must not change after the first call (they are constants of the compiled code), and only inference
    mode or no_grad uses them. Freezing also marks the model's own parameters as guarded static inputs of dynamo
    (`_dynamo_static_input_type`), which outlives `torch._dynamo.reset()`: a later compile of the same module keeps
    that mark (`bench/best.py` compiles copies)."""

    def __init__(self, module: nn.Module, freezing: bool):
        super().__init__()
        from torch._inductor import config  # imported here: most commands never compile

        self.module = module  # named as DDP names it, so reproduce.models.unwrap walks through
        self._setting = config.patch(freezing=freezing)  # one patch object, entered per call (thread-safe)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._setting:
            return self.module(*args, **kwargs)


def _on_cuda(model: nn.Module) -> bool:
    return next(model.parameters()).is_cuda
