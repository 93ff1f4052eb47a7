import dataclasses

import pytest
import torch

from bench.registry import VARIANTS, resolve
from bench.size import count_params

PAPER_ALIASES = ["deit_ti", "deit_s", "deit_b", "deit_b_384",
                 "deit_ti_dist", "deit_s_dist", "deit_b_dist", "deit_b_dist_384"]


def test_the_eight_paper_variants_are_registered_with_table_5_numbers_and_timms_exact_size():
    for alias in PAPER_ALIASES:
        v = VARIANTS[alias]
        assert v.role == "student" and v.paper.table == "Table 5"
        assert v.distilled == alias.startswith(("deit_ti_dist", "deit_s_dist", "deit_b_dist"))
        assert v.img_size == (384 if alias.endswith("384") else 224)
        assert None not in (v.paper.params_m, v.paper.img_per_s, v.paper.top1, v.paper.real, v.paper.v2)
        assert None not in (v.reference_params, v.reference_gmacs)


def test_the_papers_numbers_hold_no_exact_counts_it_does_not_print():
    """Issue #30: PaperRef.params/gmacs held timm's counts, and a "paper" column showed 86,567,656 for DeiT-B."""
    from bench.paper import PaperRef

    fields = {f.name for f in dataclasses.fields(PaperRef)}
    assert not fields & {"params", "gmacs"} and "params_m" in fields
    assert all(v.reference_params is None for v in VARIANTS.values() if v.role != "student" or v.paper is None)


def test_every_table_2_regnety_teacher_and_a_cifar_cnn_are_registered():
    teachers = {v.name for v in VARIANTS.values() if v.role == "teacher"}
    assert {"regnety_040", "regnety_080", "regnety_120", "regnety_160"} <= teachers
    assert any(VARIANTS[t].img_size == 32 and VARIANTS[t].num_classes == 10 for t in teachers)


def test_full_timm_names_resolve_to_their_alias():
    assert resolve("deit_base_distilled_patch16_384").name == "deit_b_dist_384"
    assert resolve("deit_b") is VARIANTS["deit_b"]


def test_a_timm_name_means_timms_own_architecture_never_a_registered_change_of_it():
    """deit_tiny_patch16_224 is also the timm model of cifar_vit, cifar_vit_deep and debug (changed depth, 32 px):
    its timm name built the 9-block cifar_vit_deep (1.0 M parameters) in place of DeiT-Ti."""
    for v in VARIANTS.values():
        if v.role != "debug" and not v.model_kwargs:
            assert resolve(v.model).model_kwargs == {} and resolve(v.model).model == v.model
    assert resolve("deit_tiny_patch16_224") is VARIANTS["deit_ti"]
    assert resolve("deit_tiny_distilled_patch16_224") is VARIANTS["deit_ti_dist"]


def test_an_unknown_name_lists_the_accepted_ones_and_the_closest_match():
    with pytest.raises(KeyError) as err:
        resolve("deit_bb")
    message = err.value.args[0]
    assert "'deit_b'" in message and "deit_ti_dist" in message and "Did you mean" in message


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_entry_builds_and_runs_a_forward_pass_at_a_small_size(name):
    v = VARIANTS[name]
    model = v.build(**({"img_size": 32} if v.family == "vit" else {})).eval()  # a convnet takes any size
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, v.num_classes)


def test_the_debug_variant_is_tiny():
    v = VARIANTS["debug"]
    assert v.img_size == 32 and v.num_classes == 10
    assert count_params(v.build()) < 200_000


@pytest.mark.parametrize("typed, meant", [
    ("DeiT_B", "deit_b"),  # suggested deit_s (a hostile pass)
    ("DEIT_B", "deit_b"), ("DeiT-B", "deit_b"),  # no suggestion at all: the second is bench ls's "paper" column
    ("DeiT-B⚗↑384", "deit_b_dist_384"), ("DeiT-Ti⚗", "deit_ti_dist"), ("ResNet-50", "resnet50"),
])
def test_a_name_typed_in_another_case_or_as_the_paper_prints_it_is_pointed_to_its_variant(typed, meant):
    with pytest.raises(KeyError, match=f"Did you mean '{meant}'"):
        resolve(typed)
