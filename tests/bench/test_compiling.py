"""bench/compiling.py: each compile mode runs the model as its name says."""

import pytest
import torch
from torch import nn

from bench import compiling


def _changed_weights_show(mode: str) -> bool:
    """Whether a change to the weights after the first call reaches the compiled model's output: never when the
    weights were folded in as constants of the compiled code."""
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval()
    images = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    runner = compiling.compiled(model, mode)
    with torch.inference_mode():
        before = runner(images).clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with torch.inference_mode():
        after = runner(images).clone()
        eager = model(images)
    torch._dynamo.reset()
    assert not torch.allclose(eager, before)  # the change does move the eager output
    return not torch.equal(after, before)


@pytest.mark.parametrize("mode", ["freezing", "max-autotune"])
def test_a_freezing_mode_folds_the_weights_in_as_constants(mode):
    """Freezing only in inductor's options (torch.compile(options={"freezing": True})) compiled the weights as graph
    inputs, so "freezing" ran as "default" did while the record said otherwise: a change to the weights showed."""
    assert not _changed_weights_show(mode)


def test_the_default_mode_reads_the_weights_at_each_call():
    assert _changed_weights_show("default")


def test_compiled_names_its_modes():
    model = nn.Linear(2, 2)
    assert compiling.compiled(model, "off") is model
    with pytest.raises(ValueError, match="unknown compile mode 'fast'; accepted: off, default, freezing"):
        compiling.compiled(model, "fast")
