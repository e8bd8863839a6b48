"""The results store: record runs and their perf / accuracy rows, evaluate the rules, query history.

Usage (the DAG, the pipeline and the Airflow plugin all go through this)::

    store = ResultsStore.open()                     # URL resolved as in reid_tasks.results.urls
    store.start_run(RunInfo(run_key="reid_validation/manual__2025-01-01", trigger="manual", ...))
    store.record_perf(run_key, PerfRow(...))        # upsert: a re-run updates, never duplicates
    store.record_accuracy(run_key, AccuracyRow(...))
    store.finish_run(run_key, "success")            # until then the run is 'running', never a baseline
    verdict = store.evaluate_run(run_key, RuleConfig.from_cfg(cfg))

Every write is one transaction. SQLite runs in WAL mode with a busy timeout and takes the write lock at
the start of a write transaction (BEGIN IMMEDIATE), so concurrent writers queue instead of failing;
"database is locked" after the timeout, and PostgreSQL deadlock / serialization failures, are retried.

Baselines are *good* runs only: status 'success' (finished, no open alert), started before the run
being evaluated, the run itself excluded. See reid_tasks.results.models for the statuses.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from ..errors import ResultsError, ResultsNotFound
from . import migrate as _migrate
from . import rules
from .models import AccuracyResult, Alert, PerfResult, ValidationRun
from .records import (
    FINAL_STATUSES,
    AccuracyRow,
    AlertRecord,
    PerfRow,
    ResultRow,
    RunInfo,
    RunVerdict,
    Series,
    SeriesPoint,
    SeriesVerdict,
    _Record,
    as_utc,
    utcnow,
)
from .rules import RuleConfig
from .urls import redact, resolve_url, sqlite_path

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
_RETRIES = 8
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# The columns an alert raised again by a re-evaluation updates (its acknowledgement is kept).
_ALERT_UPDATE = ("series", "observed", "baseline", "threshold", "z", "message", "env_diff")


@dataclasses.dataclass(frozen=True)
class RunRecord(_Record):
    """A stored run: its RunInfo fields plus status and finish time."""

    run_key: str
    trigger: str
    dag_id: str | None
    run_id: str | None
    airflow_url: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    model_sha256: str | None
    onnx_sha256: str | None
    dataset_fingerprint: dict[str, Any]
    config_overrides: dict[str, Any]
    environment: dict[str, Any]
    notes: str


def perf_series(target: str, device_kind: str, batch_size: int, precision: str, mode: str) -> dict[str, Any]:
    return {
        "kind": "perf",
        "target": target,
        "device_kind": device_kind,
        "batch_size": int(batch_size),
        "precision": precision,
        "mode": mode,
    }


def accuracy_series(target: str, batch_size: int, precision: str, re_ranking: bool) -> dict[str, Any]:
    return {
        "kind": "accuracy",
        "target": target,
        "batch_size": int(batch_size),
        "precision": precision,
        "re_ranking": bool(re_ranking),
    }


def series_key(series: Mapping[str, Any]) -> str:
    """Readable, unique text form: ``onnxruntime/cpu/bs16/fp32/real`` or ``onnxruntime/bs16/fp32[/rerank]``."""
    if series["kind"] == "perf":
        return (
            f"{series['target']}/{series['device_kind']}/bs{series['batch_size']}/"
            f"{series['precision']}/{series['mode']}"
        )
    return f"{series['target']}/bs{series['batch_size']}/{series['precision']}" + (
        "/rerank" if series["re_ranking"] else ""
    )


def _series_filter(series: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """The table of a series (from ``perf_series`` / ``accuracy_series``) and the conditions selecting its rows."""
    if series["kind"] == "perf":
        return PerfResult, [
            PerfResult.target == series["target"],
            PerfResult.device_kind == series["device_kind"],
            PerfResult.batch_size == series["batch_size"],
            PerfResult.precision == series["precision"],
            PerfResult.mode == series["mode"],
        ]
    return AccuracyResult, [
        AccuracyResult.target == series["target"],
        AccuracyResult.batch_size == series["batch_size"],
        AccuracyResult.precision == series["precision"],
        AccuracyResult.re_ranking.is_(series["re_ranking"]),
    ]


def _is_retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    else:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        if path is not None:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: no deadlock-prone read->write upgrade inside a transaction.
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'IMMEDIATE')}")

    return engine


def make_engine(url: str) -> Engine:
    """An Engine for a results database URL (already resolved); SQLite gets WAL, busy timeout, BEGIN IMMEDIATE."""
    backend = url.split(":", 1)[0].split("+", 1)[0]
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    raise ResultsError(f"unsupported results database {redact(url)!r}: use postgresql:// or sqlite:///")


class ResultsStore:
    """Read and write the results database. Create with :meth:`open`; close with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_bind = engine.execution_options(sqlite_begin="DEFERRED")
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - make_engine refuses these
            raise ResultsError(f"unsupported database dialect {engine.dialect.name!r}")
        self._insert = insert

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, url: str | None = None, *, cfg: Any = None, migrate: bool | None = None) -> ResultsStore:
        """Open the results database at ``url`` (resolved: explicit > config > env > Airflow > SQLite).

        ``migrate``: None = upgrade SQLite automatically, require other databases to be at the head revision
        (ResultsError telling to run ``reid-validate db upgrade`` otherwise); True = upgrade any database;
        False = never upgrade.
        """
        resolved = resolve_url(url, cfg)
        engine = make_engine(resolved)
        try:
            auto = engine.dialect.name == "sqlite" if migrate is None else migrate
            _migrate.ensure_schema(engine, auto=auto)
        except ResultsError:
            engine.dispose()
            raise
        except DBAPIError as exc:
            engine.dispose()
            raise ResultsError(f"cannot open results database {redact(resolved)}: {exc.orig}") from exc
        return cls(engine)

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({self.url!r})"

    # ------------------------------------------------------------------ transactions
    def _write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one write transaction, retrying lock timeouts / deadlocks."""
        for attempt in range(_RETRIES):
            try:
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    return fn(session)
            except DBAPIError as exc:
                if not _is_retryable(exc) or attempt == _RETRIES - 1:
                    raise ResultsError(f"results database write failed ({self.url}): {exc.orig}") from exc
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning("results database busy (%s); retry %d in %.2fs", exc.orig, attempt + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, fn: Callable[[Session], T]) -> T:
        try:
            with Session(self._read_bind, expire_on_commit=False) as session, session.begin():
                return fn(session)
        except DBAPIError as exc:
            raise ResultsError(f"results database read failed ({self.url}): {exc.orig}") from exc

    @staticmethod
    def _run(session: Session, run_key: str) -> ValidationRun:
        run = session.scalar(select(ValidationRun).where(ValidationRun.run_key == run_key))
        if run is None:
            raise ResultsNotFound(f"unknown run {run_key!r} in the results database (start_run records it)")
        return run

    # ------------------------------------------------------------------ writing
    def start_run(self, info: RunInfo, *, reset_status: bool = True) -> int:
        """Insert or update (same run_key) a run; its status becomes 'running'. Returns the run's id.

        ``reset_status=False`` updates an existing run's metadata (hashes, fingerprint, environment) but leaves
        its status and finish time alone, so re-running a recording step of a finished run does not reopen it.
        """
        values = {
            "run_key": info.run_key,
            "trigger": info.trigger,
            "dag_id": info.dag_id,
            "run_id": info.run_id,
            "airflow_url": info.airflow_url,
            "started_at": info.started_at,
            "finished_at": None,
            "status": "running",
            "model_sha256": info.model_sha256,
            "onnx_sha256": info.onnx_sha256,
            "dataset_fingerprint": dict(info.dataset_fingerprint),
            "config_overrides": dict(info.config_overrides),
            "environment": dict(info.environment),
            "notes": info.notes,
            "updated_at": utcnow(),
        }

        def write(s: Session) -> int:
            stmt = self._insert(ValidationRun).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[ValidationRun.run_key],
                set_={
                    k: stmt.excluded[k]
                    for k in values
                    if k != "run_key" and (reset_status or k not in ("status", "finished_at"))
                },
            ).returning(ValidationRun.id)
            run_pk = s.execute(stmt).scalar_one()
            for model in (PerfResult, AccuracyResult):  # keep the denormalised series index in step
                s.execute(
                    update(model)
                    .where(model.run_pk == run_pk, model.run_started_at != info.started_at)
                    .values(run_started_at=info.started_at)
                )
            return run_pk

        return self._write(write)

    def record_perf(self, run_key: str, row: PerfRow) -> int:
        """Insert or update the perf row of (run, target, device kind, batch, precision, mode); returns its id."""
        values = {
            "target": row.target,
            "device_kind": row.device_kind,
            "device_id": row.device_id,
            "batch_size": int(row.batch_size),
            "precision": row.precision,
            "mode": row.mode,
            "throughput_best": float(row.throughput_best),
            "throughput_median": float(row.throughput_median),
            "latency_mean_ms": row.latency_mean_ms,
            "latency_p50_ms": row.latency_p50_ms,
            "latency_p90_ms": row.latency_p90_ms,
            "latency_p99_ms": row.latency_p99_ms,
            "e2e_throughput": row.e2e_throughput,
            "card_throughput": row.card_throughput,
            "samples": int(row.samples),
            "repetitions": int(row.repetitions),
            "warmup": int(row.warmup),
            "tool_versions": dict(row.tool_versions),
            "artifact_sha256": row.artifact_sha256,
            "recorded_at": utcnow(),
        }
        key = ("run_id", "target", "device_kind", "batch_size", "precision", "mode")
        return self._upsert_row(run_key, PerfResult, values, key)

    def record_accuracy(self, run_key: str, row: AccuracyRow) -> int:
        """Insert or update the accuracy row of (run, target, batch, precision, re-ranking); returns its id."""
        values = {
            "target": row.target,
            "batch_size": int(row.batch_size),
            "precision": row.precision,
            "re_ranking": bool(row.re_ranking),
            "feat_norm": bool(row.feat_norm),
            "rank1": float(row.rank1),
            "rank5": float(row.rank5),
            "rank10": float(row.rank10),
            "map": float(row.mAP),
            "minp": float(row.mINP),
            "valid_queries": int(row.valid_queries),
            "gallery_size": int(row.gallery_size),
            "parity_min_cosine": row.parity_min_cosine,
            "parity_mean_cosine": row.parity_mean_cosine,
            "parity_max_abs_diff": row.parity_max_abs_diff,
            "flagged": bool(row.flagged),
            "flag_reason": row.flag_reason,
            "recorded_at": utcnow(),
        }
        key = ("run_id", "target", "batch_size", "precision", "re_ranking")
        return self._upsert_row(run_key, AccuracyResult, values, key)

    def _upsert_row(self, run_key: str, model: type, values: dict[str, Any], key: tuple[str, ...]) -> int:
        table = model.__table__  # type: ignore[attr-defined]

        def write(s: Session) -> int:
            run = self._run(s, run_key)
            row = {**values, "run_id": run.id, "run_started_at": run.started_at}
            stmt = self._insert(table).values(**row)
            stmt = stmt.on_conflict_do_update(
                index_elements=list(key), set_={k: stmt.excluded[k] for k in row if k not in key}
            ).returning(table.c.id)
            return s.execute(stmt).scalar_one()

        return self._write(write)

    def finish_run(self, run_key: str, status: str = "success", finished_at: datetime | None = None) -> str:
        """Mark a run finished: 'success' or 'failed'. A successful run with open alerts is stored as
        'regressed'. Returns the stored status."""
        if status not in FINAL_STATUSES:
            raise ResultsError(f"finish_run: status must be one of {list(FINAL_STATUSES)}, got {status!r}")
        when = as_utc(finished_at) if finished_at is not None else utcnow()

        def write(s: Session) -> str:
            run = self._run(s, run_key)
            run.finished_at = when
            run.status = status
            if status == "success" and self._open_alert_count(s, run.id):
                run.status = "regressed"
            return run.status

        return self._write(write)

    @staticmethod
    def _open_alert_count(s: Session, run_pk: int) -> int:
        return s.scalar(
            select(func.count()).select_from(Alert).where(Alert.run_pk == run_pk, Alert.acknowledged_at.is_(None))
        )

    # ------------------------------------------------------------------ runs
    def get_run(self, run_key: str) -> RunRecord:
        return self._read(lambda s: _run_record(self._run(s, run_key)))

    def runs(self, *, since: datetime | None = None, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first."""

        def read(s: Session) -> list[RunRecord]:
            q = select(ValidationRun).order_by(ValidationRun.started_at.desc(), ValidationRun.id.desc())
            if since is not None:
                q = q.where(ValidationRun.started_at >= as_utc(since))
            if status is not None:
                q = q.where(ValidationRun.status == status)
            return [_run_record(r) for r in s.scalars(q.limit(limit))]

        return self._read(read)

    # ------------------------------------------------------------------ rules
    def evaluate_run(self, run_key: str, rule_config: RuleConfig | None = None) -> RunVerdict:
        """Apply every rule to the run's rows, store the alerts (replacing this run's earlier ones; an
        acknowledgement is kept for an alert raised again) and return alerts and per-series verdicts.

        A finished run's status becomes 'regressed' with open alerts, 'success' without.
        """
        cfg = rule_config if rule_config is not None else RuleConfig.from_cfg()

        def write(s: Session) -> tuple[str, list[AlertRecord], list[SeriesVerdict]]:
            run = self._run(s, run_key)
            verdicts, pending = _Evaluation(s, cfg).run(run)
            keys = {(a["rule"], a["metric"], a["series_key"]) for a in pending}
            existing = s.execute(
                select(Alert.id, Alert.rule, Alert.metric, Alert.series_key).where(Alert.run_pk == run.id)
            ).all()
            stale = [row.id for row in existing if (row.rule, row.metric, row.series_key) not in keys]
            if stale:
                s.execute(delete(Alert).where(Alert.id.in_(stale)))
            if pending:
                now = utcnow()
                stmt = self._insert(Alert.__table__)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["run_id", "rule", "metric", "series_key"],
                    set_={k: stmt.excluded[k] for k in _ALERT_UPDATE},
                )
                s.execute(stmt, [{**a, "run_id": run.id, "created_at": now} for a in pending])
            stored = s.scalars(select(Alert).where(Alert.run_pk == run.id).order_by(Alert.id)).all()
            if run.status in ("success", "regressed"):
                run.status = "regressed" if any(a.acknowledged_at is None for a in stored) else "success"
            return run.status, [_alert_record(a, run) for a in stored], verdicts

        status, alerts, verdicts = self._write(write)
        return RunVerdict(run_key=run_key, status=status, alerts=alerts, verdicts=verdicts)

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
            return [_alert_record(a, ref) for a, *ref in s.execute(q)]

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
            return _alert_record(a, ref)

        return self._read(read)

    def ack(self, alert_id: int, by: str | None = None) -> AlertRecord:
        """Acknowledge an alert (idempotent). When the last open alert of a 'regressed' run is acknowledged,
        the run becomes 'success' and serves as a baseline again (the new level is accepted)."""

        def write(s: Session) -> AlertRecord:
            alert = s.get(Alert, int(alert_id))
            if alert is None:
                raise ResultsNotFound(f"no alert with id {alert_id} in the results database")
            if alert.acknowledged_at is None:
                alert.acknowledged_at = utcnow()
                alert.acknowledged_by = by
                s.flush()
            run = s.get(ValidationRun, alert.run_pk)
            assert run is not None  # foreign key
            if run.status == "regressed" and not self._open_alert_count(s, run.id):
                run.status = "success"
            return _alert_record(alert, run)

        return self._write(write)

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

        def read(s: Session) -> list[ResultRow]:
            runs_q = select(ValidationRun).order_by(ValidationRun.started_at.desc(), ValidationRun.id.desc())
            if since is not None:
                runs_q = runs_q.where(ValidationRun.started_at >= as_utc(since))
            if until is not None:
                runs_q = runs_q.where(ValidationRun.started_at <= as_utc(until))
            if run_key is not None:
                runs_q = runs_q.where(ValidationRun.run_key == run_key)
            has_rows = select(PerfResult.id).where(PerfResult.run_pk == ValidationRun.id, *filt(PerfResult)).exists()
            if device_kind is None:
                has_acc = (
                    select(AccuracyResult.id).where(AccuracyResult.run_pk == ValidationRun.id, *filt(AccuracyResult))
                ).exists()
                has_rows = has_rows | has_acc
            runs = list(s.scalars(runs_q.where(has_rows).limit(limit)))
            if not runs:
                return []
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
            rows = _merge_rows(runs, perf, acc, open_alerts)
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
    ) -> Series:
        """The last ``limit`` finished points of one metric of one series (oldest first) and the baseline and
        alert band the next run would be judged against. ``device_kind`` None: the only one recorded."""
        spec = rules.metric_spec(metric)
        cfg = rule_config if rule_config is not None else RuleConfig.from_cfg()

        def read(s: Session) -> Series:
            if spec.kind == "perf":
                kind = device_kind or self._only_device_kind(s, target, batch_size, precision, mode)
                ser = perf_series(target, kind or "", batch_size, precision, mode)
                column = PerfResult.throughput_best if metric == "throughput" else PerfResult.latency_p99_ms
                lookback = cfg.perf_lookback
            else:
                ser = accuracy_series(target, batch_size, precision, re_ranking)
                column = getattr(AccuracyResult, metric)
                lookback = cfg.history_acc_runs
            model, conds = _series_filter(ser)
            base_q = (
                select(
                    ValidationRun.run_key,
                    model.run_started_at,
                    column,
                    ValidationRun.status,
                    ValidationRun.dag_id,
                    ValidationRun.run_id,
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
                    .where(*conds, column.is_not(None), ValidationRun.status == "success")
                    .order_by(model.run_started_at.desc())
                    .limit(lookback)
                )
            ]
            points = [
                SeriesPoint(
                    run_key=k, started_at=t, value=float(v), status=st, good=st == "success", dag_id=d, run_id=r
                )
                for k, t, v, st, d, r in reversed(shown)
            ]
            ref = (
                cfg.reference_for(target, ser.get("device_kind", ""), batch_size, precision)
                if metric == "throughput"
                else None
            )
            return _series(metric, spec, ser, points, good, ref, cfg)

        return self._read(read)

    @staticmethod
    def _only_device_kind(s: Session, target: str, batch_size: int, precision: str, mode: str) -> str | None:
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


