"""Evaluation benchmark: reid-strong-baseline algorithm vs reid_tasks.evaluate, same data, same run.

    .venv/bin/python benchmarks/bench_evaluate.py                 # Market-1501 scale (3,368 x 15,913 x 2,048)
    .venv/bin/python benchmarks/bench_evaluate.py --scale small   # quick check
    .venv/bin/python benchmarks/bench_evaluate.py --msmt          # + MSMT17 scale (ours only) with peak RSS

The features are synthetic (seeded): one cluster per identity with a per-camera shift and per-image noise of
varying strength, so Rank-1/mAP are high but far from 100 %; the gallery has distractors (pid 0) and
same-camera junk, and some queries have no cross-camera match. Queries whose true matches tie with other
gallery entries in float32 are redrawn so the reference's non-stable argsort cannot disagree by tie order.
Both sides must report identical metrics (CMC exactly in the reference's float32, mAP/mINP within 1e-9).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rsb_reference

from reid_tasks.evaluate import evaluate, l2_normalize

SCALES = {
    # num_query, num_gallery, num_ids, num_distractors, dim
    "market": (3368, 15913, 750, 2798, 2048),
    "small": (600, 3000, 150, 500, 2048),
    "msmt": (11659, 82161, 3060, 0, 2048),
}


def make_features(num_query, num_gallery, num_ids, num_distractors, dim, num_cams=6, seed=0):
    """Seeded synthetic ReID features: (qf, gf, q_pids, g_pids, q_camids, g_camids), float32 features."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids, dim), dtype=np.float32) * np.float32(0.4)
    cam_shift = rng.standard_normal((num_cams, dim), dtype=np.float32) * np.float32(0.15)
    hardness = rng.uniform(0.6, 1.6, num_ids).astype(np.float32)  # per-identity noise level

    def draw(pids, cams, out):
        for s in range(0, pids.size, 4096):
            p, c = pids[s : s + 4096], cams[s : s + 4096]
            noise = rng.standard_normal((p.size, dim), dtype=np.float32)
            out[s : s + 4096] = centers[p - 1] + cam_shift[c] + noise * hardness[p - 1, None]
        return out

    q_pids = rng.integers(1, num_ids + 1, num_query)
    q_pids[: min(num_ids, num_query)] = np.arange(1, min(num_ids, num_query) + 1)
    q_cams = rng.integers(0, num_cams, num_query)
    ng_ids = num_gallery - num_distractors
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, ng_ids), np.zeros(num_distractors, dtype=np.int64)])
    g_cams = rng.integers(0, num_cams, num_gallery)
    # a few identities are seen by a single camera only: their queries have no valid match
    lonely = np.arange(1, num_ids + 1, 97)
    for p in lonely:
        g_cams[g_pids == p] = 0
        q_cams[q_pids == p] = 0
    gf = np.empty((num_gallery, dim), dtype=np.float32)
    draw(g_pids[:ng_ids], g_cams[:ng_ids], gf[:ng_ids])
    gf[ng_ids:] = rng.standard_normal((num_distractors, dim), dtype=np.float32) * np.float32(1.0)
    qf = draw(q_pids, q_cams, np.empty((num_query, dim), dtype=np.float32))
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def untie(qf, gf, q_pids, g_pids, q_cams, g_cams, seed=1, rounds=8, ulps=4):
    """Redraw queries whose true matches tie, to within `ulps` float32 steps, with a valid non-match.

    Both sides compute the same float32 formula, but BLAS rounds a (3368 x 2048) @ (2048 x 15913) call and
    a 256-row tile of it differently in the last bit; a near tie could then order differently, and exact
    ties are ordered arbitrarily by the reference's non-stable argsort. Returns the number of queries redrawn.
    """
    rng = np.random.default_rng(seed)
    redrawn = 0
    for _ in range(rounds):
        d = rsb_reference.distance_matrix(qf, gf)
        bad = []
        for i in range(qf.shape[0]):
            same = g_pids == q_pids[i]
            valid = ~(same & (g_cams == q_cams[i]))
            dm = d[i, same & valid]
            if dm.size == 0:
                continue
            dn = np.sort(d[i, valid & ~same])
            pos = np.clip(np.searchsorted(dn, dm), 1, dn.size - 1)
            gap = np.minimum(np.abs(dn[pos] - dm), np.abs(dn[pos - 1] - dm))
            if np.any(gap <= ulps * np.spacing(dm)):
                bad.append(i)
        if not bad:
            return redrawn
        redrawn += len(bad)
        qf[bad] += rng.standard_normal((len(bad), qf.shape[1]), dtype=np.float32) * np.float32(1e-2)
    raise RuntimeError("could not remove near ties from the synthetic data")


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(max(1, n)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_rss_mib() -> float:
    """Peak resident set of this process (VmHWM; ru_maxrss also counts a forking parent's pages)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_msmt(seed: int) -> int:
    mq, mg, mid, mdis, mdim = SCALES["msmt"]
    data = make_features(mq, mg, mid, mdis, mdim, seed=seed)
    base = peak_rss_mib()
    feats = (data[0].nbytes + data[1].nbytes) / 2**20
    t = time.perf_counter()
    m = evaluate(*data)
    t_m = time.perf_counter() - t
    peak = peak_rss_mib()
    print(
        f"MSMT17 scale {mq} x {mg} x {mdim}: ours {t_m:.2f} s, rank1 {100 * m.rank1:.2f} mAP {100 * m.mAP:.2f}; "
        f"peak RSS {peak:.0f} MiB (features {feats:.0f} MiB, peak before evaluate {base:.0f} MiB, "
        f"evaluate added {peak - base:.0f} MiB)"
    )
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=["market", "small"], default="market")
    ap.add_argument("--msmt", action="store_true", help="also run the MSMT17-scale case (ours only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for ours and the GEMM floor (RSB runs once)")
    ap.add_argument("--msmt-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.msmt_only:
        return run_msmt(args.seed)

    nq, ng, nid, ndis, dim = SCALES[args.scale]
    t = time.perf_counter()
    data = make_features(nq, ng, nid, ndis, dim, seed=args.seed)
    redrawn = untie(*data)
    print(
        f"data: {args.scale} {nq} x {ng} x {dim} float32, generated in {time.perf_counter() - t:.1f} s; "
        f"queries redrawn to remove near ties: {redrawn}"
    )
    qf, gf, q_pids, g_pids, q_cams, g_cams = data

    # GEMM floor: the plain product of the (normalised) features; best of --repeats for the fast sides
    qn, gn = l2_normalize(qf), l2_normalize(gf)
    t_gemm = best_of(args.repeats, lambda: qn @ gn.T)
    t_ours = best_of(args.repeats, lambda: evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams))
    ours = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams)

    t = time.perf_counter()
    r_cmc, r_map, r_minp, r_valid = rsb_reference.rsb_evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams)
    t_ref = time.perf_counter() - t

    n = len(r_cmc)
    cmc_equal = np.array_equal(ours.cmc[:n].astype(np.float32), r_cmc)
    ok = (
        cmc_equal
        and abs(ours.mAP - r_map) <= 1e-9
        and abs(ours.mINP - r_minp) <= 1e-9
        and ours.num_valid_queries == r_valid
    )
    print(
        f"metrics ours: rank1 {100 * ours.rank1:.4f} rank5 {100 * ours.rank5:.4f} rank10 {100 * ours.rank10:.4f} "
        f"mAP {100 * ours.mAP:.6f} mINP {100 * ours.mINP:.6f} valid {ours.num_valid_queries} "
        f"skipped {ours.num_skipped_queries} ties {ours.num_tie_queries}"
    )
    print(
        f"metrics RSB:  rank1 {100 * r_cmc[0]:.4f} rank5 {100 * r_cmc[4]:.4f} rank10 {100 * r_cmc[9]:.4f} "
        f"mAP {100 * r_map:.6f} mINP {100 * r_minp:.6f} valid {r_valid}"
    )
    print(
        f"identical: {ok} (cmc exact in float32: {cmc_equal}, |dmAP| {abs(ours.mAP - r_map):.2e}, "
        f"|dmINP| {abs(ours.mINP - r_minp):.2e})"
    )
    print(
        f"time RSB algorithm {t_ref:.2f} s (1 run) | ours {t_ours:.3f} s (best of {args.repeats}) | "
        f"speed-up {t_ref / t_ours:.1f}x | GEMM floor (qf @ gf.T) {t_gemm:.3f} s"
    )

    if args.msmt:  # in a fresh process so that its peak RSS is its own
        del data, qf, gf
        subprocess.run([sys.executable, __file__, "--msmt-only", "--seed", str(args.seed)], check=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
