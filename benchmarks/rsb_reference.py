"""The reid-strong-baseline evaluation algorithm, re-implemented in plain numpy as the baseline.

reid-strong-baseline (``utils/reid_metric.py`` R1_mAP and ``data/datasets/eval_reid.py`` eval_func) computes the
whole query x gallery distance matrix, ``np.argsort``s every row of it, and then walks the queries in a Python
loop: drop same-pid-same-camera entries, skip queries without a match, cumulative CMC clipped to 1 and
truncated to ``max_rank`` (to the gallery size when that is smaller), AP from the running precision.
The CMC is accumulated in float32 as there. Distances use the same float32 formula as
``reid_tasks.evaluate`` (``(||q||^2 + ||g||^2) - 2 q.g``, squared norms by einsum), so on tie-free data both
rank identically.

``re_ranking_reference`` transcribes ``utils/re_ranking.py`` (k-reciprocal encoding, Zhong et al. 2017) loop
for loop; ``argsort_kind`` and ``v_dtype`` default to the original's (non-stable argsort, float16 V); the
tests use a stable argsort and float32 to compare with the vectorised implementation.
"""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize(x, p=2, dim=1) in float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norm, np.float32(1e-12))[:, None]


def distance_matrix(qf: np.ndarray, gf: np.ndarray, feat_norm: bool = True) -> np.ndarray:
    """R1_mAP.compute: optional normalisation, then ||q||^2 + ||g||^2 - 2 q.g as one float32 matrix."""
    qf = np.asarray(qf, dtype=np.float32)
    gf = np.asarray(gf, dtype=np.float32)
    if feat_norm:
        qf, gf = normalize(qf), normalize(gf)
    q2 = np.einsum("ij,ij->i", qf, qf)
    g2 = np.einsum("ij,ij->i", gf, gf)
    return (q2[:, None] + g2[None, :]) - np.float32(2.0) * (qf @ gf.T)


def eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, argsort_kind=None):
    """eval_func of reid-strong-baseline; returns (cmc float32 [max_rank], mAP, mINP, num_valid_queries).

    mINP (fast-reid) is added in the same loop; it does not change the CMC/mAP computation. As in the
    original, a gallery smaller than max_rank with junk removed gives ragged CMC rows (ValueError on numpy 2).
    """
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    indices = np.argsort(distmat, axis=1, kind=argsort_kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)

    all_cmc = []
    all_ap = []
    all_inp = []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        pos_max = np.where(orig_cmc == 1)[0].max()
        all_inp.append(cmc[pos_max] / (pos_max + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0

        num_rel = orig_cmc.sum()
        tmp_cmc = orig_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * orig_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)

    if num_valid_q <= 0:
        raise RuntimeError("Error: all query identities do not appear in gallery")
    all_cmc = np.asarray(all_cmc).astype(np.float32)
    all_cmc = all_cmc.sum(0) / num_valid_q
    return all_cmc, float(np.mean(all_ap)), float(np.mean(all_inp)), int(num_valid_q)


def re_ranking_reference(probFea, galFea, k1=20, k2=6, lambda_value=0.3, argsort_kind=None, v_dtype=np.float16):
    """utils/re_ranking.py of reid-strong-baseline, on numpy float32 features (used as given)."""
    probFea = np.asarray(probFea, dtype=np.float32)
    galFea = np.asarray(galFea, dtype=np.float32)
    query_num = probFea.shape[0]
    feat = np.concatenate([probFea, galFea])
    all_num = feat.shape[0]
    sq = np.einsum("ij,ij->i", feat, feat)
    original_dist = (sq[:, None] + sq[None, :]) - np.float32(2.0) * (feat @ feat.T)
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(v_dtype)
    initial_rank = np.argsort(original_dist, axis=1, kind=argsort_kind).astype(np.int32)

    half = int(np.around(k1 / 2))
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, : half + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, : half + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2 / 3 * len(
                candidate_k_reciprocal_index
            ):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=v_dtype)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])

    jaccard_dist = np.zeros_like(original_dist, dtype=v_dtype)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=v_dtype)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def rsb_evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, feat_norm=True, max_rank=50, rerank=False):
    """R1_mAP / R1_mAP_reranking end to end: (cmc, mAP, mINP, num_valid_queries)."""
    if rerank:
        qf = np.asarray(qf, dtype=np.float32)
        gf = np.asarray(gf, dtype=np.float32)
        if feat_norm:
            qf, gf = normalize(qf), normalize(gf)
        distmat = re_ranking_reference(qf, gf, k1=20, k2=6, lambda_value=0.3)
    else:
        distmat = distance_matrix(qf, gf, feat_norm)
    return eval_func(
        distmat,
        np.asarray(q_pids),
        np.asarray(g_pids),
        np.asarray(q_camids),
        np.asarray(g_camids),
        max_rank=max_rank,
    )
