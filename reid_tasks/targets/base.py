"""The inference-target interface: ``Target`` and the ``Session`` an in-process target opens.

A target converts the exported ONNX model into an artifact for one (batch size, precision) and runs it::

    target = get_target("onnxruntime")
    art = target.convert("ReID.onnx", 16, "fp32", "artifacts/")        # -> Artifact (idempotent)
    feats, perf = target.run(art, cache, "out/")                         # features [N, 2048] + PerfRecord
    pure = target.benchmark_pure(art, batches=20, repeats=3)             # random/zero input, no file I/O

Subclasses that run in-process implement ``_build`` (called by ``convert`` inside a temporary directory that
is renamed into place, see ``build.py``) and ``_open`` (returns a ``Session`` whose ``infer`` maps one batch to
features); the timing loop lives in ``timing.py`` so every target measures the same way. Targets driven by
external tools (Ascend) override ``run`` / ``benchmark_pure`` and reuse ``perf_record``. The records are in
``records.py``.

Nothing heavy is imported here, numpy included: this module is on the DAG's parse path, so the numpy-backed
timing loop is imported where a benchmark runs, and runtimes inside the target's methods.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from reid_tasks.errors import BenchmarkError, ConversionError, PrecisionNotSupported, TargetUnavailable
from reid_tasks.targets.build import build_artifact, calibration_key
from reid_tasks.targets.records import (
    CPU_BENCH_POOL,
    PRECISIONS,
    Artifact,
    BuildOutput,
    PerfRecord,
    RunSetting,
    Scheduling,
)
from reid_tasks.utils import sha256_file

if TYPE_CHECKING:
    import numpy as np

    from reid_tasks.targets.timing import BatchSource, Timing


class Session(abc.ABC):
    """A loaded artifact: ``infer`` maps one [B,3,H,W] float32 batch to [B,2048] float32 features."""

    #: static batch size of the artifact, or None when any batch size is accepted
    static_batch: int | None = None
    device_kind: str = "cpu"
    device_id: int | str | None = 0
    #: anything worth recording about how it runs (providers, threads, hints)
    info: dict[str, Any]

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the runtime's resources."""


