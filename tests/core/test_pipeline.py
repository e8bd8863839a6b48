"""End to end: `reid-validate run` on a small synthetic Market-1501 (export, preprocess, ORT, evaluate, record)."""

import json
from pathlib import Path

from reid_tasks import cli, pipeline


def test_run_end_to_end(tmp_path: Path, synthetic_market: Path, demo_checkpoint: Path, capsys):
    db = f"sqlite:///{tmp_path / 'results.sqlite'}"
    argv = [
        "run",
        "--dataset-root",
        str(synthetic_market),
        "--weights",
        str(demo_checkpoint),
        "--batch-sizes",
        "1",
        "4",
        "--db",
        db,
        "--format",
        "json",
        "VALIDATION.BENCH.REPEATS",
        "1",
        "VALIDATION.BENCH.PURE_BATCHES",
        "2",
        "VALIDATION.ARTIFACTS_ROOT",
        str(tmp_path / "runs"),
    ]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "success"
    assert out["batch_invariant"] is True
    rows = out["rows"]
    assert [(r["target"], r["batch_size"], r["precision"]) for r in rows] == [
        ("onnxruntime", 1, "fp32"),
        ("onnxruntime", 4, "fp32"),
    ]
    for r in rows:
        assert r["throughput"] > 0 and r["latency_p99"] > 0
        # the demo checkpoint retrieves far above chance (12 ids: chance Rank-1 ~ 8 %)
        assert r["rank1"] >= 35.0 and r["mAP"] >= 30.0
        assert r["min_cosine"] > 0.9999 and not r["flag"]
    assert rows[0]["rank1"] == rows[1]["rank1"] and abs(rows[0]["mAP"] - rows[1]["mAP"]) < 1e-6

    # the results database holds the run with perf (real + pure) and accuracy rows
    from reid_tasks.results import ResultsStore

    store = ResultsStore.open(db)
    results = store.results()
    assert {(r.target, r.batch_size) for r in results} >= {("onnxruntime", 1), ("onnxruntime", 4)}

    # a second run is recorded beside the first (history grows, no duplicates of the first)
    assert cli.main(argv) == 0
    capsys.readouterr()
    keys = {r.run_key for r in ResultsStore.open(db).results()}
    assert len(keys) == 2


def test_table_format():
    rows = [
        {
            "target": "onnxruntime",
            "batch_size": 1,
            "precision": "fp32",
            "throughput": 12.5,
            "latency_p99": 80.0,
            "rank1": 91.0,
            "rank5": 97.0,
            "rank10": 98.0,
            "mAP": 80.1,
            "mINP": 50.0,
            "min_cosine": 1.0,
            "flag": "",
        }
    ]
    text = pipeline.format_table(rows)
    assert "img/s" in text.splitlines()[0] and "91.00" in text and "12.5" in text


def test_batch_invariance_detects_difference():
    def e(bs, r1):
        return {
            "target": "t",
            "precision": "fp32",
            "batch_size": bs,
            "metrics": {"rank1": r1, "rank5": 1, "rank10": 1, "mAP": 1},
        }

    assert pipeline.batch_invariance([e(1, 90.0), e(16, 90.05)], 0.1) == []
    problems = pipeline.batch_invariance([e(1, 90.0), e(16, 89.5)], 0.1)
    assert len(problems) == 1 and "batch 16" in problems[0]


def test_config_opts_from_params():
    from reid_tasks.config import load_config
    from reid_tasks.steps import config_opts

    opts = config_opts(
        {
            "config_overrides": ["TEST.NECK_FEAT before", "TEST.FEAT_NORM no"],
            "checkpoint": "/m/x.pth",
            "batch_sizes": [1, 8],
            "reference_rank1": 90.0,
        }
    )
    cfg = load_config(opts=opts)
    assert cfg.TEST.NECK_FEAT == "before" and cfg.TEST.FEAT_NORM == "no" and cfg.TEST.WEIGHT == "/m/x.pth"
    assert list(cfg.VALIDATION.BATCH_SIZES) == [1, 8]
    # an explicit Rank-1 expectation does not bring the published mAP of another checkpoint with it
    assert cfg.VALIDATION.REFERENCE.RANK1 == 90.0 and cfg.VALIDATION.REFERENCE.MAP == 0.0
    assert load_config(opts=config_opts({})).VALIDATION.REFERENCE.MAP == 85.9


def test_bad_inputs_fail_before_any_heavy_step(tmp_path: Path, synthetic_market: Path, demo_checkpoint: Path, capsys):
    base = ["run", "--db", f"sqlite:///{tmp_path / 'r.sqlite'}", "VALIDATION.ARTIFACTS_ROOT", str(tmp_path / "runs")]
    cases = [
        (["--dataset-root", str(tmp_path / "missing"), "--weights", str(demo_checkpoint)], "does not exist"),
        (["--dataset-root", str(synthetic_market), "--weights", str(tmp_path / "none.pth")], "checkpoint not found"),
        (
            ["--dataset-root", str(synthetic_market), "--weights", str(demo_checkpoint), "--targets", "nope"],
            "unknown target 'nope'; valid targets: ascend310, onnxruntime",
        ),
    ]
    for extra, message in cases:
        assert cli.main([*base[:1], *extra, *base[1:]]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was exported or converted


def test_published_reference_applies_only_to_the_released_checkpoint(demo_checkpoint: Path, monkeypatch):
    from reid_tasks import steps
    from reid_tasks.utils import file_digest

    ctx = {"checkpoint": str(demo_checkpoint), "reference_explicit": False}
    assert not steps.reference_applies(ctx)
    assert steps.reference_applies({**ctx, "reference_explicit": True})
    monkeypatch.setattr(steps.verdict, "RELEASED_CHECKPOINT_MD5", file_digest(demo_checkpoint, "md5"))
    assert steps.reference_applies(ctx)
    assert steps.verdict.RELEASED_CHECKPOINT_MD5 != "0811054928b8aa70b6ea64e71ef99aaf"  # the patch took effect
