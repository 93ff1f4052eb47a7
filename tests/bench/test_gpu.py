import pytest

from bench import gpu
from bench.gpu import mfu, peak_tflops, throttle_reasons


def test_peaks_are_looked_up_by_card_name_and_precision_column():
    assert peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("Tesla V100-SXM2-16GB", "fp32") == 15.7
    assert peak_tflops("NVIDIA H100 NVL", "bf16") == 835.5  # not the SXM card's figure


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


class _FakeNvml:
    """What nvidia-ml-py answers on a card whose driver refuses some readings (a VM, a MIG slice)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 1, 0
    nvmlClocksEventReasonGpuIdle, nvmlClocksEventReasonSwPowerCap = 0x1, 0x4
    nvmlClocksEventReasonApplicationsClocksSetting = nvmlClocksEventReasonUserDefinedClocks = 0x2
    nvmlClocksEventReasonNone, nvmlClocksEventReasonAll = 0, 0xFF

    def __init__(self, energy_mj):
        self.energy = iter(energy_mj)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return next(self.energy)

    def nvmlDeviceGetClockInfo(self, handle, which):
        return 1980 if which == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPowerUsage(self, handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    def nvmlDeviceGetTemperature(self, handle, which):
        return 61

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 0x6


def _monitor(nv):
    monitor = object.__new__(gpu.GpuMonitor)
    monitor.nv, monitor.handle, monitor.readings = nv, None, {}
    return monitor


def test_a_reading_the_driver_refuses_is_none_and_the_measurement_survives(monkeypatch):
    times = iter([0.0, 2.0])
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: next(times))
    monitor = _monitor(_FakeNvml([1_000, 601_000]))
    with monitor:
        monitor.sample()  # bench/speed.py samples while the timed forwards run
    r = monitor.readings
    assert r["power_w_sample"] is None and r["sm_clock_mhz"] == 1980 and r["temperature_c"] == 61
    assert r["energy_j"] == 600.0 and r["power_w_mean"] == 300.0
    assert r["throttle_reasons"] == ["ApplicationsClocksSetting", "SwPowerCap"]  # one name for the aliased bit


def test_a_timed_loop_under_a_second_gets_no_energy_rather_than_a_coarse_one(monkeypatch):
    times = iter([0.0, 0.3])
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: next(times))
    monitor = _monitor(_FakeNvml([1_000, 1_090]))
    with monitor:
        pass  # not sampled during the block: read at its end
    assert monitor.readings["energy_j"] is None and monitor.readings["power_w_mean"] is None
    assert monitor.readings["sm_clock_mhz"] == 1980


def test_a_mig_slice_gets_no_datasheet_peak_of_the_whole_card():
    assert peak_tflops("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16") is None
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4


class _UuidNvml:
    """NVML on a MIG slice: the card's "GPU-" UUID form does not name it, its "MIG-" form does."""

    class NVMLError(Exception):
        pass

    def __init__(self, known):
        self.known, self.asked = known, []

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.asked.append(uuid)
        if uuid not in self.known:
            raise self.NVMLError("Not Found")
        return f"handle of {uuid}"


@pytest.mark.parametrize("known, expected", [({"GPU-1234"}, "handle of GPU-1234"),
                                             ({"MIG-1234"}, "handle of MIG-1234")])
def test_the_nvml_handle_is_found_by_uuid_for_a_card_and_for_a_mig_slice(monkeypatch, known, expected):
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(uuid="1234"))
    assert gpu._handle(_UuidNvml(known), "cuda:0") == expected


def test_a_uuid_nvml_does_not_know_is_an_error_not_another_card(monkeypatch):
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(uuid="1234"))
    nv = _UuidNvml(set())
    with pytest.raises(nv.NVMLError):  # GpuMonitor.for_device then measures without telemetry
        gpu._handle(nv, "cuda:1")
    assert nv.asked == ["GPU-1234", "MIG-1234"]
