"""The records a target produces: ``Artifact`` (a converted model), ``PerfRecord`` (its measured speed) and
``BuildOutput`` (what a target's build hook hands to the artifact builder), ``Scheduling`` and ``RunSetting`` (what a
target declares to the DAG), plus the shared vocabulary.

Plain frozen dataclasses with ``to_dict`` / ``from_dict`` so they travel through XCom and JSON files; nothing
here imports numpy or a runtime.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid_tasks.errors import TargetError

#: The one precision vocabulary every target uses.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
#: Model input / output names and the feature width (the seed's export).
INPUT_NAME = "image"
OUTPUT_NAME = "class"
FEATURE_DIM = 2048
#: Files every artifact directory holds beside its model files.
MANIFEST_NAME = "artifact.json"
BUILD_LOG_NAME = "build.log"


def _from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown = sorted(set(d) - names)
    missing = sorted(required - set(d))
    if unknown or missing:
        raise TargetError(f"{cls.__name__}.from_dict: unknown keys {unknown}, missing keys {missing}")
    return cls(**{k: d[k] for k in names if k in d})


@dataclass(frozen=True)
class Artifact:
    """One converted model: everything needed to run it again and to say how it was built."""

    target: str
    path: str  # main file (model.onnx, model.xml, .om, checkpoint manifest)
    sha256: str  # of ``path``; further files are listed with their hashes in extra["files"]
    batch_size: int | None  # None: dynamic batch (PyTorch)
    precision: str
    build_seconds: float
    command: str  # exact command line or API call
    tool_versions: dict[str, str] = field(default_factory=dict)
    build_log: str = ""  # path of the build log kept on disk
    calibration: dict[str, Any] | None = None  # images used for int8 calibration
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Artifact:
        return _from_dict(cls, d)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Artifact:
        """Read an artifact from its manifest JSON (or the artifact directory holding it)."""
        p = Path(path)
        if p.is_dir():
            p = p / MANIFEST_NAME
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TargetError(f"cannot read artifact manifest {p}: {exc}") from exc
        return cls.from_dict(data.get("artifact", data))

    @property
    def directory(self) -> Path:
        return Path(self.path).parent


@dataclass(frozen=True)
class PerfRecord:
    """Performance of one artifact on one device. Throughputs in samples/s, latencies in ms per batch."""

    target: str
    samples: int  # samples per timed pass
    batch_size: int
    warmup: int  # warm-up batches (not timed)
    repeats: int  # timed passes
    throughput_best: float
    throughput_median: float
    latency_ms_mean: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    e2e_throughput: float | None  # including data loading from the cache; None in pure mode
    device_kind: str
    device_id: int | str | None
    tool_versions: dict[str, str] = field(default_factory=dict)
    mode: str = "real"  # real | pure
    card_throughput: float | None = None  # Ascend: interface throughput x chips per card
    precision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PerfRecord:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class BuildOutput:
    """What a target's ``_build`` returns: files are relative to the build directory."""

    main_file: str
    command: str
    log: str = ""
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: The Airflow pool CPU benchmarks share (so two timings on one host do not overlap).
CPU_BENCH_POOL = "cpu_bench"


@dataclass(frozen=True)
class Scheduling:
    """How the DAG schedules a target's tasks, declared by the target so the DAG names none.

    ``queue``: the Celery queue its convert and benchmark tasks run on (workers that have the tools and devices);
    ``pool``: the Airflow pool a benchmark takes one slot of, so a device runs one benchmark at a time;
    ``pool_slots``: the size that pool should have (one per device), None where the deployment decides.
    """

    queue: str = "default"
    pool: str = CPU_BENCH_POOL
    pool_slots: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunSetting:
    """A setting of a target that a trigger may choose, declared by the target so neither the DAG nor the trust
    boundary names it: the trigger param ``param`` (a field of the form) sets the config key ``key`` of the target's
    node (``VALIDATION.<config_node>.<key>``), which joins the run-settable allow-list described by ``summary``.
    The form field's default and JSON schema come from ``Target.trigger_fields``, the checks of a run's value from
    ``Target.check_trigger_settings``.
    """

    param: str  # e.g. "soc_version"
    key: str  # relative to the target's config node, e.g. "SOC_VERSION"
    title: str  # the form field's title
    summary: str  # what the allow-list says of the key

    def config_key(self, node: str) -> str:
        """The full config key under the target's node ``node``."""
        return f"VALIDATION.{node}.{self.key}"
