"""The store's SQL reads for the charts, the listings and the rules (functions of an open Session).

``series_filter`` / ``baseline_conditions`` / ``same_identity`` select one series' rows, the ones that may
serve as a baseline, one series identity (``observations``, which loads a run's rows for the rules, builds
on them); ``series_history`` reads one metric's history for a chart, ``result_rows`` the runs of a listing;
``change_marks`` and ``baseline_marks`` the change points the alerts named and the accepted baseline restarts.
Baselines are *good* runs only: status 'success', started before the run being evaluated, the run itself
excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import ResultsError
from .models import AccuracyResult, Alert, Failure, PerfResult, SeriesBaseline, ValidationRun
from .series import UNKNOWN_IDENTITY
from .views import BaselineMark, ChangeMark, SeriesPoint

# The stored column of each rule measure.
PERF_COLUMNS = {
    "throughput": PerfResult.throughput_best,
    "latency_p99": PerfResult.latency_p99_ms,
    "card_throughput": PerfResult.card_throughput,
}
ACCURACY_COLUMNS = {"rank1": AccuracyResult.rank1, "mAP": AccuracyResult.mAP}


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


def same_identity(column: Any, identity: str | None) -> Any:
    """SQL condition: ``column`` holds the series identity ``identity`` (NULL when None)."""
    return column.is_(None) if identity is None else column == identity


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


def baseline_marks(s: Session, ser_key: str | None, metric: str | None, identity: Any = all) -> list[BaselineMark]:
    """Accepted baselines (where a series' baseline restarted), oldest start first; ``ser_key`` / ``metric``
    None: any; ``identity``: only the baselines of that series identity (None: series without one), ``all``: any."""
    q = (
        select(SeriesBaseline, ValidationRun.run_key, ValidationRun.started_at)
        .join(ValidationRun, SeriesBaseline.start_run_pk == ValidationRun.id)
        .order_by(ValidationRun.started_at, SeriesBaseline.id)
    )
    if ser_key is not None:
        q = q.where(SeriesBaseline.series_key == ser_key)
    if metric is not None:
        q = q.where(SeriesBaseline.metric == metric)
    if identity is not all:
        q = q.where(same_identity(SeriesBaseline.identity_key, identity))
    return [
        BaselineMark(
            series_key=b.series_key,
            identity_key=b.identity_key,
            metric=b.metric,
            run_key=key,
            started_at=started,
            alert_id=b.alert_id,
            accepted_by=b.accepted_by,
            accepted_at=b.accepted_at,
        )
        for b, key, started in s.execute(q)
    ]
