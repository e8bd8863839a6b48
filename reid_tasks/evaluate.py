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

Speed: the ranking never sorts whole rows. For each query only the gallery entries at or below the distance
of its farthest true match matter, so each chunk of queries keeps those candidates, packs
(row, distance, gallery index) into one 64-bit key per candidate and sorts the keys; the position of a true
match in its row is its exact rank. Memory is bounded by a per-chunk budget (the full query x gallery matrix
is never held, except for re-ranking), and the distance GEMM (BLAS, all cores) is the dominant cost; the
distance assembly and the ranking of each chunk are split over a few threads. The GEMM is issued in fixed
tiles of ``GEMM_ROWS`` query rows, so results do not depend on ``chunk_size`` or ``memory_budget``.

Re-ranking (``rerank=True``, :mod:`reid_tasks.reranking`) is k-reciprocal encoding (Zhong et al. 2017) as
reid-strong-baseline's ``utils/re_ranking.py``, with stable neighbour order and a sparse encoding; it needs one
(Q+G)^2 float32 matrix.
By default V, V_qe and the Jaccard distance are float16 with the original's roundings and summation order, so
the distances equal reid-strong-baseline's (whose published re-ranking figures come from that float16 code);
``rerank_dtype="float32"`` keeps them in float32.

Length: the distance tiles, the chunked ranker and the metrics are one algorithm sharing private helpers (the
64-bit sort keys, ragged ranges); split, each part would need the others to be read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reid_tasks.errors import EvaluationError

__all__ = [
    "Metrics",
    "ParityStats",
    "compute_distance",
    "cosine_parity",
    "evaluate",
    "l2_normalize",
]

#: default working memory of the ranking (bytes): one chunk of GEMM product rows + candidate mask
DEFAULT_MEMORY_BUDGET = 128 * 1024 * 1024
#: the query-gallery GEMM is issued in fixed tiles of this many query rows (rows [k*256, (k+1)*256)): BLAS
#: rounding depends on the shape of the call, so fixed tiles make the distances, hence the metrics,
#: independent of chunk_size and memory_budget (for a given BLAS build and thread count)
GEMM_ROWS = 256
#: candidates (entries at or below a query's farthest true match) sorted in one go, per thread (~40 B each)
_MAX_CANDIDATES = 1_000_000
_NORM_EPS = 1e-12
_ROW_BLOCK = 8192
#: distance rows are formed in blocks of about this many bytes (stays in the L2 cache)
_BLOCK_BYTES = 1024 * 1024


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
    for s in range(0, a.shape[0], _ROW_BLOCK):
        rows_ok = np.isfinite(a[s : s + _ROW_BLOCK]).all(axis=1)
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


# ------------------------------------------------------------------------------------------- features, distance


