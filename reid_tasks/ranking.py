"""The kernel behind ``reid_tasks.evaluate``: float32 distances in fixed GEMM tiles and the exact rank of every
true match, chunk by chunk (``reranking`` shares the distance block, the sort keys and the ragged ranges).

The ranking never sorts whole rows. For each query only the gallery entries at or below the distance of its
farthest true match matter, so each chunk of queries keeps those candidates, packs (row, distance, gallery
index) into one 64-bit key per candidate and sorts the keys; the position of a true match in its row is its
exact rank. Memory is bounded by a per-chunk budget (the full query x gallery matrix is never held, except for
re-ranking), and the distance GEMM (BLAS, all cores) is the dominant cost; the distance assembly and the
ranking of each chunk are split over a few threads. The GEMM is issued in fixed tiles of ``GEMM_ROWS`` query
rows, so results do not depend on the chunk size or the memory budget.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from reid_tasks.errors import EvaluationError

#: default working memory of the ranking (bytes): one chunk of GEMM product rows + candidate mask
DEFAULT_MEMORY_BUDGET = 128 * 1024 * 1024
#: the query-gallery GEMM is issued in fixed tiles of this many query rows (rows [k*256, (k+1)*256)): BLAS
#: rounding depends on the shape of the call, so fixed tiles make the distances, hence the metrics,
#: independent of chunk_size and memory_budget (for a given BLAS build and thread count)
GEMM_ROWS = 256
#: candidates (entries at or below a query's farthest true match) sorted in one go, per thread (~40 B each)
_MAX_CANDIDATES = 1_000_000
_NORM_EPS = 1e-12
#: rows per block of the row-wise passes (normalisation, the finiteness check of ``evaluate``)
ROW_BLOCK = 8192
#: distance rows are formed in blocks of about this many bytes (stays in the L2 cache)
_BLOCK_BYTES = 1024 * 1024


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

    _map_rows(pool, x.shape[0], rows, block=ROW_BLOCK)
    return out


def sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def distance_block(q: np.ndarray, q2: np.ndarray, g: np.ndarray, g2: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``(||q||^2 + ||g||^2) - 2 q.g`` in float32 into ``out`` (same rounding as torch ``addmm_(1, -2, ...)``)."""
    prod = (q * np.float32(2.0)) @ g.T  # == 2 (q @ g.T) bit for bit: scaling by 2 is exact
    np.add(q2[:, None], g2[None, :], out=out)
    np.subtract(out, prod, out=out)
    return out


class Rows:
    """Distance rows, either given (``dist``) or as ``(q2 + g2) - prod`` evaluated on demand.

    The lazy form never writes the distance matrix: blocks of a few rows are formed in cache and compared,
    and single entries are recomputed with the same float32 operations (bit-identical).
    """

    def __init__(self, dist=None, prod=None, q2=None, g2=None):
        self.dist, self.prod, self.q2, self.g2 = dist, prod, q2, g2
        self.n = (dist if dist is not None else prod).shape[0]

    def sub(self, a: int, b: int) -> Rows:
        if self.dist is not None:
            return Rows(dist=self.dist[a:b])
        return Rows(prod=self.prod[a:b], q2=self.q2[a:b], g2=self.g2)

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


class TiledDistance:
    """``make_dist(r0, r1) -> Rows`` from GEMM tiles of fixed shape (rows [k*GEMM_ROWS, (k+1)*GEMM_ROWS))."""

    def __init__(self, q: np.ndarray, g: np.ndarray, reuse: bool = False):
        """``reuse``: results are views of one reused buffer, valid until the next call."""
        self.q, self.g, self.reuse = q, g, reuse
        self.q2, self.g2 = sq_norms(q), sq_norms(g)
        self.cache: dict[int, np.ndarray] = {}
        self._buf: np.ndarray | None = None

    def _tile_into(self, t: int, out: np.ndarray) -> None:
        a = t * GEMM_ROWS
        b = min(self.q.shape[0], a + GEMM_ROWS)
        # (2 q) @ g.T == 2 (q @ g.T) bit for bit (scaling by 2 is exact); tile t always has the same shape
        np.matmul(self.q[a:b] * np.float32(2.0), self.g.T, out=out)

    def __call__(self, r0: int, r1: int) -> Rows:
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
        return Rows(prod=prod, q2=self.q2[r0:r1], g2=self.g2)


# ---------------------------------------------------------------------------------------------------- ranking


def float_keys(d: np.ndarray) -> np.ndarray:
    """Monotone map float32 -> uint32 (a < b  <=>  key(a) < key(b)); -0.0 is folded onto +0.0."""
    d = d + np.float32(0.0)
    u = d.view(np.uint32)
    return np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(offs - starts, lengths)


class Ranker:
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
            other_cam = self.g_camids[self.pid_order[ragged_arange(lo, hi - lo)]] != qc[rows]
            out[r0 : r0 + qp.size] = np.bincount(rows[other_cam], minlength=qp.size)
        return out

    def max_rows(self) -> int:
        return 1 << self.row_bits

    def rank_chunk(self, r0: int, dist: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Rank the queries r0 .. r0+dist.n; returns (num_matches, first_rank, ap, inp) per row + tie count."""
        nb = dist.n
        qp = self.q_pids[r0 : r0 + nb]
        qc = self.q_camids[r0 : r0 + nb]
        lo = np.searchsorted(self.sorted_pids, qp, side="left")
        hi = np.searchsorted(self.sorted_pids, qp, side="right")
        gidx = self.pid_order[ragged_arange(lo, hi - lo)]
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
        dk = float_keys(dist.gather(s + rr, cc))
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


def chunk_rows(num_g: int, budget: int) -> int:
    """Queries per chunk: the largest multiple of GEMM_ROWS whose working memory fits ``budget`` bytes."""
    per_tile = GEMM_ROWS * num_g * (4 + 1)  # GEMM product rows + candidate mask
    return GEMM_ROWS * max(1, budget // per_tile)


def run_ranking(
    num_q: int,
    chunk: int,
    make_dist: Callable[[int, int], Rows],
    ranker: Ranker,
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
