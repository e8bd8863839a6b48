import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from reid_tasks.config import load_config
from reid_tasks.errors import ConfigError, ExportError
from reid_tasks.export import export_onnx, load_report, reference_features, report_path
from reid_tasks.utils import sha256_file


def test_exported_model_contract(onnx_model: Path, demo_checkpoint: Path):
    m = onnx.load(str(onnx_model))
    onnx.checker.check_model(m)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [11]
    (inp,), (out,) = m.graph.input, m.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert inp.name == "image" and dims(inp) == ["batch", 3, 256, 128]
    assert out.name == "class" and dims(out) == ["batch", 2048]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = json.loads(report_path(onnx_model).read_text())
    assert report["opset"] == 11 and report["input_name"] == "image" and report["output_name"] == "class"
    assert report["checkpoint_sha256"] == sha256_file(demo_checkpoint)
    assert report["onnx_sha256"] == sha256_file(onnx_model)
    assert 0 <= report["parity_max_abs"] <= 1e-4
    assert report["overrides"]["TEST.WEIGHT"] == str(demo_checkpoint)


def test_dynamic_batch_matches_pytorch(onnx_model: Path, demo_checkpoint: Path):
    cfg = load_config(opts=["TEST.WEIGHT", str(demo_checkpoint)])
    sess = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 3, 256, 128), dtype=np.float32)
    got = sess.run(["class"], {"image": x})[0]
    ref = reference_features(cfg, x, batch_size=2)
    assert got.shape == (3, 2048)
    assert np.max(np.abs(got - ref)) <= 1e-4


def test_neck_feat_before_and_reuse(tmp_path: Path, demo_checkpoint: Path):
    cfg = load_config(
        opts=["TEST.WEIGHT", str(demo_checkpoint), "TEST.NECK_FEAT", "('before')", "TEST.FEAT_NORM", "('no')"]
    )
    r1 = export_onnx(cfg, tmp_path / "ReID.onnx")
    assert r1.neck_feat == "before" and not r1.reused
    assert r1.overrides["TEST.NECK_FEAT"] == "before"
    r2 = export_onnx(cfg, tmp_path / "ReID.onnx")
    assert r2.reused and r2.onnx_sha256 == r1.onnx_sha256
    assert load_report(tmp_path / "ReID.onnx").neck_feat == "before"
    # a different checkpoint is not reused
    sd = torch.load(demo_checkpoint, weights_only=True)
    sd["bottleneck.weight"] = sd["bottleneck.weight"] * 2
    torch.save(sd, tmp_path / "other.pth")
    r3 = export_onnx(load_config(opts=["TEST.WEIGHT", str(tmp_path / "other.pth")]), tmp_path / "ReID.onnx")
    assert not r3.reused and r3.onnx_sha256 != r1.onnx_sha256


def test_parity_failure_is_an_error_and_leaves_no_file(tmp_path: Path, demo_checkpoint: Path):
    cfg = load_config(opts=["TEST.WEIGHT", str(demo_checkpoint), "VALIDATION.PARITY.EXPORT_MAX_ABS", "0.0"])
    with pytest.raises(ExportError, match="differs from PyTorch by max abs"):
        export_onnx(cfg, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_no_checkpoint():
    with pytest.raises((ExportError, ConfigError), match=r"TEST\.WEIGHT"):
        export_onnx(load_config(), "/tmp/never.onnx")
