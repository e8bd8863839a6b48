"""Loading a run's observations for the rules (``evaluation.evaluate``), in one open Session.

For each perf / accuracy row of the run: its values and context (what an alert's environment diff compares),
the change-point trail of its series (earlier good and regressed runs, oldest first, with their contexts),
the accepted baseline restarts, and, while the series is too short for change detection, the good history
the single-point rules compare with. Baselines are *good* runs only: status 'success', started before the run
being evaluated, the run itself excluded, real numbers of a known identity (``baseline_conditions``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .detect import DEFAULT as _DETECTOR
from .detect import RobustChange
from .evaluation import Baseline, Observation, Prior, accuracy_detector, perf_detector
from .models import AccuracyResult, PerfResult, SeriesBaseline, ValidationRun
from .queries import ACCURACY_COLUMNS, PERF_COLUMNS, baseline_conditions, same_identity, series_filter
from .rule_config import RuleConfig
from .series import accuracy_series, perf_series, series_key

# Runs after a change the detector looks at (its search span), on top of the "before" window.
CHANGE_MAX_POST = _DETECTOR.max_post


def run_context(run: ValidationRun) -> dict[str, Any]:
    """The fields compared between runs for an alert's env_diff."""
    return {
        "model_sha256": run.model_sha256,
        "onnx_sha256": run.onnx_sha256,
        "dataset_fingerprint": dict(run.dataset_fingerprint or {}),
        "config_overrides": dict(run.config_overrides or {}),
        "environment": dict(run.environment or {}),
    }


def _perf_context(run: ValidationRun, tool_versions: Mapping[str, Any] | None, device_id: str | None) -> dict[str, Any]:
    """run_context plus a perf row's tool versions and device id."""
    return {**run_context(run), "tool_versions": dict(tool_versions or {}), "device_id": device_id}


