"""Breakdowns: API keys, activity per key, per workspace and per member; run details.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from etl.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BREAKDOWNS = {"activity_by_key": "api_key_hash", "activity_by_workspace": "workspace_id", "activity_by_member": "user_id"}


def _activity_columns() -> list[sa.Column]:
    return [
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_permaslug", sa.String(200), nullable=False),
        sa.Column("provider_name", sa.String(200), nullable=False),
        sa.Column("usage", sa.Float(), nullable=False),
        sa.Column("byok_usage_inference", sa.Float(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger()),
        sa.Column("first_archived_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("details", sa.Text()))
    op.create_table(
        "api_keys",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.String(40)),
        sa.Column("workspace_id", sa.String(64)),
        sa.Column("creator_user_id", sa.String(100)),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_api_keys"),
    )
    for table, subject in BREAKDOWNS.items():
        op.create_table(
            table,
            sa.Column("date", sa.String(10), nullable=False),
            sa.Column(subject, sa.String(200), nullable=False),
            sa.Column("endpoint_id", sa.String(200), nullable=False),
            *_activity_columns(),
            sa.PrimaryKeyConstraint("date", subject, "endpoint_id", name=f"pk_{table}"),
        )
        op.create_index(f"ix_{table}_{subject}_date", table, [subject, "date"])
    op.create_table(
        "archived_breakdown_days",
        sa.Column("breakdown", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("first_archived_at", UTCDateTime(), nullable=False),
        sa.Column("last_fetched_at", UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.Integer()),
        sa.Column("raw_response_id", sa.Integer()),
        sa.PrimaryKeyConstraint("breakdown", "subject", "date", name="pk_archived_breakdown_days"),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name="fk_archived_breakdown_days_run_id_sync_runs"),
        sa.ForeignKeyConstraint(["raw_response_id"], ["raw_responses.id"], name="fk_archived_breakdown_days_raw_response_id_raw_responses"),
    )


def downgrade() -> None:
    op.drop_table("archived_breakdown_days")
    for table, subject in reversed(list(BREAKDOWNS.items())):
        op.drop_index(f"ix_{table}_{subject}_date", table_name=table)
        op.drop_table(table)
    op.drop_table("api_keys")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("details")
