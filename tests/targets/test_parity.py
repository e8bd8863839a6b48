"""The parity gate (issue 9 section 2): the rule, its checks and messages, the parity sample, and the
comparison with the run's fp32 result where all evaluated records meet."""

from __future__ import annotations

import numpy as np
import pytest

from reid_tasks.config import load_config
from reid_tasks.errors import EvaluationError
from reid_tasks.targets.parity import apply_metric_rule, assess, evaluate_features, parity_record, sample_indices

CFG = load_config()


@pytest.fixture()
def ref() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((50, 2048)).astype(np.float32)


def test_fp32_max_abs_rule(ref) -> None:
    ok = assess(ref + 5e-4, ref, precision="fp32", cfg=CFG)
    assert not ok.flagged and ok.reasons == [] and ok.thresholds == {"max_abs_diff": 1e-3}
    assert ok.max_abs_diff == pytest.approx(5e-4, rel=1e-3) and ok.min_cosine > 0.9999
    bad = assess(ref + np.where(np.arange(2048) == 7, 2e-3, 0).astype(np.float32), ref, precision="fp32", cfg=CFG)
    assert bad.flagged and "FP32_MAX_ABS" in bad.reasons[0] and "0.002" in bad.reasons[0]


def test_reduced_precision_cosine_rule(ref) -> None:
    rng = np.random.default_rng(1)
    close = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)  # cos ~ 0.9988
    a = assess(close, ref, precision="int8", cfg=CFG)
    assert not a.flagged and a.min_cosine >= 0.99 and a.max_abs_diff > 1e-3  # abs rule is fp32-only
    far = close.copy()
    far[3] = ref[3] + 0.3 * rng.standard_normal(2048).astype(np.float32)  # one image: cos ~ 0.958
    b = assess(far, ref, precision="bf16", cfg=CFG)
    assert b.flagged and b.min_cosine < 0.99 and "REDUCED_MIN_COSINE" in b.reasons[0]


def test_reduced_precision_metric_rule(ref) -> None:
    base = {"rank1": 90.0, "mAP": 80.0}
    within = assess(ref, ref, {"rank1": 89.6, "mAP": 80.4}, base, precision="fp16", cfg=CFG)
    assert not within.flagged and within.metric_diff == pytest.approx({"rank1": -0.4, "mAP": 0.4})
    drop = assess(ref, ref, {"rank1": 89.0, "mAP": 80.0}, base, precision="int8", cfg=CFG, label="ort bs4 int8")
    assert drop.flagged and len(drop.reasons) == 1
    assert drop.reasons[0].startswith("ort bs4 int8: rank1 89.00% is 1.00 pt below the fp32 result 90.00%")
    assert "limit 0.5 pt" in drop.reasons[0]
    better = assess(ref, ref, {"rank1": 95.0, "mAP": 90.0}, base, precision="int8", cfg=CFG)
    assert not better.flagged  # the rule is a drop below fp32, not a difference
    no_base = assess(ref, ref, {"rank1": 10.0, "mAP": 10.0}, None, precision="int8", cfg=CFG)
    assert not no_base.flagged and no_base.metric_diff == {}


def test_metrics_objects_in_fractions_are_compared_in_percent(ref) -> None:
    from reid_tasks.evaluate import evaluate

    rng = np.random.default_rng(2)
    q_pids, g_pids = np.arange(10), np.repeat(np.arange(10), 3)
    q_cam, g_cam = np.zeros(10, int), np.ones(30, int)
    g = rng.standard_normal((30, 2048)).astype(np.float32)
    q = g[::3] + 0.5 * rng.standard_normal((10, 2048)).astype(np.float32)
    m = evaluate(q, g, q_pids, g_pids, q_cam, g_cam)
    a = assess(ref, ref, m, m.percent(), precision="int8", cfg=CFG)
    assert not a.flagged and a.metric_diff == {"rank1": 0.0, "mAP": 0.0}


def test_shape_mismatch_and_unknown_precision(ref) -> None:
    with pytest.raises(EvaluationError):
        assess(ref[:3], ref, precision="fp32", cfg=CFG)
    with pytest.raises(EvaluationError, match="unknown precision"):
        assess(ref, ref, precision="fp64", cfg=CFG)


def test_evaluate_features_splits_query_and_gallery(make_cache) -> None:
    rng = np.random.default_rng(3)
    pids = np.array([0, 1, 2, 0, 0, 1, 1, 2, 2])
    cache = make_cache(np.zeros((9, 3, 4, 4), np.float32), num_query=3)
    cache.pids, cache.camids = pids, np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    centers = rng.standard_normal((3, 2048)).astype(np.float32)
    feats = centers[pids] + 0.01 * rng.standard_normal((9, 2048)).astype(np.float32)
    m = evaluate_features(feats, cache, CFG)
    assert m.rank1 == 1.0 and m.num_query == 3 and m.num_gallery == 6
    with pytest.raises(EvaluationError, match="8 feature rows"):
        evaluate_features(feats[:8], cache, CFG)