# ---------------------------------------------------------------------- helpers
def _run_record(run: ValidationRun) -> RunRecord:
    return RunRecord(
        run_key=run.run_key,
        trigger=run.trigger,
        dag_id=run.dag_id,
        run_id=run.run_id,
        airflow_url=run.airflow_url,
        started_at=run.started_at,
        finished_at=run.finished_at,
        status=run.status,
        model_sha256=run.model_sha256,
        onnx_sha256=run.onnx_sha256,
        dataset_fingerprint=dict(run.dataset_fingerprint or {}),
        config_overrides=dict(run.config_overrides or {}),
        environment=dict(run.environment or {}),
        notes=run.notes or "",
    )


# The run columns an alert record carries (selected beside the Alert entity).
_RUN_REF = (ValidationRun.run_key, ValidationRun.dag_id, ValidationRun.run_id)


def _alert_record(a: Alert, run: ValidationRun | Sequence[Any]) -> AlertRecord:
    """``run``: the alert's ValidationRun, or its (run_key, dag_id, run_id) as selected by _RUN_REF."""
    run_key, dag_id, run_id = (run.run_key, run.dag_id, run.run_id) if isinstance(run, ValidationRun) else tuple(run)
    return AlertRecord(
        id=a.id,
        run_key=run_key,
        rule=a.rule,
        metric=a.metric,
        series_key=a.series_key,
        series=dict(a.series or {}),
        observed=a.observed,
        baseline=a.baseline,
        threshold=a.threshold,
        z=a.z,
        message=a.message,
        env_diff=dict(a.env_diff or {}),
        created_at=a.created_at,
        acknowledged_at=a.acknowledged_at,
        acknowledged_by=a.acknowledged_by,
        dag_id=dag_id,
        run_id=run_id,
    )