# --------------------------------------------------------------------------------------------- target
class Target(abc.ABC):
    """One inference target. Subclasses set ``name``/``queue`` and implement the hooks below.

    A target that needs settings of its own declares them as a config node ``VALIDATION.<config_node>``:
    ``config_defaults`` (key -> default) and ``config_choices`` (key -> allowed values), merged into the config
    tree by ``reid_tasks.config``. How its tasks are scheduled is ``scheduling()``. Keys of that node a trigger may
    choose are declared in ``trigger_settings`` (one form param each), with their form fields (``trigger_fields``)
    and the checks of a run's values (``check_trigger_settings``); every other key stays a deployment setting.
    """

    name: ClassVar[str] = ""
    queue: ClassVar[str] = "default"
    #: every precision the target knows; ``supported_precisions`` narrows to this machine
    all_precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: the target's own config node under VALIDATION (None: it has no settings of its own)
    config_node: ClassVar[str | None] = None
    config_defaults: ClassVar[dict[str, Any]] = {}
    config_choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: keys of ``config_node`` a trigger may set, one form param each (none: the node is deployment-only)
    trigger_settings: ClassVar[tuple[RunSetting, ...]] = ()

    def __init__(self, cfg: Any | None = None) -> None:
        self._cfg = cfg

    # ---- run settings (class level: read while the DAG is parsed and at the trust boundary)
    @classmethod
    def trigger_fields(cls, cfg: Any) -> dict[str, dict[str, Any]]:
        """The form field of each of ``trigger_settings`` from the deployment configuration ``cfg``: {param:
        {"default": ..., "description": ..., JSON-schema keywords}} (the title comes from the declaration)."""
        if cls.trigger_settings:
            raise NotImplementedError(f"{cls.__name__} declares trigger_settings but not their trigger_fields")
        return {}

    @classmethod
    def check_trigger_settings(cls, cfg: Any, deployment: Any) -> list[str]:
        """What is wrong with a run's values (``cfg``) of this target's run settings, given the ``deployment``
        configuration, one message per problem naming the key; [] when they are fine."""
        return []

    # ---- description
    @property
    def cfg(self) -> Any:
        if self._cfg is None:
            from reid_tasks.config import load_config

            self._cfg = load_config()
        return self._cfg

    @property
    def device_kind(self) -> str:
        return "cpu"

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.supported_precisions()

    def supported_precisions(self) -> tuple[str, ...]:
        """Precisions this target can build on this machine (subset of PRECISIONS)."""
        return self.all_precisions

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, description) when the runtime/device is usable here, else (False, why not)."""

    def scheduling(self) -> Scheduling:
        """Queue and benchmark pool of this target's tasks: by default its queue and the shared CPU pool."""
        return Scheduling(queue=self.queue, pool=CPU_BENCH_POOL)

    def tool_versions(self) -> dict[str, str]:
        """Versions of the tools that build/run artifacts (recorded in every Artifact/PerfRecord)."""
        return {}

    def describe(self) -> dict[str, Any]:
        ok, reason = self.available()
        return {
            "name": self.name,
            "queue": self.queue,
            "pool": self.scheduling().pool,
            "device_kind": self.device_kind,
            "available": ok,
            "reason": reason,
            "precisions": list(self.supported_precisions()) if ok else [],
            "all_precisions": list(self.all_precisions),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} queue={self.queue!r}>"

    # ---- scheduling
    def fleet(self) -> Any:
        """The devices this target's benchmarks lease (a reid_tasks.fleet.Fleet); None: no per-device lease."""
        return None

    def device_state(self, device_id: int) -> tuple[bool, str]:
        """(idle, why) of one device of the fleet, checked when a lease is taken."""
        return True, f"device {device_id}: no idleness check for {self.name}"

    def run_options(self, *, device_id: int | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        """Keyword arguments of ``run`` / ``benchmark_pure`` for a leased device and a work-derived timeout;
        in-process targets take neither (the task's execution timeout bounds them)."""
        return {}

    # ---- checks
    def check_precision(self, precision: str) -> None:
        """Raise PrecisionNotSupported naming the target, the precision and what it supports."""
        if precision not in PRECISIONS:
            raise PrecisionNotSupported(f"unknown precision {precision!r}; the vocabulary is {list(PRECISIONS)}")
        supported = self.supported_precisions()
        if precision not in supported:
            raise PrecisionNotSupported(
                f"target {self.name!r} cannot build precision {precision!r} on this machine; "
                f"supported: {list(supported)}"
            )

    def missing_for(self, stage: str) -> list[str] | None:
        """What this host lacks for one stage ('convert' | 'run'); None: the stage needs all ``available``
        checks (targets whose conversion needs less than a run, e.g. Ascend's ATC, override this)."""
        return None

    def require_available(self, stage: str = "run") -> None:
        missing = self.missing_for(stage)
        ok, reason = self.available() if missing is None else (not missing, "; ".join(missing))
        if not ok:
            raise TargetUnavailable(f"target {self.name!r} is unavailable: {reason}")

    # ---- conversion
    def artifact_name(self, batch_size: int, precision: str) -> str:
        return f"{self.name}_bs{batch_size}_{precision}"

    def settings(self, precision: str) -> dict[str, Any]:
        """Conversion settings that change the artifact (part of the idempotency key)."""
        return {}

    def convert(
        self,
        onnx_path: str | os.PathLike[str],
        batch_size: int,
        precision: str,
        out_dir: str | os.PathLike[str],
        *,
        calibration: Any = None,
    ) -> Artifact:
        """Build (or reuse) the artifact for (batch_size, precision) under ``out_dir``."""
        self.require_available("convert")
        self.check_precision(precision)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConversionError(f"{self.name}: batch size must be a positive integer, got {batch_size!r}")
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ConversionError(f"{self.name}: ONNX model not found: {onnx_path}")
        key = {
            "target": self.name,
            "onnx_sha256": sha256_file(onnx_path),
            "batch_size": batch_size,
            "precision": precision,
            "settings": self.settings(precision),
            "tool_versions": self.tool_versions(),
            "calibration": calibration_key(calibration) if precision == "int8" else None,
        }

        def build(tmp: Path) -> BuildOutput:
            return self._build(onnx_path, batch_size, precision, tmp, calibration=calibration)

        return build_artifact(
            target=self.name,
            name=self.artifact_name(batch_size, precision),
            out_dir=Path(out_dir),
            key=key,
            batch_size=batch_size,
            precision=precision,
            tool_versions=self.tool_versions(),
            build=build,
        )

    def _build(
        self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, *, calibration: Any = None
    ) -> BuildOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement _build or override convert")

    # ---- running
    def _open(self, artifact: Artifact) -> Session:
        raise NotImplementedError(f"{type(self).__name__} must implement _open or override run")

    def check_artifact(self, artifact: Artifact) -> None:
        if artifact.target != self.name:
            raise BenchmarkError(f"artifact {artifact.path} was built for {artifact.target!r}, not {self.name!r}")
        if not Path(artifact.path).exists():
            raise BenchmarkError(f"{self.name}: artifact file missing: {artifact.path}")

    def run(
        self,
        artifact: Artifact,
        inputs: np.ndarray | BatchSource,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        warmup: int | None = None,
        repeats: int | None = None,
    ) -> tuple[np.ndarray, PerfRecord]:
        """Features for every input in order (float32 [N, 2048]) and the performance of ``repeats`` passes.

        Warm-up batches are not timed. Each timed pass goes over all inputs; throughput per pass is
        samples / inference time, end-to-end throughput also counts loading the batch from the cache.
        A short last batch is padded for static-batch artifacts and the padded rows are dropped.
        ``out_dir``, when given, receives features.npy and perf.json.
        """
        from reid_tasks.targets import timing  # numpy: only where a benchmark runs

        self.require_available()
        self.check_artifact(artifact)
        warmup, repeats = timing.run_settings(self.cfg.VALIDATION.BENCH, warmup, repeats)
        source = timing.as_source(inputs)
        n = len(source)
        if n == 0:
            raise BenchmarkError(f"{self.name}: no inputs to run")
        session = self._open(artifact)
        try:
            bs = session.static_batch or int(artifact.batch_size or 1)
            feats, timed = timing.time_run(
                session,
                source,
                label=f"{self.name} bs{bs} {artifact.precision}",
                origin=artifact.path,
                batch_size=bs,
                warmup=warmup,
                repeats=repeats,
            )
            perf = self.perf_record(
                artifact,
                timed,
                samples=n,
                batch_size=bs,
                warmup=warmup,
                mode="real",
                device_kind=session.device_kind,
                device_id=session.device_id,
                extra=session.info,
            )
        finally:
            session.close()
        if out_dir is not None:
            timing.write_run_outputs(out_dir, feats, perf)
        return feats, perf

    def benchmark_pure(
        self,
        artifact: Artifact,
        *,
        batches: int | None = None,
        repeats: int | None = None,
        data: str | None = None,
        warmup: int | None = None,
    ) -> PerfRecord:
        """Pure inference: ``batches`` batches of random or zero input per pass, no file I/O."""
        from reid_tasks.targets import timing  # numpy: only where a benchmark runs

        self.require_available()
        self.check_artifact(artifact)
        batches, repeats, warmup, data = timing.pure_settings(self.cfg.VALIDATION.BENCH, batches, repeats, warmup, data)
        session = self._open(artifact)
        try:
            bs = session.static_batch or int(artifact.batch_size or 1)
            x = timing.pure_input(bs, self.input_hw(artifact), data)
            timed = timing.time_pure(session, x, batches=batches, warmup=warmup, repeats=repeats)
            return self.perf_record(
                artifact,
                timed,
                samples=bs * batches,
                batch_size=bs,
                warmup=warmup,
                mode="pure",
                device_kind=session.device_kind,
                device_id=session.device_id,
                extra={"data": data, **session.info},
            )
        finally:
            session.close()

    def perf_record(
        self,
        artifact: Artifact,
        timed: Timing,
        *,
        samples: int,
        batch_size: int,
        warmup: int,
        mode: str,
        device_kind: str,
        device_id: int | str | None,
        tool_versions: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> PerfRecord:
        """The PerfRecord of ``timed`` passes of ``artifact`` on this target (``timing.summarize``): its
        precision and digest, ``tool_versions`` (None: the artifact's, else this target's), end-to-end
        throughput for 'real' passes, ``extra`` after the artifact's digest."""
        from reid_tasks.targets import timing  # numpy: only where a benchmark runs

        return timing.summarize(
            target=self.name,
            timing=timed,
            samples=samples,
            batch_size=batch_size,
            precision=artifact.precision,
            warmup=warmup,
            device_kind=device_kind,
            device_id=device_id,
            mode=mode,
            e2e=mode == "real",
            tool_versions=(artifact.tool_versions or self.tool_versions()) if tool_versions is None else tool_versions,
            extra={"artifact_sha256": artifact.sha256, **(extra or {})},
        )

    def input_hw(self, artifact: Artifact) -> tuple[int, int]:
        shape = artifact.extra.get("input_shape")
        if shape and len(shape) == 4:
            return int(shape[2]), int(shape[3])
        from reid_tasks.config import image_size

        return image_size(self.cfg)