def test_checks_name_measure_value_limit_and_artifact(ref) -> None:
    far = ref.copy()
    far[0] = -ref[0]
    a = assess(far, ref, precision="int8", cfg=CFG, label="openvino bs8 int8")
    [check] = a.checks
    assert (check.measure, check.limit, check.passed) == ("min_cosine", 0.99, False)
    assert check.value == pytest.approx(-1.0)
    assert check.message.startswith("openvino bs8 int8: min cosine") and "limit 0.99" in check.message
    record = parity_record(a, sample_size=50, fp32_source=None, fp32_metrics=None)
    assert record["passed"] is False and record["sample_size"] == 50
    assert set(record) == {
        "min_cosine",
        "mean_cosine",
        "max_abs_diff",
        "sample_size",
        "fp32_source",
        "fp32_metrics",
        "checks",
        "passed",
    }
    assert set(record["checks"][0]) >= {"measure", "value", "limit", "passed"}


def test_sample_is_stratified_over_query_and_gallery_and_deterministic() -> None:
    idx = sample_indices(100, 900, 50)
    assert len(idx) == 50 and len(set(idx.tolist())) == 50
    assert (idx < 100).sum() == 5 and (idx >= 100).sum() == 45  # in proportion to the split sizes
    assert np.array_equal(idx, sample_indices(100, 900, 50))
    assert idx[:5].max() - idx[:5].min() >= 60 and idx[5:].max() - idx[5:].min() >= 700  # spread, not a prefix
    assert (sample_indices(3, 2000, 10) < 3).sum() == 1  # a small split is still represented
    assert sample_indices(4, 6, 512).tolist() == list(range(10))  # covers everything when it can
    held_out = list(range(4, 8))
    assert not set(sample_indices(4, 6, 512, exclude=held_out).tolist()) & set(held_out)
    assert len(sample_indices(100, 900, 50, exclude=range(100, 200))) == 50
    with pytest.raises(EvaluationError):
        sample_indices(0, 0, 5)


def _evaluated(target, bs, precision, rank1, mAP, parity_checks=(), fp32_source=None, fp32_metrics=None):
    return {
        "target": target,
        "batch_size": bs,
        "precision": precision,
        "metrics": {"rank1": rank1, "mAP": mAP},
        "parity": {
            "min_cosine": 1.0,
            "mean_cosine": 1.0,
            "max_abs_diff": 0.0,
            "sample_size": 10,
            "fp32_source": fp32_source,
            "fp32_metrics": fp32_metrics,
            "checks": list(parity_checks),
            "passed": True,
        },
    }


def test_metric_rule_uses_the_same_targets_fp32_artifact_where_records_meet() -> None:
    cos_ok = {"measure": "min_cosine", "value": 0.999, "limit": 0.99, "passed": True, "message": "ok"}
    pytorch = {"rank1": 80.0, "mAP": 70.0}
    evaluations = [
        _evaluated("ort", 1, "fp32", 90.0, 80.0),
        _evaluated("ort", 4, "fp32", 90.0, 80.0),
        _evaluated("ort", 4, "int8", 89.0, 80.0, [cos_ok], "pytorch", pytorch),  # fine vs PyTorch, not vs fp32
        _evaluated("ov", 1, "int8", 79.9, 69.9, [cos_ok], "pytorch", pytorch),  # no fp32 of ov: PyTorch full set
        _evaluated("trt", 1, "fp16", 50.0, 40.0, [cos_ok]),  # no fp32 anywhere: not checked, said so
    ]
    out = apply_metric_rule(evaluations, CFG)
    assert apply_metric_rule(out, CFG) == out  # idempotent
    ort_int8, ov_int8, trt = out[2], out[3], out[4]
    assert ort_int8["parity"]["fp32_source"] == "ort fp32 bs4" and ort_int8["parity"]["fp32_metrics"]["rank1"] == 90.0
    assert ort_int8["flagged"] and not ort_int8["parity"]["passed"]
    [reason] = ort_int8["flag_reasons"]
    assert reason.startswith("ort bs4 int8: rank1 89.00% is 1.00 pt below the fp32 result 90.00% (ort fp32 bs4")
    assert [c["measure"] for c in ort_int8["parity"]["checks"]] == ["min_cosine", "rank1_drop", "mAP_drop"]
    assert ov_int8["parity"]["fp32_source"] == "pytorch" and ov_int8["parity"]["passed"]
    assert not trt["flagged"] and trt["parity"]["fp32_source"] is None
    assert [c["passed"] for c in trt["parity"]["checks"]] == [True, None, None]
    assert "no fp32 result of trt in this run" in trt["parity"]["checks"][1]["message"]
    assert not out[0]["flagged"] and out[0]["parity"]["checks"] == []
