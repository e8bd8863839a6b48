"""Re-identification metrics with the reid-strong-baseline protocol, vectorised and chunked.

Protocol (reid-strong-baseline ``R1_mAP`` + ``eval_func``):

* optional L2 normalisation of every feature row (``feat_norm``, as ``F.normalize(p=2, eps=1e-12)``);
* squared Euclidean distance ``||q||^2 + ||g||^2 - 2 q.g`` in float32;
* per query, gallery entries with the same pid **and** the same camera are removed ("junk"); distractors
  (pid 0) and every other entry stay;
* queries with no true match left are skipped (``num_skipped_queries``) and count in neither CMC nor mAP;
* CMC = cumulative hit clipped to 1, averaged over valid queries, up to ``max_rank``; AP = mean over the true
  matches of (matches so far / rank); mINP (fast-reid) = mean of (number of matches / rank of the last match).

Ordering is deterministic: equal distances are ordered by gallery index (a stable sort). reid-strong-baseline
uses a non-stable ``np.argsort`` whose order for equal distances is unspecified, so the two agree exactly
whenever no true match shares its distance with another valid gallery entry (``Metrics.num_tie_queries``
counts the queries where that happened).

When ``max_rank`` exceeds the gallery, reid-strong-baseline truncates the CMC to the gallery size; here the
CMC always has ``max_rank`` entries and the missing tail repeats the last value (1.0: every valid query has
found all its matches by then).

Speed: the distances (GEMM in fixed tiles) and the exact ranks of the true matches, chunk by chunk within a
memory budget, are computed by :mod:`reid_tasks.ranking`; here: the protocol's inputs, the metric records and
the aggregation. Results do not depend on ``chunk_size`` or ``memory_budget``.

Re-ranking (``rerank=True``, :mod:`reid_tasks.reranking`) is k-reciprocal encoding (Zhong et al. 2017) as
reid-strong-baseline's ``utils/re_ranking.py``, with stable neighbour order and a sparse encoding; it needs one
(Q+G)^2 float32 matrix.
By default V, V_qe and the Jaccard distance are float16 with the original's roundings and summation order, so
the distances equal reid-strong-baseline's (whose published re-ranking figures come from that float16 code);
``rerank_dtype="float32"`` keeps them in float32.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reid_tasks.errors import EvaluationError
from reid_tasks.ranking import (
    DEFAULT_MEMORY_BUDGET,
    ROW_BLOCK,
    Ranker,
    Rows,
    TiledDistance,
    chunk_rows,
    l2_normalize,
    run_ranking,
)

__all__ = [
    "Metrics",
    "ParityStats",
    "compute_distance",
    "cosine_parity",
    "evaluate",
    "l2_normalize",
]


@dataclass(frozen=True)
class Metrics:
    """Evaluation result; every rate is a fraction in [0, 1].

    ``cmc[k]`` = fraction of valid queries with a true match within the first k+1 valid entries.
    ``num_tie_queries``: valid queries where a true match and a non-match had exactly the same distance
    (ordered by gallery index here; reid-strong-baseline's order would be arbitrary).
    """

    cmc: np.ndarray = field(repr=False)
    mAP: float
    mINP: float
    rank1: float
    rank5: float
    rank10: float
    rank20: float
    num_valid_queries: int
    num_query: int
    num_gallery: int
    num_skipped_queries: int
    num_tie_queries: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict (cmc as a list of floats)."""
        return {
            "cmc": [float(x) for x in self.cmc],
            "mAP": float(self.mAP),
            "mINP": float(self.mINP),
            "rank1": float(self.rank1),
            "rank5": float(self.rank5),
            "rank10": float(self.rank10),
            "rank20": float(self.rank20),
            "num_valid_queries": int(self.num_valid_queries),
            "num_query": int(self.num_query),
            "num_gallery": int(self.num_gallery),
            "num_skipped_queries": int(self.num_skipped_queries),
            "num_tie_queries": int(self.num_tie_queries),
        }

    def percent(self) -> dict[str, float]:
        """Rank-1/5/10/20, mAP and mINP in percent (what the results database stores)."""
        return {
            "rank1": 100.0 * self.rank1,
            "rank5": 100.0 * self.rank5,
            "rank10": 100.0 * self.rank10,
            "rank20": 100.0 * self.rank20,
            "mAP": 100.0 * self.mAP,
            "mINP": 100.0 * self.mINP,
        }


@dataclass(frozen=True)
class ParityStats:
    """Row-wise agreement of two feature matrices."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float

    def as_dict(self) -> dict[str, float]:
        return {"min_cosine": self.min_cosine, "mean_cosine": self.mean_cosine, "max_abs_diff": self.max_abs_diff}


# ----------------------------------------------------------------------------------------------- validation


def _as_features(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise EvaluationError(f"{name}: cannot convert to an array: {exc}") from exc
    if a.ndim != 2:
        raise EvaluationError(f"{name}: expected a 2-D feature matrix [N, D], got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise EvaluationError(f"{name}: empty feature matrix, shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise EvaluationError(f"{name}: expected real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_finite(a: np.ndarray, name: str) -> None:
    bad = 0
    first = -1
    for s in range(0, a.shape[0], ROW_BLOCK):
        rows_ok = np.isfinite(a[s : s + ROW_BLOCK]).all(axis=1)
        n = int(rows_ok.size - np.count_nonzero(rows_ok))
        if n:
            if first < 0:
                first = s + int(np.argmin(rows_ok))
            bad += n
    if bad:
        raise EvaluationError(
            f"{name}: {bad} of {a.shape[0]} feature rows contain NaN or inf (first bad row {first}); "
            "the model or runtime produced non-finite outputs"
        )


def _as_labels(x: Any, name: str, n: int, rows_of: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        a = a.reshape(-1) if a.size == n else a
    if a.ndim != 1 or a.shape[0] != n:
        raise EvaluationError(f"{name}: expected {n} labels (one per row of {rows_of}), got shape {np.shape(x)}")
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return a.astype(np.int64, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise EvaluationError(f"{name}: labels must be integers, got non-integral values")
        return a.astype(np.int64)
    raise EvaluationError(f"{name}: labels must be integers, got dtype {a.dtype}")


# ------------------------------------------------------------------------------------------- distance, parity


def compute_distance(qf: Any, gf: Any, feat_norm: bool = True) -> np.ndarray:
    """Full squared-Euclidean distance matrix [num_query, num_gallery] in float32, exactly as evaluate() ranks."""
    q = _as_features(qf, "qf")
    g = _as_features(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise EvaluationError(f"feature dims differ: qf {q.shape} vs gf {g.shape}")
    if feat_norm:
        q, g = l2_normalize(q), l2_normalize(g)
    return TiledDistance(q, g)(0, q.shape[0]).dense()


def cosine_parity(a: Any, b: Any) -> ParityStats:
    """Per-row cosine similarity of two feature matrices of the same shape, and their max abs difference."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise EvaluationError(f"cosine_parity: shapes differ: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise EvaluationError(f"cosine_parity: empty inputs, shape {x.shape}")
    if x.ndim == 1:
        x, y = x[None, :], y[None, :]
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    for arr, name in ((x, "a"), (y, "b")):
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        if bad:
            raise EvaluationError(f"cosine_parity: {name} has {bad} rows with NaN or inf")
    nx = np.linalg.norm(x, axis=1)
    ny = np.linalg.norm(y, axis=1)
    dot = np.einsum("ij,ij->i", x, y)
    denom = nx * ny
    both_zero = (nx == 0) & (ny == 0)
    cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where(both_zero, 1.0, 0.0))
    return ParityStats(
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(x - y).max()),
    )


