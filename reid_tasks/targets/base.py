"""The inference-target interface: ``Target``, the records it returns, and the shared run/benchmark loop.

A target converts the exported ONNX model into an artifact for one (batch size, precision) and runs it::

    target = get_target("onnxruntime")
    art = target.convert("ReID.onnx", 16, "fp32", "artifacts/")        # -> Artifact (idempotent)
    feats, perf = target.run(art, cache, "out/")                         # features [N, 2048] + PerfRecord
    pure = target.benchmark_pure(art, batches=20, repeats=3)             # random/zero input, no file I/O

Subclasses that run in-process implement ``_build`` (called by ``convert`` inside a temporary directory that
is renamed into place) and ``_open`` (returns a ``Session`` whose ``infer`` maps one batch to features); the
timing loop, padding of static batches, warm-up and statistics live here so every target measures the same
way. Targets driven by external tools (Ascend) override ``run`` / ``benchmark_pure`` and reuse the helpers.

Nothing heavy is imported here: torch / onnxruntime / openvino are imported inside the target's methods.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from reid_tasks.errors import BenchmarkError, ConversionError, PrecisionNotSupported, TargetError, TargetUnavailable
from reid_tasks.utils import Progress, atomic_save_npy, atomic_write_json, replace_dir, sha256_file

log = logging.getLogger("reid_tasks.targets")

#: The one precision vocabulary every target uses.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
#: Model input / output names and the feature width (the seed's export).
INPUT_NAME = "image"
OUTPUT_NAME = "class"
FEATURE_DIM = 2048
MANIFEST_NAME = "artifact.json"
BUILD_LOG_NAME = "build.log"
_MANIFEST_VERSION = 1


# --------------------------------------------------------------------------------------------- records
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


# --------------------------------------------------------------------------------------------- inputs
@runtime_checkable
class BatchSource(Protocol):
    """What ``run`` accepts besides an array: reid_tasks.preprocess.TensorCache."""

    def __len__(self) -> int: ...

    def batch(self, start: int, stop: int) -> np.ndarray: ...


class _ArraySource:
    def __init__(self, arr: np.ndarray) -> None:
        if arr.ndim != 4:
            raise TargetError(f"inputs must be float32 NCHW, got shape {arr.shape}")
        self.arr = np.ascontiguousarray(arr, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.arr.shape[0])

    def batch(self, start: int, stop: int) -> np.ndarray:
        return self.arr[start:stop]


def as_source(inputs: np.ndarray | BatchSource) -> BatchSource:
    """Wrap an NCHW array so it looks like a TensorCache; pass a cache through."""
    if isinstance(inputs, np.ndarray):
        return _ArraySource(inputs)
    if hasattr(inputs, "batch") and hasattr(inputs, "__len__"):
        return inputs
    raise TargetError(f"inputs must be a float32 NCHW numpy array or a TensorCache, got {type(inputs).__name__}")


def pad_batch(x: np.ndarray, batch_size: int) -> np.ndarray:
    """Pad a short last batch with zeros up to ``batch_size`` rows (static-batch artifacts)."""
    n = x.shape[0]
    if n == batch_size:
        return x
    if n > batch_size:
        raise TargetError(f"batch of {n} rows exceeds the artifact's static batch size {batch_size}")
    out = np.zeros((batch_size, *x.shape[1:]), dtype=np.float32)
    out[:n] = x
    return out


def select_calibration(calibration: Any, num_images: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The first ``num_images`` query images of a TensorCache (or rows of an array) + a record of them."""
    if calibration is None:
        raise ConversionError("int8 needs calibration data: pass calibration=<TensorCache or NCHW array>")
    if isinstance(calibration, str | os.PathLike):
        from reid_tasks.preprocess import TensorCache

        calibration = TensorCache.open(calibration)
    if isinstance(calibration, np.ndarray):
        n = min(num_images, calibration.shape[0])
        data = np.ascontiguousarray(calibration[:n], dtype=np.float32)
        record = {"source": "array", "split": "given", "selection": "first", "num_images": n}
        return data, record
    num_query = int(getattr(calibration, "num_query", len(calibration)))
    n = min(num_images, num_query)
    if n <= 0:
        raise ConversionError("calibration cache has no query images")
    data = np.ascontiguousarray(calibration.batch(0, n), dtype=np.float32)
    items = list(getattr(calibration, "items", []))[:n]
    record = {
        "source": "tensor-cache",
        "cache": str(getattr(calibration, "dir", getattr(calibration, "root", ""))),
        "fingerprint": str(getattr(calibration, "fingerprint", "")),
        "split": "query",
        "selection": "first",
        "num_images": n,
        "images": [str(getattr(it, "path", it)) for it in items],
    }
    return data, record


