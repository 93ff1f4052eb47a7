"""NVIDIA GPU telemetry through nvidia-ml-py (NVML), and the datasheet peaks MFU is measured against."""

from __future__ import annotations

import contextlib
import time
from typing import Any

# Dense (no sparsity) datasheet peaks in TFLOP/s by precision column. Matched by substring of the NVML
# device name, first match wins, so the more specific names come first. Unknown card -> no MFU.
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    ("H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    ("V100", {"fp32": 15.7, "fp16": 125.0}),  # SXM2; the paper's card. No tf32/bf16 units.
    ("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    ("RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),  # fp32 accumulate
]


def peak_tflops(device_name: str, column: str) -> float | None:
    """Datasheet peak for this card and precision column, or None when the card or column is unknown."""
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
    CUDA_VISIBLE_DEVICES), by index where torch does not expose the UUID."""
    import torch

    index = torch.device(device).index or 0
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        return nv.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    return nv.nvmlDeviceGetHandleByIndex(index)


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


def throttle_reasons(mask: int, names: dict[str, int]) -> list[str]:
    """Decode an NVML clocks-event bit mask into the names of the bits that are set."""
    return sorted(name for name, bit in names.items() if bit and mask & bit == bit)


def _reason_names(nv) -> dict[str, int]:
    prefix = "nvmlClocksThrottleReason"
    return {k[len(prefix):]: getattr(nv, k) for k in dir(nv)
            if k.startswith(prefix) and k not in (prefix + "None", prefix + "All")
            and isinstance(getattr(nv, k), int)}


class GpuMonitor(contextlib.AbstractContextManager):
    """Reads the energy counter before and after the timed block, and clocks/power/temperature at its end.

    After the block, `readings` holds the telemetry keys of the result record.
    """

    def __init__(self, device: str) -> None:
        self.nv = _nvml()
        self.handle = _handle(self.nv, device)
        self.readings: dict[str, Any] = {}

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
        self._energy_mj = self._energy()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        nv, h = self.nv, self.handle
        seconds = time.perf_counter() - self._start
        energy_mj = self._energy()
        joules = (energy_mj - self._energy_mj) / 1e3 if energy_mj is not None and self._energy_mj is not None else None
        self.readings = {
            "sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "power_w_sample": nv.nvmlDeviceGetPowerUsage(h) / 1e3,
            "power_w_mean": joules / seconds if joules is not None and seconds > 0 else None,
            "energy_j": joules,
            "temperature_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
            "throttle_reasons": throttle_reasons(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h), _reason_names(nv)),
            "timed_wall_s": seconds,
        }

    def _energy(self) -> int | None:
        try:  # millijoules since driver load; Volta and newer
            return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nv.NVMLError:
            return None
