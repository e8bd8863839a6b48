"""What a measurement ran on: the benchmark worker's hardware and environment (cheap, nothing heavy imported).

``collect_hardware`` is called ON THE BENCHMARK WORKER (``steps.benchmark_artifact``), so a perf row names
the machine that measured it, not the one that recorded the results. It is part of a perf series' identity:
host, CPU model and the ISA features that change which kernels run, the GPU (pytorch target on CUDA), or
what an accelerator target adds (Ascend SoC, driver, chip count). ``collect_environment`` is the run-level
environment (OS, Python, package versions) stored in ``validation_runs.environment``.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from .utils import json_digest

#: CPU flags (as /proc/cpuinfo names them) that change which kernels the runtimes pick.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
#: Any of these means Intel AMX (reported as the one feature "amx").
AMX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8")
_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy", "reid-validate")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """(model name, flags) of the first CPU listed; (None, empty) where the file cannot be read."""
    model, flags = None, set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                if model is not None and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or None, flags


def isa_features(flags: set[str]) -> list[str]:
    """The kernel-relevant ISA features among a CPU's flags, in a fixed order."""
    found = [f for f in ISA_FLAGS if f in flags]
    if any(f in flags for f in AMX_FLAGS):
        found.append("amx")
    return found


def _gpu_name(device: str) -> str | None:
    import torch  # only for a CUDA measurement, where the benchmark has imported it already

    if not torch.cuda.is_available():
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return str(torch.cuda.get_device_name(index))


def collect_hardware(target: str, device: str | int | None = None, *, cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The hardware of this machine as it matters to ``target``'s figures.

    ``device``: what the target ran on (``"cuda:0"``, ``"cpu"``, an accelerator id). Keys: host, machine,
    cpu, isa (list), cpu_count; ``gpu`` for the pytorch target on CUDA. Accelerator targets add their own
    (Ascend: SoC, driver, chip count) to the perf dict's ``extra["hardware"]``, merged by the caller.
    """
    model, flags = _cpuinfo(cpuinfo)
    hw: dict[str, Any] = {
        "host": socket.gethostname(),
        "machine": platform.machine(),
        "cpu": model,
        "isa": isa_features(flags),
        "cpu_count": os.cpu_count(),
    }
    dev = "" if device is None else str(device)
    if target.startswith("pytorch") and dev.startswith("cuda"):
        hw["gpu"] = _gpu_name(dev)
    return {k: v for k, v in hw.items() if v is not None}


def hardware_key(hardware: Mapping[str, Any] | None) -> str | None:
    """A stable digest of a hardware dict (sorted JSON), None for no hardware recorded."""
    if not hardware:
        return None
    return json_digest(dict(hardware))


def collect_environment(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Host, OS, Python and installed package versions (read from metadata, nothing imported).

    ``extra``: what targets add (device kind and id, CANN / ATC / driver versions); it wins over the
    collected values on equal keys. Missing packages are left out.
    """
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": _cpuinfo()[0],
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env.update(dict(extra or {}))
    return {k: v for k, v in env.items() if v is not None}


def measured_on(target: str, perf: Mapping[str, Any]) -> dict[str, Any]:
    """``perf`` (a PerfRecord dict) with what it was measured on; call it ON THE BENCHMARK WORKER.

    Adds ``hardware`` (this machine, plus what the target put in ``extra["hardware"]``, e.g. Ascend SoC,
    driver, chips), ``environment`` (this worker's packages) and ``simulated`` (numbers from test doubles).
    """
    extra = perf.get("extra") or {}
    dev = perf.get("device_kind") if perf.get("device_id") is None else f"{perf['device_kind']}:{perf['device_id']}"
    hardware = {**collect_hardware(target, device=dev), **(extra.get("hardware") or {})}
    return {**perf, "hardware": hardware, "environment": collect_environment(), "simulated": is_simulated(perf)}


def is_simulated(perf: Mapping[str, Any]) -> bool:
    """Whether a perf dict's numbers come from test doubles (marked ``simulated``, or ``extra["double"]`` by the
    target that ran them)."""
    return bool(perf.get("simulated") or (perf.get("extra") or {}).get("double"))
