"""SQLAlchemy 2 models of the results database (validation_runs, perf_results, accuracy_results, alerts,
failures, series_baselines).

Units: throughput in samples/s, latency in ms, accuracy (rank1, rank5, rank10, mAP, mINP) in **percent**
(0..100). Timestamps are UTC, timezone-aware.

Run status: ``running`` (started, not finished: a killed writer leaves it here), ``success`` (finished
and no open alert), ``regressed`` (finished, at least one open alert), ``failed`` (the pipeline failed).
A *good* run, the only kind used as a baseline, is a run with status ``success``; acknowledging every
alert of a ``regressed`` run makes it ``success`` again (the new level is accepted as the baseline).

``perf_results.run_started_at`` / ``accuracy_results.run_started_at`` copy the run's ``started_at`` so
that "the last N points of one series" is one descending index range scan
(``ix_perf_series`` / ``ix_accuracy_series``).

Series identity: every perf / accuracy row carries what it measured (model sha256, dataset fingerprint,
evaluation config; perf: the hardware it ran on and the target's tool versions), folded into ``identity_key``
(``series.identity_key``); a baseline only uses rows of the same identity. Rows recorded before revision 0002
have ``identity_key = 'unknown'`` and are never a baseline. ``simulated`` rows (test doubles) never are either.

Changing this module needs a new Alembic revision in ``migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """DateTime(timezone=True) that always returns aware UTC datetimes (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONType, datetime: UTCDateTime()}


class ValidationRun(Base):
    """One validation run (an Airflow DAG run or a local ``reid-validate run``), unique by ``run_key``."""

    __tablename__ = "validation_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'success', 'failed', 'regressed')", name="status"),
        CheckConstraint("trigger IN ('scheduled', 'manual', 'cli')", name="trigger"),
        Index("ix_validation_runs_started_at", "started_at"),
        Index("ix_validation_runs_status_started_at", "status", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[str] = mapped_column(String(250), unique=True)
    trigger: Mapped[str] = mapped_column(String(16))
    dag_id: Mapped[str | None] = mapped_column(String(250))
    run_id: Mapped[str | None] = mapped_column(String(250))
    airflow_url: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    onnx_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_fingerprint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notes: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str | None] = mapped_column(String(16))  # 'demo' | 'configured'; None: recorded before 0002
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger)
    verdicts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)  # the last evaluate_run's
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    perf: Mapped[list[PerfResult]] = relationship(back_populates="run", passive_deletes=True)
    accuracy: Mapped[list[AccuracyResult]] = relationship(back_populates="run", passive_deletes=True)
    alerts: Mapped[list[Alert]] = relationship(back_populates="run", passive_deletes=True, foreign_keys="Alert.run_pk")
    failures: Mapped[list[Failure]] = relationship(back_populates="run", passive_deletes=True)


class PerfResult(Base):
    """Speed of one artifact in one run: samples/s and ms. Unique per (run, target, device kind, batch,
    precision, mode); mode is 'real' (dataset) or 'pure' (generated inputs)."""

    __tablename__ = "perf_results"
    __table_args__ = (
        UniqueConstraint("run_id", "target", "device_kind", "batch_size", "precision", "mode", name="uq_perf_results"),
        CheckConstraint("mode IN ('real', 'pure')", name="mode"),
        Index(
            "ix_perf_series",
            "target",
            "device_kind",
            "batch_size",
            "precision",
            "mode",
            "identity_key",
            "run_started_at",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column("run_id", ForeignKey("validation_runs.id", ondelete="CASCADE"), index=False)
    run_started_at: Mapped[datetime]
    target: Mapped[str] = mapped_column(String(64))
    device_kind: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64))
    batch_size: Mapped[int]
    precision: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(8))
    throughput_best: Mapped[float] = mapped_column(Float)
    throughput_median: Mapped[float] = mapped_column(Float)
    latency_mean_ms: Mapped[float | None] = mapped_column(Float)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p90_ms: Mapped[float | None] = mapped_column(Float)
    latency_p99_ms: Mapped[float | None] = mapped_column(Float)
    e2e_throughput: Mapped[float | None] = mapped_column(Float)
    card_throughput: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int]
    repetitions: Mapped[int]
    warmup: Mapped[int]
    tool_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64))
    neck_feat: Mapped[str | None] = mapped_column(String(16))
    identity_key: Mapped[str] = mapped_column(String(64), server_default="unknown")
    simulated: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    feat_norm: Mapped[bool | None] = mapped_column(Boolean)
    hardware: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    hardware_key: Mapped[str | None] = mapped_column(String(64))
    device_host: Mapped[str | None] = mapped_column(String(250))
    recorded_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    run: Mapped[ValidationRun] = relationship(back_populates="perf")


