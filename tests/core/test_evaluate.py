"""reid_tasks.evaluate against a straightforward per-query implementation of the reid-strong-baseline protocol."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from reid_tasks import ranking
from reid_tasks.errors import EvaluationError
from reid_tasks.evaluate import Metrics, compute_distance, cosine_parity, evaluate
from reid_tasks.reranking import re_ranking

ROOT = Path(__file__).resolve().parents[2]


def _load_rsb_reference():
    spec = importlib.util.spec_from_file_location("rsb_reference", ROOT / "benchmarks" / "rsb_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rsb = _load_rsb_reference()


def protocol(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """One query at a time, stable argsort (ties by gallery index); CMC padded with its last value."""
    num_q = distmat.shape[0]
    cmcs, aps, inps = [], [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hits = (g_pids[order][keep] == q_pids[i]).astype(np.int64)
        if hits.sum() == 0:
            continue
        ranks = np.nonzero(hits)[0] + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmc = np.zeros(max_rank)
        cmc[ranks[0] - 1 :] = 1.0
        cmcs.append(cmc)
    if not cmcs:
        return None
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(cmcs)


def make_data(seed=0, nq=40, ng=300, dim=16, num_ids=12, num_cams=3, integer=False):
    """Clustered features with distractors (pid 0), junk, absent query pids and single-camera identities."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids + 3, dim)) * 1.5
    q_pids = rng.integers(1, num_ids + 3, nq)  # pids > num_ids never appear in the gallery
    q_cams = rng.integers(0, num_cams, nq)
    g_pids = rng.integers(0, num_ids + 1, ng)  # 0 = distractor
    g_cams = rng.integers(0, num_cams, ng)
    lonely = 2  # only ever seen by camera 1
    g_cams[g_pids == lonely] = 1
    q_cams[q_pids == lonely] = 1
    qf = centers[q_pids] + rng.standard_normal((nq, dim))
    gf = centers[g_pids] + rng.standard_normal((ng, dim))
    gf[g_pids == 0] = rng.standard_normal((int((g_pids == 0).sum()), dim)) * 2.0
    if integer:  # small integers: exact float32 arithmetic, many exact distance ties
        qf, gf = np.round(qf), np.round(gf)
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def assert_matches_protocol(m: Metrics, ref, max_rank=50):
    cmc, mAP, mINP, nvalid = ref
    assert m.num_valid_queries == nvalid
    assert m.cmc.shape == (max_rank,)
    np.testing.assert_allclose(m.cmc, cmc, rtol=0, atol=1e-12)
    assert m.mAP == pytest.approx(mAP, abs=1e-12)
    assert m.mINP == pytest.approx(mINP, abs=1e-12)
    assert m.rank1 == pytest.approx(cmc[0], abs=1e-12)
    if max_rank >= 5:
        assert m.rank5 == pytest.approx(cmc[4], abs=1e-12)