# ------------------------------------------------------------------------------------------------- evaluate


def evaluate(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    feat_norm: bool = True,
    max_rank: int = 50,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    rerank_dtype: str = "float16",
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
) -> Metrics:
    """Rank-k, mAP and mINP of query features against gallery features (reid-strong-baseline protocol).

    Features: float32 [N, D] (anything np.asarray accepts; converted to float32). Labels: integers.
    ``max_rank``: CMC length. ``rerank``: k-reciprocal re-ranking with ``k1``, ``k2``, ``lambda_value`` in
    ``rerank_dtype`` arithmetic ("float16", reid-strong-baseline's, by default; or "float32").
    ``chunk_size`` (queries per chunk) defaults to what fits ``memory_budget`` bytes of working memory
    (at least ``ranking.GEMM_ROWS`` rows); it changes speed and memory, never the result.
    ``threads``: Python threads for normalisation, distance assembly and ranking (default: the number of
    cores, at most 4); the GEMM itself uses BLAS's own threads.
    Raises EvaluationError on shape mismatches, NaN/inf features or when no query has a valid match.
    """
    q = _as_features(qf, "qf")
    g = _as_features(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise EvaluationError(f"feature dims differ: qf has shape {q.shape}, gf has shape {g.shape}")
    nq, ng = q.shape[0], g.shape[0]
    qp = _as_labels(q_pids, "q_pids", nq, "qf")
    gp = _as_labels(g_pids, "g_pids", ng, "gf")
    qc = _as_labels(q_camids, "q_camids", nq, "qf")
    gc = _as_labels(g_camids, "g_camids", ng, "gf")
    if int(max_rank) < 1:
        raise EvaluationError(f"max_rank must be >= 1, got {max_rank}")
    max_rank = int(max_rank)
    if chunk_size is not None and int(chunk_size) < 1:
        raise EvaluationError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_finite(q, "qf")
    _check_finite(g, "gf")
    ranker = Ranker(qp, gp, qc, gc, max_rank)
    if not np.any(ranker.count_matches()):
        absent = int(np.count_nonzero(~np.isin(qp, gp)))
        raise EvaluationError(
            f"no valid query: none of the {nq} queries has a true match among the {ng} gallery entries "
            f"(same pid, other camera); {absent} query pids are absent from the gallery, "
            f"{nq - absent} have matches only in their own camera"
        )
    chunk = min(int(chunk_size) if chunk_size else chunk_rows(ng, memory_budget), nq)
    if threads is None:
        threads = max(1, min(4, os.cpu_count() or 1))

    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else contextlib.nullcontext() as pool:
        if feat_norm:
            q, g = l2_normalize(q, pool), l2_normalize(g, pool)
        if rerank:
            from .reranking import re_ranking

            final = re_ranking(q, g, k1=k1, k2=k2, lambda_value=lambda_value, dtype=rerank_dtype)

            def make_dist(r0: int, r1: int) -> Rows:
                return Rows(dist=final[r0:r1])
        else:
            make_dist = TiledDistance(q, g, reuse=True)
        num_matches, first, ap, inp, ties = run_ranking(nq, chunk, make_dist, ranker, pool)

    valid = num_matches > 0
    num_valid = int(valid.sum())
    if num_valid == 0:  # pragma: no cover - checked above
        raise EvaluationError(f"no valid query among {nq} queries and {ng} gallery entries")
    hist = np.bincount(np.minimum(first[valid] - 1, max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hist).astype(np.float64) / num_valid
    mAP = float(ap[valid].sum() / num_valid)
    mINP = float(inp[valid].sum() / num_valid)

    def at(k: int) -> float:  # independent of max_rank
        return float(np.count_nonzero(first[valid] <= k) / num_valid)

    return Metrics(
        cmc=cmc,
        mAP=mAP,
        mINP=mINP,
        rank1=at(1),
        rank5=at(5),
        rank10=at(10),
        rank20=at(20),
        num_valid_queries=num_valid,
        num_query=nq,
        num_gallery=ng,
        num_skipped_queries=nq - num_valid,
        num_tie_queries=int(ties),
    )
