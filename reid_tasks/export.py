"""Checkpoint -> ONNX (opset 11, "image" [N,3,H,W] -> "class" [N,2048], dynamic batch) + parity report.

Mirrors the seed's ReID_pth2onnx.py, then checks the graph with onnx.checker and compares onnxruntime
with PyTorch on the same inputs; the report is written beside the model as ``<name>.export.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from yacs.config import CfgNode

from .config import image_size, overrides
from .errors import ExportError
from .utils import atomic_path, atomic_write_json, log, sha256_file

INPUT_NAME = "image"
OUTPUT_NAME = "class"
FEATURE_DIM = 2048
REPORT_VERSION = 1


@dataclass(frozen=True)
class ExportReport:
    """What was exported, from what, and how closely onnxruntime matches PyTorch."""

    onnx_path: str
    opset: int
    input_name: str
    output_name: str
    input_shape: list[Any]
    output_shape: list[Any]
    checkpoint: str
    checkpoint_sha256: str
    onnx_sha256: str
    overrides: dict[str, Any]
    neck_feat: str
    parity_max_abs: float
    parity_tolerance: float
    parity_batch: int
    export_seconds: float
    tool_versions: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    version: int = REPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportReport:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def report_path(onnx_path: str | os.PathLike[str]) -> Path:
    """Where the export report of ``onnx_path`` lives."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".export.json")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "onnx", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def reference_features(
    cfg: CfgNode, inputs: Any, *, weights: str | None = None, trust: bool = False, batch_size: int = 16
) -> np.ndarray:
    """PyTorch eager fp32 features on the CPU: the reference every target is compared with.

    ``inputs``: float32 NCHW array, or anything with ``len`` and ``batch(start, stop)`` (a TensorCache), read
    one batch at a time so a full dataset never sits in memory as float32."""
    import torch

    from .model import load_model
    from .targets.timing import as_source

    source = as_source(inputs)
    model = load_model(cfg, weights, trust=trust)
    out = []
    with torch.inference_mode():
        for start in range(0, len(source), batch_size):
            x = source.batch(start, min(start + batch_size, len(source)))
            out.append(model(torch.from_numpy(np.ascontiguousarray(x))).numpy())
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, FEATURE_DIM), np.float32)


def _parity_inputs(cfg: CfgNode, n: int, seed: int = 0) -> np.ndarray:
    h, w = image_size(cfg)
    rng = np.random.default_rng(seed)
    # Images in [0,1] normalised like real inputs, so activations have realistic ranges.
    raw = rng.random((n, 3, h, w), dtype=np.float32)
    mean = np.asarray(cfg.INPUT.PIXEL_MEAN, np.float32)[:, None, None]
    std = np.asarray(cfg.INPUT.PIXEL_STD, np.float32)[:, None, None]
    return (raw - mean) / std


def export_onnx(
    cfg: CfgNode,
    output_path: str | os.PathLike[str],
    *,
    trust: bool = False,
    parity_batch: int = 4,
    force: bool = False,
) -> ExportReport:
    """Export TEST.WEIGHT to ONNX at ``output_path``; fail when onnxruntime and PyTorch disagree.

    A re-run with the same checkpoint, overrides and tool versions reuses the existing model.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from .model import load_model

    output_path = Path(output_path)
    checkpoint = str(cfg.TEST.WEIGHT)
    if not checkpoint:
        raise ExportError("no checkpoint: set TEST.WEIGHT (the seed passes TEST.WEIGHT \"('model.pth')\")")
    ckpt_sha = sha256_file(checkpoint) if Path(checkpoint).is_file() else ""
    opset = int(cfg.VALIDATION.ONNX_OPSET)
    cfg_overrides = overrides(cfg)
    tolerance = float(cfg.VALIDATION.PARITY.EXPORT_MAX_ABS)
    versions = _versions()

    if not force:
        cached = _reusable(output_path, ckpt_sha, cfg_overrides, opset, versions)
        if cached is not None:
            log.info("export: reusing %s (same checkpoint, config and tools)", output_path)
            return cached

    model = load_model(cfg, trust=trust)
    h, w = image_size(cfg)
    t0 = time.perf_counter()
    dummy = torch.zeros(1, 3, h, w)
    with atomic_path(output_path) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter emits opset 11
                torch.onnx.export(
                    model,
                    dummy,
                    str(tmp),
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                    dynamo=False,
                )
            onnx.checker.check_model(onnx.load(str(tmp)))
        except Exception as exc:
            raise ExportError(f"ONNX export of {checkpoint} to {output_path} failed: {exc}") from exc
        _check_io(tmp, h, w)
        x = _parity_inputs(cfg, parity_batch)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        max_abs = float(np.max(np.abs(got - ref)))
        if not np.isfinite(max_abs) or max_abs > tolerance:
            raise ExportError(
                f"{output_path}: onnxruntime differs from PyTorch by max abs {max_abs:.3g} "
                f"> {tolerance:g} (VALIDATION.PARITY.EXPORT_MAX_ABS) on {parity_batch} inputs"
            )
        seconds = time.perf_counter() - t0
    report = ExportReport(
        onnx_path=str(output_path.resolve()),
        opset=opset,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        input_shape=["batch", 3, h, w],
        output_shape=["batch", FEATURE_DIM],
        checkpoint=str(Path(checkpoint).resolve()),
        checkpoint_sha256=ckpt_sha,
        onnx_sha256=sha256_file(output_path),
        overrides=cfg_overrides,
        neck_feat=str(cfg.TEST.NECK_FEAT),
        parity_max_abs=max_abs,
        parity_tolerance=tolerance,
        parity_batch=parity_batch,
        export_seconds=round(seconds, 3),
        tool_versions=versions,
    )
    atomic_write_json(report_path(output_path), report.to_dict())
    log.info("export: %s (max abs diff vs PyTorch %.2e)", output_path, max_abs)
    return report


def _check_io(path: Path, h: int, w: int) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = [(i.name, dims(i)) for i in graph.input]
    outputs = [(o.name, dims(o)) for o in graph.output]
    if inputs != [(INPUT_NAME, ["batch", 3, h, w])] or outputs != [(OUTPUT_NAME, ["batch", FEATURE_DIM])]:
        raise ExportError(
            f"{path}: unexpected model I/O: inputs {inputs}, outputs {outputs}; "
            f"expected image [batch,3,{h},{w}] -> class [batch,{FEATURE_DIM}]"
        )


def _reusable(
    output_path: Path, ckpt_sha: str, cfg_overrides: dict[str, Any], opset: int, versions: dict[str, str]
) -> ExportReport | None:
    rp = report_path(output_path)
    if not (output_path.is_file() and rp.is_file()):
        return None
    try:
        report = ExportReport.from_dict(json.loads(rp.read_text()))
    except (ValueError, TypeError):
        return None
    same = (
        report.version == REPORT_VERSION
        and report.checkpoint_sha256 == ckpt_sha
        and report.overrides == cfg_overrides
        and report.opset == opset
        and report.tool_versions == versions
        and report.onnx_sha256 == sha256_file(output_path)
    )
    return dataclasses.replace(report, reused=True) if same else None


def load_report(onnx_path: str | os.PathLike[str]) -> ExportReport:
    """The export report written beside ``onnx_path``."""
    rp = report_path(onnx_path)
    try:
        return ExportReport.from_dict(json.loads(rp.read_text()))
    except FileNotFoundError as exc:
        raise ExportError(f"no export report beside {onnx_path} (expected {rp})") from exc
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{rp}: unreadable export report: {exc}") from exc