# --------------------------------------------------------------------------------------------- timing
@dataclass
class _Timing:
    latencies: list[float] = field(default_factory=list)  # seconds per timed batch
    pass_infer_s: list[float] = field(default_factory=list)
    pass_wall_s: list[float] = field(default_factory=list)


def summarize(
    *,
    target: str,
    timing: _Timing,
    samples: int,
    batch_size: int,
    warmup: int,
    device_kind: str,
    device_id: int | str | None,
    tool_versions: Mapping[str, str],
    mode: str,
    precision: str,
    e2e: bool,
    extra: Mapping[str, Any] | None = None,
) -> PerfRecord:
    """Statistics over timed passes: best/median throughput per pass, latency percentiles over all batches."""
    if not timing.latencies or not timing.pass_infer_s:
        raise BenchmarkError(f"{target}: no timed batches (samples={samples}, repeats={len(timing.pass_infer_s)})")
    thr = [samples / max(t, 1e-12) for t in timing.pass_infer_s]
    lat = np.asarray(timing.latencies) * 1e3
    e2e_thr = None
    if e2e and timing.pass_wall_s:
        e2e_thr = float(np.median([samples / max(t, 1e-12) for t in timing.pass_wall_s]))
    return PerfRecord(
        target=target,
        samples=samples,
        batch_size=batch_size,
        warmup=warmup,
        repeats=len(timing.pass_infer_s),
        throughput_best=float(max(thr)),
        throughput_median=float(np.median(thr)),
        latency_ms_mean=float(lat.mean()),
        latency_ms_p50=float(np.percentile(lat, 50)),
        latency_ms_p90=float(np.percentile(lat, 90)),
        latency_ms_p99=float(np.percentile(lat, 99)),
        e2e_throughput=e2e_thr,
        device_kind=device_kind,
        device_id=device_id,
        tool_versions=dict(tool_versions),
        mode=mode,
        precision=precision,
        extra=dict(extra or {}),
    )


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
    """One inference target. Subclasses set ``name``/``queue`` and implement the hooks below."""

    name: ClassVar[str] = ""
    queue: ClassVar[str] = "default"
    #: every precision the target knows; ``supported_precisions`` narrows to this machine
    all_precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, cfg: Any | None = None) -> None:
        self._cfg = cfg

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

    def tool_versions(self) -> dict[str, str]:
        """Versions of the tools that build/run artifacts (recorded in every Artifact/PerfRecord)."""
        return {}

    def describe(self) -> dict[str, Any]:
        ok, reason = self.available()
        return {
            "name": self.name,
            "queue": self.queue,
            "device_kind": self.device_kind,
            "available": ok,
            "reason": reason,
            "precisions": list(self.supported_precisions()) if ok else [],
            "all_precisions": list(self.all_precisions),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} queue={self.queue!r}>"

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

    def require_available(self) -> None:
        ok, reason = self.available()
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
        self.require_available()
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
            "calibration": _calibration_key(calibration) if precision == "int8" else None,
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
        self.require_available()
        self.check_artifact(artifact)
        warmup = int(self.cfg.VALIDATION.BENCH.WARMUP if warmup is None else warmup)
        repeats = int(self.cfg.VALIDATION.BENCH.REPEATS if repeats is None else repeats)
        if repeats < 1:
            raise BenchmarkError(f"repeats must be >= 1, got {repeats}")
        source = as_source(inputs)
        n = len(source)
        if n == 0:
            raise BenchmarkError(f"{self.name}: no inputs to run")
        session = self._open(artifact)
        try:
            bs = session.static_batch or int(artifact.batch_size or 1)
            starts = list(range(0, n, bs))
            for i in range(warmup):
                s = starts[i % len(starts)]
                x = np.asarray(source.batch(s, min(s + bs, n)), dtype=np.float32)
                session.infer(pad_batch(x, bs) if session.static_batch else x)
            timing = _Timing()
            feats: np.ndarray | None = None
            progress = Progress(n * repeats, f"{self.name} bs{bs} {artifact.precision}")
            for rep in range(repeats):
                out = np.empty((n, FEATURE_DIM), dtype=np.float32) if rep == 0 else None
                infer_s = 0.0
                t_pass = time.perf_counter()
                for s in starts:
                    stop = min(s + bs, n)
                    x = np.asarray(source.batch(s, stop), dtype=np.float32)
                    if session.static_batch:
                        x = pad_batch(x, bs)
                    t0 = time.perf_counter()
                    y = session.infer(x)
                    dt = time.perf_counter() - t0
                    infer_s += dt
                    timing.latencies.append(dt)
                    if out is not None:
                        _check_output(self.name, y, x.shape[0])
                        out[s:stop] = y[: stop - s]
                    progress.update(stop - s)
                timing.pass_wall_s.append(time.perf_counter() - t_pass)
                timing.pass_infer_s.append(infer_s)
                if out is not None:
                    feats = out
            progress.close()
            if feats is None:  # pragma: no cover - repeats >= 1 checked above
                raise BenchmarkError(f"{self.name}: no timed pass")
            perf = summarize(
                target=self.name,
                timing=timing,
                samples=n,
                batch_size=bs,
                warmup=warmup,
                device_kind=session.device_kind,
                device_id=session.device_id,
                tool_versions=artifact.tool_versions or self.tool_versions(),
                mode="real",
                precision=artifact.precision,
                e2e=True,
                extra={"artifact_sha256": artifact.sha256, **session.info},
            )
        finally:
            session.close()
        if not np.isfinite(feats).all():
            raise BenchmarkError(f"{self.name}: non-finite features from {artifact.path}")
        if out_dir is not None:
            write_run_outputs(out_dir, feats, perf)
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
        self.require_available()
        self.check_artifact(artifact)
        bench = self.cfg.VALIDATION.BENCH
        batches = int(bench.PURE_BATCHES if batches is None else batches)
        repeats = int(bench.REPEATS if repeats is None else repeats)
        warmup = int(bench.WARMUP if warmup is None else warmup)
        data = str(bench.PURE_DATA if data is None else data)
        if batches < 1 or repeats < 1:
            raise BenchmarkError(f"batches and repeats must be >= 1, got {batches}, {repeats}")
        session = self._open(artifact)
        try:
            bs = session.static_batch or int(artifact.batch_size or 1)
            x = pure_input(bs, self.input_hw(artifact), data)
            for _ in range(warmup):
                session.infer(x)
            timing = _Timing()
            for _ in range(repeats):
                infer_s = 0.0
                for _ in range(batches):
                    t0 = time.perf_counter()
                    session.infer(x)
                    dt = time.perf_counter() - t0
                    infer_s += dt
                    timing.latencies.append(dt)
                timing.pass_infer_s.append(infer_s)
            return summarize(
                target=self.name,
                timing=timing,
                samples=bs * batches,
                batch_size=bs,
                warmup=warmup,
                device_kind=session.device_kind,
                device_id=session.device_id,
                tool_versions=artifact.tool_versions or self.tool_versions(),
                mode="pure",
                precision=artifact.precision,
                e2e=False,
                extra={"data": data, "artifact_sha256": artifact.sha256, **session.info},
            )
        finally:
            session.close()

    def input_hw(self, artifact: Artifact) -> tuple[int, int]:
        shape = artifact.extra.get("input_shape")
        if shape and len(shape) == 4:
            return int(shape[2]), int(shape[3])
        from reid_tasks.config import image_size

        return image_size(self.cfg)


