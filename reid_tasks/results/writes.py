"""Writing a run's rows: the run itself, perf / accuracy rows (with their series identity), failure rows,
the run's disk use, the alerts its evaluation raised and its final status. ``ResultsStore`` (``store``) adds
the reads and the rules.

Every write is one transaction (``engine.Database._write``); rows are upserts, so a re-run updates, never
duplicates. A finished run's status follows from what it holds (``settle``): 'regressed' with open alerts,
else 'failed' with failure rows, else 'success'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..errors import ResultsError, ResultsNotFound
from ..hardware import hardware_key
from .engine import Database
from .models import AccuracyResult, Alert, Failure, PerfResult, ValidationRun
from .records import FINAL_STATUSES, AccuracyRow, FailureRow, PerfRow, RunInfo, as_utc, utcnow
from .series import dataset_digest, identity_key

# The columns an alert raised again by a re-evaluation updates (its acknowledgement is kept).
_ALERT_UPDATE = (
    "series",
    "observed",
    "baseline",
    "threshold",
    "z",
    "message",
    "env_diff",
    "change_run_id",
    "level_before",
    "level_after",
    "p_value",
)


class RowWriter(Database):
    """The writes of the results store (see ``ResultsStore`` for the whole API)."""

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
            "kind": info.kind,
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
            "simulated": bool(row.simulated),
            "hardware": dict(row.hardware),
            "hardware_key": hardware_key(row.hardware),
            "device_host": row.device_host,
            "model_sha256": row.model_sha256,
            "dataset_fingerprint": row.dataset_fingerprint,
            "neck_feat": row.neck_feat,
            "feat_norm": row.feat_norm,
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
            "simulated": bool(row.simulated),
            "parity_passed": row.parity_passed,
            "parity_sample_size": row.parity_sample_size,
            "parity_detail": dict(row.parity_detail),
            "calibration_fingerprint": row.calibration_fingerprint,
            "model_sha256": row.model_sha256,
            "dataset_fingerprint": row.dataset_fingerprint,
            "neck_feat": row.neck_feat,
            "recorded_at": utcnow(),
        }
        key = ("run_id", "target", "batch_size", "precision", "re_ranking")
        return self._upsert_row(run_key, AccuracyResult, values, key)

    def _upsert_row(self, run_key: str, model: type, values: dict[str, Any], key: tuple[str, ...]) -> int:
        """Upsert a perf / accuracy row, its identity completed from the run (see ``_with_identity``)."""
        table = model.__table__  # type: ignore[attr-defined]

        def write(s: Session) -> int:
            run = self._run(s, run_key)
            row = {**_with_identity(values, run), "run_id": run.id, "run_started_at": run.started_at}
            stmt = self._insert(table).values(**row)
            stmt = stmt.on_conflict_do_update(
                index_elements=list(key), set_={k: stmt.excluded[k] for k in row if k not in key}
            ).returning(table.c.id)
            return s.execute(stmt).scalar_one()

        return self._write(write)

    def finish_run(self, run_key: str, status: str = "success", finished_at: datetime | None = None) -> str:
        """Mark a run finished: 'success' or 'failed'. A successful run with open alerts is stored as
        'regressed'; one with failure rows as 'failed' ('regressed' when alerts also fire). Returns the
        stored status."""
        if status not in FINAL_STATUSES:
            raise ResultsError(f"finish_run: status must be one of {list(FINAL_STATUSES)}, got {status!r}")
        when = as_utc(finished_at) if finished_at is not None else utcnow()

        def write(s: Session) -> str:
            run = self._run(s, run_key)
            run.finished_at = when
            run.status = status
            if status == "success" or has_failures(s, run):
                settle(s, run)
            return run.status

        return self._write(write)

    def set_disk_usage(self, run_key: str, disk_bytes: int) -> None:
        """Store the bytes the run's files take on disk (artifacts, features, caches it made)."""
        if int(disk_bytes) < 0:
            raise ResultsError(f"set_disk_usage: bytes must be >= 0, got {disk_bytes!r}")

        def write(s: Session) -> None:
            self._run(s, run_key).disk_bytes = int(disk_bytes)

        self._write(write)

    # ------------------------------------------------------------------ failures
    def record_failure(self, run_key: str, row: FailureRow) -> int:
        """Insert or update the failure of (run, target, batch, precision); returns its id. A finished run
        that was 'success' becomes 'failed' (or 'regressed' with open alerts)."""
        values = {
            "target": row.target,
            "batch_size": int(row.batch_size),
            "precision": row.precision,
            "stage": row.stage,
            "message": row.message,
            "log_tail": row.log_tail,
            "attempt": int(row.attempt),
            "recorded_at": utcnow(),
        }

        def write(s: Session) -> int:
            run = self._run(s, run_key)
            stmt = self._insert(Failure.__table__).values(**values, run_id=run.id)
            stmt = stmt.on_conflict_do_update(
                index_elements=["run_id", "target", "batch_size", "precision"],
                set_={k: stmt.excluded[k] for k in values if k not in ("target", "batch_size", "precision")},
            ).returning(Failure.__table__.c.id)
            pk = s.execute(stmt).scalar_one()
            if run.status == "success":
                settle(s, run)
            return pk

        return self._write(write)

    def clear_failure(self, run_key: str, target: str, batch_size: int, precision: str) -> bool:
        """Delete the failure of an artifact whose retried task succeeded; True when there was one. The run's
        status is left to ``finish_run`` (which a retried run reaches again)."""

        def write(s: Session) -> bool:
            run = self._run(s, run_key)
            deleted = s.execute(
                delete(Failure).where(
                    Failure.run_pk == run.id,
                    Failure.target == target,
                    Failure.batch_size == int(batch_size),
                    Failure.precision == precision,
                )
            ).rowcount
            return bool(deleted)

        return self._write(write)

    # ------------------------------------------------------------------ alerts
    def _replace_alerts(self, s: Session, run: ValidationRun, pending: list[dict[str, Any]]) -> None:
        """Store the alerts an evaluation of ``run`` raised (``evaluation.evaluate``), replacing its earlier
        ones: an alert raised again is updated (its acknowledgement kept), one no longer raised is deleted."""
        keys = {(a["rule"], a["metric"], a["series_key"]) for a in pending}
        existing = s.execute(
            select(Alert.id, Alert.rule, Alert.metric, Alert.series_key).where(Alert.run_pk == run.id)
        ).all()
        stale = [row.id for row in existing if (row.rule, row.metric, row.series_key) not in keys]
        if stale:
            s.execute(delete(Alert).where(Alert.id.in_(stale)))
        if not pending:
            return
        now = utcnow()
        change_keys = {a["change_run"] for a in pending if a["change_run"] is not None}
        pks = dict(
            s.execute(
                select(ValidationRun.run_key, ValidationRun.id).where(ValidationRun.run_key.in_(change_keys))
            ).all()
        )
        stmt = self._insert(Alert.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "rule", "metric", "series_key"],
            set_={k: stmt.excluded[k] for k in _ALERT_UPDATE},
        )
        rows = [
            {
                **{k: v for k, v in a.items() if k != "change_run"},
                "change_run_id": pks.get(a["change_run"]),
                "run_id": run.id,
                "created_at": now,
            }
            for a in pending
        ]
        s.execute(stmt, rows)


