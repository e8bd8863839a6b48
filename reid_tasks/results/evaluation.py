"""Apply every rule to one run: pure, over plain observations (no database, no session).

The store loads, for each perf / accuracy row of the run, an :class:`Observation` (its values, its context
and the earlier good points of its series); :func:`evaluate` returns the per-series verdicts and the alerts
to store. The rules themselves are in ``rules``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from . import rules
from .records import SeriesVerdict
from .rules import RuleConfig
from .series import accuracy_series, series_key

# The values a perf / accuracy observation carries (None where not measured).
PERF_VALUES = ("throughput", "latency_p99", "card_throughput")
ACCURACY_VALUES = rules.ACCURACY_RULE_METRICS


@dataclasses.dataclass(frozen=True)
class Prior:
    """One earlier good point of a series: the run it came from and its values."""

    run_key: str
    values: Mapping[str, float | None]


@dataclasses.dataclass(frozen=True)
class Observation:
    """One row of the run under evaluation.

    ``context``: what an alert's "what changed" compares (model, dataset, config, environment; perf adds tool
    versions and device id); ``history``: earlier good points of the same series, newest first;
    ``before``: the context of the newest of them (None without history).
    """

    series: Mapping[str, Any]
    values: Mapping[str, float | None]
    context: Mapping[str, Any]
    history: Sequence[Prior] = ()
    before: Mapping[str, Any] | None = None

    @property
    def base_key(self) -> str | None:
        return self.history[0].run_key if self.history else None

    def past(self, name: str) -> list[float]:
        """The history's values of one measure, newest first, unmeasured ones left out."""
        return [float(v) for p in self.history if (v := p.values.get(name)) is not None]


def describe_diff(diff: Mapping[str, list[Any]], base_run: str | None) -> str:
    if base_run is None:
        return "no earlier good run to compare the environment with"
    if not diff:
        return f"nothing changed in model, ONNX, config, dataset or environment since the last good run {base_run}"
    parts = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8]]
    more = f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""
    return f"changed since the last good run {base_run}: " + "; ".join(parts) + more


class _Verdicts:
    """Collects the verdicts and alerts of one evaluation, in the order the rules ran."""

    def __init__(self) -> None:
        self.verdicts: list[SeriesVerdict] = []
        self.alerts: list[dict[str, Any]] = []

    def add(self, check: rules.Check, obs: Observation, series: Mapping[str, Any] | None = None) -> None:
        """Record ``check`` on ``obs``'s series (or ``series``, for a same-run rule: no environment diff)."""
        same_run = series is not None
        ser = dict(series if same_run else obs.series)
        key = series_key(ser)
        diff = {} if same_run else rules.env_diff(obs.before, obs.context)
        message = f"{key} {check.metric}: {check.detail}"
        if check.regressed and not same_run:
            message += "; " + describe_diff(diff, obs.base_key if obs.before is not None else None)
        self.verdicts.append(
            SeriesVerdict(
                rule=check.rule,
                metric=check.metric,
                series_key=key,
                series=ser,
                observed=check.observed,
                baseline=check.baseline,
                threshold=check.threshold,
                z=check.z,
                regressed=check.regressed,
                history=check.history,
                message=message,
            )
        )
        if check.regressed:
            self.alerts.append(
                {
                    "rule": check.rule,
                    "metric": check.metric,
                    "series_key": key,
                    "series": ser,
                    "observed": float(check.observed),  # type: ignore[arg-type]
                    "baseline": check.baseline,
                    "threshold": check.threshold,
                    "z": check.z,
                    "message": message,
                    "env_diff": diff,
                }
            )


def _perf(out: _Verdicts, obs: Observation, cfg: RuleConfig) -> None:
    ser, v = obs.series, obs.values
    ref = cfg.reference_for(ser["target"], ser["device_kind"], ser["batch_size"], ser["precision"])
    card = v.get("card_throughput")
    thr = rules.perf_check(
        "throughput",
        v["throughput"],
        obs.past("throughput"),
        ref,
        cfg,
        reference_observed=card if card is not None else v["throughput"],
    )
    lat = rules.perf_check("latency_p99", v.get("latency_p99"), obs.past("latency_p99"), None, cfg)
    for check in (thr, lat):
        if check.observed is None and check.regressed is None:
            continue  # latency not measured by this target: nothing to report
        out.add(check, obs)


def _accuracy(out: _Verdicts, obs: Observation, cfg: RuleConfig) -> None:
    for metric in rules.ACCURACY_RULE_METRICS:
        observed = float(obs.values[metric])  # type: ignore[arg-type]
        reference = cfg.reference_accuracy(metric)
        if reference is not None:
            out.add(rules.accuracy_reference_check(metric, observed, reference, cfg.ref_acc_tolerance), obs)
        out.add(rules.accuracy_history_check(metric, observed, obs.past(metric), cfg.history_acc_drop), obs)


def _batch_invariance(out: _Verdicts, accuracy: Sequence[Observation], cfg: RuleConfig) -> None:
    groups: dict[tuple[str, str, bool], list[Observation]] = {}
    for obs in accuracy:
        s = obs.series
        groups.setdefault((s["target"], s["precision"], s["re_ranking"]), []).append(obs)
    for (target, precision, rerank), group in groups.items():
        for metric in rules.ACCURACY_RULE_METRICS:
            by_batch = {o.series["batch_size"]: float(o.values[metric]) for o in group}  # type: ignore[arg-type]
            for batch, check in rules.batch_invariance_checks(metric, by_batch, cfg.batch_invariance):
                out.add(check, group[0], accuracy_series(target, batch, precision, rerank))


def evaluate(
    perf: Sequence[Observation], accuracy: Sequence[Observation], cfg: RuleConfig
) -> tuple[list[SeriesVerdict], list[dict[str, Any]]]:
    """Every rule over one run's observations: (verdicts, alerts to store), perf rows first, then accuracy,
    then the same-run batch-invariance checks."""
    out = _Verdicts()
    for obs in perf:
        _perf(out, obs, cfg)
    for obs in accuracy:
        _accuracy(out, obs, cfg)
    _batch_invariance(out, accuracy, cfg)
    return out.verdicts, out.alerts
