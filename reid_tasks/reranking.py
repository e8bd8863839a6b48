"""k-reciprocal re-ranking (Zhong et al. 2017) as reid-strong-baseline's ``utils/re_ranking.py``, sparse.

The original walks every row in Python over dense (Q+G)^2 float16 arrays; here the neighbour sets, the
expansion, the encoding V, the query expansion V_qe and the Jaccard distance are computed on sparse (row, col,
value) arrays. With ``dtype="float16"`` (default) every rounding and summation order of the original is kept,
so the result equals its function bit for bit (tests/core/test_evaluate.py compares with a transcription);
``"float32"`` keeps V, V_qe and the Jaccard distance in float32. Neighbour lists are ordered by (distance,
index), where the original's ``np.argsort`` leaves ties unordered.
"""

from __future__ import annotations

import numpy as np

from .errors import EvaluationError
from .ranking import distance_block, float_keys, ragged_arange, sq_norms

__all__ = ["RERANK_DTYPES", "re_ranking"]


def _top_k_stable(rows: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries of each row, ordered by (value, index) (ties by index)."""
    n, m = rows.shape
    k = min(k, m)
    kth = np.partition(rows, k - 1, axis=1)[:, k - 1]
    rr, cc = np.nonzero(rows <= kth[:, None])
    col_bits = max(1, int(m - 1).bit_length())
    keys = (rr.astype(np.uint64) << np.uint64(32 + col_bits)) | (
        float_keys(rows[rr, cc]).astype(np.uint64) << np.uint64(col_bits)
    )
    keys |= cc.astype(np.uint64)
    keys.sort()
    rs = (keys >> np.uint64(32 + col_bits)).astype(np.int64)
    cs = (keys & np.uint64((1 << col_bits) - 1)).astype(np.int64)
    starts = np.searchsorted(rs, np.arange(n))
    take = starts[:, None] + np.arange(k)[None, :]
    return cs[take]


def _reciprocal_sets(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal neighbours R(i, k) as (row, col) pairs, in forward-rank order within each row."""
    n = rank.shape[0]
    fwd = rank[:, : k + 1]
    rows = np.repeat(np.arange(n, dtype=np.int64), fwd.shape[1])
    cols = fwd.reshape(-1).astype(np.int64)
    pair = rows * n + cols
    back = cols * n + rows
    keep = np.isin(back, pair)
    return rows[keep], cols[keep]


#: re-ranking arithmetic: "float16" stores V, V_qe and the Jaccard distance in float16 as reid-strong-baseline
#: does (its published re-ranking figures come from that code); "float32" keeps them in float32
RERANK_DTYPES = ("float16", "float32")


def re_ranking(
    qf: np.ndarray,
    gf: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    dtype: str = "float16",
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al. 2017) as reid-strong-baseline ``utils/re_ranking.py``.

    Features are used as given (normalise first if wanted). Returns the [num_query, num_gallery] float32
    final distance. Neighbour lists are ordered by (distance, index); the encoding V is kept sparse.
    ``dtype="float16"`` (default) reproduces reid-strong-baseline's float16 V / V_qe / Jaccard arithmetic
    operation for operation (same roundings, same summation order), so the result equals its function
    exactly; ``"float32"`` keeps those arrays in float32. Memory: one (Q+G)^2 float32 distance matrix.
    """
    if dtype not in RERANK_DTYPES:
        raise EvaluationError(f"re-ranking dtype must be one of {RERANK_DTYPES}, got {dtype!r}")
    half_precision = dtype == "float16"
    q = np.ascontiguousarray(qf, dtype=np.float32)
    g = np.ascontiguousarray(gf, dtype=np.float32)
    nq = q.shape[0]
    feat = np.concatenate([q, g])
    n = feat.shape[0]
    f2 = sq_norms(feat)
    dist = np.empty((n, n), dtype=np.float32)
    for s in range(0, n, 2048):
        distance_block(feat[s : s + 2048], f2[s : s + 2048], feat, f2, dist[s : s + 2048])
    del feat
    dist /= dist.max(axis=0)[None, :]
    orig = dist.T  # original_dist[i, j] = dist[j, i] / max(dist[:, i])  (transpose of the column-normalised)

    kk = k1 + 1
    rank = np.empty((n, kk), dtype=np.int64)
    for s in range(0, n, 2048):
        rank[s : s + 2048] = _top_k_stable(np.ascontiguousarray(orig[s : s + 2048]), kk)

    v_rows, v_cols = _expansion(rank, k1, n)
    v_vals = _encoding(orig, v_rows, v_cols, n, half_precision)
    if k2 != 1:
        v_rows, v_cols, v_vals = _query_expansion(rank[:, :k2], v_rows, v_cols, v_vals, n, half_precision)
    del rank
    return _jaccard_final(orig, v_rows, v_cols, v_vals, nq, lambda_value, half_precision)


def _expansion(rank: np.ndarray, k1: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of every k-reciprocal expansion entry, sorted by row then col (``np.unique`` per row).

    Candidate c of R(i, k1) adds R(c, k1/2) when |R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|.
    """
    half = int(np.around(k1 / 2))
    r_rows, r_cols = _reciprocal_sets(rank, k1)
    h_rows, h_cols = _reciprocal_sets(rank, half)
    h_start = np.searchsorted(h_rows, np.arange(n + 1))
    h_len = np.diff(h_start)
    cand_len = h_len[r_cols]
    trip_i = np.repeat(r_rows, cand_len)
    trip_pair = np.repeat(np.arange(r_rows.size), cand_len)
    trip_m = h_cols[ragged_arange(h_start[r_cols], cand_len)]
    inter = np.isin(trip_i * n + trip_m, r_rows * n + r_cols)
    inter_count = np.bincount(trip_pair, weights=inter, minlength=r_rows.size)
    accept = inter_count > (2.0 / 3.0) * cand_len
    acc_len = np.where(accept, cand_len, 0)
    add_rows = np.repeat(r_rows, acc_len)
    add_cols = h_cols[ragged_arange(h_start[r_cols], acc_len)]
    exp_key = np.unique(np.concatenate([r_rows * n + r_cols, add_rows * n + add_cols]))
    return exp_key // n, exp_key % n


def _encoding(orig: np.ndarray, v_rows: np.ndarray, v_cols: np.ndarray, n: int, half: bool) -> np.ndarray:
    """V's non-zero values: exp(-d) normalised per row (float16: ``weight / np.sum(weight)`` row by row, as
    the original, so numpy's summation order and both roundings are the same)."""
    w = np.exp(-orig[v_rows, v_cols]).astype(np.float32)
    if not half:
        return w / np.bincount(v_rows, weights=w, minlength=n)[v_rows]
    start = np.searchsorted(v_rows, np.arange(n + 1))
    vals = np.empty(w.size, dtype=np.float16)
    for i in range(n):
        seg = w[start[i] : start[i + 1]]
        vals[start[i] : start[i + 1]] = seg / np.sum(seg)
    return vals


def _query_expansion(
    nbrs: np.ndarray, v_rows: np.ndarray, v_cols: np.ndarray, v_vals: np.ndarray, n: int, half: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V_qe[i] = mean of V over the k2 nearest neighbours of i (sparse).

    float16 as ``np.mean`` of float16 rows: float32 accumulator, rows added in neighbour order, divided by
    the count, rounded to float16.
    """
    k2 = nbrs.shape[1]
    v_start = np.searchsorted(v_rows, np.arange(n + 1))
    v_len = np.diff(v_start)
    nb = nbrs.reshape(-1)
    nb_i = np.repeat(np.arange(n, dtype=np.int64), k2)
    lens = v_len[nb]
    src = ragged_arange(v_start[nb], lens)
    key = np.repeat(nb_i, lens) * n + v_cols[src]
    uk, inv = np.unique(key, return_inverse=True)
    if not half:
        vals = np.bincount(inv, weights=v_vals[src]) / k2
        return uk // n, uk % n, vals
    acc = np.zeros(uk.size, dtype=np.float32)
    rank_pos = np.repeat(np.tile(np.arange(k2), n), lens)
    for j in range(k2):  # within one neighbour rank the keys are unique: plain fancy-index accumulation
        sel = rank_pos == j
        acc[inv[sel]] += v_vals[src[sel]].astype(np.float32)
    np.true_divide(acc, np.intp(k2), out=acc, casting="unsafe")  # what np.mean does with its count
    return uk // n, uk % n, acc.astype(np.float16)


def _jaccard_final(
    orig: np.ndarray,
    v_rows: np.ndarray,
    v_cols: np.ndarray,
    v_vals: np.ndarray,
    nq: int,
    lambda_value: float,
    half: bool,
) -> np.ndarray:
    """final = jaccard(q, g) * (1 - lambda) + d(q, g) * lambda, through the inverted index (columns of V).

    float16 as the original: per query, ``temp_min[targets] += min(V[i, c], V[targets, c])`` in float16 for
    the columns c in ascending order, then ``1 - t / (2 - t)`` in float16.
    """
    n = orig.shape[0]
    col_order = np.argsort(v_cols, kind="stable")
    c_rows = v_rows[col_order]
    c_vals = v_vals[col_order]
    c_start = np.searchsorted(v_cols[col_order], np.arange(n + 1))
    c_len = np.diff(c_start)
    row_start = np.searchsorted(v_rows, np.arange(n + 1))
    ng = n - nq
    final = np.empty((nq, ng), dtype=np.float32)
    qstep = 256
    for s in range(0, nq, qstep):
        e = min(nq, s + qstep)
        a, b = int(row_start[s]), int(row_start[e])
        qi, qk, qv = v_rows[a:b], v_cols[a:b], v_vals[a:b]
        lens = c_len[qk]
        src = ragged_arange(c_start[qk], lens)
        tgt = c_rows[src]
        mins = np.minimum(np.repeat(qv, lens), c_vals[src])
        keep = tgt >= nq  # only the gallery columns of the query rows are returned
        flat = (np.repeat(qi - s, lens)[keep]) * ng + (tgt[keep] - nq)
        if half:
            pos = np.repeat(np.arange(a, b) - row_start[qi], lens)[keep]  # column's place in its query row
            temp = _sequential_f16_sums(flat, mins[keep], pos, (e - s) * ng).reshape(e - s, ng)
            jac = 1 - temp / (2 - temp)  # float16 throughout, as the original
            final[s:e] = jac * (1 - lambda_value) + orig[s:e, nq:] * lambda_value
        else:
            temp = np.bincount(flat, weights=mins[keep], minlength=(e - s) * ng).reshape(e - s, ng)
            jac = 1.0 - temp / (2.0 - temp)
            final[s:e] = (jac * (1.0 - lambda_value) + orig[s:e, nq:] * lambda_value).astype(np.float32)
    return final


def _sequential_f16_sums(flat: np.ndarray, vals: np.ndarray, pos: np.ndarray, size: int) -> np.ndarray:
    """float16 totals per slot ``flat``, adding the values in increasing ``pos`` with a float16 rounding per
    addition (a slot gets at most one value per ``pos``)."""
    acc = np.zeros(size, dtype=np.float16)
    order = np.argsort(pos, kind="stable")
    bounds = np.searchsorted(pos[order], np.arange(int(pos.max(initial=-1)) + 2))
    for p in range(bounds.size - 1):
        idx = order[bounds[p] : bounds[p + 1]]
        slots = flat[idx]
        acc[slots] = acc[slots] + vals[idx]
    return acc
