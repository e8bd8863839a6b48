"""OpenVINO target: an IR (model.xml + model.bin) per batch size with a static shape; fp32, bf16 and int8.

- fp32 / bf16: the same fp32 IR (``ov.convert_model`` with the input fixed to [B,3,H,W], ``ov.save_model`` with
  ``compress_to_fp16=False``); the precision is the CPU plugin's ``INFERENCE_PRECISION_HINT`` (f32 / bf16),
  recorded in the artifact and applied when the IR is compiled. bf16 is offered only where the CPU has
  AVX512-BF16 or AMX (and OpenVINO's OPTIMIZATION_CAPABILITIES lists BF16).
- int8: ``nncf.quantize`` (post-training, default mixed preset for CPU) calibrated on the run's calibration set
  (bounding_box_train, else a gallery hold-out: reid_tasks.calibration); non-quantised ops run in f32.
  On CPUs without VNNI (no avx512_vnni / avx_vnni / amx_int8, or oneDNN capped below them by
  ``ONEDNN_MAX_CPU_ISA``) the u8 x s8 kernels accumulate pairs in int16 and saturate: measured on the demo model
  with ``ONEDNN_MAX_CPU_ISA=AVX2``, min cosine to fp32 0.979 with NNCF's default overflow fix (first layer only)
  against 0.991 with ``OverflowFix.ENABLE`` (7-bit weights on every layer), which is therefore used there.
  After quantising on such a CPU the IR is checked on the calibration images against the fp32 IR; below
  VALIDATION.PARITY.REDUCED_MIN_COSINE the target refuses int8 (PrecisionNotSupported, with the measured value).

Runs use the LATENCY performance hint, one synchronous request per batch, with one thread per core:
per-batch latency and throughput are measured on the same calls (no asynchronous request queue).

This module shares its name with the ``openvino`` package; Python 3 imports are absolute, so the
``import openvino`` inside the functions below loads the real package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reid_tasks.errors import ConversionError, PrecisionNotSupported
from reid_tasks.targets.base import Session, Target
from reid_tasks.targets.build import select_calibration
from reid_tasks.targets.records import INPUT_NAME, Artifact, BuildOutput
from reid_tasks.utils import cpu_count, cpu_flags, dist_version

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("reid_tasks.targets.openvino")

_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: ONEDNN_MAX_CPU_ISA values that leave oneDNN without VNNI int8 kernels
_NO_VNNI_ISAS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")


def int8_saturates() -> bool:
    """True where the CPU plugin's int8 kernels have no VNNI (int16 accumulation that can saturate)."""
    import os

    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_VNNI_ISAS:
        return True
    return not any(f in cpu_flags() for f in _VNNI_FLAGS)


def _ov() -> Any:
    import openvino as ov  # the real package (absolute import)

    return ov