@pytest.mark.parametrize("feat_norm", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_straightforward_protocol(seed, feat_norm):
    qf, gf, qp, gp, qc, gc = make_data(seed)
    m = evaluate(qf, gf, qp, gp, qc, gc, feat_norm=feat_norm)
    ref = protocol(compute_distance(qf, gf, feat_norm=feat_norm), qp, gp, qc, gc)
    assert_matches_protocol(m, ref)
    assert m.num_query == 40 and m.num_gallery == 300
    assert m.num_skipped_queries == 40 - ref[3] > 0  # absent pids and the single-camera identity
    assert 0 < m.mAP < 1 and 0 < m.mINP <= m.mAP


def test_distractors_and_junk_matter():
    qf, gf, qp, gp, qc, gc = make_data(3)
    base = evaluate(qf, gf, qp, gp, qc, gc)
    # relabelling distractors as a query identity or ignoring camera ids must change the result
    gp2 = gp.copy()
    gp2[gp == 0] = qp[0]
    assert evaluate(qf, gf, qp, gp2, qc, gc).as_dict() != base.as_dict()
    same_cam = protocol(compute_distance(qf, gf), qp, gp, qc, gc + 100)
    assert same_cam[1] != pytest.approx(base.mAP)


def test_ties_are_ordered_by_gallery_index():
    qf, gf, qp, gp, qc, gc = make_data(4, ng=400, dim=3, integer=True)
    rng = np.random.default_rng(4)
    dup = rng.permutation(400)[:200]  # exact duplicates with other labels, shuffled
    gf = np.concatenate([gf, gf[dup]])
    gp, gc = np.concatenate([gp, rng.permutation(gp[dup])]), np.concatenate([gc, gc[dup]])
    d = compute_distance(qf, gf, feat_norm=False)
    assert np.array_equal(d, rsb.distance_matrix(qf, gf, feat_norm=False))
    m = evaluate(qf, gf, qp, gp, qc, gc, feat_norm=False, chunk_size=7)
    assert m.num_tie_queries > 0
    assert_matches_protocol(m, protocol(d, qp, gp, qc, gc))
    # an order that breaks ties by reversed index gives a different answer: the tie rule is tested
    rev = protocol(d[:, ::-1], qp, gp[::-1], qc, gc[::-1])
    assert rev[1] != pytest.approx(m.mAP, abs=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 39, 40, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_chunking_is_invisible(chunk_size, threads):
    qf, gf, qp, gp, qc, gc = make_data(5, integer=True)
    full = evaluate(qf, gf, qp, gp, qc, gc, feat_norm=False, chunk_size=None, threads=1)
    m = evaluate(qf, gf, qp, gp, qc, gc, feat_norm=False, chunk_size=chunk_size, threads=threads)
    assert m.as_dict() == full.as_dict()
    assert_matches_protocol(m, protocol(compute_distance(qf, gf, feat_norm=False), qp, gp, qc, gc))


def test_float_distances_do_not_depend_on_chunking():
    # BLAS rounding depends on the GEMM shape; fixed-shape tiles keep every chunking bit-identical
    qf, gf, qp, gp, qc, gc = make_data(16, nq=600, ng=500, dim=64)
    d = compute_distance(qf, gf)
    base = evaluate(qf, gf, qp, gp, qc, gc)
    for chunk_size in (1, 7, 255, 256, 257, 600):
        m = evaluate(qf, gf, qp, gp, qc, gc, chunk_size=chunk_size)
        assert m.as_dict() == base.as_dict(), chunk_size
    assert evaluate(qf, gf, qp, gp, qc, gc, memory_budget=1).as_dict() == base.as_dict()
    assert_matches_protocol(base, protocol(d, qp, gp, qc, gc))


def test_candidate_splitting(monkeypatch):
    qf, gf, qp, gp, qc, gc = make_data(6)
    full = evaluate(qf, gf, qp, gp, qc, gc)
    monkeypatch.setattr(ranking, "_MAX_CANDIDATES", 5)
    assert evaluate(qf, gf, qp, gp, qc, gc).as_dict() == full.as_dict()


def test_max_rank_larger_than_gallery():
    qf, gf, qp, gp, qc, gc = make_data(7, ng=30)
    m = evaluate(qf, gf, qp, gp, qc, gc, max_rank=50)
    ref = protocol(compute_distance(qf, gf), qp, gp, qc, gc, max_rank=50)
    assert_matches_protocol(m, ref)
    assert np.all(m.cmc[29:] == 1.0)
    # reid-strong-baseline truncates to the gallery size (and, with junk removed, fails on ragged rows);
    # without junk the common part is identical
    d = compute_distance(qf, gf)
    with pytest.raises(ValueError):
        rsb.eval_func(d, qp, gp, qc, gc, max_rank=50, argsort_kind="stable")
    m = evaluate(qf, gf, qp, gp, qc + 10, gc, max_rank=50)
    rcmc, rmap, _, _ = rsb.eval_func(d, qp, gp, qc + 10, gc, max_rank=50, argsort_kind="stable")
    assert rcmc.shape == (30,)
    np.testing.assert_array_equal(m.cmc[:30].astype(np.float32), rcmc)
    assert np.all(m.cmc[29:] == 1.0)
    assert m.mAP == pytest.approx(rmap, abs=1e-12)


def test_small_max_rank_keeps_rank20():
    qf, gf, qp, gp, qc, gc = make_data(8)
    m5 = evaluate(qf, gf, qp, gp, qc, gc, max_rank=5)
    m50 = evaluate(qf, gf, qp, gp, qc, gc)
    assert m5.cmc.shape == (5,)
    np.testing.assert_array_equal(m5.cmc, m50.cmc[:5])
    assert m5.rank20 == m50.rank20 and m5.rank10 == m50.rank10


def test_hand_computed_example():
    # one query (pid 7, cam 0) at 0; gallery on a line; first entry is same-pid-same-cam junk
    qf = np.array([[0.0]], dtype=np.float32)
    gf = np.array([[0.5], [1], [2], [3], [4], [5], [6]], dtype=np.float32)
    g_pids = np.array([7, 3, 7, 4, 5, 7, 8])
    g_cams = np.array([0, 1, 1, 1, 1, 2, 1])
    m = evaluate(qf, gf, [7], g_pids, [0], g_cams, feat_norm=False, max_rank=6)
    # valid order: pid3, 7 (rank 2), 4, 5, 7 (rank 5), 8
    assert m.mINP == pytest.approx(2 / 5)
    assert m.mAP == pytest.approx((1 / 2 + 2 / 5) / 2)
    np.testing.assert_array_equal(m.cmc, [0, 1, 1, 1, 1, 1])
    assert (m.rank1, m.rank5) == (0.0, 1.0)
    # without the camera rule the junk entry would be rank 1
    m2 = evaluate(qf, gf, [7], g_pids, [9], g_cams, feat_norm=False, max_rank=6)
    assert m2.rank1 == 1.0 and m2.mINP == pytest.approx(3 / 6)


def test_agrees_with_rsb_eval_func():
    qf, gf, qp, gp, qc, gc = make_data(9, nq=60, ng=500, dim=32)
    cmc, mAP, mINP, nvalid = rsb.rsb_evaluate(qf, gf, qp, gp, qc, gc)
    m = evaluate(qf, gf, qp, gp, qc, gc, chunk_size=16)
    np.testing.assert_array_equal(m.cmc.astype(np.float32), cmc)
    assert m.mAP == pytest.approx(mAP, abs=1e-12)
    assert m.mINP == pytest.approx(mINP, abs=1e-12)
    assert m.num_valid_queries == nvalid


def test_reranking_float16_equals_rsb_function_exactly():
    """Default arithmetic: reid-strong-baseline's float16 V / V_qe / Jaccard, bit for bit."""
    qf, gf, qp, gp, qc, gc = make_data(10, nq=30, ng=150, dim=24)
    qn, gn = rsb.normalize(qf), rsb.normalize(gf)
    for k1, k2, lam in ((20, 6, 0.3), (8, 1, 0.5), (12, 3, 0.1)):
        ref = rsb.re_ranking_reference(qn, gn, k1, k2, lam, argsort_kind="stable", v_dtype=np.float16)
        ours = re_ranking(qn, gn, k1, k2, lam)
        assert ours.shape == (30, 150) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)
        # float32 arithmetic is a different function: the two differ by far more than float32 rounding
        assert np.abs(ours - re_ranking(qn, gn, k1, k2, lam, dtype="float32")).max() > 1e-4
    m = evaluate(qf, gf, qp, gp, qc, gc, rerank=True)
    ref = rsb.re_ranking_reference(qn, gn, 20, 6, 0.3, argsort_kind="stable")
    assert_matches_protocol(m, protocol(ref, qp, gp, qc, gc))
    with pytest.raises(EvaluationError, match="dtype"):
        re_ranking(qn, gn, dtype="float64")


def test_reranking_float32_option_matches_reference():
    qf, gf, qp, gp, qc, gc = make_data(10, nq=30, ng=150, dim=24)
    qn, gn = rsb.normalize(qf), rsb.normalize(gf)
    ref = rsb.re_ranking_reference(qn, gn, 20, 6, 0.3, argsort_kind="stable", v_dtype=np.float32)
    ours = re_ranking(qn, gn, 20, 6, 0.3, dtype="float32")
    assert ours.shape == (30, 150) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    plain = compute_distance(qf, gf)
    assert not np.allclose(ours, plain / plain.max(), atol=1e-3)  # re-ranking did change the distances
    m = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, rerank_dtype="float32")
    assert_matches_protocol(m, protocol(ref, qp, gp, qc, gc))
    # other parameters give other distances, and match the reference as well
    ref2 = rsb.re_ranking_reference(qn, gn, 8, 1, 0.5, argsort_kind="stable", v_dtype=np.float32)
    np.testing.assert_allclose(re_ranking(qn, gn, 8, 1, 0.5, dtype="float32"), ref2, rtol=0, atol=2e-6)


