"""Accuracy and parity of an artifact's features against the PyTorch fp32 reference (issue 3, section 6).

Rules (thresholds from VALIDATION.PARITY):

- fp32: max abs difference to the reference <= FP32_MAX_ABS (1e-3);
- fp16 / bf16 / int8: per-image cosine similarity >= REDUCED_MIN_COSINE (0.99) for every image, and Rank-1 and
  mAP within REDUCED_MAX_METRIC_DROP (0.5 pt) of the fp32 artifact's on the same inputs.

An artifact that breaks a rule is *flagged*; the reasons name the value, the threshold and the baseline.
Metrics are compared in percent (``Metrics.percent()``; a mapping is taken to be in percent already).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reid_tasks.errors import EvaluationError

REDUCED_PRECISIONS = ("fp16", "bf16", "int8")
_METRIC_KEYS = ("rank1", "mAP")


@dataclass(frozen=True)
class Assessment:
    """Parity of one artifact's features with the reference, and whether it breaks the accuracy rule."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    flagged: bool
    reasons: list[str] = field(default_factory=list)
    precision: str = "fp32"
    metric_diff: dict[str, float] = field(default_factory=dict)  # pt, artifact minus fp32 baseline
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parity_stats(features: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """(min cosine, mean cosine, max abs diff) per row (reid_tasks.evaluate.cosine_parity)."""
    from reid_tasks.evaluate import cosine_parity

    s = cosine_parity(features, reference)
    return s.min_cosine, s.mean_cosine, s.max_abs_diff


def _percent(metrics: Any) -> dict[str, float] | None:
    if metrics is None:
        return None
    if hasattr(metrics, "percent"):
        return {k: float(v) for k, v in metrics.percent().items()}
    if isinstance(metrics, Mapping):
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    raise EvaluationError(f"metrics must be a Metrics or a mapping in percent, got {type(metrics).__name__}")


def assess(
    features: np.ndarray,
    reference_features: np.ndarray,
    metrics: Any = None,
    fp32_metrics: Any = None,
    precision: str = "fp32",
    cfg: Any = None,
) -> Assessment:
    """Compare ``features`` with the PyTorch fp32 ``reference_features`` under the rule for ``precision``.

    ``metrics`` / ``fp32_metrics``: this artifact's and the fp32 baseline's Metrics (or percent mappings);
    the metric part of the rule applies to reduced precisions when both are given.
    """
    if cfg is None:
        from reid_tasks.config import load_config

        cfg = load_config()
    p = cfg.VALIDATION.PARITY
    min_cos, mean_cos, max_abs = parity_stats(features, reference_features)
    reasons: list[str] = []
    diffs: dict[str, float] = {}
    if precision in REDUCED_PRECISIONS:
        thresholds = {"min_cosine": float(p.REDUCED_MIN_COSINE), "max_metric_diff_pt": float(p.REDUCED_MAX_METRIC_DROP)}
        if min_cos < p.REDUCED_MIN_COSINE:
            reasons.append(
                f"{precision}: min cosine similarity to the PyTorch fp32 reference {min_cos:.5f} "
                f"< {p.REDUCED_MIN_COSINE} (VALIDATION.PARITY.REDUCED_MIN_COSINE)"
            )
        mine, base = _percent(metrics), _percent(fp32_metrics)
        if mine is not None and base is not None:
            for key in _METRIC_KEYS:
                if key not in mine or key not in base:
                    raise EvaluationError(f"assess: metric {key!r} missing (have {sorted(mine)} / {sorted(base)})")
                diffs[key] = mine[key] - base[key]
                if abs(diffs[key]) > p.REDUCED_MAX_METRIC_DROP:
                    reasons.append(
                        f"{precision}: {key} {mine[key]:.2f}% differs from the fp32 baseline {base[key]:.2f}% by "
                        f"{diffs[key]:+.2f} pt (limit {p.REDUCED_MAX_METRIC_DROP} pt, "
                        "VALIDATION.PARITY.REDUCED_MAX_METRIC_DROP)"
                    )
    elif precision == "fp32":
        thresholds = {"max_abs_diff": float(p.FP32_MAX_ABS)}
        if max_abs > p.FP32_MAX_ABS:
            reasons.append(
                f"fp32: max abs difference to the PyTorch fp32 reference {max_abs:.3g} > {p.FP32_MAX_ABS} "
                "(VALIDATION.PARITY.FP32_MAX_ABS)"
            )
    else:
        raise EvaluationError(f"assess: unknown precision {precision!r}")
    return Assessment(
        min_cosine=min_cos,
        mean_cosine=mean_cos,
        max_abs_diff=max_abs,
        flagged=bool(reasons),
        reasons=reasons,
        precision=precision,
        metric_diff=diffs,
        thresholds=thresholds,
    )


def evaluate_features(features: np.ndarray, cache: Any, cfg: Any = None) -> Any:
    """reid_tasks.evaluate.evaluate on features in cache order (query rows first, then gallery)."""
    from reid_tasks.evaluate import evaluate

    if cfg is None:
        from reid_tasks.config import load_config

        cfg = load_config()
    nq = int(cache.num_query)
    if features.shape[0] != len(cache):
        raise EvaluationError(f"{features.shape[0]} feature rows for a cache of {len(cache)} images")
    pids, camids = np.asarray(cache.pids), np.asarray(cache.camids)
    return evaluate(
        features[:nq],
        features[nq:],
        pids[:nq],
        pids[nq:],
        camids[:nq],
        camids[nq:],
        feat_norm=cfg.TEST.FEAT_NORM == "yes",
        rerank=cfg.TEST.RE_RANKING == "yes",
    )
