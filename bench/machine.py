"""The machine fingerprint: what decides which kernels run and how fast, stored in every record and baseline.

A CPU's marketing name does not identify it: two 2-core "AMD EPYC" machines of this project differed in AVX-512
and native bf16, and a speed baseline made on one reported an 11.5 % "regression" on the other.
So a fingerprint names the vendor, family/model/stepping, the ISA features that select kernels, cores and the
threads the measurement used, torch/timm versions and torch's CPU kernel level; on a GPU the name, compute
capability, driver, CUDA and power limit. A speed baseline applies only where every one of those matches.

Reading the fingerprint needs torch only for the thread count, the CPU capability and the GPU; /proc/cpuinfo
is read directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import platform
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.errors import plural

# /proc/cpuinfo flags that select different kernels in oneDNN/MKL/ATen (and so change speed and instruction
# counts): the vector width, FMA, VNNI and the bf16/AMX units.
KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_bf16", "amx_int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # without either, CPU bf16 is converted to fp32 and back per op


@dataclass(frozen=True)
class Fingerprint:
    """Everything that must match for two speed measurements to be compared."""

    device: str  # "cpu" or "cuda"
    cpu_vendor: str
    cpu_family: str
    cpu_model: str
    cpu_stepping: str
    cpu_name: str
    isa: tuple[str, ...]  # the KERNEL_FLAGS present, in KERNEL_FLAGS order
    cores: int  # CPUs this process may run on
    threads: int  # torch intra-op threads of the measurement
    torch: str
    timm: str | None
    cpu_capability: str | None  # torch.backends.cpu.get_cpu_capability(): the ATen kernel level in use
    gpu_name: str | None = None
    gpu_capability: str | None = None
    gpu_driver: str | None = None
    cuda: str | None = None
    gpu_power_limit_w: float | None = None

    @property
    def native_bf16(self) -> bool:
        """bf16 runs on dedicated units here (any CUDA GPU of compute capability >= 8.0, or avx512_bf16/AMX)."""
        if self.device == "cuda":
            return self.gpu_capability is not None and float(self.gpu_capability) >= 8.0
        return any(flag in self.isa for flag in NATIVE_BF16_FLAGS)

    def label(self) -> str:
        """A name for tables that tells two machines apart: the CPU's name with the widest vector unit and bf16 if
        native, then its family, model, stepping and the cores we may use ("AMD EPYC AVX-512 bf16 [f25m17s1, 2
        cores]"); a GPU's name with its compute capability, driver and power limit. The CPU's name alone is the same
        on all this project's VMs, and its vector units alone put a 64-core machine's runs in a 2-core machine's
        column (a hostile pass, 2026-12-06)."""
        if self.device == "cuda":
            power = "" if self.gpu_power_limit_w is None else f", {self.gpu_power_limit_w:g} W"
            return f"{self.gpu_name} [sm{self.gpu_capability}, driver {self.gpu_driver}{power}]"
        width = "AVX-512" if "avx512f" in self.isa else "AVX2" if "avx2" in self.isa else "AVX" if "avx" in self.isa \
            else "no AVX"
        return (f"{self.cpu_name} {width}" + (" bf16" if self.native_bf16 else "")
                + f" [f{self.cpu_family}m{self.cpu_model}s{self.cpu_stepping}, {plural(self.cores, 'core')}]")

    def id(self) -> str:
        """A readable, file-name-safe name with a hash of every field: equal ids mean equal fingerprints."""
        digest = hashlib.sha256(repr(dataclasses.astuple(self)).encode()).hexdigest()[:8]
        if self.device == "cuda":
            hw = f"{self.gpu_name}-sm{self.gpu_capability}"
        else:
            vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(self.cpu_vendor, self.cpu_vendor)
            widest = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx") if f in self.isa), "noavx")
            hw = f"{vendor}-f{self.cpu_family}m{self.cpu_model}s{self.cpu_stepping}-{widest}-{self.cores}c"
        name = f"{self.device}-{hw}-{self.threads}t-torch{self.torch.split('+')[0]}-{digest}"
        return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()

    def differences(self, other: Fingerprint) -> list[str]:
        """'field: ours -> theirs' for every field that differs (empty when the fingerprints match)."""
        out = []
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                if f.name == "isa":
                    gone, new = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
                    out.append("isa: " + ", ".join([f"-{x}" for x in gone] + [f"+{x}" for x in new]))
                else:
                    out.append(f"{f.name}: {mine} -> {theirs}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"isa": list(self.isa), "id": self.id()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values | {"isa": tuple(values.get("isa", ()))})


def label(fingerprint: dict[str, Any] | None, device_name: str) -> str:
    """The machine of a record (`env.fingerprint`, `env.device_name`) for a table cell; records from before
    fingerprints say so, since their vector units are unknown."""
    if not fingerprint:
        return f"{device_name} [ISA not recorded]"
    try:
        return Fingerprint.from_dict(fingerprint).label()
    except TypeError:  # fields missing: a record written by hand or cut short
        return f"{device_name} [fingerprint incomplete]"


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none, e.g. macOS)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def detect(device: str = "cpu", threads: int | None = None, info: dict[str, str] | None = None) -> Fingerprint:
    """This machine's fingerprint for a measurement on `device` with `threads` torch threads (default: torch's)."""
    import torch

    info = cpuinfo() if info is None else info
    flags = set(info.get("flags", "").split())
    gpu: dict[str, Any] = {}
    if device.startswith("cuda"):
        gpu = _gpu_fields(device)
    return Fingerprint(
        device=device.split(":")[0], cpu_vendor=info.get("vendor_id", platform.machine()),
        cpu_family=info.get("cpu family", ""), cpu_model=info.get("model", ""), cpu_stepping=info.get("stepping", ""),
        cpu_name=info.get("model name", platform.processor() or platform.machine()),
        isa=tuple(f for f in KERNEL_FLAGS if f in flags), cores=len(os.sched_getaffinity(0)),
        threads=threads or torch.get_num_threads(), torch=torch.__version__, timm=_version("timm"),
        cpu_capability=_cpu_capability(), **gpu)


def _gpu_fields(device: str) -> dict[str, Any]:
    import torch

    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    fields: dict[str, Any] = {"gpu_name": torch.cuda.get_device_name(index), "gpu_capability": f"{major}.{minor}",
                              "cuda": torch.version.cuda}
    try:  # driver and power limit from NVML; without it they stay empty and the fingerprint says so
        from bench import gpu

        fields.update(gpu.fingerprint_fields(device))
    except Exception:  # noqa: BLE001 - no NVML library or driver
        pass
    return fields


def _cpu_capability() -> str | None:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.0
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def choose_precision(requested: str, fingerprint: Fingerprint) -> tuple[str, str]:
    """Resolve `auto` (or check a forced bf16) against the hardware: (precision, why), both for the record.

    `auto` is amp_bf16 where bf16 has its own units (a CUDA GPU of compute capability >= 8.0, a CPU with
    avx512_bf16 or AMX) and fp32 elsewhere: on a CPU without them every bf16 op converts to fp32 and back, which
    made a mini training run 14x slower here (docs/precision.md).
    """
    units = "avx512_bf16/amx_bf16" if fingerprint.device == "cpu" else "compute capability >= 8.0"
    if requested == "auto":
        if fingerprint.native_bf16:
            return "amp_bf16", f"auto: native bf16 on this {fingerprint.device} ({units})"
        return "fp32", f"auto: no native bf16 on this {fingerprint.device} (needs {units}), so fp32"
    if "bf16" in requested and not fingerprint.native_bf16:
        return requested, f"forced: {requested} without native bf16 ({units} missing), emulated and slow"
    return requested, "as asked"


# Accuracy does not follow `auto`: a top-1 compared with the paper's, or gated in CI, must not depend on which CPU
# ran it. Under `auto`, a CPU with avx512_bf16/AMX evaluated in bf16, and a fitted 10-class DeiT-Ti head scored
# 94.33 % top-1 on 300 CIFAR-10 test images there against 97.00 % in fp32, timm validate.py's number.
ACCURACY_DEFAULT = "fp32"


def accuracy_precision(requested: str) -> str:
    """The precision accuracy is evaluated in: fp32 on every machine unless a precision was named; `auto` resolves
    by the hardware for timing only (choose_precision)."""
    return ACCURACY_DEFAULT if requested == "auto" else requested


def bf16_warning(precision: str, fingerprint: Fingerprint) -> str | None:
    """A warning when bf16 was forced on a device without native bf16, with the cost measured on such a CPU."""
    if "bf16" not in precision or fingerprint.native_bf16:
        return None
    return (f"warning: {precision} on {fingerprint.cpu_name} without avx512_bf16/amx_bf16 is emulated: on a 2-core "
            "AVX2 AMD EPYC, mini_none trained 14x slower (19.7 against 280 img/s) and deit_ti inferred 4.4x slower "
            "than in fp32 (docs/precision.md). Use the default (auto) or fp32 unless you are measuring bf16 itself.")


# ---- what this machine can run: memory for a batch's input, threads per core ----

MAX_THREADS_PER_CORE = 8


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_input_fits(batch_size: int, img_size: int) -> None:
    """A batch whose input tensor alone exceeds the memory available now cannot run: say so before building anything
    (--batch-size 2000000 was killed by the kernel's OOM killer, rc 137, nothing said). Larger-than-memory
    activations of smaller batches fail at their first forward, which `bench run` reports (cli: out of memory)."""
    need = batch_size * 3 * img_size * img_size * 4  # fp32 input, before the model's activations
    available = available_memory()
    if available is not None and need > available:
        raise ValueError(f"--batch-size {batch_size} at {img_size} px needs {need / 2**30:,.1f} GiB for its input "
                         f"alone; this machine has {available / 2**30:,.1f} GiB available: give a smaller batch")


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None off Linux."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_threads(threads: int) -> None:
    """--threads 100000 ended in libgomp's 'Out of memory allocating 800008 bytes', no record and no reason."""
    if threads > MAX_THREADS_PER_CORE * cores():
        raise ValueError(f"--threads {threads} is more than {MAX_THREADS_PER_CORE} per core of the {cores()} cores "
                         f"this process may run on; give at most {MAX_THREADS_PER_CORE * cores()}")


def threads_warning(threads: int) -> str | None:
    """A line for more intra-op threads than this process may run on (`--threads 1000` on 2 cores
    was recorded without a word). torch allows it, so it is said and noted in the record, not refused."""
    n = cores()
    if threads <= n:
        return None
    return (f"--threads {threads} is more than the {n} cores this process may run on: they take turns on them, "
            f"so CPU speed figures come out lower than with {n}")