def _map_rows(pool: ThreadPoolExecutor | None, n: int, fn: Callable[[int, int], Any], block: int = 0) -> list:
    """fn(a, b) over row ranges covering [0, n): one per pool thread (or per ``block`` rows), in the pool."""
    if block <= 0:
        parts = pool._max_workers if pool is not None else 1
        block = max(1, -(-n // parts))
    ranges = [(a, min(n, a + block)) for a in range(0, n, block)]
    if pool is None or len(ranges) == 1:
        return [fn(a, b) for a, b in ranges]
    return [f.result() for f in [pool.submit(fn, a, b) for a, b in ranges]]


def l2_normalize(x: np.ndarray, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (``x / max(||x||, 1e-12)``), into a new array."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)

    def rows(a: int, b: int) -> None:
        blk = x[a:b]
        norm = np.sqrt(np.einsum("ij,ij->i", blk, blk))
        np.divide(blk, np.maximum(norm, np.float32(_NORM_EPS))[:, None], out=out[a:b])

    _map_rows(pool, x.shape[0], rows, block=_ROW_BLOCK)
    return out


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _distance_block(q: np.ndarray, q2: np.ndarray, g: np.ndarray, g2: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``(||q||^2 + ||g||^2) - 2 q.g`` in float32 into ``out`` (same rounding as torch ``addmm_(1, -2, ...)``)."""
    prod = (q * np.float32(2.0)) @ g.T  # == 2 (q @ g.T) bit for bit: scaling by 2 is exact
    np.add(q2[:, None], g2[None, :], out=out)
    np.subtract(out, prod, out=out)
    return out


class _Rows:
    """Distance rows, either given (``dist``) or as ``(q2 + g2) - prod`` evaluated on demand.

    The lazy form never writes the distance matrix: blocks of a few rows are formed in cache and compared,
    and single entries are recomputed with the same float32 operations (bit-identical).
    """

    def __init__(self, dist=None, prod=None, q2=None, g2=None):
        self.dist, self.prod, self.q2, self.g2 = dist, prod, q2, g2
        self.n = (dist if dist is not None else prod).shape[0]

    def sub(self, a: int, b: int) -> _Rows:
        if self.dist is not None:
            return _Rows(dist=self.dist[a:b])
        return _Rows(prod=self.prod[a:b], q2=self.q2[a:b], g2=self.g2)

    def block(self, a: int, b: int, buf: np.ndarray | None = None) -> np.ndarray:
        if self.dist is not None:
            return self.dist[a:b]
        out = np.add(self.q2[a:b, None], self.g2[None, :], out=None if buf is None else buf[: b - a])
        return np.subtract(out, self.prod[a:b], out=out)

    def gather(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.dist is not None:
            return self.dist[rows, cols]
        return (self.q2[rows] + self.g2[cols]) - self.prod[rows, cols]

    def dense(self) -> np.ndarray:
        return self.block(0, self.n)


class _TiledDistance:
    """``make_dist(r0, r1) -> _Rows`` from GEMM tiles of fixed shape (rows [k*GEMM_ROWS, (k+1)*GEMM_ROWS))."""

    def __init__(self, q: np.ndarray, g: np.ndarray, reuse: bool = False):
        """``reuse``: results are views of one reused buffer, valid until the next call."""
        self.q, self.g, self.reuse = q, g, reuse
        self.q2, self.g2 = _sq_norms(q), _sq_norms(g)
        self.cache: dict[int, np.ndarray] = {}
        self._buf: np.ndarray | None = None

    def _tile_into(self, t: int, out: np.ndarray) -> None:
        a = t * GEMM_ROWS
        b = min(self.q.shape[0], a + GEMM_ROWS)
        # (2 q) @ g.T == 2 (q @ g.T) bit for bit (scaling by 2 is exact); tile t always has the same shape
        np.matmul(self.q[a:b] * np.float32(2.0), self.g.T, out=out)

    def __call__(self, r0: int, r1: int) -> _Rows:
        ng = self.g.shape[0]
        if not self.reuse:
            prod = np.empty((r1 - r0, ng), dtype=np.float32)
        else:  # page faults of a fresh 100+ MB buffer per chunk cost as much as the ranking
            if self._buf is None or self._buf.shape[0] < r1 - r0:
                self._buf = np.empty((r1 - r0, ng), dtype=np.float32)
            prod = self._buf[: r1 - r0]
        aligned = r0 % GEMM_ROWS == 0 and (r1 % GEMM_ROWS == 0 or r1 == self.q.shape[0])
        for t in range(r0 // GEMM_ROWS, -(-r1 // GEMM_ROWS)):
            a = t * GEMM_ROWS
            lo, hi = max(r0, a), min(r1, a + GEMM_ROWS)
            if aligned:
                self._tile_into(t, prod[lo - r0 : hi - r0])
                continue
            if t not in self.cache:  # unaligned chunks (small chunk_size): keep the last tiles
                if len(self.cache) >= 2:
                    self.cache.pop(next(iter(self.cache)))
                tile = np.empty((min(self.q.shape[0], a + GEMM_ROWS) - a, ng), dtype=np.float32)
                self._tile_into(t, tile)
                self.cache[t] = tile
            prod[lo - r0 : hi - r0] = self.cache[t][lo - a : hi - a]
        return _Rows(prod=prod, q2=self.q2[r0:r1], g2=self.g2)


def compute_distance(qf: Any, gf: Any, feat_norm: bool = True) -> np.ndarray:
    """Full squared-Euclidean distance matrix [num_query, num_gallery] in float32, exactly as evaluate() ranks."""
    q = _as_features(qf, "qf")
    g = _as_features(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise EvaluationError(f"feature dims differ: qf {q.shape} vs gf {g.shape}")
    if feat_norm:
        q, g = l2_normalize(q), l2_normalize(g)
    return _TiledDistance(q, g)(0, q.shape[0]).dense()


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


# ---------------------------------------------------------------------------------------------------- ranking


def _float_keys(d: np.ndarray) -> np.ndarray:
    """Monotone map float32 -> uint32 (a < b  <=>  key(a) < key(b)); -0.0 is folded onto +0.0."""
    d = d + np.float32(0.0)
    u = d.view(np.uint32)
    return np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(offs - starts, lengths)


class _Ranker:
    """Exact ranks of the true matches of each query; accumulates CMC / AP / INP over chunks of queries."""

    def __init__(self, q_pids, g_pids, q_camids, g_camids, max_rank):
        self.q_pids, self.g_pids, self.q_camids, self.g_camids = q_pids, g_pids, q_camids, g_camids
        self.max_rank = max_rank
        self.num_g = g_pids.shape[0]
        self.col_bits = max(1, int(self.num_g - 1).bit_length())
        self.row_bits = 64 - 32 - self.col_bits
        if self.row_bits < 1:  # pragma: no cover - > 2^31 gallery entries
            raise EvaluationError(f"gallery too large: {self.num_g} entries")
        self.pid_order = np.argsort(g_pids, kind="stable")
        self.sorted_pids = g_pids[self.pid_order]

    def count_matches(self) -> np.ndarray:
        """Number of true matches (same pid, other camera) of every query."""
        out = np.zeros(self.q_pids.shape[0], dtype=np.int64)
        for r0 in range(0, out.size, 4096):
            qp, qc = self.q_pids[r0 : r0 + 4096], self.q_camids[r0 : r0 + 4096]
            lo = np.searchsorted(self.sorted_pids, qp, side="left")
            hi = np.searchsorted(self.sorted_pids, qp, side="right")
            rows = np.repeat(np.arange(qp.size), hi - lo)
            other_cam = self.g_camids[self.pid_order[_ragged_arange(lo, hi - lo)]] != qc[rows]
            out[r0 : r0 + qp.size] = np.bincount(rows[other_cam], minlength=qp.size)
        return out

    def max_rows(self) -> int:
        return 1 << self.row_bits

    def rank_chunk(self, r0: int, dist: _Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Rank the queries r0 .. r0+dist.n; returns (num_matches, first_rank, ap, inp) per row + tie count."""
        nb = dist.n
        qp = self.q_pids[r0 : r0 + nb]
        qc = self.q_camids[r0 : r0 + nb]
        lo = np.searchsorted(self.sorted_pids, qp, side="left")
        hi = np.searchsorted(self.sorted_pids, qp, side="right")
        gidx = self.pid_order[_ragged_arange(lo, hi - lo)]
        rows = np.repeat(np.arange(nb), hi - lo)
        is_match = self.g_camids[gidx] != qc[rows]
        mrows, mcols = rows[is_match], gidx[is_match]
        num_matches = np.bincount(mrows, minlength=nb)
        thresh = np.full(nb, -np.inf, dtype=np.float32)
        np.maximum.at(thresh, mrows, dist.gather(mrows, mcols))

        first = np.zeros(nb, dtype=np.int64)
        ap = np.zeros(nb, dtype=np.float64)
        inp = np.zeros(nb, dtype=np.float64)
        ties = 0
        # candidates: entries at or below the farthest true match; distances formed a few rows at a time in cache
        mask = np.empty((nb, self.num_g), dtype=bool)
        step = max(1, _BLOCK_BYTES // (4 * self.num_g))
        buf = np.empty((min(step, nb), self.num_g), dtype=np.float32) if dist.dist is None else None
        for a in range(0, nb, step):
            b = min(nb, a + step)
            np.less_equal(dist.block(a, b, buf), thresh[a:b, None], out=mask[a:b])
        if nb <= self.max_rows() and np.count_nonzero(mask) <= _MAX_CANDIDATES:
            ties += self._rank_rows(0, nb, dist, mask, qp, qc, num_matches, first, ap, inp)
        else:  # split rows so that one sort handles at most _MAX_CANDIDATES candidates (at least one row)
            counts = np.count_nonzero(mask, axis=1)
            s = 0
            while s < nb:
                csum = np.cumsum(counts[s : s + self.max_rows()])
                e = s + max(1, int(np.searchsorted(csum, _MAX_CANDIDATES, side="right")))
                ties += self._rank_rows(s, e, dist, mask, qp, qc, num_matches, first, ap, inp)
                s = e
        return num_matches, first, ap, inp, ties

    def _rank_rows(self, s, e, dist, mask, qp, qc, num_matches, first, ap, inp) -> int:
        flat = np.flatnonzero(mask[s:e])
        if flat.size == 0:
            return 0
        rr, cc = np.divmod(flat, self.num_g)
        junk = (self.g_pids[cc] == qp[s + rr]) & (self.g_camids[cc] == qc[s + rr])
        if junk.any():
            keep = ~junk
            rr, cc = rr[keep], cc[keep]
        dk = _float_keys(dist.gather(s + rr, cc))
        keys = (rr.astype(np.uint64) << np.uint64(32 + self.col_bits)) | (
            dk.astype(np.uint64) << np.uint64(self.col_bits)
        )
        keys |= cc.astype(np.uint64)
        keys.sort()
        rs = (keys >> np.uint64(32 + self.col_bits)).astype(np.int64)
        cs = (keys & np.uint64((1 << self.col_bits) - 1)).astype(np.int64)
        n = e - s
        starts = np.searchsorted(rs, np.arange(n))
        rank = np.arange(rs.size, dtype=np.int64) - starts[rs] + 1  # 1-based among valid entries
        m = self.g_pids[cs] == qp[s + rs]
        mr, mrank = rs[m], rank[m]
        # ties: a true match whose distance equals that of its neighbour in the sorted row (other than a match)
        dsorted = (keys >> np.uint64(self.col_bits)) & np.uint64(0xFFFFFFFF)
        tie_rows = 0
        if rs.size > 1:
            same = (dsorted[1:] == dsorted[:-1]) & (rs[1:] == rs[:-1]) & (m[1:] != m[:-1])
            if same.any():
                tie_rows = int(np.unique(rs[1:][same]).size)
        mstart = np.searchsorted(mr, np.arange(n))
        j = np.arange(mr.size, dtype=np.int64) - mstart[mr] + 1
        nm = num_matches[s:e]
        if not np.array_equal(np.bincount(mr, minlength=n), nm):  # pragma: no cover - internal invariant
            raise EvaluationError("internal error: true matches missing from the candidate set")
        valid = nm > 0
        idx = np.nonzero(valid)[0]
        first[s + idx] = mrank[mstart[idx]]
        ap[s:e] = np.bincount(mr, weights=j / mrank, minlength=n) / np.maximum(nm, 1)
        inp[s + idx] = nm[idx] / mrank[mstart[idx] + nm[idx] - 1]
        return tie_rows


def _chunk_rows(num_g: int, budget: int) -> int:
    """Queries per chunk: the largest multiple of GEMM_ROWS whose working memory fits ``budget`` bytes."""
    per_tile = GEMM_ROWS * num_g * (4 + 1)  # GEMM product rows + candidate mask
    return GEMM_ROWS * max(1, budget // per_tile)


def _run_ranking(
    num_q: int,
    chunk: int,
    make_dist: Callable[[int, int], _Rows],
    ranker: _Ranker,
    pool: ThreadPoolExecutor | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Distances chunk by chunk (GEMM on all cores through BLAS), each chunk's rows ranked in the pool's threads."""
    num_matches = np.zeros(num_q, dtype=np.int64)
    first = np.zeros(num_q, dtype=np.int64)
    ap = np.zeros(num_q, dtype=np.float64)
    inp = np.zeros(num_q, dtype=np.float64)
    ties = 0
    for r0 in range(0, num_q, chunk):
        d = make_dist(r0, min(num_q, r0 + chunk))
        for a, (nm, f, ap_, inp_, t) in _map_rows(
            pool, d.n, lambda a, b, d=d, r0=r0: (a, ranker.rank_chunk(r0 + a, d.sub(a, b)))
        ):
            lo, hi = r0 + a, r0 + a + nm.shape[0]
            num_matches[lo:hi], first[lo:hi], ap[lo:hi], inp[lo:hi] = nm, f, ap_, inp_
            ties += t
    return num_matches, first, ap, inp, ties


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
    (at least GEMM_ROWS rows); it changes speed and memory, never the result.
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
    ranker = _Ranker(qp, gp, qc, gc, max_rank)
    if not np.any(ranker.count_matches()):
        absent = int(np.count_nonzero(~np.isin(qp, gp)))
        raise EvaluationError(
            f"no valid query: none of the {nq} queries has a true match among the {ng} gallery entries "
            f"(same pid, other camera); {absent} query pids are absent from the gallery, "
            f"{nq - absent} have matches only in their own camera"
        )
    chunk = min(int(chunk_size) if chunk_size else _chunk_rows(ng, memory_budget), nq)
    if threads is None:
        threads = max(1, min(4, os.cpu_count() or 1))

    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else contextlib.nullcontext() as pool:
        if feat_norm:
            q, g = l2_normalize(q, pool), l2_normalize(g, pool)
        if rerank:
            from .reranking import re_ranking

            final = re_ranking(q, g, k1=k1, k2=k2, lambda_value=lambda_value, dtype=rerank_dtype)

            def make_dist(r0: int, r1: int) -> _Rows:
                return _Rows(dist=final[r0:r1])
        else:
            make_dist = _TiledDistance(q, g, reuse=True)
        num_matches, first, ap, inp, ties = _run_ranking(nq, chunk, make_dist, ranker, pool)

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