def _run_context(run: ValidationRun) -> dict[str, Any]:
    """The fields compared between runs for an alert's env_diff."""
    return {
        "model_sha256": run.model_sha256,
        "onnx_sha256": run.onnx_sha256,
        "dataset_fingerprint": dict(run.dataset_fingerprint or {}),
        "config_overrides": dict(run.config_overrides or {}),
        "environment": dict(run.environment or {}),
    }


def _perf_context(run: ValidationRun, tool_versions: Mapping[str, Any] | None, device_id: str | None) -> dict[str, Any]:
    """_run_context plus the perf row's tool versions and device id."""
    return {**_run_context(run), "tool_versions": dict(tool_versions or {}), "device_id": device_id}


def _describe_diff(diff: Mapping[str, list[Any]], base_run: str | None) -> str:
    if base_run is None:
        return "no earlier good run to compare the environment with"
    if not diff:
        return f"nothing changed in model, ONNX, config, dataset or environment since the last good run {base_run}"
    parts = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8]]
    more = f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""
    return f"changed since the last good run {base_run}: " + "; ".join(parts) + more


class _Evaluation:
    """Gathers one run's rows and their histories, applies the rules (one read transaction)."""

    def __init__(self, s: Session, cfg: RuleConfig) -> None:
        self.s = s
        self.cfg = cfg
        self.verdicts: list[SeriesVerdict] = []
        self.alerts: list[dict[str, Any]] = []
        self._runs: dict[int, ValidationRun] = {}

    def _run_by_pk(self, pk: int) -> ValidationRun:
        if pk not in self._runs:
            run = self.s.get(ValidationRun, pk)
            assert run is not None
            self._runs[pk] = run
        return self._runs[pk]

    def run(self, run: ValidationRun) -> tuple[list[SeriesVerdict], list[dict[str, Any]]]:
        self.current = run
        perf = self.s.scalars(select(PerfResult).where(PerfResult.run_pk == run.id).order_by(PerfResult.id)).all()
        acc = self.s.scalars(
            select(AccuracyResult).where(AccuracyResult.run_pk == run.id).order_by(AccuracyResult.id)
        ).all()
        for row in perf:
            self._perf(row)
        for row in acc:
            self._accuracy(row)
        self._batch_invariance(acc)
        return self.verdicts, self.alerts

    def _prior(self, model: Any, conds: list[Any], columns: Iterable[Any], limit: int) -> list[Any]:
        run = self.current
        q = (
            select(*columns, model.run_pk)
            .join(ValidationRun, model.run_pk == ValidationRun.id)
            .where(
                *conds,
                model.run_started_at < run.started_at,
                model.run_pk != run.id,
                ValidationRun.status == "success",
            )
            .order_by(model.run_started_at.desc())
            .limit(limit)
        )
        return list(self.s.execute(q).all())

    def _perf(self, row: PerfResult) -> None:
        ser = perf_series(row.target, row.device_kind, row.batch_size, row.precision, row.mode)
        hist = self._prior(
            *_series_filter(ser),
            (PerfResult.throughput_best, PerfResult.latency_p99_ms, PerfResult.tool_versions, PerfResult.device_id),
            self.cfg.perf_lookback,
        )
        ref = self.cfg.reference_for(row.target, row.device_kind, row.batch_size, row.precision)
        thr = rules.perf_check(
            "throughput",
            row.throughput_best,
            [h[0] for h in hist],
            ref,
            self.cfg,
            reference_observed=row.card_throughput if row.card_throughput is not None else row.throughput_best,
        )
        lat = rules.perf_check(
            "latency_p99", row.latency_p99_ms, [h[1] for h in hist if h[1] is not None], None, self.cfg
        )
        before = None
        base_key = None
        if hist:
            base_run = self._run_by_pk(hist[0][-1])
            before = _perf_context(base_run, hist[0][2], hist[0][3])
            base_key = base_run.run_key
        after = _perf_context(self.current, row.tool_versions, row.device_id)
        for check in (thr, lat):
            if check.observed is None and check.regressed is None:
                continue  # latency not measured by this target: nothing to report
            self._add(check, ser, before, after, base_key)

    def _accuracy(self, row: AccuracyResult) -> None:
        ser = accuracy_series(row.target, row.batch_size, row.precision, row.re_ranking)
        hist = self._prior(*_series_filter(ser), (AccuracyResult.rank1, AccuracyResult.mAP), self.cfg.history_acc_runs)
        before = base_key = None
        if hist:
            base_run = self._run_by_pk(hist[0][-1])
            before, base_key = _run_context(base_run), base_run.run_key
        after = _run_context(self.current)
        for i, metric in enumerate(rules.ACCURACY_RULE_METRICS):
            observed = float(getattr(row, metric))
            reference = self.cfg.reference_accuracy(metric)
            if reference is not None:
                check = rules.accuracy_reference_check(metric, observed, reference, self.cfg.ref_acc_tolerance)
                self._add(check, ser, before, after, base_key)
            check = rules.accuracy_history_check(metric, observed, [h[i] for h in hist], self.cfg.history_acc_drop)
            self._add(check, ser, before, after, base_key)

    def _batch_invariance(self, acc: Iterable[AccuracyResult]) -> None:
        groups: dict[tuple[str, str, bool], list[AccuracyResult]] = {}
        for row in acc:
            groups.setdefault((row.target, row.precision, row.re_ranking), []).append(row)
        after = _run_context(self.current)
        for (target, precision, rerank), rows in groups.items():
            for metric in rules.ACCURACY_RULE_METRICS:
                by_batch = {r.batch_size: float(getattr(r, metric)) for r in rows}
                for batch, check in rules.batch_invariance_checks(metric, by_batch, self.cfg.batch_invariance):
                    ser = accuracy_series(target, batch, precision, rerank)
                    self._add(check, ser, after, after, self.current.run_key, same_run=True)

    def _add(
        self,
        check: rules.Check,
        ser: dict[str, Any],
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any],
        base_key: str | None,
        same_run: bool = False,
    ) -> None:
        key = series_key(ser)
        diff = {} if same_run else rules.env_diff(before, after)
        message = f"{key} {check.metric}: {check.detail}"
        if check.regressed and not same_run:
            message += "; " + _describe_diff(diff, base_key if before is not None else None)
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


