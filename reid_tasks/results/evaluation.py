"""Apply every rule to one run: pure, over plain observations (no database, no session).

The store loads, for each perf / accuracy row of the run, an :class:`Observation` (its values, its context
and the earlier good points of its series); :func:`evaluate` returns the per-series verdicts and the alerts
to store, each with what changed in the environment (``env_diff``). The rules themselves are in ``rules``,
their limits in ``rule_config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import detect, rules
from .records import SeriesVerdict
from .rule_config import ACCURACY_RULE_METRICS, PERF_RULE_METRICS, RuleConfig
from .series import accuracy_series, series_key

# The values a perf / accuracy observation carries (None where not measured).
PERF_VALUES = ("throughput", "latency_p99", "card_throughput")
ACCURACY_VALUES = ACCURACY_RULE_METRICS


@dataclasses.dataclass(frozen=True)
class Prior:
    """One earlier point of a series: the run it came from, its values, when the run started and (for the
    change-point trail) the run's context."""

    run_key: str
    values: Mapping[str, float | None]
    started_at: datetime | None = None
    context: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Baseline:
    """An accepted change: the series' baseline for one metric restarts at run ``run_key``."""

    run_key: str
    started_at: datetime


@dataclasses.dataclass(frozen=True)
class Observation:
    """One row of the run under evaluation.

    ``context``: what an alert's "what changed" compares (model, dataset, config, environment; perf adds tool
    versions and device id); ``history``: earlier good points of the same series, newest first;
    ``before``: the context of the newest of them (None without history); ``run_key``: the run's;
    ``trail``: the earlier points of good and regressed runs (what change-point detection reads), oldest first,
    with their contexts; ``baselines``: {metric: accepted baseline start} -- history and trail before it
    are ignored for that metric.
    ``simulated``: numbers from test doubles (no reference rule). ``parity_passed`` / ``parity_detail``:
    accuracy rows' parity gate.
    """

    series: Mapping[str, Any]
    values: Mapping[str, float | None]
    context: Mapping[str, Any]
    history: Sequence[Prior] = ()
    before: Mapping[str, Any] | None = None
    trail: Sequence[Prior] = ()
    baselines: Mapping[str, Baseline] = dataclasses.field(default_factory=dict)
    run_key: str | None = None
    simulated: bool = False
    parity_passed: bool | None = None
    parity_detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def base_key(self) -> str | None:
        return self.history[0].run_key if self.history else None

    def _since(self, name: str, points: Sequence[Prior]) -> list[Prior]:
        start = self.baselines.get(name)
        return [
            p
            for p in points
            if p.values.get(name) is not None
            and (start is None or p.started_at is None or p.started_at >= start.started_at)
        ]

    def past(self, name: str) -> list[float]:
        """The history's values of one measure since its accepted baseline, newest first, unmeasured ones
        left out."""
        return [float(p.values[name]) for p in self._since(name, self.history)]  # type: ignore[arg-type]

    def trail_of(self, name: str) -> list[Prior]:
        """The trail's points with a value of one measure since its accepted baseline, oldest first."""
        return self._since(name, self.trail)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": {}} -> {"a.b": 1} (an empty mapping contributes nothing)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def env_diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{dotted field: [before, after]} of the fields that differ (nested mappings flattened)."""
    if before is None:
        return {}
    a, b = flatten(before), flatten(after)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_diff(diff: Mapping[str, list[Any]], base_run: str | None) -> str:
    if base_run is None:
        return "no earlier good run to compare the environment with"
    if not diff:
        return f"nothing changed in model, ONNX, config, dataset or environment since the last good run {base_run}"
    return f"changed since the last good run {base_run}: " + _diff_fields(diff)


def _diff_fields(diff: Mapping[str, list[Any]]) -> str:
    parts = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8]]
    return "; ".join(parts) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")


def _baseline_runs(check: rules.Check, obs: Observation) -> list[str]:
    """The runs a verdict compared with, newest first: the change detector's, else a single-point history
    rule's good history since the accepted baseline; none for reference and same-run rules."""
    if check.baseline_runs:
        return list(check.baseline_runs)
    if not check.rule.endswith("_history") or not check.history:
        return []
    return [p.run_key for p in obs._since(check.metric, obs.history)]