def _with_identity(values: dict[str, Any], run: ValidationRun) -> dict[str, Any]:
    """``values`` with the model / dataset taken from the run where the row names none, and ``identity_key``."""
    out = dict(values)
    if out.get("model_sha256") is None:
        out["model_sha256"] = run.model_sha256
    if out.get("dataset_fingerprint") is None:
        out["dataset_fingerprint"] = dataset_digest(run.dataset_fingerprint)
    out["identity_key"] = identity_key(
        model_sha256=out["model_sha256"],
        dataset_fingerprint=out["dataset_fingerprint"],
        neck_feat=out.get("neck_feat"),
        feat_norm=out.get("feat_norm"),
        hardware_key=out.get("hardware_key"),
    )
    return out


def open_alert_count(s: Session, run_pk: int) -> int:
    return s.scalar(
        select(func.count()).select_from(Alert).where(Alert.run_pk == run_pk, Alert.acknowledged_at.is_(None))
    )


def settle(s: Session, run: ValidationRun) -> None:
    """A finished run's status from what it holds: 'regressed' with open alerts, else 'failed' with failure
    rows, else 'success'."""
    s.flush()
    if open_alert_count(s, run.id):
        run.status = "regressed"
    elif has_failures(s, run):
        run.status = "failed"
    else:
        run.status = "success"


def has_failures(s: Session, run: ValidationRun) -> bool:
    return bool(s.scalar(select(func.count()).select_from(Failure).where(Failure.run_pk == run.id)))
