"""Shared code of the Ascend TEST DOUBLES (atc, ais_bench, benchmark.x86_64, npu-smi) in tests/doubles.

Nothing here talks to an Ascend device. The ".om" the atc double writes is a small header (magic line +
JSON) followed by the ONNX bytes it was "converted" from; the runner doubles execute that ONNX with
onnxruntime on the CPU at the .om's fixed batch size. Every performance number the doubles print is a fixed,
made-up value (marked "double") so the parsers have something in the real format to read: never report them.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

OM_MAGIC = b"REID-TEST-DOUBLE-OM v1\n"
FP16_MODES = {"force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "allow_mix_precision_fp16", None}
#: made-up NPU compute time per batch (ms) used by the runner doubles: deterministic, clearly not measured
DOUBLE_BASE_MS = 1.0
DOUBLE_PER_SAMPLE_MS = 0.25


def double_batch_ms(batch: int) -> float:
    return DOUBLE_BASE_MS + DOUBLE_PER_SAMPLE_MS * batch


def write_om(path: Path, onnx_path: Path, header: dict) -> None:
    data = onnx_path.read_bytes()
    head = dict(header, double=True, onnx_path=str(onnx_path), onnx_bytes=len(data))
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(OM_MAGIC)
        f.write(json.dumps(head, sort_keys=True).encode() + b"\n")
        f.write(data)
    os.replace(tmp, path)


class OmModel:
    """A loaded double .om: ``run(x)`` maps [B,3,H,W] float32 to the first output, like the device would."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = Path(path).read_bytes()
        if not raw.startswith(OM_MAGIC):
            raise ValueError(f"{path} is not an .om written by the atc test double")
        rest = raw[len(OM_MAGIC) :]
        head_line, _, onnx_bytes = rest.partition(b"\n")
        self.header = json.loads(head_line)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.header["input_name"]
        self.shape = tuple(self.header["input_shape"])
        self.batch = int(self.shape[0])
        self.fp16 = self.header.get("precision_mode") in FP16_MODES

    @property
    def input_bytes(self) -> int:
        return math.prod(self.shape) * 4

    def run(self, x: Any) -> Any:
        import numpy as np  # not at import: npu-smi's double starts without it

        x = np.asarray(x, dtype=np.float32).reshape(self.shape)
        if self.fp16:
            x = x.astype(np.float16).astype(np.float32)
        (y,) = self.session.run(None, {self.input_name: x})[:1]
        y = np.asarray(y, dtype=np.float32)
        if self.fp16:  # emulate an fp16 build: results rounded to half precision
            y = y.astype(np.float16).astype(np.float32)
        return y


def npu_devices() -> list[int]:
    spec = os.environ.get("REID_DOUBLE_NPU_DEVICES", "0,1,2,3")
    return [int(t) for t in re.split(r"[,\s]+", spec.strip()) if t]


def busy_devices() -> set[int]:
    """Devices the npu-smi double reports busy: REID_DOUBLE_NPU_BUSY_FILE lists ids (or 'all')."""
    path = os.environ.get("REID_DOUBLE_NPU_BUSY_FILE")
    if not path or not os.path.exists(path):
        return set()
    text = Path(path).read_text().strip()
    if text in ("", "all"):
        return set(npu_devices())
    return {int(t) for t in re.split(r"[,\s]+", text) if t}


def dropped_stems() -> set[str]:
    """Inputs whose output the runner doubles 'forget' (REID_DOUBLE_DROP_OUTPUT=stem[,stem])."""
    return {t for t in os.environ.get("REID_DOUBLE_DROP_OUTPUT", "").split(",") if t}