class _Verdicts:
    """Collects the verdicts and alerts of one evaluation, in the order the rules ran."""

    def __init__(self) -> None:
        self.verdicts: list[SeriesVerdict] = []
        self.alerts: list[dict[str, Any]] = []

    def add(
        self,
        check: rules.Check,
        obs: Observation,
        series: Mapping[str, Any] | None = None,
        trail: Sequence[Prior] = (),
    ) -> None:
        """Record ``check`` on ``obs``'s series (or ``series``, for a same-run rule: no environment diff).
        ``trail``: the points a change-point check ran on (its change's environment diff is taken there)."""
        same_run = series is not None or check.rule == "parity"
        ser = dict(series if series is not None else obs.series)
        key = series_key(ser)
        change = check.change
        if change is not None:
            diff, diff_text = _change_diff(change, obs, trail)
        else:
            diff = {} if same_run else env_diff(obs.before, obs.context)
            diff_text = describe_diff(diff, obs.base_key if obs.before is not None else None)
        message = f"{key} {check.metric}: {check.detail}"
        if check.regressed and not same_run:
            message += "; " + diff_text
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
                baseline_runs=_baseline_runs(check, obs),
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
                    "change_run": None if change is None else change.run_key,
                    "level_before": None if change is None else change.before,
                    "level_after": None if change is None else change.after,
                    "p_value": None if change is None else change.p_value,
                }
            )


def _change_diff(change: detect.Change, obs: Observation, trail: Sequence[Prior]) -> tuple[dict[str, Any], str]:
    """The environment diff of a change point: the change run against the run just before it."""
    contexts = [p.context for p in trail] + [obs.context]
    before, after = contexts[change.index - 1], contexts[change.index]
    before_key = trail[change.index - 1].run_key
    if before is None or after is None:
        return {}, f"no environment recorded to compare run {change.run_key} with {before_key}"
    diff = env_diff(before, after)
    if not diff:
        return diff, (
            f"nothing changed in model, ONNX, config, dataset or environment at run {change.run_key} "
            f"(vs {before_key} before it)"
        )
    return diff, f"changed at run {change.run_key} (vs {before_key} before it): " + _diff_fields(diff)


def perf_detector(cfg: RuleConfig) -> detect.RobustChange:
    return detect.perf_detector(cfg.change_min_effect, cfg.change_z, cfg.change_alpha, cfg.change_window)


def accuracy_detector(cfg: RuleConfig) -> detect.RobustChange:
    return detect.accuracy_detector(cfg.history_acc_drop, cfg.history_acc_runs, cfg.change_z)


def _change(out: _Verdicts, obs: Observation, metric: str, detector: detect.RobustChange) -> bool:
    """The change-point verdict of one measure; False when the series is too short for the detector."""
    observed = obs.values.get(metric)
    if observed is None:
        return False
    trail = obs.trail_of(metric)
    keys = [p.run_key for p in trail] + [obs.run_key or "(this run)"]
    earlier = [float(p.values[metric]) for p in trail]  # type: ignore[arg-type]
    check = rules.change_check(metric, float(observed), earlier, keys, detector)
    if check is None:
        return False
    out.add(check, obs, trail=trail)
    return True


def _perf(out: _Verdicts, obs: Observation, cfg: RuleConfig) -> None:
    ser, v = obs.series, obs.values
    detector = perf_detector(cfg)
    done = {m for m in PERF_RULE_METRICS if _change(out, obs, m, detector)}
    ref = cfg.reference_for(ser["target"], ser["device_kind"], ser["batch_size"], ser["precision"])
    ref = None if obs.simulated else ref  # simulated numbers are never checked against a reference
    card = v.get("card_throughput")
    checks = []
    if "throughput" not in done:
        checks.append(
            rules.perf_check(
                "throughput",
                v["throughput"],
                obs.past("throughput"),
                ref,
                cfg,
                reference_observed=card if card is not None else v["throughput"],
            )
        )
    if "latency_p99" not in done:
        checks.append(rules.perf_check("latency_p99", v.get("latency_p99"), obs.past("latency_p99"), None, cfg))
    for check in checks:
        if check.observed is None and check.regressed is None:
            continue  # latency not measured by this target: nothing to report
        out.add(check, obs)


def _accuracy(out: _Verdicts, obs: Observation, cfg: RuleConfig) -> None:
    detector = accuracy_detector(cfg)
    for metric in ACCURACY_RULE_METRICS:
        observed = float(obs.values[metric])  # type: ignore[arg-type]
        reference = None if obs.simulated else cfg.reference_accuracy(metric, bool(obs.series.get("re_ranking")))
        if reference is not None:
            out.add(rules.accuracy_reference_check(metric, observed, reference, cfg.ref_acc_tolerance), obs)
        if not _change(out, obs, metric, detector):
            out.add(rules.accuracy_history_check(metric, observed, obs.past(metric), cfg.history_acc_drop), obs)
    artifact = "{target}/bs{batch_size}/{precision}".format(**obs.series)
    for check in rules.parity_checks(artifact, obs.parity_passed, obs.parity_detail):
        out.add(check, obs)


def _batch_invariance(out: _Verdicts, accuracy: Sequence[Observation], cfg: RuleConfig) -> None:
    groups: dict[tuple[str, str, bool], list[Observation]] = {}
    for obs in accuracy:
        s = obs.series
        groups.setdefault((s["target"], s["precision"], s["re_ranking"]), []).append(obs)
    for (target, precision, rerank), group in groups.items():
        for metric in ACCURACY_RULE_METRICS:
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
