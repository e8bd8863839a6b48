"""series identity, simulated rows, run kind and disk use, parity gate columns, failures table

Every perf / accuracy row gets the identity of what it measured (model sha256, dataset fingerprint,
evaluation config, perf: hardware + tool versions) folded into ``identity_key``; the series indexes lead
with it. Rows recorded before this revision get ``identity_key = 'unknown'`` and are never a baseline.
Runs get ``kind`` (demo | configured; NULL = recorded before this revision), ``disk_bytes`` and ``verdicts``
(the last evaluation's per-series verdicts with their baseline runs, for ``reid-validate check``).

Columns are only added (no table is rebuilt: on SQLite a rebuilt validation_runs would cascade-delete its
rows), so an upgrade keeps every row as it was.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


# Fresh Column objects per call: an upgrade after a downgrade in one process must not reuse attached ones.
def _identity_columns() -> list[sa.Column]:
    return [
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("dataset_fingerprint", sa.String(64), nullable=True),
        sa.Column("neck_feat", sa.String(16), nullable=True),
        sa.Column("identity_key", sa.String(64), nullable=False, server_default="unknown"),
        sa.Column("simulated", sa.Boolean(), nullable=False, server_default=sa.false()),
    ]


def _perf_added() -> list[sa.Column]:
    return [
        *_identity_columns(),
        sa.Column("feat_norm", sa.Boolean(), nullable=True),
        sa.Column("hardware", JSONType, nullable=True),
        sa.Column("hardware_key", sa.String(64), nullable=True),
        sa.Column("device_host", sa.String(250), nullable=True),
    ]


def _accuracy_added() -> list[sa.Column]:
    return [
        *_identity_columns(),
        sa.Column("parity_passed", sa.Boolean(), nullable=True),
        sa.Column("parity_sample_size", sa.Integer(), nullable=True),
        sa.Column("parity_detail", JSONType, nullable=True),
        sa.Column("calibration_fingerprint", sa.String(64), nullable=True),
    ]


def _run_added() -> list[sa.Column]:
    return [
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("disk_bytes", sa.BigInteger(), nullable=True),
        sa.Column("verdicts", JSONType, nullable=True),
    ]


_PERF_SERIES = ["target", "device_kind", "batch_size", "precision", "mode"]
_ACCURACY_SERIES = ["target", "batch_size", "precision", "re_ranking"]


def upgrade() -> None:
    for table, columns in (
        ("validation_runs", _run_added()),
        ("perf_results", _perf_added()),
        ("accuracy_results", _accuracy_added()),
    ):
        for column in columns:
            op.add_column(table, column)
    op.drop_index("ix_perf_series", table_name="perf_results")
    op.create_index("ix_perf_series", "perf_results", [*_PERF_SERIES, "identity_key", "run_started_at"])
    op.drop_index("ix_accuracy_series", table_name="accuracy_results")
    op.create_index("ix_accuracy_series", "accuracy_results", [*_ACCURACY_SERIES, "identity_key", "run_started_at"])
    op.create_table(
        "failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("validation_runs.id", ondelete="CASCADE", name="fk_failures_run_id_validation_runs"),
            nullable=False,
        ),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_failures"),
        sa.UniqueConstraint("run_id", "target", "batch_size", "precision", name="uq_failures"),
    )


def _drop_column(table: str, name: str) -> None:
    if op.get_context().dialect.name == "sqlite":  # native DROP COLUMN (SQLite >= 3.35), no table rebuild
        op.execute(f'ALTER TABLE {table} DROP COLUMN "{name}"')
    else:
        op.drop_column(table, name)


def downgrade() -> None:
    op.drop_table("failures")
    op.drop_index("ix_accuracy_series", table_name="accuracy_results")
    op.create_index("ix_accuracy_series", "accuracy_results", [*_ACCURACY_SERIES, "run_started_at"])
    op.drop_index("ix_perf_series", table_name="perf_results")
    op.create_index("ix_perf_series", "perf_results", [*_PERF_SERIES, "run_started_at"])
    for table, columns in (
        ("accuracy_results", _accuracy_added()),
        ("perf_results", _perf_added()),
        ("validation_runs", _run_added()),
    ):
        for column in reversed(columns):
            _drop_column(table, column.name)
