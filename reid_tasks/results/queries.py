"""The store's SQL reads that feed the rules and the charts (functions of an open Session).

``series_filter`` selects one series' rows; ``observations`` loads a run's rows with the earlier good
points of each of their series (what ``evaluation.evaluate`` judges); ``series_points`` / ``series_good``
read one metric's history for a chart. Baselines are *good* runs only: status 'success', started before
the run being evaluated, the run itself excluded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import ResultsError
from .detect import DEFAULT as _DETECTOR
from .detect import RobustChange
from .evaluation import Baseline, Observation, Prior, accuracy_detector, perf_detector
from .models import AccuracyResult, Alert, Failure, PerfResult, SeriesBaseline, ValidationRun
from .rules import RuleConfig
from .series import UNKNOWN_IDENTITY, accuracy_series, perf_series, series_key
from .views import ChangeMark, SeriesPoint

# The stored column of each rule measure.
PERF_COLUMNS = {
    "throughput": PerfResult.throughput_best,
    "latency_p99": PerfResult.latency_p99_ms,
    "card_throughput": PerfResult.card_throughput,
}
ACCURACY_COLUMNS = {"rank1": AccuracyResult.rank1, "mAP": AccuracyResult.mAP}
# Runs after a change the detector looks at (its search span), on top of the "before" window.
CHANGE_MAX_POST = _DETECTOR.max_post


def series_filter(series: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """The table of a series (from ``perf_series`` / ``accuracy_series``) and the conditions selecting its rows
    (of its identity, when the series names one)."""
    if series["kind"] == "perf":
        model, conds = (
            PerfResult,
            [
                PerfResult.target == series["target"],
                PerfResult.device_kind == series["device_kind"],
                PerfResult.batch_size == series["batch_size"],
                PerfResult.precision == series["precision"],
                PerfResult.mode == series["mode"],
            ],
        )
    else:
        model, conds = (
            AccuracyResult,
            [
                AccuracyResult.target == series["target"],
                AccuracyResult.batch_size == series["batch_size"],
                AccuracyResult.precision == series["precision"],
                AccuracyResult.re_ranking.is_(series["re_ranking"]),
            ],
        )
    if series.get("identity_key") is not None:
        conds.append(model.identity_key == series["identity_key"])
    return model, conds


def baseline_conditions(model: Any) -> list[Any]:
    """What a row must be to serve as a baseline besides its run being good: real (not simulated) numbers
    and a known identity."""
    return [model.simulated.is_(False), model.identity_key != UNKNOWN_IDENTITY]


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


def observations(s: Session, run: ValidationRun, cfg: RuleConfig) -> tuple[list[Observation], list[Observation]]:
    """(perf, accuracy) observations of a run, in row order, each with its series' good history."""
    loader = _Loader(s, run, cfg)
    perf = s.scalars(select(PerfResult).where(PerfResult.run_pk == run.id).order_by(PerfResult.id)).all()
    acc = s.scalars(select(AccuracyResult).where(AccuracyResult.run_pk == run.id).order_by(AccuracyResult.id)).all()
    return [loader.perf(r) for r in perf], [loader.accuracy(r) for r in acc]


def only_device_kind(s: Session, target: str, batch_size: int, precision: str, mode: str) -> str | None:
    """The one device kind a perf series was measured on (None: none yet); ResultsError when several."""
    kinds = s.scalars(
        select(PerfResult.device_kind)
        .where(
            PerfResult.target == target,
            PerfResult.batch_size == batch_size,
            PerfResult.precision == precision,
            PerfResult.mode == mode,
        )
        .distinct()
    ).all()
    if len(kinds) > 1:
        raise ResultsError(
            f"target {target!r} batch {batch_size} {precision} has results on several device kinds "
            f"{sorted(kinds)}: choose one"
        )
    return kinds[0] if kinds else None


def latest_identity(s: Session, series: Mapping[str, Any]) -> str | None:
    """The identity of a series' newest finished row (what a chart shows when it names none)."""
    model, conds = series_filter(series)
    return s.scalar(
        select(model.identity_key)
        .join(ValidationRun, model.run_pk == ValidationRun.id)
        .where(*conds, ValidationRun.status != "running")
        .order_by(model.run_started_at.desc())
        .limit(1)
    )


