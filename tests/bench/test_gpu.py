import pytest

from bench.gpu import mfu, peak_tflops, throttle_reasons


def test_peaks_are_looked_up_by_card_name_and_precision_column():
    assert peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("Tesla V100-SXM2-16GB", "fp32") == 15.7


def test_an_unknown_card_or_precision_gives_no_peak_rather_than_a_guess():
    assert peak_tflops("NVIDIA GeForce GTX 1080", "fp32") is None
    assert peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None
    assert mfu(17.583, 1000.0, None) is None


def test_mfu_counts_two_flops_per_mac():
    # DeiT-B at 22,400 im/s on a 790 TFLOP/s card is ~100 % (peers.md, "Hardware ceilings").
    assert mfu(17.583, 22_464.0, 790.0) == pytest.approx(1.0, rel=1e-3)


def test_throttle_bits_decode_to_names():
    names = {"GpuIdle": 0x1, "SwPowerCap": 0x4, "HwSlowdown": 0x8}
    assert throttle_reasons(0x5, names) == ["GpuIdle", "SwPowerCap"]
    assert throttle_reasons(0, names) == []
