"""The parity gate: an artifact's features against the PyTorch fp32 reference, and its accuracy against the
run's fp32 result (issue 9, section 2). The one implementation of the rule; ``steps`` calls it.

Rules (thresholds from VALIDATION.PARITY), each recorded as a check ``{measure, value, limit, passed, message}``:

- fp32: ``max_abs_diff`` to the PyTorch reference on the parity sample <= FP32_MAX_ABS (1e-3);
- fp16 / bf16 / int8: ``min_cosine`` (per image, over the parity sample) >= REDUCED_MIN_COSINE (0.99), and
  ``rank1_drop`` / ``mAP_drop`` (pt below the run's fp32 result on the full query + gallery set)
  <= REDUCED_MAX_METRIC_DROP (0.5).

The parity sample is drawn from query and gallery (``sample_indices``: deterministic, stratified). The fp32
metrics come from the same target's fp32 artifact in the run when there is one, else from the PyTorch
reference over the full set. Evaluate tasks run one per artifact, so the comparison with a sibling fp32
artifact happens where all evaluated records meet (``apply_metric_rule``, called by ``steps.record_results``).
A check whose value cannot be had (the fp32 artifact failed) is kept with ``passed: None`` and a message.
Metrics are compared in percent (``Metrics.percent()``; a mapping is taken to be in percent already).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reid_tasks.errors import EvaluationError

REDUCED_PRECISIONS = ("fp16", "bf16", "int8")
_METRIC_KEYS = ("rank1", "mAP")
#: fp32_source of metric checks whose baseline is the PyTorch reference over the full set
PYTORCH_SOURCE = "pytorch"


@dataclass(frozen=True)
class Check:
    """One measure of the gate against its limit; ``passed`` is None when the value could not be had."""

    measure: str  # max_abs_diff | min_cosine | rank1_drop | mAP_drop
    value: float | None
    limit: float
    passed: bool | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Assessment:
    """Parity of one artifact's features with the reference, and whether it breaks the rule."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    flagged: bool
    reasons: list[str] = field(default_factory=list)
    precision: str = "fp32"
    metric_diff: dict[str, float] = field(default_factory=dict)  # pt, artifact minus fp32 baseline
    thresholds: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

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


def _who(label: str, precision: str) -> str:
    return label or precision


def metric_checks(
    metrics: Any, fp32_metrics: Any, cfg: Any, *, label: str = "", source: str = "", why_missing: str = ""
) -> list[Check]:
    """``rank1_drop`` / ``mAP_drop`` checks: pt below the fp32 result. Without ``fp32_metrics`` the checks are
    kept unevaluated (``passed: None``) with ``why_missing`` as their message."""
    limit = float(cfg.VALIDATION.PARITY.REDUCED_MAX_METRIC_DROP)
    mine, base = _percent(metrics), _percent(fp32_metrics)
    checks = []
    for key in _METRIC_KEYS:
        measure = f"{key}_drop"
        if mine is None or base is None:
            msg = f"{label}: {measure} not checked: {why_missing or 'no fp32 result on the full set in this run'}"
            checks.append(Check(measure, None, limit, None, msg))
            continue
        if key not in mine or key not in base:
            raise EvaluationError(f"parity: metric {key!r} missing (have {sorted(mine)} / {sorted(base)})")
        drop = base[key] - mine[key]
        passed = drop <= limit
        msg = (
            f"{label}: {key} {mine[key]:.2f}% is {drop:.2f} pt below the fp32 result {base[key]:.2f}% "
            f"({source or 'fp32'}, full set); limit {limit:g} pt (VALIDATION.PARITY.REDUCED_MAX_METRIC_DROP)"
        )
        checks.append(Check(measure, round(drop, 6), limit, passed, msg))
    return checks


