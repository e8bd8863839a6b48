"""initial schema: validation_runs, perf_results, accuracy_results, alerts

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "validation_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_key", sa.String(250), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("airflow_url", sa.Text(), nullable=True),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("onnx_sha256", sa.String(64), nullable=True),
        sa.Column("dataset_fingerprint", JSONType, nullable=False),
        sa.Column("config_overrides", JSONType, nullable=False),
        sa.Column("environment", JSONType, nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_validation_runs"),
        sa.UniqueConstraint("run_key", name="uq_validation_runs_run_key"),
        sa.CheckConstraint("status IN ('running', 'success', 'failed', 'regressed')", name="ck_validation_runs_status"),
        sa.CheckConstraint("trigger IN ('scheduled', 'manual', 'cli')", name="ck_validation_runs_trigger"),
    )
    op.create_index("ix_validation_runs_started_at", "validation_runs", ["started_at"])
    op.create_index("ix_validation_runs_status_started_at", "validation_runs", ["status", "started_at"])

    op.create_table(
        "perf_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        _ts("run_started_at"),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("device_kind", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("throughput_best", sa.Float(), nullable=False),
        sa.Column("throughput_median", sa.Float(), nullable=False),
        sa.Column("latency_mean_ms", sa.Float(), nullable=True),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p90_ms", sa.Float(), nullable=True),
        sa.Column("latency_p99_ms", sa.Float(), nullable=True),
        sa.Column("e2e_throughput", sa.Float(), nullable=True),
        sa.Column("card_throughput", sa.Float(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("repetitions", sa.Integer(), nullable=False),
        sa.Column("warmup", sa.Integer(), nullable=False),
        sa.Column("tool_versions", JSONType, nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=True),
        _ts("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_perf_results"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["validation_runs.id"], name="fk_perf_results_run_id_validation_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "run_id", "target", "device_kind", "batch_size", "precision", "mode", name="uq_perf_results"
        ),
        sa.CheckConstraint("mode IN ('real', 'pure')", name="ck_perf_results_mode"),
    )
    op.create_index(
        "ix_perf_series",
        "perf_results",
        ["target", "device_kind", "batch_size", "precision", "mode", "run_started_at"],
    )

    op.create_table(
        "accuracy_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        _ts("run_started_at"),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("re_ranking", sa.Boolean(), nullable=False),
        sa.Column("feat_norm", sa.Boolean(), nullable=False),
        sa.Column("rank1", sa.Float(), nullable=False),
        sa.Column("rank5", sa.Float(), nullable=False),
        sa.Column("rank10", sa.Float(), nullable=False),
        sa.Column("map", sa.Float(), nullable=False),
        sa.Column("minp", sa.Float(), nullable=False),
        sa.Column("valid_queries", sa.Integer(), nullable=False),
        sa.Column("gallery_size", sa.Integer(), nullable=False),
        sa.Column("parity_min_cosine", sa.Float(), nullable=True),
        sa.Column("parity_mean_cosine", sa.Float(), nullable=True),
        sa.Column("parity_max_abs_diff", sa.Float(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        _ts("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accuracy_results"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["validation_runs.id"], name="fk_accuracy_results_run_id_validation_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "target", "batch_size", "precision", "re_ranking", name="uq_accuracy_results"),
    )
    op.create_index(
        "ix_accuracy_series", "accuracy_results", ["target", "batch_size", "precision", "re_ranking", "run_started_at"]
    )

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("series_key", sa.String(250), nullable=False),
        sa.Column("series", JSONType, nullable=False),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("z", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("env_diff", JSONType, nullable=False),
        _ts("created_at"),
        _ts("acknowledged_at", nullable=True),
        sa.Column("acknowledged_by", sa.String(250), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["validation_runs.id"], name="fk_alerts_run_id_validation_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "rule", "metric", "series_key", name="uq_alerts"),
    )
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_index("ix_alerts_acknowledged_at", "alerts", ["acknowledged_at"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("accuracy_results")
    op.drop_table("perf_results")
    op.drop_table("validation_runs")
