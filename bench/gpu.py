"""NVIDIA GPU telemetry through nvidia-ml-py (NVML), and the datasheet peaks MFU is measured against."""

from __future__ import annotations

import contextlib
import time
from typing import Any

# Dense (no sparsity) datasheet peaks in TFLOP/s by precision column. Matched by substring of the NVML
# device name, first match wins, so the more specific names come first. Unknown card -> no MFU.
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    ("V100", {"fp32": 15.7, "fp16": 125.0}),  # SXM2; the paper's card. No tf32/bf16 units.
    ("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    ("RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),  # fp32 accumulate
]


def peak_tflops(device_name: str, column: str) -> float | None:
    """Datasheet peak for this card and precision column, or None when the card or column is unknown, and for a MIG
    slice ("NVIDIA H100 80GB HBM3 MIG 1g.10gb"): it has a fraction of the card's units, so the card's peak would
    understate its MFU several times over; the measured peak (bench/peak.py) still applies."""
    if "MIG" in device_name.split():
        return None
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(column)
    return None


def mfu(gmacs_per_image: float, img_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: 2 FLOPs per MAC, forward only, against `peak` TFLOP/s."""
    if peak is None:
        return None
    return 2 * gmacs_per_image * 1e9 * img_per_s / (peak * 1e12)


def _nvml():
    import pynvml  # nvidia-ml-py; imported late so CPU-only runs never touch the driver

    pynvml.nvmlInit()
    return pynvml


def _handle(nv, device: str):
    """NVML handle of a torch CUDA device, matched by UUID (CUDA and NVML indices differ under
    CUDA_VISIBLE_DEVICES): "GPU-<uuid>" for a whole card, "MIG-<uuid>" for a MIG slice, whose own UUID CUDA reports.
    By index only where torch does not expose the UUID."""
    import torch

    index = torch.device(device).index or 0
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is None:
        return nv.nvmlDeviceGetHandleByIndex(index)
    try:
        return nv.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    except nv.NVMLError:  # not found: a MIG slice (a driver with the old "MIG-GPU-…/gi/ci" names finds neither)
        return nv.nvmlDeviceGetHandleByUUID(f"MIG-{uuid}")


def device_info(device: str) -> dict[str, Any]:
    """Static facts about a CUDA device: name, driver, total memory."""
    nv = _nvml()
    handle = _handle(nv, device)
    return {
        "gpu_name": nv.nvmlDeviceGetName(handle),
        "driver": nv.nvmlSystemGetDriverVersion(),
        "gpu_memory_mib": nv.nvmlDeviceGetMemoryInfo(handle).total / 2**20,
    }


def fingerprint_fields(device: str) -> dict[str, Any]:
    """The driver and the enforced power limit (W): part of a GPU's machine fingerprint (bench/machine.py)."""
    nv = _nvml()
    handle = _handle(nv, device)
    return {"gpu_driver": nv.nvmlSystemGetDriverVersion(),
            "gpu_power_limit_w": nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3}


MIN_ENERGY_S = 1.0  # a shorter timed loop gets no energy or mean power: NVML's counters move too coarsely for it


def throttle_reasons(mask: int, names: dict[str, int]) -> list[str]:
    """Decode an NVML clocks-event bit mask into the names of the bits that are set, one name per bit."""
    return sorted(name for name, bit in names.items() if bit and mask & bit == bit)


def _reason_names(nv) -> dict[str, int]:
    """Each clocks-event bit under one name: NVML's newer "ClocksEvent" names where this nvidia-ml-py has them, else
    the deprecated "ClocksThrottle" ones; of aliases for one bit (UserDefinedClocks is ApplicationsClocksSetting), the
    first in alphabetical order."""
    prefix = next((p for p in ("nvmlClocksEventReason", "nvmlClocksThrottleReason")
                   if hasattr(nv, p + "GpuIdle")), "nvmlClocksThrottleReason")
    by_bit: dict[int, str] = {}
    for key in sorted(dir(nv)):
        value = getattr(nv, key)
        if key.startswith(prefix) and key not in (prefix + "None", prefix + "All") and isinstance(value, int):
            by_bit.setdefault(value, key[len(prefix):])
    return {name: bit for bit, name in by_bit.items()}


class GpuMonitor(contextlib.AbstractContextManager):
    """Reads the energy counter before and after the timed block, and clocks, power, temperature and throttle reasons
    once while the GPU works through it (`sample`, called by bench/speed.py after the timed forwards are queued and
    before it waits for them: read after, the GPU would be idle and its clocks falling).

    Telemetry never costs a measurement: a reading NVML refuses (a VM, a MIG slice, a function an older driver lacks)
    is None. After the block, `readings` holds the telemetry keys of the result record.
    """

    def __init__(self, device: str) -> None:
        self.nv = _nvml()
        self.handle = _handle(self.nv, device)
        self.readings: dict[str, Any] = {}
        self._sampled: dict[str, Any] | None = None

    @classmethod
    def for_device(cls, device: str) -> GpuMonitor | None:
        """A monitor for a CUDA device when NVML answers; None on CPU or without NVML (no telemetry)."""
        if not device.startswith("cuda"):
            return None
        try:
            return cls(device)
        except Exception:  # no NVML library or driver: measure anyway, without telemetry
            return None

    def __enter__(self) -> GpuMonitor:
        self._sampled = None
        self._energy_mj = self._read("nvmlDeviceGetTotalEnergyConsumption")  # mJ since driver load; Volta and newer
        self._start = time.perf_counter()
        return self

    def sample(self) -> None:
        """Clocks, power, temperature and throttle reasons now (while the timed forwards run)."""
        nv = self.nv
        reasons = self._read("nvmlDeviceGetCurrentClocksEventReasons") if hasattr(
            nv, "nvmlDeviceGetCurrentClocksEventReasons") else self._read("nvmlDeviceGetCurrentClocksThrottleReasons")
        power_mw = self._read("nvmlDeviceGetPowerUsage")
        self._sampled = {
            "sm_clock_mhz": self._read("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM),
            "mem_clock_mhz": self._read("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_MEM),
            "power_w_sample": power_mw / 1e3 if power_mw is not None else None,
            "temperature_c": self._read("nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU),
            "throttle_reasons": throttle_reasons(reasons, _reason_names(nv)) if reasons is not None else None,
        }

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self._start
        energy_mj = self._read("nvmlDeviceGetTotalEnergyConsumption")
        if self._sampled is None:
            self.sample()
        joules = None
        if energy_mj is not None and self._energy_mj is not None and seconds >= MIN_ENERGY_S:
            joules = (energy_mj - self._energy_mj) / 1e3
        self.readings = {**self._sampled, "power_w_mean": joules / seconds if joules is not None else None,
                         "energy_j": joules, "timed_wall_s": seconds}

    def _read(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self.nv, function)(self.handle, *args)
        except Exception:  # NVMLError, or a function this driver does not export
            return None
