import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.paper import params_rounding
from bench.registry import VARIANTS
from bench.size import count_gmacs, count_params, sdpa_macs

PAPER = ["deit_ti", "deit_s", "deit_b", "deit_b_384", "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384"]


@pytest.fixture(scope="module", params=PAPER)
def built(request):
    v = VARIANTS[request.param]
    return v, v.build()


def test_parameter_counts_are_exactly_the_reference_implementations_and_the_papers_to_its_rounding(built):
    v, model = built
    assert count_params(model) == v.reference_params
    assert params_rounding(count_params(model), v.paper.params_m) is not None


def test_gmacs_include_attention_and_match_the_reference_within_a_tenth_of_a_percent(built):
    v, model = built
    assert count_gmacs(model, v.img_size) == pytest.approx(v.reference_gmacs, rel=1e-3)


@pytest.mark.parametrize("count,printed,how", [
    (86_567_656, 86, "truncated"),  # DeiT-B
    (5_910_800, 6, "rounded"),  # DeiT-Ti⚗
    (5_717_416, 5, "truncated"),  # DeiT-Ti, where rounding would give 6
    (22_050_664, 22, "truncated"),  # DeiT-S: both give 22
    (25_557_032, 25, "truncated"),  # ResNet-50 in timm
    (304_715_752, 307, None),  # ViT-L/16 at 384 in timm: 2.3 M short of the paper's
    (86_567_656, 88, None),
])
def test_a_count_agrees_with_the_paper_when_truncating_or_rounding_gives_its_millions(count, printed, how):
    assert params_rounding(count, printed) == how


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
