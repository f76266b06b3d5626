"""Alerts: the ``alerts`` table (one row per fired alert) and ``alert_notifications``
(one sent mark per alert and notifier). Nothing existing changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from etl.schema import UTCDateTime

# The revision id, in one place: another branch may also add a 0006 (renumber here, and
# etl/migrate.py HEAD_REVISION).
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("period", sa.String(20), nullable=False),
        sa.Column("threshold", sa.String(20), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("limit_usd", sa.Float()),
        sa.Column("baseline", sa.Float()),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("first_fired_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("kind", "rule", "scope", "period", "threshold", name="uq_alerts_identity"),
    )
    op.create_index("ix_alerts_resolved_at", "alerts", ["resolved_at"])
    op.create_table(
        "alert_notifications",
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("notifier", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime()),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("last_error", sa.Text()),
        sa.PrimaryKeyConstraint("alert_id", "notifier", name="pk_alert_notifications"),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name="fk_alert_notifications_alert_id_alerts"),
    )


def downgrade() -> None:
    op.drop_table("alert_notifications")
    op.drop_index("ix_alerts_resolved_at", table_name="alerts")
    op.drop_table("alerts")