def series_history(
    s: Session, ser: Mapping[str, Any], column: Any, limit: int, lookback: int, since: datetime | None = None
) -> tuple[list[SeriesPoint], list[float]]:
    """A chart's data: the last ``limit`` finished points of a series (oldest first) and the values of its
    last ``lookback`` good runs (newest first; started at ``since`` or later), the baseline the next run is
    judged against."""
    model, conds = series_filter(ser)
    base_q = (
        select(
            ValidationRun.run_key,
            model.run_started_at,
            column,
            ValidationRun.status,
            ValidationRun.dag_id,
            ValidationRun.run_id,
            model.simulated,
        )
        .join(ValidationRun, model.run_pk == ValidationRun.id)
        .where(*conds, column.is_not(None))
        .order_by(model.run_started_at.desc())
    )
    shown = s.execute(base_q.where(ValidationRun.status != "running").limit(limit)).all()
    good = [
        v
        for (v,) in s.execute(
            select(column)
            .join(ValidationRun, model.run_pk == ValidationRun.id)
            .where(
                *conds,
                column.is_not(None),
                ValidationRun.status == "success",
                *baseline_conditions(model),
                *([model.run_started_at >= since] if since is not None else []),
            )
            .order_by(model.run_started_at.desc())
            .limit(lookback)
        )
    ]
    points = [
        SeriesPoint(
            run_key=k,
            started_at=t,
            value=float(v),
            status=st,
            good=st == "success" and not sim,
            dag_id=d,
            run_id=r,
            simulated=bool(sim),
        )
        for k, t, v, st, d, r, sim in reversed(shown)
    ]
    return points, good


def result_rows(
    s: Session,
    *,
    target: str | None,
    batch_size: int | None,
    precision: str | None,
    since: datetime | None,
    until: datetime | None,
    device_kind: str | None,
    run_key: str | None,
    limit: int,
) -> tuple[list[ValidationRun], Sequence[PerfResult], Sequence[AccuracyResult], dict[int, int], Sequence[Failure]]:
    """The newest ``limit`` runs with rows matching the filters, those rows, each run's open alert count and
    its failure rows.

    Every filter in SQL: ``since`` <= run start <= ``until``; ``device_kind`` keeps runs with a perf row of
    that kind (accuracy alone does not count). Five queries whatever the number of rows.
    """

    def filt(model: Any) -> list[Any]:
        conds = []
        if target is not None:
            conds.append(model.target == target)
        if batch_size is not None:
            conds.append(model.batch_size == int(batch_size))
        if precision is not None:
            conds.append(model.precision == precision)
        if device_kind is not None and model is PerfResult:
            conds.append(PerfResult.device_kind == device_kind)
        return conds

    runs_q = select(ValidationRun).order_by(ValidationRun.started_at.desc(), ValidationRun.id.desc())
    if since is not None:
        runs_q = runs_q.where(ValidationRun.started_at >= since)
    if until is not None:
        runs_q = runs_q.where(ValidationRun.started_at <= until)
    if run_key is not None:
        runs_q = runs_q.where(ValidationRun.run_key == run_key)
    has_rows = select(PerfResult.id).where(PerfResult.run_pk == ValidationRun.id, *filt(PerfResult)).exists()
    if device_kind is None:
        has_acc = (
            select(AccuracyResult.id).where(AccuracyResult.run_pk == ValidationRun.id, *filt(AccuracyResult))
        ).exists()
        has_failed = (select(Failure.id).where(Failure.run_pk == ValidationRun.id, *filt(Failure))).exists()
        has_rows = has_rows | has_acc | has_failed
    runs = list(s.scalars(runs_q.where(has_rows).limit(limit)))
    if not runs:
        return [], [], [], {}, []
    ids = [r.id for r in runs]
    perf = s.scalars(select(PerfResult).where(PerfResult.run_pk.in_(ids), *filt(PerfResult))).all()
    acc = s.scalars(select(AccuracyResult).where(AccuracyResult.run_pk.in_(ids), *filt(AccuracyResult))).all()
    open_alerts = dict(
        s.execute(
            select(Alert.run_pk, func.count())
            .where(Alert.run_pk.in_(ids), Alert.acknowledged_at.is_(None))
            .group_by(Alert.run_pk)
        ).all()
    )
    failures = s.scalars(select(Failure).where(Failure.run_pk.in_(ids), *filt(Failure))).all()
    return runs, perf, acc, open_alerts, failures  # type: ignore[return-value]


def same_identity(column: Any, identity: str | None) -> Any:
    """SQL condition: ``column`` holds the series identity ``identity`` (NULL when None)."""
    return column.is_(None) if identity is None else column == identity


def change_marks(s: Session, ser_key: str, metric: str, identity: str | None = None) -> list[ChangeMark]:
    """The change points the alerts of one series (of identity ``identity`` when given) and metric named,
    oldest first (one per change run)."""
    change_run = ValidationRun.__table__.alias("change_run")
    rows = s.execute(
        select(Alert, change_run.c.run_key, change_run.c.started_at)
        .join(change_run, Alert.change_run_pk == change_run.c.id)
        .where(Alert.series_key == ser_key, Alert.metric == metric)
        .order_by(change_run.c.started_at, Alert.created_at, Alert.id)
    ).all()
    marks: dict[str, ChangeMark] = {}
    for a, key, started in rows:
        if identity is not None and (a.series or {}).get("identity_key") != identity:
            continue
        prev = marks.get(key)
        ids = [*(prev.alert_ids if prev else []), a.id]
        accepted = (prev.accepted if prev else False) or a.acknowledged_at is not None
        before, after = a.level_before, a.level_after
        rel = (after - before) / abs(before) if before and after is not None else None
        marks[key] = ChangeMark(key, started, before, after, rel, a.p_value, ids, accepted)  # newest alert's levels
    return list(marks.values())
