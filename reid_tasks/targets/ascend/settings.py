"""The Ascend target's config node (VALIDATION.ASCEND) and the run settings a trigger may choose in it.

Every key is a deployment setting except the two the target declares as run settings: ``soc_version``
(VALIDATION.ASCEND.SOC_VERSION, one of :data:`SOC_VERSIONS`) and ``device_ids`` (VALIDATION.ASCEND.DEVICE_IDS,
distinct ids among the deployment's). ``reid_tasks.run_settings`` joins them to the trigger form and the
allow-list; ``reid_tasks.settings.check_run_values`` calls :func:`check_trigger_settings`.
"""

from __future__ import annotations

from typing import Any

from reid_tasks.targets.records import RunSetting

#: ATC --soc_version values a trigger may choose (VALIDATION.ASCEND.SOC_VERSION)
SOC_VERSIONS = ("Ascend310", "Ascend310P1", "Ascend310P3", "Ascend310B1", "Ascend910", "Ascend910B")

#: VALIDATION.ASCEND defaults
CONFIG_DEFAULTS: dict[str, Any] = {
    "INSTALL_PATH": "/usr/local/Ascend/ascend-toolkit/latest",
    "SOC_VERSION": "Ascend310",
    "PRECISION_MODE": "",  # empty: ATC's own default (force_fp16)
    "AUTO_TUNE": False,  # --auto_tune_mode="RL,GA"
    "RUNNER": "ais_bench",  # ais_bench | benchmark
    "BENCHMARK_BIN": "benchmark.x86_64",
    "DEVICE_IDS": [0],  # ids a run may use; without HOSTS: the devices of every Ascend worker
    # The fleet: "host: id[,id...]" per host (a device is host + id); empty: each worker has DEVICE_IDS.
    "HOSTS": [],
    "LEASE_DIR": "",  # per-device lock files, on local disk; empty: <tmp>/reid-validate-leases
    "LEASE_TIMEOUT_S": 1800,  # a benchmark waits this long for a free device of its host
    "CHIPS_PER_CARD": 4,
    "BUSY_TIMEOUT_S": 600,
    "BUSY_POLL_S": 5.0,
}

#: the run settings this target declares (one trigger form param each)
TRIGGER_SETTINGS: tuple[RunSetting, ...] = (
    RunSetting(
        "soc_version", "SOC_VERSION", "Ascend SoC version", f"ATC --soc_version, one of {', '.join(SOC_VERSIONS)}"
    ),
    RunSetting(
        "device_ids",
        "DEVICE_IDS",
        "Ascend device ids",
        "Ascend devices, among the deployment's VALIDATION.ASCEND.DEVICE_IDS",
    ),
)


def trigger_fields(cfg: Any) -> dict[str, dict[str, Any]]:
    """The SoC (one of SOC_VERSIONS) and the devices (distinct, among the deployment's DEVICE_IDS)."""
    ascend = cfg.VALIDATION.ASCEND
    devices = [int(d) for d in ascend.DEVICE_IDS]
    return {
        "soc_version": {
            "default": ascend.SOC_VERSION,
            "type": "string",
            "enum": list(SOC_VERSIONS),
            "description": "ATC --soc_version (Ascend targets only).",
        },
        "device_ids": {
            "default": list(devices),
            "type": "array",
            "items": {"type": "integer", "enum": devices},
            "uniqueItems": True,
            "minItems": 1,
            "description": (
                f"Devices the Ascend benchmark may use (the first one runs it), among the deployment's {devices}."
            ),
        },
    }


def check_trigger_settings(cfg: Any, deployment: Any) -> list[str]:
    """A known SoC; distinct device ids, at least one, all among the deployment's."""
    problems = []
    soc = cfg.VALIDATION.ASCEND.SOC_VERSION
    if soc not in SOC_VERSIONS:
        problems.append(f"VALIDATION.ASCEND.SOC_VERSION {soc!r} is not one of {list(SOC_VERSIONS)}")
    allowed = [int(d) for d in deployment.VALIDATION.ASCEND.DEVICE_IDS]
    devices = [int(d) for d in cfg.VALIDATION.ASCEND.DEVICE_IDS]
    if not devices or any(d not in allowed for d in devices) or len(set(devices)) != len(devices):
        problems.append(f"VALIDATION.ASCEND.DEVICE_IDS {devices} must be distinct ids among the deployment's {allowed}")
    return problems
