"""bench/compiling.py: each compile mode runs the model as its name says."""

import logging

import pytest
import torch
from torch import nn

from bench import compiling
from reproduce.models import unwrap


def _changed_statistics_show(mode: str) -> bool:
    """Whether a change to the batch-norm statistics after the first call reaches the compiled model's output: never
    when freezing folded them into the convolution's weights (a new constant, on every platform)."""
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    try:
        runner = compiling.compiled(model, mode)
        with torch.inference_mode():
            before = runner(images).clone()
        model[1].running_mean.add_(1.0)
        with torch.inference_mode():
            after = runner(images).clone()
            eager = model(images)
    finally:
        torch._dynamo.reset()
    assert not torch.allclose(eager, before)  # the change does move the eager output
    return not torch.allclose(after, before)


@pytest.mark.parametrize("mode", ["freezing", "max-autotune"])
def test_a_freezing_mode_folds_the_weights_in_as_constants(mode):
    """Freezing only in inductor's options (torch.compile(options={"freezing": True})) compiled the weights as graph
    inputs, so "freezing" ran as "default" did while the record said otherwise: a change to them showed."""
    assert not _changed_statistics_show(mode)


def test_the_default_mode_reads_the_weights_at_each_call_even_where_the_environment_asks_for_freezing():
    from torch._inductor import config

    assert _changed_statistics_show("default")
    with config.patch(freezing=True):  # as TORCHINDUCTOR_FREEZING=1 sets it for the whole process
        assert _changed_statistics_show("default")


def test_the_model_under_a_compiled_one_is_reached_by_unwrap():
    """The distillation's attention tap unwraps the teacher: a compiled teacher hid its blocks behind the wrapper."""
    model = nn.Linear(2, 2)
    assert unwrap(compiling.compiled(model, "freezing")) is model


def test_compiled_names_its_modes():
    model = nn.Linear(2, 2)
    assert compiling.compiled(model, "off") is model
    with pytest.raises(ValueError, match="unknown compile mode 'fast'; accepted: off, default, freezing"):
        compiling.compiled(model, "fast")


def test_torch_s_no_cuda_runtime_line_is_dropped_on_a_cpu_and_its_other_lines_kept(caplog):
    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING, logger="torch.utils.cpp_extension"):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        logger.warning("some other warning")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["some other warning"] or torch.cuda.is_available()