class _Loader:
    """Reads one run's rows and, per row, the earlier good points of its series (one session)."""

    def __init__(self, s: Session, run: ValidationRun, cfg: RuleConfig) -> None:
        self.s, self.run, self.cfg = s, run, cfg
        self._runs: dict[int, ValidationRun] = {}

    def _run_by_pk(self, pk: int) -> ValidationRun:
        if pk not in self._runs:
            run = self.s.get(ValidationRun, pk)
            assert run is not None  # foreign key
            self._runs[pk] = run
        return self._runs[pk]

    def prior(
        self,
        series: Mapping[str, Any],
        columns: Mapping[str, Any],
        extra: Sequence[Any],
        limit: int,
        *,
        good_only: bool = True,
        since: datetime | None = None,
    ) -> list:
        """The newest ``limit`` rows of a series before this run: (run_key, run_pk, started_at, *columns,
        *extra); good runs only, or (``good_only=False``) also the regressed ones (a change's new level is
        made of them; failed and running runs never count); ``since``: runs started then or later only."""
        model, conds = series_filter(series)
        statuses = ("success",) if good_only else ("success", "regressed")
        status = ValidationRun.status.in_(statuses)
        if since is not None:
            conds = [*conds, model.run_started_at >= since]
        q = (
            select(ValidationRun.run_key, model.run_pk, model.run_started_at, *columns.values(), *extra)
            .join(ValidationRun, model.run_pk == ValidationRun.id)
            .where(
                *conds,
                model.run_started_at < self.run.started_at,
                model.run_pk != self.run.id,
                status,
                *baseline_conditions(model),
            )
            .order_by(model.run_started_at.desc())
            .limit(limit)
        )
        return list(self.s.execute(q).all())

    def baselines(self, series: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Baseline]:
        """{metric: the newest accepted baseline start of the series at or before this run}."""
        q = (
            select(SeriesBaseline.metric, ValidationRun.run_key, ValidationRun.started_at)
            .join(ValidationRun, SeriesBaseline.start_run_pk == ValidationRun.id)
            .where(
                SeriesBaseline.series_key == series_key(series),
                same_identity(SeriesBaseline.identity_key, series.get("identity_key")),
                SeriesBaseline.metric.in_(list(metrics)),
                ValidationRun.started_at <= self.run.started_at,
            )
            .order_by(ValidationRun.started_at)
        )
        return {metric: Baseline(key, started) for metric, key, started in self.s.execute(q)}

    @staticmethod
    def _priors(hist: Sequence[Any], names: Sequence[str], contexts: Sequence[Any] | None = None) -> list[Prior]:
        return [
            Prior(
                run_key=h[0],
                values=dict(zip(names, h[3 : 3 + len(names)], strict=True)),
                started_at=h[2],
                context=None if contexts is None else contexts[i],
            )
            for i, h in enumerate(hist)
        ]

    def _observe(
        self,
        ser: dict[str, Any],
        columns: Mapping[str, Any],
        extra: Sequence[Any],
        lookback: int,
        window: int,
        values: dict[str, float | None],
        context: Any,
        detector: RobustChange,
    ) -> Observation:
        """An observation of one row: good history, the change-point trail (oldest first, with contexts) and
        the accepted baselines; ``context(run, row_tuple)`` builds a run context."""
        names = list(columns)
        baselines = self.baselines(ser, names)
        # Queries from the oldest accepted start on (each metric is cut at its own in the observation).
        since = min((b.started_at for b in baselines.values()), default=None) if len(baselines) == len(names) else None
        trail = self.prior(ser, columns, extra, window, good_only=False, since=since)[::-1]
        self._prefetch_runs(t[1] for t in trail)
        obs = Observation(
            series=ser,
            values=values,
            context=context(self.run, None),
            trail=self._priors(trail, names, [context(self._run_by_pk(t[1]), t) for t in trail]),
            baselines=baselines,
            run_key=self.run.run_key,
        )
        # The good history only serves the single-point rules of a series too short for change detection.
        if all(detector.ready(len(obs.trail_of(m)) + 1) for m in names if values.get(m) is not None):
            return obs
        hist = self.prior(ser, columns, extra, lookback, since=since)
        before = context(self._run_by_pk(hist[0][1]), hist[0]) if hist else None
        return dataclasses.replace(obs, history=self._priors(hist, names), before=before)

    def _prefetch_runs(self, pks: Iterable[int]) -> None:
        """Load the runs of ``pks`` not loaded yet, in one query."""
        missing = set(pks) - set(self._runs)
        if missing:
            for run in self.s.scalars(select(ValidationRun).where(ValidationRun.id.in_(missing))):
                self._runs[run.id] = run

    def perf(self, row: PerfResult) -> Observation:
        ser = perf_series(row.target, row.device_kind, row.batch_size, row.precision, row.mode, row.identity_key)
        extra = (PerfResult.tool_versions, PerfResult.device_id)

        def context(run: ValidationRun, t: Any) -> dict[str, Any]:
            return _perf_context(run, *((row.tool_versions, row.device_id) if t is None else t[-2:]))

        values = {name: getattr(row, col.key) for name, col in PERF_COLUMNS.items()}
        window = self.cfg.change_window + CHANGE_MAX_POST
        detector = perf_detector(self.cfg)
        obs = self._observe(ser, PERF_COLUMNS, extra, self.cfg.perf_lookback, window, values, context, detector)
        return dataclasses.replace(obs, simulated=bool(row.simulated))

    def accuracy(self, row: AccuracyResult) -> Observation:
        ser = accuracy_series(row.target, row.batch_size, row.precision, row.re_ranking, row.identity_key)
        values = {name: float(getattr(row, name)) for name in ACCURACY_COLUMNS}
        window = self.cfg.history_acc_runs + CHANGE_MAX_POST
        runs = self.cfg.history_acc_runs
        detector = accuracy_detector(self.cfg)
        obs = self._observe(ser, ACCURACY_COLUMNS, (), runs, window, values, lambda run, _t: run_context(run), detector)
        return dataclasses.replace(
            obs,
            simulated=bool(row.simulated),
            parity_passed=row.parity_passed,
            parity_detail=dict(row.parity_detail or {}),
        )


def load_observations(s: Session, run: ValidationRun, cfg: RuleConfig) -> tuple[list[Observation], list[Observation]]:
    """(perf, accuracy) observations of a run, in row order, each with its series' good history."""
    loader = _Loader(s, run, cfg)
    perf = s.scalars(select(PerfResult).where(PerfResult.run_pk == run.id).order_by(PerfResult.id)).all()
    acc = s.scalars(select(AccuracyResult).where(AccuracyResult.run_pk == run.id).order_by(AccuracyResult.id)).all()
    return [loader.perf(r) for r in perf], [loader.accuracy(r) for r in acc]
