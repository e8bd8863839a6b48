"""CLI sub-commands, and the real ResNet50 export through the PyTorch reference and ONNX Runtime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from reid_tasks.config import load_config
from reid_tasks.errors import TargetError
from reid_tasks.targets import get_target
from reid_tasks.targets.cli import register
from reid_tasks.targets.parity import assess


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reid-validate")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_targets_lists_availability(capsys) -> None:
    assert _cli(["targets", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["onnxruntime"]["available"] and "fp32" in rows["onnxruntime"]["precisions"]
    assert rows["pytorch"]["queue"] == "default" and rows["ascend310"]["pool"] == "ascend310_devices"
    assert all(r["available"] or r["reason"] for r in rows.values())
    assert _cli(["targets"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["target", "queue", "pool", "device"]
    assert any(line.startswith("onnxruntime ") and " yes " in line for line in table)


def test_cli_convert_and_benchmark(tiny_onnx, small_cache, tmp_path, capsys) -> None:
    out = tmp_path / "arts"
    argv = ["convert", "--target", "onnxruntime", "--batch-size", "4", "--precision", "fp32", "--format", "json"]
    assert _cli([*argv, str(tiny_onnx), str(out)]) == 0
    art = json.loads(capsys.readouterr().out)
    assert art["batch_size"] == 4 and Path(art["path"]).is_file()

    assert (
        _cli(
            [
                "benchmark",
                "--target",
                "onnxruntime",
                art["path"],
                "--data",
                str(small_cache.dir),
                "--format",
                "json",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    perf = json.loads(capsys.readouterr().out)
    assert perf["samples"] == len(small_cache) and perf["mode"] == "real"
    assert np.load(tmp_path / "run" / "features.npy").shape == (len(small_cache), 2048)

    artifact_dir = str(Path(art["path"]).parent)
    assert (
        _cli(
            [
                "benchmark",
                "--target",
                "onnxruntime",
                artifact_dir,
                "--pure",
                "--batches",
                "2",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--format",
                "json",
            ]
        )
        == 0
    )
    pure = json.loads(capsys.readouterr().out)
    assert pure["mode"] == "pure" and pure["samples"] == 8

    with pytest.raises(TargetError, match="--data CACHE is required"):
        _cli(["benchmark", "--target", "onnxruntime", artifact_dir])
    with pytest.raises(TargetError, match="no artifact manifest"):
        _cli(["benchmark", "--target", "onnxruntime", str(tmp_path), "--pure"])


def test_cli_int8_with_calibration_cache(tiny_onnx, small_cache, tmp_path, capsys) -> None:
    argv = [
        "convert",
        "--target",
        "openvino",
        "--batch-size",
        "2",
        "--precision",
        "int8",
        "--format",
        "json",
        "--calibration",
        str(small_cache.dir),
        str(tiny_onnx),
        str(tmp_path),
    ]
    assert _cli(argv) == 0
    cal = json.loads(capsys.readouterr().out)["calibration"]
    assert cal["num_images"] == small_cache.num_query and cal["cache"] == str(small_cache.dir)
    assert cal["images"] == [it.path for it in small_cache.items[: small_cache.num_query]]


def test_real_model_pytorch_reference_and_ort_parity(real_onnx, small_cache, tmp_path) -> None:
    """The real export: the PyTorch target reproduces reference_features, ORT fp32 meets the fp32 rule."""
    from reid_tasks.export import load_report, reference_features

    report = load_report(real_onnx)
    cfg = load_config(opts=[x for kv in report.overrides.items() for x in kv])
    x = small_cache.batch(0, 5)
    expected = reference_features(cfg, x, weights=report.checkpoint)

    pt = get_target("pytorch", cfg)
    art = pt.convert(real_onnx, 2, "fp32", tmp_path)
    spec = json.loads(Path(art.path).read_text())
    assert spec["checkpoint_sha256"] == report.checkpoint_sha256 and "load_model" in art.command
    feats, perf = pt.run(art, x, warmup=0, repeats=1)
    assert np.abs(feats - expected).max() <= 1e-5 and perf.batch_size == 2 and perf.device_kind == "cpu"

    ort_t = get_target("onnxruntime", cfg)
    ort_art = ort_t.convert(real_onnx, 2, "fp32", tmp_path)
    ort_feats, _ = ort_t.run(ort_art, x, warmup=0, repeats=1)  # 5 rows at batch 2: one padded batch
    a = assess(ort_feats, expected, precision="fp32", cfg=cfg)
    assert not a.flagged, a.reasons
