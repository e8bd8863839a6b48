"""ONNX Runtime and OpenVINO targets on the tiny model: conversion, parity, padding, int8, pure mode, reuse."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from reid_tasks.config import load_config
from reid_tasks.errors import BenchmarkError, ConversionError
from reid_tasks.targets import Artifact, BuildOutput, get_target
from reid_tasks.targets.build import build_artifact
from reid_tasks.targets.parity import assess

CFG = load_config(opts=["VALIDATION.CALIBRATION.NUM_IMAGES", 16])


@pytest.fixture(scope="module")
def ref(tiny_onnx: Path, images: np.ndarray, ort_ref) -> np.ndarray:
    return ort_ref(tiny_onnx, images)


@pytest.fixture(scope="module")
def art_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.mark.parametrize("batch", [4, 16])
def test_ort_fp32_static_batch_parity_and_padding(tiny_onnx, images, ref, art_dir, batch) -> None:
    t = get_target("onnxruntime", CFG)
    art = t.convert(tiny_onnx, batch, "fp32", art_dir)
    assert Path(art.path).name == "model.onnx" and Path(art.path).parent.name == f"onnxruntime_bs{batch}_fp32"
    assert art.batch_size == batch and art.precision == "fp32" and art.calibration is None
    assert art.extra["input_shape"] == [batch, 3, 256, 128]
    assert "ORT_ENABLE_ALL" in art.command and "update_inputs_outputs_dims" in art.command
    assert Path(art.build_log).is_file() and art.tool_versions["onnxruntime"]
    import onnxruntime as ort

    sess = ort.InferenceSession(art.path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [batch, 3, 256, 128]  # static batch saved in the artifact

    feats, perf = t.run(art, images, warmup=1, repeats=2)
    assert feats.shape == (21, 2048) and feats.dtype == np.float32
    assert np.abs(feats - ref).max() <= 1e-4  # 21 rows: last batch padded, padded rows dropped
    assert perf.samples == 21 and perf.batch_size == batch and perf.repeats == 2 and perf.warmup == 1
    assert perf.mode == "real" and perf.device_kind == "cpu" and perf.precision == "fp32"
    assert perf.throughput_best >= perf.throughput_median > 0
    assert perf.latency_ms_p50 <= perf.latency_ms_p99
    assert perf.e2e_throughput is not None and perf.e2e_throughput > 0
    assert perf.card_throughput is None
    assert not assess(feats, ref, precision="fp32", cfg=CFG).flagged


def test_convert_is_idempotent_and_atomic(tiny_onnx, art_dir) -> None:
    t = get_target("onnxruntime", CFG)
    a1 = t.convert(tiny_onnx, 2, "fp32", art_dir)
    mtime = os.stat(a1.path).st_mtime_ns
    a2 = t.convert(tiny_onnx, 2, "fp32", art_dir)
    assert a2 == a1 and os.stat(a1.path).st_mtime_ns == mtime
    assert Artifact.load(Path(a1.path).parent) == a1
    # A tampered file is detected and the artifact rebuilt.
    Path(a1.path).write_bytes(b"garbage")
    a3 = t.convert(tiny_onnx, 2, "fp32", art_dir)
    assert a3.sha256 == a1.sha256 and Path(a3.path).read_bytes() != b"garbage"
    assert not [p for p in art_dir.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_failed_build_leaves_nothing(tmp_path) -> None:
    def bad(tmp: Path) -> BuildOutput:
        (tmp / "half.onnx").write_bytes(b"x")
        raise ConversionError("tool crashed")

    with pytest.raises(ConversionError, match="tool crashed"):
        build_artifact(
            target="x",
            name="x_bs1_fp32",
            out_dir=tmp_path,
            key={"a": 1},
            batch_size=1,
            precision="fp32",
            tool_versions={},
            build=bad,
        )
    assert list(tmp_path.iterdir()) == []


def test_run_on_a_cache_counts_loading(tiny_onnx, images, ref, art_dir, tmp_path, make_cache) -> None:
    t = get_target("onnxruntime", CFG)
    art = t.convert(tiny_onnx, 8, "fp32", art_dir)
    cache = make_cache(images, num_query=9)
    feats, _ = t.run(art, cache, tmp_path / "out", warmup=0, repeats=1)
    assert cache.batch_calls == 3  # ceil(21 / 8), one pass, no warm-up
    assert np.abs(feats - ref).max() <= 1e-4
    saved = np.load(tmp_path / "out" / "features.npy")
    assert np.array_equal(saved, feats)
    assert json.loads((tmp_path / "out" / "perf.json").read_text())["samples"] == 21


def test_pure_mode_does_no_file_io(tiny_onnx, art_dir, tmp_path, monkeypatch) -> None:
    t = get_target("onnxruntime", CFG)
    art = t.convert(tiny_onnx, 4, "fp32", art_dir)
    monkeypatch.chdir(tmp_path)
    for data in ("random", "zero"):
        perf = t.benchmark_pure(art, batches=3, repeats=2, data=data, warmup=1)
        assert perf.mode == "pure" and perf.samples == 12 and perf.e2e_throughput is None
        assert perf.extra["data"] == data and perf.repeats == 2
        assert perf.extra["artifact_sha256"] == art.sha256 and perf.precision == "fp32"
        assert perf.tool_versions == art.tool_versions and perf.tool_versions
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BenchmarkError, match="random' or 'zero"):
        t.benchmark_pure(art, batches=1, repeats=1, data="ones", warmup=0)


def test_run_rejects_other_targets_artifact(tiny_onnx, art_dir, images) -> None:
    art = get_target("onnxruntime", CFG).convert(tiny_onnx, 4, "fp32", art_dir)
    with pytest.raises(BenchmarkError, match="built for 'onnxruntime'"):
        get_target("openvino", CFG).run(art, images)


def test_ort_int8_calibration_recorded(tiny_onnx, images, ref, art_dir, make_cache) -> None:
    t = get_target("onnxruntime", CFG)
    cache = make_cache(images, num_query=9)
    with pytest.raises(ConversionError, match="calibration"):
        t.convert(tiny_onnx, 4, "int8", art_dir)
    art = t.convert(tiny_onnx, 4, "int8", art_dir, calibration=cache)
    cal = art.calibration
    assert cal["split"] == "query" and cal["num_images"] == 9  # min(NUM_IMAGES=16, 9 query images)
    assert cal["images"] == cache.items[:9] and cal["fingerprint"] == cache.fingerprint
    assert "quantize_static" in art.command and "QDQ" in art.command and "per_channel=True" in art.command
    import onnx

    ops = {n.op_type for n in onnx.load(art.path).graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger"}, ops
    feats, _ = t.run(art, images, warmup=0, repeats=1)
    a = assess(feats, ref, precision="int8", cfg=CFG)
    assert a.max_abs_diff > 1e-6  # really quantised
    assert a.flagged == (a.min_cosine < 0.99)
    # Another calibration set is another artifact build.
    art2 = t.convert(tiny_onnx, 4, "int8", art_dir, calibration=make_cache(images, num_query=5))
    assert art2.calibration["num_images"] == 5 and art2.path == art.path


ov_target = get_target("openvino", CFG)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_convert_and_run(tiny_onnx, images, ref, art_dir, precision, make_cache) -> None:
    if precision not in ov_target.supported_precisions():
        pytest.skip(f"{precision} not supported on this CPU")
    art = ov_target.convert(tiny_onnx, 4, precision, art_dir, calibration=make_cache(images, 9))
    xml = Path(art.path)
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    assert "model.bin" in art.extra["files"] and art.extra["input_shape"] == [4, 3, 256, 128]
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]
    assert art.extra["compile_config"]["INFERENCE_PRECISION_HINT"] == hint
    feats, perf = ov_target.run(art, images, warmup=1, repeats=1)
    assert feats.shape == (21, 2048)
    a = assess(feats, ref, precision=precision, cfg=CFG)
    if precision == "fp32":
        assert a.max_abs_diff <= 1e-4 and not a.flagged
    else:
        assert a.max_abs_diff > 1e-6 and a.min_cosine > 0.9
        assert a.flagged == (a.min_cosine < 0.99)
    if precision == "int8":
        assert art.calibration["num_images"] == 9 and "nncf.quantize" in art.command
    assert perf.extra["execution_precision"] == hint


def test_openvino_int8_saturation_detection(monkeypatch) -> None:
    from reid_tasks.targets import openvino

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(openvino, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert openvino.int8_saturates()
    monkeypatch.setattr(openvino, "cpu_flags", lambda: frozenset({"avx2", "avx_vnni"}))
    assert not openvino.int8_saturates()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN capped below VNNI: saturates whatever the CPU has
    assert openvino.int8_saturates()
    assert ov_target.settings("int8")["nncf"]["overflow_fix"] == "enable"


@pytest.mark.skipif("int8" not in ov_target.supported_precisions(), reason="nncf not installed")
def test_openvino_int8_without_vnni_uses_overflow_fix_or_refuses(tiny_onnx, images, tmp_path, monkeypatch) -> None:
    """On a CPU without VNNI (simulated: the saturation test is forced) int8 is quantised with NNCF's overflow
    fix on every layer and checked against fp32 on the calibration images; below the limit it is refused."""
    from reid_tasks.errors import PrecisionNotSupported
    from reid_tasks.targets import openvino
    from reid_tasks.targets.build import CalibrationSet

    monkeypatch.setattr(openvino, "int8_saturates", lambda: True)
    calib = CalibrationSet(images[:8], {"split": "train", "num_images": 8, "fingerprint": "f" * 64})
    art = ov_target.convert(tiny_onnx, 4, "int8", tmp_path / "a", calibration=calib)
    assert "overflow_fix=OverflowFix.ENABLE" in art.command
    check = art.calibration["saturation_check"]
    assert check["images"] == 8 and check["min_cosine"] >= check["limit"] == 0.99
    assert art.calibration["fingerprint"] == "f" * 64 and art.calibration["split"] == "train"

    strict = get_target("openvino", load_config(opts=["VALIDATION.PARITY.REDUCED_MIN_COSINE", 0.999999]))
    with pytest.raises(PrecisionNotSupported, match=r"refuses int8 on this CPU .*min cosine .* limit 0.999999"):
        strict.convert(tiny_onnx, 4, "int8", tmp_path / "b", calibration=calib)
    assert not list((tmp_path / "b").glob("openvino_*"))  # nothing half-built left behind