def assess(
    features: np.ndarray,
    reference_features: np.ndarray,
    metrics: Any = None,
    fp32_metrics: Any = None,
    precision: str = "fp32",
    cfg: Any = None,
    *,
    label: str = "",
    fp32_source: str = "",
) -> Assessment:
    """Compare ``features`` with the PyTorch fp32 ``reference_features`` under the rule for ``precision``.

    ``metrics`` / ``fp32_metrics``: this artifact's and the fp32 result's Metrics (or percent mappings) on
    the full set; the metric part of the rule applies to reduced precisions when both are given.
    ``label`` names the artifact in the messages (e.g. ``openvino bs8 int8``).
    """
    if cfg is None:
        from reid_tasks.config import load_config

        cfg = load_config()
    p = cfg.VALIDATION.PARITY
    who = _who(label, precision)
    min_cos, mean_cos, max_abs = parity_stats(features, reference_features)
    checks: list[Check] = []
    diffs: dict[str, float] = {}
    if precision in REDUCED_PRECISIONS:
        limit = float(p.REDUCED_MIN_COSINE)
        thresholds = {"min_cosine": limit, "max_metric_drop_pt": float(p.REDUCED_MAX_METRIC_DROP)}
        checks.append(
            Check(
                "min_cosine",
                min_cos,
                limit,
                min_cos >= limit,
                f"{who}: min cosine similarity to the PyTorch fp32 reference {min_cos:.5f}, limit {limit:g} "
                "(VALIDATION.PARITY.REDUCED_MIN_COSINE)",
            )
        )
        if metrics is not None and fp32_metrics is not None:
            checks += metric_checks(metrics, fp32_metrics, cfg, label=who, source=fp32_source)
            mine, base = _percent(metrics), _percent(fp32_metrics)
            diffs = {k: mine[k] - base[k] for k in _METRIC_KEYS}  # type: ignore[index]
    elif precision == "fp32":
        limit = float(p.FP32_MAX_ABS)
        thresholds = {"max_abs_diff": limit}
        checks.append(
            Check(
                "max_abs_diff",
                max_abs,
                limit,
                max_abs <= limit,
                f"{who}: max abs difference to the PyTorch fp32 reference {max_abs:.3g}, limit {limit:g} "
                "(VALIDATION.PARITY.FP32_MAX_ABS)",
            )
        )
    else:
        raise EvaluationError(f"assess: unknown precision {precision!r}")
    reasons = [c.message for c in checks if c.passed is False]
    return Assessment(
        min_cosine=min_cos,
        mean_cosine=mean_cos,
        max_abs_diff=max_abs,
        flagged=bool(reasons),
        reasons=reasons,
        precision=precision,
        metric_diff=diffs,
        thresholds=thresholds,
        checks=checks,
    )