class OpenVinoTarget(Target):
    """OpenVINO CPU plugin."""

    name = "openvino"
    queue = "default"
    all_precisions = ("fp32", "bf16", "int8")

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed (pip install openvino)"
        return True, f"openvino {dist_version('openvino')} on cpu"

    def supported_precisions(self) -> tuple[str, ...]:
        out = ["fp32"]
        if any(f in cpu_flags() for f in _BF16_FLAGS):
            out.append("bf16")
        if importlib.util.find_spec("nncf") is not None:
            out.append("int8")
        return tuple(out)

    def tool_versions(self) -> dict[str, str]:
        out = {}
        for dist in ("openvino", "nncf"):
            if v := dist_version(dist):
                out[dist] = v
        return out

    def compile_config(self, precision: str) -> dict[str, str]:
        """Properties passed to ``core.compile_model`` for an artifact of ``precision``."""
        return {
            "INFERENCE_PRECISION_HINT": _HINT[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": str(cpu_count()),
        }

    def settings(self, precision: str) -> dict[str, Any]:
        s: dict[str, Any] = {"compile_config": self.compile_config(precision), "compress_to_fp16": False}
        if precision == "int8":
            s["nncf"] = {
                "preset": "default",
                "num_images": int(self.cfg.VALIDATION.CALIBRATION.NUM_IMAGES),
                "overflow_fix": "enable" if int8_saturates() else "first_layer",
            }
        return s

    # ---- conversion
    def _build(
        self, onnx_path: Path, batch_size: int, precision: str, out_dir: Path, *, calibration: Any = None
    ) -> BuildOutput:
        ov = _ov()
        if precision == "bf16":
            caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in caps:
                raise PrecisionNotSupported(
                    f"target 'openvino' cannot build 'bf16': the CPU plugin's OPTIMIZATION_CAPABILITIES are {caps}"
                )
        shape = self._input_shape(onnx_path, batch_size)
        try:
            model = ov.convert_model(str(onnx_path), input=[(INPUT_NAME, shape)])
        except Exception as exc:
            raise ConversionError(f"openvino.convert_model({onnx_path}) failed: {exc}") from exc
        lines = [f"ov.convert_model({str(onnx_path)!r}, input=[({INPUT_NAME!r}, {shape})])"]
        calib_record = None
        tool_output = ""
        if precision == "int8":
            fp32_model = model
            model, calib_record, qline, tool_output = self._quantize(model, calibration, batch_size)
            lines.append(qline)
            if int8_saturates():
                calib_record["saturation_check"] = self._check_saturation(fp32_model, model, calibration)
        xml = out_dir / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        lines.append("ov.save_model(model, 'model.xml', compress_to_fp16=False)")
        cc = self.compile_config(precision)
        lines.append(f"core.compile_model('model.xml', 'CPU', {cc})  # at run time")
        return BuildOutput(
            main_file="model.xml",
            command="; ".join(lines),
            log="\n".join(lines) + "\n" + tool_output,
            calibration=calib_record,
            extra={"input_shape": shape, "compile_config": cc, "device": "CPU"},
        )

    @staticmethod
    def _input_shape(onnx_path: Path, batch_size: int) -> list[int]:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        for inp in model.graph.input:
            if inp.name == INPUT_NAME:
                dims = inp.type.tensor_type.shape.dim
                rest = [int(d.dim_value) for d in dims[1:]]
                if len(dims) != 4 or not all(rest):
                    raise ConversionError(f"{onnx_path}: input {INPUT_NAME!r} must be [N,C,H,W] with static C,H,W")
                return [batch_size, *rest]
        raise ConversionError(f"{onnx_path}: no input named {INPUT_NAME!r}")

    def _check_saturation(self, fp32_model: Any, int8_model: Any, calibration: Any) -> dict[str, Any]:
        """int8 vs fp32 IR on the calibration images; PrecisionNotSupported below the parity limit."""
        import numpy as np

        from reid_tasks.targets.parity import parity_stats
        from reid_tasks.targets.timing import pad_batch

        data, _ = select_calibration(calibration, int(self.cfg.VALIDATION.CALIBRATION.NUM_IMAGES))
        core = _ov().Core()
        outs = []
        for m in (fp32_model, int8_model):
            compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            bs = int(compiled.input(0).get_partial_shape()[0].get_length())
            rows = [
                compiled([pad_batch(data[s : s + bs], bs)])[0][: len(data[s : s + bs])] for s in range(0, len(data), bs)
            ]
            outs.append(np.concatenate(rows))
        min_cos, mean_cos, _ = parity_stats(outs[1], outs[0])
        limit = float(self.cfg.VALIDATION.PARITY.REDUCED_MIN_COSINE)
        if min_cos < limit:
            raise PrecisionNotSupported(
                f"target 'openvino' refuses int8 on this CPU (no VNNI: int8 kernels saturate): min cosine of int8 "
                f"vs fp32 on the {len(data)} calibration images is {min_cos:.5f} even with NNCF's overflow fix on "
                f"every layer; limit {limit:g} (VALIDATION.PARITY.REDUCED_MIN_COSINE)"
            )
        return {"min_cosine": min_cos, "mean_cosine": mean_cos, "limit": limit, "images": len(data)}

    def _quantize(self, model: Any, calibration: Any, batch_size: int) -> tuple[Any, dict[str, Any], str, str]:
        import nncf
        import numpy as np
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        data, record = select_calibration(calibration, int(self.cfg.VALIDATION.CALIBRATION.NUM_IMAGES))
        overflow_fix = OverflowFix.ENABLE if int8_saturates() else OverflowFix.FIRST_LAYER
        batches = []
        for s in range(0, data.shape[0], batch_size):
            chunk = data[s : s + batch_size]
            if chunk.shape[0] < batch_size:  # the IR is static: fill with repeated real images
                chunk = chunk[np.arange(batch_size) % chunk.shape[0]]
            batches.append(np.ascontiguousarray(chunk))
        out = io.StringIO()  # nncf's progress bars go to stdout: keep them in the build log instead
        try:
            with contextlib.redirect_stdout(out):
                quantized = nncf.quantize(
                    model,
                    nncf.Dataset(batches),
                    subset_size=len(batches),
                    advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix),
                )
        except Exception as exc:
            raise ConversionError(f"nncf.quantize failed: {exc}\n{out.getvalue()[-2000:]}") from exc

        line = (
            f"nncf.quantize(model, nncf.Dataset(<{len(batches)} batches of {batch_size} from "
            f"{record['num_images']} calibration images>), subset_size={len(batches)}, "
            f"advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.{overflow_fix.name}))"
        )
        method = f"nncf.quantize (DEFAULT, overflow_fix {overflow_fix.name})"
        return quantized, record | {"method": method}, line, out.getvalue()

    # ---- running
    def _open(self, artifact: Artifact) -> Session:
        return _OvSession(self, artifact)


class _OvSession(Session):
    def __init__(self, target: OpenVinoTarget, artifact: Artifact) -> None:
        ov = _ov()
        core = ov.Core()
        config = dict(artifact.extra.get("compile_config") or target.compile_config(artifact.precision))
        config["INFERENCE_NUM_THREADS"] = str(cpu_count())
        try:
            self.compiled = core.compile_model(artifact.path, "CPU", config)
        except Exception as exc:
            raise ConversionError(f"openvino could not compile {artifact.path} with {config}: {exc}") from exc
        self.request = self.compiled.create_infer_request()
        shape = self.compiled.input(0).get_partial_shape()
        self.static_batch = int(shape[0].get_length()) if shape.is_static else None
        self.device_kind = "cpu"
        self.device_id = 0
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.info = {
            "compile_config": config,
            "execution_precision": precision.to_string() if hasattr(precision, "to_string") else str(precision),
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch}, share_inputs=True)
        return self.request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        del self.request
        del self.compiled