def pure_input(batch_size: int, hw: tuple[int, int], data: str, seed: int = 0) -> np.ndarray:
    """One [B,3,H,W] float32 batch: standard normal (``random``) or zeros (``zero``)."""
    shape = (batch_size, 3, *hw)
    if data == "random":
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if data == "zero":
        return np.zeros(shape, dtype=np.float32)
    raise BenchmarkError(f"pure-inference data must be 'random' or 'zero', got {data!r}")


def _check_output(target: str, y: np.ndarray, rows: int) -> None:
    if y.ndim != 2 or y.shape[0] != rows or y.shape[1] != FEATURE_DIM:
        raise BenchmarkError(f"{target}: output shape {tuple(y.shape)}, expected [{rows}, {FEATURE_DIM}]")


def write_run_outputs(out_dir: str | os.PathLike[str], feats: np.ndarray, perf: PerfRecord) -> None:
    """features.npy + perf.json in ``out_dir`` (atomic)."""
    out = Path(out_dir)
    atomic_save_npy(out / "features.npy", feats)
    atomic_write_json(out / "perf.json", perf.to_dict())


# --------------------------------------------------------------------------------------------- building
def _calibration_key(calibration: Any) -> Any:
    if calibration is None:
        return None
    if isinstance(calibration, np.ndarray):
        import hashlib

        return {"array_sha256": hashlib.sha256(np.ascontiguousarray(calibration).tobytes()).hexdigest()}
    if isinstance(calibration, str | os.PathLike):
        return {"cache": str(Path(calibration).resolve())}
    return {"fingerprint": str(getattr(calibration, "fingerprint", type(calibration).__name__))}


