"""ONNX Runtime target: a static-batch, graph-optimised ONNX model per batch size; fp32 and int8 (QDQ).

Conversion (all in-process, API calls recorded in the artifact):

1. fix the batch dimension of the dynamic-axis export to B (``onnx.tools.update_model_dims``);
2. int8 only: ``quant_pre_process`` then ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations,
   MinMax calibration on the first VALIDATION.CALIBRATION.NUM_IMAGES query images of the cache);
3. open it once with ``graph_optimization_level=ORT_ENABLE_ALL`` and ``optimized_model_filepath`` so the
   optimised graph is what is saved (it may contain CPU-layout kernels: it is built for this machine's EP).

The CUDA execution provider is used when onnxruntime-gpu is installed and a GPU is visible, else the CPU EP
with one intra-op thread per core.

This module shares its name with the ``onnxruntime`` package; Python 3 imports are absolute, so the
``import onnxruntime`` inside the functions below loads the real package.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reid_tasks.errors import ConversionError
from reid_tasks.targets.base import Session, Target
from reid_tasks.targets.build import select_calibration
from reid_tasks.targets.records import FEATURE_DIM, INPUT_NAME, OUTPUT_NAME, Artifact, BuildOutput
from reid_tasks.utils import cpu_count, dist_version

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("reid_tasks.targets.onnxruntime")


def _ort() -> Any:
    import onnxruntime as ort  # the real package (absolute import)

    return ort


def _gpu_visible() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


class OnnxRuntimeTarget(Target):
    """ONNX Runtime (CPU EP, or CUDA EP with onnxruntime-gpu and a GPU)."""

    name = "onnxruntime"
    queue = "default"
    all_precisions = ("fp32", "int8")

    # ---- description
    def _dist(self) -> str | None:
        for dist in ("onnxruntime-gpu", "onnxruntime"):
            if dist_version(dist):
                return dist
        return None

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None or self._dist() is None:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        if importlib.util.find_spec("onnx") is None:
            return False, "onnx is not installed (needed to fix the batch dimension)"
        return True, f"{self._dist()} {dist_version(self._dist() or '')} on {self.device_kind}"

    @property
    def device_kind(self) -> str:
        return "cuda" if self._dist() == "onnxruntime-gpu" and _gpu_visible() else "cpu"

    def providers(self) -> list[str]:
        """Execution providers in order of preference (imports onnxruntime)."""
        ort = _ort()
        available = ort.get_available_providers()
        if self.device_kind == "cuda" and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def tool_versions(self) -> dict[str, str]:
        dist = self._dist()
        out = {"onnxruntime": dist_version(dist) or ""} if dist else {}
        if dist == "onnxruntime-gpu":
            out["onnxruntime-gpu"] = dist_version(dist) or ""
        if v := dist_version("onnx"):
            out["onnx"] = v
        return out

    def settings(self, precision: str) -> dict[str, Any]:
        s: dict[str, Any] = {"graph_optimization_level": "ORT_ENABLE_ALL", "device_kind": self.device_kind}
        if precision == "int8":
            s["quantization"] = _QUANT_SETTINGS | {"num_images": int(self.cfg.VALIDATION.CALIBRATION.NUM_IMAGES)}
        return s

    def session_options(self, *, optimized_path: Path | None = None) -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = cpu_count()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if optimized_path is not None:
            so.optimized_model_filepath = str(optimized_path)
        return so

    # ---- conversion
    def _build(
        self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, *, calibration: Any = None
    ) -> BuildOutput:
        import onnx

        model = onnx.load(str(onnx_path))
        input_shape = fix_batch(model, batch_size)
        fixed = out_dir / "static.onnx"
        onnx.save(model, str(fixed))
        lines = [
            f"onnx.tools.update_model_dims.update_inputs_outputs_dims(onnx.load({str(onnx_path)!r}), "
            f"{{{INPUT_NAME!r}: {input_shape}}}, {{{OUTPUT_NAME!r}: [{batch_size}, {FEATURE_DIM}]}})"
        ]
        calib_record = None
        source = fixed
        if precision == "int8":
            num = int(self.cfg.VALIDATION.CALIBRATION.NUM_IMAGES)
            data, calib_record = select_calibration(calibration, num)
            source, quant_lines = self._quantize(fixed, data, batch_size, out_dir)
            lines += quant_lines
            calib_record = calib_record | {"method": _QUANT_SETTINGS["calibrate_method"]}
        providers = self.providers()
        main = out_dir / "model.onnx"
        ort = _ort()
        try:
            sess = ort.InferenceSession(str(source), self.session_options(optimized_path=main), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConversionError(f"onnxruntime could not optimise {source}: {exc}") from exc
        used = sess.get_providers()
        del sess
        lines.append(
            f"onnxruntime.InferenceSession({source.name!r}, SessionOptions(graph_optimization_level=ORT_ENABLE_ALL, "
            f"optimized_model_filepath='model.onnx', intra_op_num_threads={cpu_count()}), providers={providers})"
        )
        for tmp in out_dir.glob("*.onnx"):
            if tmp.name != "model.onnx":
                tmp.unlink()
        return BuildOutput(
            main_file="model.onnx",
            command="; ".join(lines),
            log="\n".join(lines) + f"\nproviders used: {used}\n",
            calibration=calib_record,
            extra={"input_shape": input_shape, "providers": used, "graph_optimization_level": "ORT_ENABLE_ALL"},
        )

    def _quantize(self, fixed: Path, data: np.ndarray, batch_size: int, out_dir: Path) -> tuple[Path, list[str]]:
        import onnx
        from onnx import version_converter
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = out_dir / "pre.onnx"
        quant = out_dir / "quant.onnx"
        lines = []
        model = onnx.load(str(fixed))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < _QDQ_MIN_OPSET:  # per-channel DequantizeLinear (axis attribute) needs opset 13
            upgraded = out_dir / "opset13.onnx"
            onnx.save(version_converter.convert_version(model, _QDQ_MIN_OPSET), str(upgraded))
            lines.append(f"onnx.version_converter.convert_version(static.onnx, {_QDQ_MIN_OPSET})  # from {opset}")
            fixed = upgraded
        try:
            quant_pre_process(str(fixed), str(pre))
            quantize_static(
                str(pre),
                str(quant),
                _Reader(data, batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:
            raise ConversionError(f"onnxruntime static quantisation of {fixed} failed: {exc}") from exc
        lines += [
            f"onnxruntime.quantization.shape_inference.quant_pre_process({fixed.name!r}, 'pre.onnx')",
            f"onnxruntime.quantization.quantize_static('pre.onnx', 'quant.onnx', <{data.shape[0]} calibration "
            "images>, quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, "
            "weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)",
        ]
        return quant, lines

    # ---- running
    def _open(self, artifact: Artifact) -> Session:
        return _OrtSession(self, artifact)


_QDQ_MIN_OPSET = 13
_QUANT_SETTINGS = {
    "format": "QDQ",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "calibrate_method": "MinMax",
}


class _Reader:
    """CalibrationDataReader over an array, in static batches (the last one filled by repeating images)."""

    def __init__(self, data: np.ndarray, batch_size: int) -> None:
        import numpy as np

        self.batches = []
        for s in range(0, data.shape[0], batch_size):
            chunk = data[s : s + batch_size]
            if chunk.shape[0] < batch_size:  # repeat real images: min/max ranges are unchanged
                idx = np.arange(batch_size) % chunk.shape[0]
                chunk = chunk[idx]
            self.batches.append({INPUT_NAME: np.ascontiguousarray(chunk, dtype=np.float32)})
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def fix_batch(model: Any, batch_size: int) -> list[int]:
    """Set the batch dim of ``image``/``class`` to ``batch_size`` in place; return the input shape."""
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ConversionError(
            f"ONNX model must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}; "
            f"has inputs {list(inputs)} and outputs {list(outputs)}"
        )
    dims = inputs[INPUT_NAME].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ConversionError(f"ONNX input {INPUT_NAME!r} must be NCHW, has {len(dims)} dims")
    chw = []
    for d in dims[1:]:
        if not d.HasField("dim_value"):
            raise ConversionError(f"ONNX input {INPUT_NAME!r}: only the batch dim may be dynamic, got {dims}")
        chw.append(int(d.dim_value))
    shape = [batch_size, *chw]
    out_dims = outputs[OUTPUT_NAME].type.tensor_type.shape.dim
    out_shape = [batch_size] + [int(d.dim_value) if d.HasField("dim_value") else -1 for d in out_dims[1:]]
    del model.graph.value_info[:]  # stale symbolic batch dims; ORT re-infers the shapes
    update_inputs_outputs_dims(model, {INPUT_NAME: shape}, {OUTPUT_NAME: out_shape})
    return shape


class _OrtSession(Session):
    def __init__(self, target: OnnxRuntimeTarget, artifact: Artifact) -> None:
        ort = _ort()
        providers = target.providers()
        self.sess = ort.InferenceSession(artifact.path, target.session_options(), providers=providers)
        used = self.sess.get_providers()
        shape = self.sess.get_inputs()[0].shape
        self.static_batch = shape[0] if isinstance(shape[0], int) else None
        self.device_kind = "cuda" if used[0] == "CUDAExecutionProvider" else "cpu"
        self.device_id = 0
        self.info = {"providers": used, "intra_op_num_threads": cpu_count()}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.sess.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def close(self) -> None:
        del self.sess