# ------------------------------------------------------------------------------------------------ the sample
def sample_indices(num_query: int, num_gallery: int, size: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """Rows (query first, then gallery) of the parity sample: ``size`` rows split between query and gallery in
    proportion to their sizes (at least one of each when both exist), evenly spaced within each split, none
    of ``exclude`` (a calibration hold-out). Deterministic; every row when ``size`` covers them all."""
    if size < 1:
        raise EvaluationError(f"parity sample size must be >= 1, got {size}")
    excluded = {int(i) for i in exclude}
    query = np.array([i for i in range(num_query) if i not in excluded], dtype=np.int64)
    gallery = np.array([i for i in range(num_query, num_query + num_gallery) if i not in excluded], dtype=np.int64)
    total = len(query) + len(gallery)
    if total == 0:
        raise EvaluationError("parity sample: no query or gallery rows left to sample")
    if size >= total:
        return np.concatenate([query, gallery])
    n_query = round(size * len(query) / total)
    if len(query) and len(gallery):
        n_query = min(max(n_query, 1), size - 1)
    n_query = min(n_query, len(query))
    n_gallery = min(size - n_query, len(gallery))

    def spaced(rows: np.ndarray, n: int) -> np.ndarray:
        if n <= 0:
            return rows[:0]
        return rows[np.floor((np.arange(n) + 0.5) * len(rows) / n).astype(np.int64)]

    return np.concatenate([spaced(query, n_query), spaced(gallery, n_gallery)])


# ------------------------------------------------------------------------------------------------ the record
def parity_record(
    assessment: Assessment, *, sample_size: int, fp32_source: str | None, fp32_metrics: Mapping[str, float] | None
) -> dict[str, Any]:
    """The ``parity`` entry of an evaluated record (stored by the results store as ``parity_detail``)."""
    checks = [c.to_dict() for c in assessment.checks]
    return {
        "min_cosine": assessment.min_cosine,
        "mean_cosine": assessment.mean_cosine,
        "max_abs_diff": assessment.max_abs_diff,
        "sample_size": int(sample_size),
        "fp32_source": fp32_source,
        "fp32_metrics": dict(fp32_metrics) if fp32_metrics else None,
        "checks": checks,
        "passed": all(c["passed"] is not False for c in checks),
    }


def failed_messages(parity: Mapping[str, Any]) -> list[str]:
    """Messages of the failed checks of a ``parity`` record."""
    return [c["message"] for c in parity.get("checks") or [] if c.get("passed") is False]


def _fp32_baseline(
    e: Mapping[str, Any], fp32_by_target: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[str, dict[str, float]] | None:
    """The same target's fp32 evaluation (same batch size, else the smallest) as (source, metrics)."""
    siblings = fp32_by_target.get(e["target"]) or []
    if not siblings:
        return None
    same = [s for s in siblings if int(s["batch_size"]) == int(e["batch_size"])]
    best = same[0] if same else min(siblings, key=lambda s: int(s["batch_size"]))
    return f"{best['target']} fp32 bs{int(best['batch_size'])}", dict(best["metrics"])


def apply_metric_rule(evaluations: Sequence[Mapping[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    """Evaluated records with the metric part of the rule settled where all artifacts of the run meet.

    A reduced-precision record is compared with its target's fp32 record in ``evaluations`` when there is one
    (replacing a comparison with the PyTorch full-set reference made in its evaluate step), else keeps the
    PyTorch comparison, else its metric checks stay unevaluated. ``passed`` / ``flagged`` / ``flag_reasons``
    follow. Pure and idempotent: applying it twice gives the same records.
    """
    fp32_by_target: dict[str, list[Mapping[str, Any]]] = {}
    for e in evaluations:
        if e["precision"] == "fp32":
            fp32_by_target.setdefault(e["target"], []).append(e)
    out = []
    for e in evaluations:
        e = dict(e)
        parity = dict(e["parity"])
        if e["precision"] in REDUCED_PRECISIONS:
            label = artifact_label(e)
            base = _fp32_baseline(e, fp32_by_target)
            if base is None and parity.get("fp32_source") == PYTORCH_SOURCE and parity.get("fp32_metrics"):
                base = (PYTORCH_SOURCE, parity["fp32_metrics"])
            checks = [c for c in parity.get("checks") or [] if not c["measure"].endswith("_drop")]
            if base is None:
                why = f"no fp32 result of {e['target']} in this run (failed or not planned) and no PyTorch full-set one"
                checks += [c.to_dict() for c in metric_checks(None, None, cfg, label=label, why_missing=why)]
                parity.update(fp32_source=None, fp32_metrics=None)
            else:
                source, fp32_metrics = base
                checks += [
                    c.to_dict() for c in metric_checks(e["metrics"], fp32_metrics, cfg, label=label, source=source)
                ]
                parity.update(fp32_source=source, fp32_metrics=fp32_metrics)
            parity["checks"] = checks
            parity["passed"] = all(c["passed"] is not False for c in checks)
        e["parity"] = parity
        e["flag_reasons"] = failed_messages(parity)
        e["flagged"] = not parity["passed"]
        out.append(e)
    return out


def artifact_label(e: Mapping[str, Any]) -> str:
    """``<target> bs<B> <precision>`` of an evaluated record or artifact dict."""
    return f"{e['target']} bs{e.get('batch_size')} {e['precision']}"


# ------------------------------------------------------------------------------------------------ metrics
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