def test_nan_and_inf_features():
    qf, gf, qp, gp, qc, gc = make_data(11)
    bad = qf.copy()
    bad[[3, 17], 0] = np.nan
    with pytest.raises(EvaluationError, match=r"qf: 2 of 40 .*NaN or inf.*first bad row 3"):
        evaluate(bad, gf, qp, gp, qc, gc)
    badg = gf.copy()
    badg[5, 2] = np.inf
    with pytest.raises(EvaluationError, match=r"gf: 1 of 300"):
        evaluate(qf, badg, qp, gp, qc, gc)


def test_no_valid_query():
    qf, gf, qp, gp, qc, gc = make_data(12)
    with pytest.raises(EvaluationError, match=r"no valid query.*40 queries.*300 gallery"):
        evaluate(qf, gf, qp + 1000, gp, qc, gc)
    with pytest.raises(EvaluationError, match="no valid query"):
        evaluate(qf, gf, qp, gp, np.zeros_like(qc), np.zeros_like(gc))


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda a: {**a, "gf": a["gf"][:, :8]}, "feature dims differ"),
        (lambda a: {**a, "q_pids": a["q_pids"][:-1]}, "q_pids: expected 40 labels"),
        (lambda a: {**a, "g_camids": a["g_camids"][:10]}, "g_camids: expected 300 labels"),
        (lambda a: {**a, "qf": a["qf"][0]}, "qf: expected a 2-D feature matrix"),
        (lambda a: {**a, "gf": a["gf"][:0]}, "gf: empty feature matrix"),
        (lambda a: {**a, "q_pids": a["q_pids"] + 0.5}, "q_pids: labels must be integers"),
    ],
)
def test_shape_errors(mutate, msg):
    qf, gf, qp, gp, qc, gc = make_data(13)
    args = mutate({"qf": qf, "gf": gf, "q_pids": qp, "g_pids": gp, "q_camids": qc, "g_camids": gc})
    with pytest.raises(EvaluationError, match=msg):
        evaluate(**args)


