from pathlib import Path

from bench import machine
from reproduce import experiments
from reproduce.train import resolve_amp

CPUINFO = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"
AVX2 = (CPUINFO / "amd-epyc-avx2.txt").read_text()
AVX512_BF16 = (CPUINFO / "amd-epyc-avx512-bf16.txt").read_text()


def test_training_amp_auto_is_fp32_on_an_avx2_cpu_and_bf16_with_native_units():
    avx2 = machine.detect("cpu", 1, machine.cpuinfo(AVX2)).to_dict()
    native = machine.detect("cpu", 1, machine.cpuinfo(AVX512_BF16)).to_dict()
    assert resolve_amp("auto", avx2)[:1] == ("none",) and resolve_amp("auto", avx2)[2] is None
    assert resolve_amp("auto", native)[0] == "bf16"
    amp, _, warning = resolve_amp("bf16", avx2)
    assert amp == "bf16" and "emulated" in warning


def test_no_experiment_forces_bf16_so_none_defaults_to_the_slow_path_on_an_avx2_cpu():
    forced = {name: e.build().amp for name, e in experiments.EXPERIMENTS.items() if e.build().amp == "bf16"}
    assert forced == {}
    assert experiments.get("mini_none").build().amp == "auto"


def test_fp16_training_on_a_cpu_is_refused_as_bench_run_refuses_it():
    """A hostile pass: `--set amp=fp16` trained on a CPU without a word, and step-speed reported a 0.16 ratio."""
    import pytest

    from reproduce.config import ConfigError

    with pytest.raises(ConfigError, match="amp=fp16 is for a CUDA GPU"):
        resolve_amp("fp16", machine.detect("cpu", 1, machine.cpuinfo(AVX512_BF16)).to_dict())
