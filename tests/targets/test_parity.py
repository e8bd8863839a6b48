"""The accuracy / parity rule of issue 3 section 6."""

from __future__ import annotations

import numpy as np
import pytest

from reid_tasks.config import load_config
from reid_tasks.errors import EvaluationError
from reid_tasks.targets.parity import assess, evaluate_features

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
    drop = assess(ref, ref, {"rank1": 89.0, "mAP": 80.0}, base, precision="int8", cfg=CFG)
    assert drop.flagged and len(drop.reasons) == 1 and "rank1" in drop.reasons[0] and "-1.00 pt" in drop.reasons[0]
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