class AccuracyResult(Base):
    """Accuracy of one artifact in one run, in **percent** (rank1/rank5/rank10/mAP/mINP are 0..100).

    Unique per (run, target, batch, precision, re-ranking). ``parity_*`` compare the artifact's features with
    the PyTorch fp32 reference; ``flagged`` marks a parity failure (reduced precision) with ``flag_reason``.
    """

    __tablename__ = "accuracy_results"
    __table_args__ = (
        UniqueConstraint("run_id", "target", "batch_size", "precision", "re_ranking", name="uq_accuracy_results"),
        Index(
            "ix_accuracy_series", "target", "batch_size", "precision", "re_ranking", "identity_key", "run_started_at"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column("run_id", ForeignKey("validation_runs.id", ondelete="CASCADE"))
    run_started_at: Mapped[datetime]
    target: Mapped[str] = mapped_column(String(64))
    batch_size: Mapped[int]
    precision: Mapped[str] = mapped_column(String(16))
    re_ranking: Mapped[bool] = mapped_column(Boolean)
    feat_norm: Mapped[bool] = mapped_column(Boolean)
    rank1: Mapped[float] = mapped_column(Float)
    rank5: Mapped[float] = mapped_column(Float)
    rank10: Mapped[float] = mapped_column(Float)
    mAP: Mapped[float] = mapped_column("map", Float)
    mINP: Mapped[float] = mapped_column("minp", Float)
    valid_queries: Mapped[int]
    gallery_size: Mapped[int]
    parity_min_cosine: Mapped[float | None] = mapped_column(Float)
    parity_mean_cosine: Mapped[float | None] = mapped_column(Float)
    parity_max_abs_diff: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_reason: Mapped[str | None] = mapped_column(Text)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64))
    neck_feat: Mapped[str | None] = mapped_column(String(16))
    identity_key: Mapped[str] = mapped_column(String(64), server_default="unknown")
    simulated: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    parity_passed: Mapped[bool | None] = mapped_column(Boolean)
    parity_sample_size: Mapped[int | None]
    parity_detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    calibration_fingerprint: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    run: Mapped[ValidationRun] = relationship(back_populates="accuracy")


class Alert(Base):
    """A regression found by a rule. Unique per (run, rule, metric, series key): re-evaluating a run updates
    its alerts (keeping created_at and the acknowledgement), removes the ones no longer raised.

    ``env_diff``: {field: [value in the last good run of the series, value in this run]}.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("run_id", "rule", "metric", "series_key", name="uq_alerts"),
        Index("ix_alerts_created_at", "created_at"),
        Index("ix_alerts_acknowledged_at", "acknowledged_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column("run_id", ForeignKey("validation_runs.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(32))
    series_key: Mapped[str] = mapped_column(String(250))
    series: Mapped[dict[str, Any]] = mapped_column(default=dict)
    observed: Mapped[float] = mapped_column(Float)
    baseline: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    z: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    env_diff: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(250))
    # Change-point alerts (perf_history / accuracy_history): the run where the level changed, the levels
    # before / from it on (medians) and the test's p-value (``z`` holds the detector's score).
    change_run_pk: Mapped[int | None] = mapped_column(
        "change_run_id", ForeignKey("validation_runs.id", ondelete="SET NULL")
    )
    level_before: Mapped[float | None] = mapped_column(Float)
    level_after: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)

    run: Mapped[ValidationRun] = relationship(back_populates="alerts", foreign_keys=[run_pk])
    change_run: Mapped[ValidationRun | None] = relationship(foreign_keys=[change_run_pk], lazy="joined")


class SeriesBaseline(Base):
    """An accepted change: from run ``start_run`` on, the verdicts of one metric of one series use only the
    runs from that run on (written when a change-point alert is acknowledged). ``identity_key``: the series'
    identity (``series["identity_key"]``; None for series without one)."""

    __tablename__ = "series_baselines"
    __table_args__ = (
        UniqueConstraint("series_key", "identity_key", "metric", "start_run_id", name="uq_series_baselines"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_key: Mapped[str] = mapped_column(String(250))
    identity_key: Mapped[str | None] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    start_run_pk: Mapped[int] = mapped_column("start_run_id", ForeignKey("validation_runs.id", ondelete="CASCADE"))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"))
    accepted_by: Mapped[str | None] = mapped_column(String(250))
    accepted_at: Mapped[datetime] = mapped_column(default=_now)


class Failure(Base):
    """An artifact (target x batch x precision) of a run that did not finish: the stage it failed in, the error
    and the tail of its log. Unique per (run, target, batch, precision); a retry that succeeds deletes it."""

    __tablename__ = "failures"
    __table_args__ = (UniqueConstraint("run_id", "target", "batch_size", "precision", name="uq_failures"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column("run_id", ForeignKey("validation_runs.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(64))
    batch_size: Mapped[int]
    precision: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int]
    recorded_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    run: Mapped[ValidationRun] = relationship(back_populates="failures")
