"""The timing loop every in-process target shares, and the statistics a ``PerfRecord`` holds.

``time_run`` goes over the inputs ``repeats`` times after ``warmup`` untimed batches and returns the features
of the first pass; ``time_pure`` times one fixed batch. Both time only ``session.infer``; ``summarize`` turns the
per-batch latencies and per-pass times into throughput and latency percentiles. Targets driven by external
tools (Ascend) build a ``Timing`` from the tool's own report and call ``summarize`` the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from reid_tasks.errors import BenchmarkError, TargetError
from reid_tasks.targets.records import FEATURE_DIM, PerfRecord
from reid_tasks.utils import Progress, atomic_save_npy, atomic_write_json

if TYPE_CHECKING:
    from reid_tasks.targets.base import Session


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


def pure_input(batch_size: int, hw: tuple[int, int], data: str, seed: int = 0) -> np.ndarray:
    """One [B,3,H,W] float32 batch: standard normal (``random``) or zeros (``zero``)."""
    shape = (batch_size, 3, *hw)
    if data == "random":
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if data == "zero":
        return np.zeros(shape, dtype=np.float32)
    raise BenchmarkError(f"pure-inference data must be 'random' or 'zero', got {data!r}")


# --------------------------------------------------------------------------------------------- loops
@dataclass
class Timing:
    latencies: list[float] = field(default_factory=list)  # seconds per timed batch
    pass_infer_s: list[float] = field(default_factory=list)
    pass_wall_s: list[float] = field(default_factory=list)


def time_run(
    session: Session,
    source: BatchSource,
    *,
    label: str,
    origin: str,
    batch_size: int,
    warmup: int,
    repeats: int,
) -> tuple[np.ndarray, Timing]:
    """Features for every input in order (float32 [N, 2048], from the first pass) and the timing of the passes.

    Each timed pass goes over all inputs; only ``session.infer`` is timed per batch, the pass's wall time
    also counts loading the batch. A short last batch is padded for static-batch sessions and the padded
    rows are dropped. ``label`` names the run in progress lines and errors, ``origin`` the artifact.
    """
    n = len(source)
    starts = list(range(0, n, batch_size))
    for i in range(warmup):
        s = starts[i % len(starts)]
        x = np.asarray(source.batch(s, min(s + batch_size, n)), dtype=np.float32)
        session.infer(pad_batch(x, batch_size) if session.static_batch else x)
    timing = Timing()
    feats = np.empty((n, FEATURE_DIM), dtype=np.float32)
    progress = Progress(n * repeats, label)
    for rep in range(repeats):
        infer_s = 0.0
        t_pass = time.perf_counter()
        for s in starts:
            stop = min(s + batch_size, n)
            x = np.asarray(source.batch(s, stop), dtype=np.float32)
            if session.static_batch:
                x = pad_batch(x, batch_size)
            t0 = time.perf_counter()
            y = session.infer(x)
            dt = time.perf_counter() - t0
            infer_s += dt
            timing.latencies.append(dt)
            if rep == 0:
                check_output(label, y, x.shape[0])
                feats[s:stop] = y[: stop - s]
            progress.update(stop - s)
        timing.pass_wall_s.append(time.perf_counter() - t_pass)
        timing.pass_infer_s.append(infer_s)
    progress.close()
    if not np.isfinite(feats).all():
        raise BenchmarkError(f"{label}: non-finite features from {origin}")
    return feats, timing


def time_pure(session: Session, x: np.ndarray, *, batches: int, warmup: int, repeats: int) -> Timing:
    """``repeats`` passes of ``batches`` inferences of the one batch ``x`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        session.infer(x)
    timing = Timing()
    for _ in range(repeats):
        infer_s = 0.0
        for _ in range(batches):
            t0 = time.perf_counter()
            session.infer(x)
            dt = time.perf_counter() - t0
            infer_s += dt
            timing.latencies.append(dt)
        timing.pass_infer_s.append(infer_s)
    return timing


def check_output(label: str, y: np.ndarray, rows: int) -> None:
    """BenchmarkError unless ``y`` is [rows, FEATURE_DIM]."""
    if y.ndim != 2 or y.shape[0] != rows or y.shape[1] != FEATURE_DIM:
        raise BenchmarkError(f"{label}: output shape {tuple(y.shape)}, expected [{rows}, {FEATURE_DIM}]")


# --------------------------------------------------------------------------------------------- statistics
def summarize(
    *,
    target: str,
    timing: Timing,
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


def write_run_outputs(out_dir: str | os.PathLike[str], feats: np.ndarray, perf: PerfRecord) -> None:
    """features.npy + perf.json in ``out_dir`` (atomic)."""
    out = Path(out_dir)
    atomic_save_npy(out / "features.npy", feats)
    atomic_write_json(out / "perf.json", perf.to_dict())


def run_settings(bench: Any, warmup: int | None, repeats: int | None) -> tuple[int, int]:
    """(warm-up batches, timed passes) of a data pass: the arguments, else ``bench`` (VALIDATION.BENCH); checked."""
    warmup = int(bench.WARMUP if warmup is None else warmup)
    repeats = int(bench.REPEATS if repeats is None else repeats)
    if repeats < 1:
        raise BenchmarkError(f"repeats must be >= 1, got {repeats}")
    return warmup, repeats


def pure_settings(
    bench: Any, batches: int | None, repeats: int | None, warmup: int | None, data: str | None
) -> tuple[int, int, int, str]:
    """(batches, repeats, warm-up, data) of a pure-inference benchmark: the arguments, else ``bench``; checked."""
    batches = int(bench.PURE_BATCHES if batches is None else batches)
    repeats = int(bench.REPEATS if repeats is None else repeats)
    warmup = int(bench.WARMUP if warmup is None else warmup)
    data = str(bench.PURE_DATA if data is None else data)
    if batches < 1 or repeats < 1:
        raise BenchmarkError(f"batches and repeats must be >= 1, got {batches}, {repeats}")
    if data not in ("zero", "random"):
        raise BenchmarkError(f"pure-inference data must be 'random' or 'zero', got {data!r}")
    return batches, repeats, warmup, data
