"""change points: alerts name the run where the level changed; accepted changes restart a series' baseline

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("change_run_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("level_before", sa.Float(), nullable=True))
        batch.add_column(sa.Column("level_after", sa.Float(), nullable=True))
        batch.add_column(sa.Column("p_value", sa.Float(), nullable=True))
        batch.create_foreign_key(
            "fk_alerts_change_run_id_validation_runs", "validation_runs", ["change_run_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "series_baselines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("series_key", sa.String(250), nullable=False),
        sa.Column("identity_key", sa.String(64), nullable=True),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("start_run_id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("accepted_by", sa.String(250), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series_baselines"),
        sa.ForeignKeyConstraint(
            ["start_run_id"],
            ["validation_runs.id"],
            name="fk_series_baselines_start_run_id_validation_runs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_series_baselines_alert_id_alerts", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("series_key", "identity_key", "metric", "start_run_id", name="uq_series_baselines"),
    )


def downgrade() -> None:
    op.drop_table("series_baselines")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_constraint("fk_alerts_change_run_id_validation_runs", type_="foreignkey")
        batch.drop_column("p_value")
        batch.drop_column("level_after")
        batch.drop_column("level_before")
        batch.drop_column("change_run_id")
