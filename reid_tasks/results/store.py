"""The results store: record runs and their perf / accuracy rows, store the rules' alerts, query history.

Usage (the DAG, the pipeline and the Airflow plugin all go through this)::

    store = ResultsStore.open()                     # URL resolved as in reid_tasks.results.urls
    store.start_run(RunInfo(run_key="reid_validation/manual__2025-01-01", trigger="manual", ...))
    store.record_perf(run_key, PerfRow(...))        # upsert: a re-run updates, never duplicates
    store.record_accuracy(run_key, AccuracyRow(...))
    store.record_failure(run_key, FailureRow(...))  # an artifact that did not finish
    store.finish_run(run_key, "success")            # until then the run is 'running', never a baseline
    verdict = store.evaluate_run(run_key, RuleConfig.from_cfg(cfg))

Every write is one transaction, retried on lock timeouts and deadlocks (see ``engine``); the writes (rows,
alerts, statuses) are in ``writes``. A run's rows for the rules are loaded by ``observations``, the other SQL
reads are in ``queries``, the rules in ``evaluation`` / ``rules`` (pure), the rendered rows in ``views``.
Baselines are *good* rows only: status 'success' (finished, no open alert, no failure row), started before the
run being evaluated, the run itself excluded, same series identity, not simulated.
See reid_tasks.results.models for the statuses.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ResultsError, ResultsNotFound
from . import queries
from .engine import make_engine
from .evaluation import evaluate
from .models import AccuracyResult, Alert, Failure, SeriesBaseline, ValidationRun
from .observations import load_observations
from .records import (
    AlertRecord,
    FailureRow,
    RunVerdict,
    SeriesVerdict,
    as_utc,
    utcnow,
)
from .rule_config import RuleConfig, metric_spec
from .series import accuracy_series, perf_series, series_key
from .views import (
    BaselineMark,
    ResultRow,
    RunRecord,
    Series,
    alert_record,
    build_series,
    failure_row,
    merge_rows,
    run_record,
)
from .writes import RowWriter, has_failures, settle

__all__ = ["ResultsStore", "RunRecord", "make_engine", "series_key"]


# The run columns an alert record carries (selected beside the Alert entity).
_RUN_REF = (ValidationRun.run_key, ValidationRun.dag_id, ValidationRun.run_id)


class ResultsStore(RowWriter):
    """Read and write the results database. Create with :meth:`open`; close with :meth:`close` (or ``with``).

    Writes (runs, rows, failures, status) come from ``writes.RowWriter``; here: reads, rules and alerts.
    """

    def failures(self, run_key: str) -> list[FailureRow]:
        """The run's failure rows, in the order they were first recorded."""

        def read(s: Session) -> list[FailureRow]:
            run = self._run(s, run_key)
            rows = s.scalars(select(Failure).where(Failure.run_pk == run.id).order_by(Failure.id))
            return [failure_row(f) for f in rows]

        return self._read(read)

    def verdicts(self, run_key: str) -> list[SeriesVerdict]:
        """The per-series verdicts of the run's last ``evaluate_run`` (each with its baseline runs); empty when
        it was not evaluated."""

        def read(s: Session) -> list[SeriesVerdict]:
            return [SeriesVerdict.from_dict(v) for v in self._run(s, run_key).verdicts or []]

        return self._read(read)

    # ------------------------------------------------------------------ runs
    def get_run(self, run_key: str) -> RunRecord:
        return self._read(lambda s: run_record(self._run(s, run_key)))

    def runs(self, *, since: datetime | None = None, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first."""

        def read(s: Session) -> list[RunRecord]:
            q = select(ValidationRun).order_by(ValidationRun.started_at.desc(), ValidationRun.id.desc())
            if since is not None:
                q = q.where(ValidationRun.started_at >= as_utc(since))
            if status is not None:
                q = q.where(ValidationRun.status == status)
            return [run_record(r) for r in s.scalars(q.limit(limit))]

        return self._read(read)

    # ------------------------------------------------------------------ rules
    def evaluate_run(self, run_key: str, rule_config: RuleConfig | None = None) -> RunVerdict:
        """Apply every rule to the run's rows, store the alerts (replacing this run's earlier ones; an
        acknowledgement is kept for an alert raised again) and return alerts and per-series verdicts.

        A finished run's status becomes 'regressed' with open alerts, else 'failed' with failure rows, else
        'success'. The verdict also carries the run's kind, failure rows and how many rows are simulated.
        """
        cfg = rule_config if rule_config is not None else RuleConfig.from_cfg()

        def write(s: Session) -> RunVerdict:
            run = self._run(s, run_key)
            perf, acc = load_observations(s, run, cfg)
            verdicts, pending = evaluate(perf, acc, cfg)
            self._replace_alerts(s, run, pending)
            stored = s.scalars(select(Alert).where(Alert.run_pk == run.id).order_by(Alert.id)).all()
            run.verdicts = [v.to_dict() for v in verdicts]
            if run.status in ("success", "regressed") or (run.status == "failed" and has_failures(s, run)):
                settle(s, run)
            failures = s.scalars(select(Failure).where(Failure.run_pk == run.id).order_by(Failure.id))
            return RunVerdict(
                run_key=run_key,
                status=run.status,
                alerts=[alert_record(a, run.run_key, run.dag_id, run.run_id) for a in stored],
                verdicts=verdicts,
                kind=run.kind,
                simulated_rows=sum(1 for o in (*perf, *acc) if o.simulated),
                failures=[failure_row(f) for f in failures],
            )

        return self._write(write)

    # ------------------------------------------------------------------ alerts
    def alerts(
        self,
        open_only: bool = False,
        since: datetime | None = None,
        run_key: str | None = None,
        limit: int | None = None,
        *,
        metric: str | None = None,
        series_key: str | None = None,
    ) -> list[AlertRecord]:
        """Alerts, newest first, each with its run's key and Airflow dag_id / run_id (one query);
        ``metric`` / ``series_key``: only the alerts on that metric / series."""

        def read(s: Session) -> list[AlertRecord]:
            q = (
                select(Alert, *_RUN_REF)
                .join(ValidationRun, Alert.run_pk == ValidationRun.id)
                .order_by(Alert.created_at.desc(), Alert.id.desc())
            )
            if open_only:
                q = q.where(Alert.acknowledged_at.is_(None))
            if since is not None:
                q = q.where(Alert.created_at >= as_utc(since))
            if run_key is not None:
                self._run(s, run_key)
                q = q.where(ValidationRun.run_key == run_key)
            if metric is not None:
                q = q.where(Alert.metric == metric)
            if series_key is not None:
                q = q.where(Alert.series_key == series_key)
            if limit is not None:
                q = q.limit(limit)
            return [alert_record(a, *ref) for a, *ref in s.execute(q)]

        return self._read(read)

    def alert(self, alert_id: int) -> AlertRecord:
        """One alert by id, with its run's key and Airflow dag_id / run_id; ResultsNotFound when absent."""

        def read(s: Session) -> AlertRecord:
            found = s.execute(
                select(Alert, *_RUN_REF)
                .join(ValidationRun, Alert.run_pk == ValidationRun.id)
                .where(Alert.id == int(alert_id))
            ).first()
            if found is None:
                raise ResultsNotFound(f"no alert with id {alert_id} in the results database")
            a, *ref = found
            return alert_record(a, *ref)

        return self._read(read)

    def ack(self, alert_id: int, by: str | None = None) -> AlertRecord:
        """Acknowledge an alert (idempotent). When the last open alert of a 'regressed' run is acknowledged,
        the run becomes 'success' and serves as a baseline again.

        A change-point alert accepts the new level: every open change-point alert naming the same change run
        of the same series (any metric: throughput and latency move together) is acknowledged with it, and
        the series' baseline of each of their metrics restarts at the change run (later verdicts use only
        runs from it on; ``series_baselines`` rows record it).
        """

        def write(s: Session) -> AlertRecord:
            alert = s.get(Alert, int(alert_id))
            if alert is None:
                raise ResultsNotFound(f"no alert with id {alert_id} in the results database")
            now = utcnow()
            same = [alert]
            if alert.change_run_pk is not None:
                same += s.scalars(
                    select(Alert).where(
                        Alert.series_key == alert.series_key,
                        Alert.change_run_pk == alert.change_run_pk,
                        Alert.acknowledged_at.is_(None),
                        Alert.id != alert.id,
                    )
                ).all()
                identity = (alert.series or {}).get("identity_key")
                same = [a for a in same if (a.series or {}).get("identity_key") == identity]
                accepted = set(
                    s.scalars(
                        select(SeriesBaseline.metric).where(
                            SeriesBaseline.series_key == alert.series_key,
                            queries.same_identity(SeriesBaseline.identity_key, identity),
                            SeriesBaseline.start_run_pk == alert.change_run_pk,
                        )
                    )
                )
                for a in same:
                    if a.metric not in accepted:
                        accepted.add(a.metric)
                        s.add(
                            SeriesBaseline(
                                series_key=a.series_key,
                                identity_key=identity,
                                metric=a.metric,
                                start_run_pk=a.change_run_pk,
                                alert_id=a.id,
                                accepted_by=by,
                                accepted_at=now,
                            )
                        )
            for a in same:
                if a.acknowledged_at is None:
                    a.acknowledged_at, a.acknowledged_by = now, by
            s.flush()
            for run_pk in {a.run_pk for a in same}:
                other = s.get(ValidationRun, run_pk)
                assert other is not None  # foreign key
                if other.status == "regressed":
                    settle(s, other)
            run = s.get(ValidationRun, alert.run_pk)
            assert run is not None  # foreign key
            if run.status == "regressed":
                settle(s, run)
            return alert_record(alert, run.run_key, run.dag_id, run.run_id)

        return self._write(write)

    def baselines(self, series_key: str | None = None, metric: str | None = None) -> list[BaselineMark]:
        """Accepted baselines (where a series' baseline restarted), oldest start first."""
        return self._read(lambda s: queries.baseline_marks(s, series_key, metric))

    # ------------------------------------------------------------------ queries
    def results(
        self,
        *,
        target: str | None = None,
        batch_size: int | None = None,
        precision: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        device_kind: str | None = None,
        run_key: str | None = None,
        limit: int = 100,
    ) -> list[ResultRow]:
        """One row per run x (target, device kind, batch, precision), perf and accuracy side by side,
        newest run first, at most ``limit`` rows.

        Every filter is applied in SQL (bound parameters): ``since`` <= run start <= ``until`` (both
        inclusive); ``device_kind`` keeps the rows measured on that device kind, i.e. runs with accuracy
        but no perf row of that kind are left out. Four queries whatever the number of rows.
        """
        if limit < 1:
            raise ResultsError(f"results: limit must be >= 1, got {limit!r}")

        def read(s: Session) -> list[ResultRow]:
            found = queries.result_rows(
                s,
                target=target,
                batch_size=batch_size,
                precision=precision,
                since=as_utc(since) if since is not None else None,
                until=as_utc(until) if until is not None else None,
                device_kind=device_kind,
                run_key=run_key,
                limit=limit,
            )
            rows = merge_rows(*found)
            if device_kind is not None:  # accuracy rows without a perf row of that kind
                rows = [r for r in rows if r.device_kind == device_kind]
            return rows[:limit]

        return self._read(read)

    def series(
        self,
        metric: str,
        target: str,
        batch_size: int,
        *,
        precision: str = "fp32",
        device_kind: str | None = None,
        mode: str = "real",
        re_ranking: bool = False,
        limit: int = 100,
        rule_config: RuleConfig | None = None,
        identity: str | None = None,
    ) -> Series:
        """The last ``limit`` finished points of one metric of one series (oldest first) and the baseline and
        alert band the next run would be judged against. ``device_kind`` None: the only one recorded;
        ``identity`` None: the identity of the series' newest finished row (``Series.series["identity_key"]``)."""
        spec = metric_spec(metric)
        cfg = rule_config if rule_config is not None else RuleConfig.from_cfg()

        def read(s: Session) -> Series:
            ref = None
            if spec.kind == "perf":
                kind = device_kind or queries.only_device_kind(s, target, batch_size, precision, mode)
                ser = perf_series(target, kind or "", batch_size, precision, mode)
                column = queries.PERF_COLUMNS[metric]
                lookback = cfg.perf_lookback
                if metric == "throughput":
                    ref = cfg.reference_for(target, kind or "", batch_size, precision)
            else:
                ser = accuracy_series(target, batch_size, precision, re_ranking)
                column = getattr(AccuracyResult, metric)
                lookback = cfg.history_acc_runs
            ser["identity_key"] = identity or queries.latest_identity(s, ser)
            key, identity_key = series_key(ser), ser["identity_key"]
            baselines = queries.baseline_marks(s, key, metric, identity_key)
            since = baselines[-1].started_at if baselines else None
            points, good = queries.series_history(s, ser, column, limit, lookback, since)
            series = build_series(metric, ser, points, good, ref, cfg, since)
            marks = queries.change_marks(s, key, metric, identity_key)
            return dataclasses.replace(series, change_points=marks, baselines=baselines)

        return self._read(read)
