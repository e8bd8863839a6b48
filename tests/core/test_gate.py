"""Issue 9 sections 2, 4 and 6 through the steps and the CLI: the parity gate turns a run red, one failed
artifact does not lose the others, int8 is calibrated on data the evaluation does not use."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from reid_tasks import cli, steps
from reid_tasks.targets.onnxruntime import OnnxRuntimeTarget

FAST = ["VALIDATION.BENCH.REPEATS", "1", "VALIDATION.BENCH.WARMUP", "0", "VALIDATION.BENCH.PURE_BATCHES", "1"]


def _run(
    tmp_path: Path, dataset: Path, checkpoint: Path, *extra: str, overrides: tuple[str, ...] = ()
) -> tuple[int, list]:
    argv = [
        "run",
        "--dataset-root",
        str(dataset),
        "--weights",
        str(checkpoint),
        *extra,
        "--db",
        f"sqlite:///{tmp_path / 'results.sqlite'}",
        "--format",
        "json",
        *FAST,
        *overrides,
        "VALIDATION.CALIBRATION.NUM_IMAGES",
        "8",
        "VALIDATION.ARTIFACTS_ROOT",
        str(tmp_path / "runs"),
    ]
    return cli.main(argv), argv


# ------------------------------------------------------------------------------------------------ section 4
def test_capture_failure_writes_the_failure_and_reraises(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="reid_tasks")  # as in the CLI and an Airflow task
    ctx = {"run_dir": str(tmp_path)}
    combo = {"target": "onnxruntime", "batch_size": 4, "precision": "int8"}
    with steps.capture_failure(ctx, "benchmark", combo):  # success: nothing written
        pass
    assert steps.run_failures(ctx) == []
    with pytest.raises(RuntimeError, match="device busy"), steps.capture_failure(ctx, "benchmark", combo, attempt=2):
        logging.getLogger("reid_tasks.targets").info("loading model.onnx")
        raise RuntimeError("device busy")
    [failure] = steps.run_failures(ctx)
    assert failure["stage"] == "benchmark" and failure["attempt"] == 2 and failure["batch_size"] == 4
    assert failure["message"] == "RuntimeError: device busy"
    assert "loading model.onnx" in failure["log_tail"] and "Traceback" in failure["log_tail"]
    assert not list((tmp_path / "failures").glob(".*"))  # atomic: no temp file left
    evaluated = {"target": "onnxruntime", "batch_size": 4, "precision": "int8"}
    assert steps.run_failures(ctx, [evaluated]) == []  # a retry that produced a result wins
    with pytest.raises(ValueError, match="stage"), steps.capture_failure(ctx, "record", combo):
        pass


def test_one_failed_conversion_of_six_keeps_the_other_five(
    tmp_path: Path, synthetic_market: Path, demo_checkpoint: Path, capsys, monkeypatch
) -> None:
    build = OnnxRuntimeTarget._build

    def failing_build(self, onnx_path, batch_size, precision, out_dir, **kw):
        if batch_size == 2:
            raise RuntimeError("onnxruntime: graph optimisation failed for bs2")
        return build(self, onnx_path, batch_size, precision, out_dir, **kw)

    monkeypatch.setattr(OnnxRuntimeTarget, "_build", failing_build)
    code, argv = _run(
        tmp_path,
        synthetic_market,
        demo_checkpoint,
        "--targets",
        "onnxruntime",
        "openvino",
        "--batch-sizes",
        "1",
        "2",
        "4",
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["status"] == "failed"
    assert sorted((r["target"], r["batch_size"]) for r in out["rows"]) == [
        ("onnxruntime", 1),
        ("onnxruntime", 4),
        ("openvino", 1),
        ("openvino", 2),
        ("openvino", 4),
    ]
    [failure] = out["verdict"]["failures"]
    assert (failure["target"], failure["batch_size"], failure["precision"], failure["stage"]) == (
        "onnxruntime",
        2,
        "fp32",
        "convert",
    )
    assert "graph optimisation failed for bs2" in failure["message"]

    from reid_tasks.results import ResultsStore

    rows = ResultsStore.open(argv[argv.index("--db") + 1]).results()
    assert len({r.run_key for r in rows}) == 1
    assert sorted((r.target, r.batch_size) for r in rows if r.rank1 is not None) == sorted(
        (r["target"], r["batch_size"]) for r in out["rows"]
    )


# ------------------------------------------------------------------------------------------------ section 6
@pytest.fixture(scope="module")
def market_without_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reid_tasks.datasets import make_synthetic_market1501

    root = tmp_path_factory.mktemp("no-train")
    make_synthetic_market1501(root, num_ids=6, seed=3)
    return root


def _ctx(tmp_path: Path, dataset: Path, checkpoint: Path, **params) -> dict:
    return steps.prepare_run(
        {
            "dataset_root": str(dataset),
            "checkpoint": str(checkpoint),
            "db_url": f"sqlite:///{tmp_path / 'r.sqlite'}",
            "config_overrides": [
                "VALIDATION.CALIBRATION.NUM_IMAGES 8",
                f"VALIDATION.ARTIFACTS_ROOT {tmp_path / 'runs'}",
            ],
            **params,
        }
    )


def test_calibration_uses_bounding_box_train_when_there_is_one(tmp_path, synthetic_market, demo_checkpoint) -> None:
    ctx = _ctx(tmp_path, synthetic_market, demo_checkpoint)
    calib = steps.calibration_set(ctx)
    assert calib.record["split"] == "train" and calib.record["num_images"] == 8 == calib.images.shape[0]
    assert all("_c" in name for name in calib.record["images"])
    train = sorted(p.name for p in next(synthetic_market.iterdir()).joinpath("bounding_box_train").glob("*.jpg"))
    assert set(calib.record["images"]) <= set(train) and len({n.split("_")[0] for n in calib.record["images"]}) > 2
    assert steps.calibration_set(ctx).record["fingerprint"] == calib.record["fingerprint"]  # deterministic
    assert len(calib.record["fingerprint"]) == 64


def test_calibration_holds_out_gallery_images_the_parity_sample_excludes(
    tmp_path, market_without_train, demo_checkpoint
) -> None:
    ctx = _ctx(
        tmp_path,
        market_without_train,
        demo_checkpoint,
        config_overrides=[
            "VALIDATION.CALIBRATION.NUM_IMAGES 8",
            "VALIDATION.PARITY.SAMPLE 20",
            f"VALIDATION.ARTIFACTS_ROOT {tmp_path / 'runs'}",
        ],
    )
    calib = steps.calibration_set(ctx)
    assert calib.record["split"] == "gallery-holdout" and calib.record["num_images"] == 8
    data = steps.preprocess_data(ctx)
    ref = steps.reference_features(ctx, data)
    from reid_tasks.preprocess import TensorCache

    cache = TensorCache.open(data["cache_dir"])
    held_out = {i for i, it in enumerate(cache.items) if Path(it.path).name in calib.record["images"]}
    assert len(held_out) == 8 and ref["held_out"] == 8 and min(held_out) >= cache.num_query  # gallery only
    indices = set(np.load(ref["indices_path"]).tolist())
    assert ref["sample_size"] == len(indices) == 20 and not indices & held_out
    assert any(i < cache.num_query for i in indices) and any(i >= cache.num_query for i in indices)
    assert np.load(ref["path"]).shape == (20, 2048)

    # another calibration image is another fingerprint
    first = market_without_train / "Market-1501-v15.09.15" / "bounding_box_test" / calib.record["images"][0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert steps.calibration_set(ctx).record["fingerprint"] != calib.record["fingerprint"]


# ------------------------------------------------------------------------------------------------ section 2
def test_int8_below_the_parity_limit_turns_the_cli_run_red(
    tmp_path: Path, synthetic_market: Path, demo_checkpoint: Path, capsys
) -> None:
    code, _argv = _run(
        tmp_path,
        synthetic_market,
        demo_checkpoint,
        "--targets",
        "onnxruntime",
        "--precisions",
        "fp32",
        "int8",
        "--batch-sizes",
        "1",
        "--run-key",
        "local/parity-gate",
        overrides=("VALIDATION.PARITY.REDUCED_MIN_COSINE", "0.99999"),
    )
    assert code == 1  # the parity gate fails the run like any other alert
    out = json.loads(capsys.readouterr().out)
    by_precision = {r["precision"]: r for r in out["rows"]}
    assert not by_precision["fp32"]["flag"]
    flag = by_precision["int8"]["flag"]
    assert flag.startswith("onnxruntime bs1 int8: min cosine similarity to the PyTorch fp32 reference 0.9")
    assert "limit 0.99999 (VALIDATION.PARITY.REDUCED_MIN_COSINE)" in flag

    # `reid-validate alerts --format json` lists the parity alert of the int8 artifact
    assert cli.main(["alerts", "--db", f"sqlite:///{tmp_path / 'results.sqlite'}", "--format", "json"]) == 0
    alerts = json.loads(capsys.readouterr().out)
    parity = [a for a in alerts if a["rule"] == "parity"]
    assert [(a["run_key"], a["metric"], a["threshold"]) for a in parity] == [
        ("local/parity-gate", "min_cosine", 0.99999)
    ]
    assert "onnxruntime/bs1/int8" in parity[0]["message"] and parity[0]["observed"] < 0.99999

    manifest = json.loads(
        next((tmp_path / "runs").rglob("onnxruntime_bs1_int8/artifact.json")).read_text(encoding="utf-8")
    )
    calibration = manifest["artifact"]["calibration"]
    assert calibration["split"] == "train" and calibration["num_images"] == 8
    assert manifest["key"]["calibration"] == {"fingerprint": calibration["fingerprint"]}