def test_accepts_lists_and_float64():
    qf, gf, qp, gp, qc, gc = make_data(14)
    a = evaluate(qf, gf, qp, gp, qc, gc)
    b = evaluate(qf.astype(np.float64).tolist(), gf.astype(np.float64), list(qp), list(gp), list(qc), list(gc))
    assert a.as_dict() == b.as_dict()


def test_metrics_dict_and_percent():
    qf, gf, qp, gp, qc, gc = make_data(15)
    m = evaluate(qf, gf, qp, gp, qc, gc)
    d = json.loads(json.dumps(m.as_dict()))
    assert len(d["cmc"]) == 50 and d["num_query"] == 40
    p = m.percent()
    assert p["rank1"] == pytest.approx(100 * m.rank1) and p["mINP"] == pytest.approx(100 * m.mINP)
    with pytest.raises(AttributeError):
        m.mAP = 1.0  # frozen


def test_cosine_parity():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 64)).astype(np.float32)
    s = cosine_parity(a, a.copy())
    assert s.min_cosine == pytest.approx(1.0) and s.max_abs_diff == 0.0
    b = a.copy()
    b[3] = -b[3]
    b[4] *= 2.0
    s = cosine_parity(a, b)
    assert s.min_cosine == pytest.approx(-1.0)
    assert s.mean_cosine == pytest.approx(18 / 20)
    assert s.max_abs_diff == pytest.approx(max(2 * float(np.abs(a[3]).max()), float(np.abs(a[4]).max())), rel=1e-6)
    with pytest.raises(EvaluationError, match="shapes differ"):
        cosine_parity(a, a[:5])