def build_artifact(
    *,
    target: str,
    name: str,
    out_dir: Path,
    key: Mapping[str, Any],
    batch_size: int | None,
    precision: str,
    tool_versions: Mapping[str, str],
    build: Callable[[Path], BuildOutput],
) -> Artifact:
    """Build ``out_dir/name/`` atomically, or reuse it when its manifest records the same ``key``.

    ``build(tmp_dir)`` writes the files into a temporary directory beside the final one; the directory is
    renamed into place only when the build succeeded. The manifest ``artifact.json`` holds the Artifact and
    the key (ONNX sha256, batch, precision, settings, tool versions, calibration set).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    key = json.loads(json.dumps(key, default=str))  # normalise for comparison with the stored JSON
    reused = _reuse(final, key)
    if reused is not None:
        log.info("%s: reusing %s (same inputs)", target, final)
        return reused
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        t0 = time.perf_counter()
        result = build(tmp)
        seconds = time.perf_counter() - t0
        main = tmp / result.main_file
        if not main.is_file():
            raise ConversionError(f"{target}: build produced no {result.main_file} in {tmp}")
        (tmp / BUILD_LOG_NAME).write_text(result.log or f"$ {result.command}\n", encoding="utf-8")
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST_NAME, BUILD_LOG_NAME)
        }
        artifact = Artifact(
            target=target,
            path=str((final / result.main_file).resolve()),
            sha256=files[Path(result.main_file).as_posix()],
            batch_size=batch_size,
            precision=precision,
            build_seconds=round(seconds, 3),
            command=result.command,
            tool_versions=dict(tool_versions),
            build_log=str((final / BUILD_LOG_NAME).resolve()),
            calibration=result.calibration,
            extra={**result.extra, "files": files},
        )
        manifest = {"version": _MANIFEST_VERSION, "key": key, "artifact": artifact.to_dict()}
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return artifact


def _reuse(final: Path, key: Mapping[str, Any]) -> Artifact | None:
    manifest = final / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        artifact = Artifact.from_dict(data["artifact"])
    except (OSError, ValueError, KeyError, TargetError):
        return None
    for rel, digest in artifact.extra.get("files", {}).items():
        p = final / rel
        if not p.is_file() or sha256_file(p) != digest:
            log.warning("artifact %s: %s changed on disk; rebuilding", final, rel)
            return None
    return artifact


# --------------------------------------------------------------------------------------------- small helpers
def run_logged(
    cmd: Sequence[str],
    *,
    what: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run a command, return its combined output; ConversionError with the command and output tail on failure."""
    import shlex
    import subprocess

    from reid_tasks.utils import tail

    line = shlex.join(cmd)
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TargetUnavailable(f"{what}: command not found: {cmd[0]} ({line})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"{what}: timed out after {timeout}s: {line}\n{tail(exc.stdout)}") from exc
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise ConversionError(f"{what} failed (exit {proc.returncode}): {line}\n{tail(output)}")
    return f"$ {line}\n{output}"


def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def dist_version(name: str) -> str | None:
    """Installed version of a distribution without importing it."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unique(seq: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(seq))
