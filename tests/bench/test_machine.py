import dataclasses
from pathlib import Path

import pytest

from bench import machine
from bench.machine import Fingerprint

# The start of /proc/cpuinfo on the two machine kinds this project has run on (flags shortened): both "AMD EPYC".
CPUINFO = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"
AVX2 = (CPUINFO / "amd-epyc-avx2.txt").read_text()
AVX512_BF16 = (CPUINFO / "amd-epyc-avx512-bf16.txt").read_text()


def test_cpuinfo_is_read_from_the_first_processor_only():
    info = machine.cpuinfo(AVX2)
    assert info["vendor_id"] == "AuthenticAMD" and info["cpu family"] == "25" and info["model"] == "17"


def test_two_cpus_with_the_same_name_have_different_fingerprints_naming_the_isa():
    avx2, avx512 = machine.detect("cpu", 1, machine.cpuinfo(AVX2)), machine.detect("cpu", 1, machine.cpuinfo(AVX512_BF16))
    assert avx2.cpu_name == avx512.cpu_name == "AMD EPYC"
    assert avx2.isa == ("avx", "avx2", "fma") and "avx512_bf16" in avx512.isa
    assert avx2.id() != avx512.id() and avx2 != avx512
    assert avx2.differences(avx512) == ["cpu_model: 17 -> 1", "isa: +avx512_bf16, +avx512_vnni, +avx512f"]
    assert "avx2" in avx2.id() and "avx512_bf16" in avx512.id().replace("-", "_")


def test_tables_name_the_two_machines_apart_and_say_when_a_record_predates_fingerprints():
    avx2, avx512 = (dataclasses.replace(machine.detect("cpu", 1, machine.cpuinfo(text)), cores=1)
                    for text in (AVX2, AVX512_BF16))
    assert machine.label(avx2.to_dict(), "AMD EPYC") == "AMD EPYC AVX2 [f25m17s1, 1 core]"
    assert machine.label(avx512.to_dict(), "AMD EPYC") == "AMD EPYC AVX-512 bf16 [f25m1s1, 1 core]"
    gpu = dataclasses.replace(avx2, device="cuda", gpu_name="NVIDIA H100", gpu_capability="9.0", gpu_driver="550.54",
                              gpu_power_limit_w=700.0)
    assert gpu.label() == "NVIDIA H100 [sm9.0, driver 550.54, 700 W]"
    assert machine.label(None, "AMD EPYC") == "AMD EPYC [ISA not recorded]"


def test_a_fingerprint_survives_a_record_round_trip_and_its_id_is_stable():
    fp = machine.detect("cpu", 2, machine.cpuinfo(AVX2))
    again = Fingerprint.from_dict(fp.to_dict())
    assert again == fp and again.id() == fp.id() and again.differences(fp) == []


def test_thread_count_and_library_versions_are_part_of_the_fingerprint():
    fp = machine.detect("cpu", 1, machine.cpuinfo(AVX2))
    assert fp.id() != dataclasses.replace(fp, threads=2).id()
    assert fp.id() != dataclasses.replace(fp, torch="2.15.0").id()
    assert fp.id() != dataclasses.replace(fp, timm="0.3.2").id()


@pytest.mark.parametrize("cpu,device_fields,expected", [
    (AVX2, {}, "fp32"),
    (AVX512_BF16, {}, "amp_bf16"),
    (AVX2, {"device": "cuda", "gpu_capability": "9.0"}, "amp_bf16"),
    (AVX2, {"device": "cuda", "gpu_capability": "7.0"}, "fp32"),  # V100: no bf16 units
])
def test_auto_precision_is_bf16_only_where_the_hardware_has_it(cpu, device_fields, expected):
    fp = dataclasses.replace(machine.detect("cpu", 1, machine.cpuinfo(cpu)), **device_fields)
    precision, why = machine.choose_precision("auto", fp)
    assert precision == expected and why.startswith("auto:")


def test_forcing_bf16_without_native_support_is_kept_but_warned_with_its_cost():
    fp = machine.detect("cpu", 1, machine.cpuinfo(AVX2))
    assert machine.choose_precision("amp_bf16", fp)[0] == "amp_bf16"
    warning = machine.bf16_warning("amp_bf16", fp)
    assert warning and "14x" in warning and "4.4x" in warning and "docs/precision.md" in warning
    assert machine.bf16_warning("fp32", fp) is None
    assert machine.bf16_warning("amp_bf16", machine.detect("cpu", 1, machine.cpuinfo(AVX512_BF16))) is None


@pytest.fixture
def machine_is(monkeypatch):
    """Make `bench run` see the CPU of a /proc/cpuinfo fixture (resolve_settings and the record both ask detect)."""
    real = machine.detect

    def pretend(cpu):
        monkeypatch.setattr(machine, "detect", lambda device="cpu", threads=None, info=None:
                            real(device, threads, machine.cpuinfo(cpu)))
    return pretend


@pytest.mark.parametrize("cpu,timing", [(AVX512_BF16, "amp_bf16"), (AVX2, "fp32")])
def test_accuracy_is_fp32_on_every_machine_while_timing_follows_auto(machine_is, cpu, timing):
    """Issue #30: under `auto` a CPU with avx512_bf16 evaluated in bf16, and top-1 depended on the CPU."""
    from bench.registry import VARIANTS
    from bench.run import resolve_settings

    machine_is(cpu)
    settings = resolve_settings(VARIANTS["debug"], device="cpu", metrics="size,speed,accuracy")
    assert settings.precision == timing and settings.precision_requested == "auto"
    assert settings.accuracy_precision == "fp32"


def test_a_named_precision_applies_to_accuracy_too_and_no_accuracy_means_no_accuracy_precision(machine_is):
    from bench.registry import VARIANTS
    from bench.run import resolve_settings

    machine_is(AVX512_BF16)
    debug = VARIANTS["debug"]
    named = resolve_settings(debug, device="cpu", precision="amp_bf16", metrics="accuracy")
    assert named.accuracy_precision == "amp_bf16"
    assert resolve_settings(debug, device="cpu", precision="auto", metrics="accuracy").accuracy_precision == "fp32"
    assert resolve_settings(debug, device="cpu", metrics="size,speed").accuracy_precision is None
    assert machine.accuracy_precision("auto") == machine.ACCURACY_DEFAULT == "fp32"
