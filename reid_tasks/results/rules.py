"""Regression rules: pure functions over plain numbers (no database). The store fetches, these decide.

Rules (thresholds under VALIDATION.RULES, reference accuracy under VALIDATION.REFERENCE):

- ``perf_history`` / ``accuracy_history`` on a series with enough runs since its accepted baseline: change-point
  detection (``change_check``, detector in ``detect``): the verdict names the run where the level changed.
  The single-point rules below judge while a series is too short for it.
- ``accuracy_reference``: Rank-1 or mAP below the configured reference by more than REF_ACC_TOLERANCE pt.
  Only when a reference is configured for the model under test (``RuleConfig.reference_rank1`` / ``_map``).
- ``accuracy_history``: Rank-1 or mAP more than HISTORY_ACC_DROP pt below the median of the last
  HISTORY_ACC_RUNS good runs of the same series (target, batch, precision, re-ranking).
- ``batch_invariance``: |metric(batch B) - metric(batch 1)| > BATCH_INVARIANCE pt within one run, same
  target, precision and re-ranking (the smallest batch present stands in when batch 1 is missing).
- ``perf_history`` (Conbench's lookback z-score): against the last up to PERF_LOOKBACK good points of the
  same series (target, device kind, batch, precision, mode), regression when z <= -PERF_Z **and** the
  change is at least PERF_MIN_CHANGE (a fraction) in the worse direction. z is normalised so that negative
  is always worse (for latency, a rise gives a negative z). A history with zero spread (std == 0) has no
  z (reported as None): the PERF_MIN_CHANGE rule alone decides, so a constant history does not alert on
  noise below the tolerance but does alert on a 10 % drop.
- ``perf_reference``: with fewer than PERF_MIN_HISTORY prior good points, the configured reference
  throughput (REFERENCE_THROUGHPUT, per target / device kind / batch) with REF_PERF_TOLERANCE.
- ``parity``: the artifact's parity gate (``targets.parity``, computed by the evaluation step) failed: one
  alert per failed measure (min cosine, max abs diff, Rank-1 / mAP drop vs fp32) naming value and limit.
- history rules only compare rows of the same series identity (``series.identity_key``) with real numbers;
  simulated rows (test doubles) get no reference rule either.
- neither history nor reference: no verdict (``regressed is None``), reported in the run summary.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ResultsError
from .detect import Change, RobustChange
from .rule_config import RuleConfig, metric_spec


@dataclasses.dataclass(frozen=True)
class Check:
    """One rule applied to one value. ``regressed``: True / False, None = no verdict (nothing to compare)."""

    rule: str
    metric: str
    observed: float | None
    baseline: float | None
    threshold: float | None
    z: float | None
    regressed: bool | None
    history: int
    detail: str
    change: Change | None = None  # the change point behind a change-detection verdict
    baseline_runs: tuple[str, ...] = ()  # run keys ``baseline`` came from, newest first (change verdicts)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.1f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def _pct(change: float) -> str:
    return f"{change * 100:+.1f} %"


def perf_band(history: Sequence[float], z_threshold: float, min_change: float) -> tuple[float, float, float, float]:
    """(mean, std, lower, upper) of a perf history (>= 2 points): values inside [lower, upper] raise no
    perf_history alert (the z-score band widened to the ``min_change`` tolerance)."""
    mean, std = statistics.fmean(history), statistics.stdev(history)
    lo = min(mean - z_threshold * std, mean * (1 - min_change))
    hi = max(mean + z_threshold * std, mean * (1 + min_change))
    return mean, std, lo, hi


def zscore_check(
    metric: str, observed: float, history: Sequence[float], z_threshold: float, min_change: float
) -> Check:
    """Conbench-style lookback z-score; regression when z <= -z_threshold and the worse change >= min_change."""
    spec = metric_spec(metric)
    n = len(history)
    if n < 2:
        raise ResultsError(f"zscore_check needs at least 2 history points, got {n}")
    mean, std, lo, hi = perf_band(history, z_threshold, min_change)
    z = None if std == 0 or not math.isfinite(std) else spec.sign * (observed - mean) / std
    rel = spec.worse_by(observed, mean) / abs(mean) if mean else math.inf
    # The value at which the rule fires (both conditions met), in the metric's unit.
    threshold = lo if spec.higher_is_better else hi
    z_bad = z is None or z <= -z_threshold
    regressed = bool(z_bad and rel >= min_change)
    z_text = "n/a (constant history)" if z is None else f"{z:.2f}"
    change = (observed - mean) / mean if mean else 0.0
    op = "<=" if spec.higher_is_better else ">="
    detail = (
        f"{_fmt(observed, spec.unit)} vs mean {_fmt(mean, spec.unit)} of the last {n} good runs "
        f"({_pct(change)}, std {_fmt(std, spec.unit)}, z {z_text}; alert at {op} {_fmt(threshold, spec.unit)}: "
        f"z <= -{z_threshold:g} and worse by >= {min_change * 100:g} %)"
    )
    return Check("perf_history", metric, observed, mean, threshold, z, regressed, n, detail)


def reference_perf_check(metric: str, observed: float, reference: float, tolerance: float, history: int) -> Check:
    """Regression when ``observed`` is worse than ``reference`` by more than ``tolerance`` (a fraction)."""
    spec = metric_spec(metric)
    threshold = reference * (1 - tolerance) if spec.higher_is_better else reference * (1 + tolerance)
    regressed = observed < threshold if spec.higher_is_better else observed > threshold
    detail = (
        f"{_fmt(observed, spec.unit)} vs reference {_fmt(reference, spec.unit)} "
        f"({_pct((observed - reference) / reference)}; alert beyond {_fmt(threshold, spec.unit)}, "
        f"tolerance {tolerance * 100:g} %; only {history} prior good run(s))"
    )
    return Check("perf_reference", metric, observed, reference, threshold, None, bool(regressed), history, detail)


def perf_check(
    metric: str,
    observed: float | None,
    history: Sequence[float],
    reference: float | None,
    cfg: RuleConfig,
    *,
    reference_observed: float | None = None,
) -> Check:
    """The perf verdict of one series: z-score on enough history, else the reference, else no verdict.

    ``history``: values of the prior good runs, newest first (only the first ``cfg.perf_lookback`` are used).
    ``reference_observed``: the value compared with the reference when that is used (default ``observed``;
    the card throughput for targets that report one, as the reference figures are per card).
    """
    spec = metric_spec(metric)
    if spec.kind != "perf":
        raise ResultsError(f"perf_check: {metric!r} is not a perf metric")
    history = [float(v) for v in history[: cfg.perf_lookback] if v is not None]
    n = len(history)
    if observed is None:
        return Check("perf_none", metric, None, None, None, None, None, n, f"no {metric} measured")
    if n >= max(cfg.perf_min_history, 2):
        return zscore_check(metric, observed, history, cfg.perf_z, cfg.perf_min_change)
    if reference is not None:
        value = observed if reference_observed is None else reference_observed
        return reference_perf_check(metric, value, reference, cfg.ref_perf_tolerance, n)
    return Check(
        "perf_none",
        metric,
        observed,
        None,
        None,
        None,
        None,
        n,
        f"{_fmt(observed, spec.unit)}; no perf verdict: {n} prior good run(s) "
        f"(< {cfg.perf_min_history}) and no reference configured",
    )


def change_check(
    metric: str, observed: float, earlier: Sequence[float], keys: Sequence[str], detector: RobustChange
) -> Check | None:
    """The change-point verdict of one series (``perf_history`` / ``accuracy_history``): ``earlier`` are the
    values of the series' earlier finished runs since its accepted baseline, oldest first, ``keys`` the run
    keys of ``earlier`` + the run under evaluation. None when the series is still too short for the detector
    (the caller falls back to the single-point rule)."""
    spec = metric_spec(metric)
    values = [*map(float, earlier), float(observed)]
    if len(keys) != len(values):
        raise ResultsError(f"change_check: {len(keys)} run keys for {len(values)} values")
    if not detector.ready(len(values)):
        return None
    rule = "perf_history" if spec.kind == "perf" else "accuracy_history"
    change = detector.check(values, higher_is_better=spec.higher_is_better, keys=keys)
    level = change.before if change else statistics.median(earlier[-detector.window :])
    margin = detector.min_effect * abs(level) if detector.relative else detector.min_effect
    threshold = level - spec.sign * margin
    limit = f"{detector.min_effect * 100:g} %" if detector.relative else f"{detector.min_effect:g} {spec.unit}"
    if change is None:
        n = min(len(earlier), detector.window)
        detail = (
            f"{_fmt(observed, spec.unit)} vs level {_fmt(level, spec.unit)} (median of the last {n} runs); "
            f"no change point worse by >= {limit}"
        )
        return Check(
            rule,
            metric,
            observed,
            level,
            threshold,
            None,
            False,
            n,
            detail,
            baseline_runs=tuple(keys[-1 - n : -1][::-1]),
        )
    return Check(
        rule,
        metric,
        observed,
        change.before,
        threshold,
        change.score,
        True,
        change.n_before,
        change.describe(spec.unit),
        change=change,
        baseline_runs=tuple(keys[change.index - change.n_before : change.index][::-1]),
    )


def accuracy_reference_check(metric: str, observed: float, reference: float, tolerance: float) -> Check:
    """Regression when ``observed`` is more than ``tolerance`` pt below ``reference`` (percent)."""
    threshold = reference - tolerance
    regressed = observed < threshold
    detail = (
        f"{observed:.2f} % vs reference {reference:.2f} % ({observed - reference:+.2f} pt; "
        f"alert below {threshold:.2f} %, tolerance {tolerance:g} pt)"
    )
    return Check("accuracy_reference", metric, observed, reference, threshold, None, regressed, 0, detail)


def accuracy_history_check(metric: str, observed: float, history: Sequence[float], max_drop: float) -> Check:
    """Regression when ``observed`` is more than ``max_drop`` pt below the median of ``history``."""
    history = [float(v) for v in history if v is not None]
    if not history:
        return Check(
            "accuracy_history", metric, observed, None, None, None, None, 0, "no earlier good run of this series"
        )
    median = statistics.median(history)
    threshold = median - max_drop
    regressed = median - observed > max_drop
    detail = (
        f"{observed:.2f} % vs median {median:.2f} % of the last {len(history)} good runs "
        f"({observed - median:+.2f} pt; alert below {threshold:.2f} %, max drop {max_drop:g} pt)"
    )
    return Check("accuracy_history", metric, observed, median, threshold, None, regressed, len(history), detail)


def batch_invariance_checks(metric: str, by_batch: Mapping[int, float], tolerance: float) -> list[tuple[int, Check]]:
    """(B, check of |value(B) - value(anchor)| > tolerance pt) for each batch B of one run, anchor = batch 1
    or the smallest batch present."""
    if len(by_batch) < 2:
        return []
    anchor = 1 if 1 in by_batch else min(by_batch)
    base = float(by_batch[anchor])
    out = []
    for batch in sorted(by_batch):
        if batch == anchor:
            continue
        value = float(by_batch[batch])
        diff = value - base
        out.append(
            (
                batch,
                Check(
                    "batch_invariance",
                    metric,
                    value,
                    base,
                    tolerance,
                    None,
                    abs(diff) > tolerance,
                    0,
                    f"batch {batch}: {value:.2f} % vs batch {anchor}: {base:.2f} % ({diff:+.2f} pt; "
                    f"allowed +-{tolerance:g} pt)",
                ),
            )
        )
    return out


def parity_checks(artifact: str, passed: bool | None, detail: Mapping[str, Any]) -> list[Check]:
    """The parity gate of one artifact from its stored result (``AccuracyRow.parity_passed`` / ``parity_detail``).

    One ``parity`` check per measure in ``detail["checks"]`` ({measure, value, limit, passed}); a gate that
    failed without check detail is one failed check named ``parity``. Nothing when parity was not checked.
    """
    if passed is None:
        return []
    out = []
    for c in detail.get("checks") or []:
        limit = float(c.get("limit") or 0.0)
        if c.get("passed") is None:  # not evaluated (its fp32 sibling failed: the run is red by its failure row)
            text = f"parity gate not evaluated for artifact {artifact}: {c.get('measure')} (limit {limit:.6g})"
            out.append(Check("parity", str(c.get("measure")), None, None, limit, None, None, 0, text))
            continue
        ok = bool(c.get("passed"))
        value = float(c.get("value") or 0.0)
        verdict = "passed" if ok else "FAILED"
        text = f"parity gate {verdict} for artifact {artifact}: {c.get('measure')} = {value:.6g} (limit {limit:.6g})"
        out.append(Check("parity", str(c.get("measure")), value, None, limit, None, not ok, 0, text))
    if not passed and not any(c.regressed for c in out):
        out.append(
            Check("parity", "parity", 0.0, None, None, None, True, 0, f"parity gate FAILED for artifact {artifact}")
        )
    return out
