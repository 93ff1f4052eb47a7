import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import VARIANTS
from bench.size import count_gmacs, count_params, sdpa_macs

PAPER = ["deit_ti", "deit_s", "deit_b", "deit_b_384", "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384"]


@pytest.fixture(scope="module", params=PAPER)
def built(request):
    v = VARIANTS[request.param]
    return v, v.build()


def test_parameter_counts_are_exactly_the_papers(built):
    v, model = built
    assert count_params(model) == v.paper.params


def test_gmacs_include_attention_and_match_the_reference_within_a_tenth_of_a_percent(built):
    v, model = built
    assert count_gmacs(model, v.img_size) == pytest.approx(v.paper.gmacs, rel=1e-3)


class Attention(nn.Module):
    def forward(self, x):
        q = x.reshape(2, 3, 5, 4)
        k = torch.ones(2, 3, 7, 4)
        v = torch.ones(2, 3, 7, 6)
        return F.scaled_dot_product_attention(q, k, v)


def test_the_sdpa_handle_counts_both_attention_matmuls():
    # Q·Kᵀ: 2·3·5·7·4 MACs, softmax·V: 2·3·5·7·6 MACs.
    assert count_gmacs_of(Attention(), torch.zeros(2, 3, 5, 4)) == 2 * 3 * 5 * 7 * (4 + 6)


def count_gmacs_of(module, example):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, example).set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    return analysis.total()


def test_without_the_handle_fvcore_misses_attention_as_published_tables_do():
    from fvcore.nn import FlopCountAnalysis

    model = VARIANTS["deit_ti"].build().eval()
    plain = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224))
    plain.unsupported_ops_warnings(False)
    assert plain.total() / 1e9 == pytest.approx(1.080, abs=1e-3)  # paper.md, "FLOPs": the trap value


def test_gmacs_scale_with_batch_and_restore_training_mode():
    model = VARIANTS["debug"].build().train()
    one = count_gmacs(model, 32)
    assert count_gmacs(model, 32, batch_size=4) == pytest.approx(4 * one)
    assert model.training