def _series(
    metric: str,
    spec: rules.MetricSpec,
    ser: dict[str, Any],
    points: list[SeriesPoint],
    good: list[float],
    reference: float | None,
    cfg: RuleConfig,
) -> Series:
    baseline = std = threshold = None
    band: tuple[float | None, float | None] = (None, None)
    method = "none"
    if spec.kind == "perf":
        if len(good) >= max(cfg.perf_min_history, 2):
            mean, std, lo, hi = rules.perf_band(good, cfg.perf_z, cfg.perf_min_change)
            baseline, band, method = mean, (lo, hi), "perf_history"
            threshold = lo if spec.higher_is_better else hi
        elif reference is not None:
            baseline, method = reference, "perf_reference"
            threshold = reference * (1 - cfg.ref_perf_tolerance)
            band = (threshold, None)
    elif good:
        baseline, method = statistics.median(good), "accuracy_history"
        threshold = baseline - cfg.history_acc_drop
        band = (threshold, None)
    return Series(
        metric=metric,
        unit=spec.unit,
        higher_is_better=spec.higher_is_better,
        series_key=series_key(ser),
        series=ser,
        points=points,
        baseline=baseline,
        std=std,
        threshold=threshold,
        band=band,
        method=method,
    )


def _merge_rows(
    runs: list[ValidationRun],
    perf: Iterable[PerfResult],
    acc: Iterable[AccuracyResult],
    open_alerts: Mapping[int, int],
) -> list[ResultRow]:
    by_run = {r.id: r for r in runs}
    cells: dict[tuple[int, str, int, str], dict[str, Any]] = {}
    kinds: dict[tuple[int, str, int, str], set[str]] = {}
    for p in perf:
        kinds.setdefault((p.run_pk, p.target, p.batch_size, p.precision), set()).add(p.device_kind)
    for p in perf:
        cell = cells.setdefault((p.run_pk, p.target, p.batch_size, p.precision, p.device_kind), {})  # type: ignore[index]
        if p.mode == "pure":
            cell["pure_throughput"] = p.throughput_best
        if p.mode == "real" or "throughput_best" not in cell:
            cell.update(
                throughput_best=p.throughput_best if p.mode == "real" else None,
                throughput_median=p.throughput_median if p.mode == "real" else None,
                latency_p50_ms=p.latency_p50_ms,
                latency_p99_ms=p.latency_p99_ms,
                e2e_throughput=p.e2e_throughput,
                card_throughput=p.card_throughput,
            )
    for a in acc:
        devs = kinds.get((a.run_pk, a.target, a.batch_size, a.precision)) or {None}
        for dev in devs:  # accuracy does not depend on the device kind: shown beside each perf row
            cell = cells.setdefault((a.run_pk, a.target, a.batch_size, a.precision, dev), {})  # type: ignore[index]
            if a.re_ranking:
                cell.update(rerank_rank1=a.rank1, rerank_mAP=a.mAP)
            else:
                cell.update(rank1=a.rank1, rank5=a.rank5, rank10=a.rank10, mAP=a.mAP, mINP=a.mINP, flagged=a.flagged)
            if a.flagged:
                cell["flagged"] = True
    out = []
    for (run_pk, target, batch, precision, dev), cell in cells.items():  # type: ignore[misc]
        run = by_run[run_pk]
        out.append(
            ResultRow(
                run_key=run.run_key,
                status=run.status,
                trigger=run.trigger,
                started_at=run.started_at,
                target=target,
                device_kind=dev,
                batch_size=batch,
                precision=precision,
                open_alerts=open_alerts.get(run_pk, 0),
                dag_id=run.dag_id,
                run_id=run.run_id,
                **cell,
            )
        )
    out.sort(
        key=lambda r: (-r.started_at.timestamp(), r.run_key, r.target, r.device_kind or "", r.batch_size, r.precision)
    )
    return out
