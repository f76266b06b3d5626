"""Initial warehouse: activity, archived days, sync runs, raw responses, credits.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from etl.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("days_requested", sa.Integer(), nullable=False),
        sa.Column("days_fetched", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("rows_inserted", sa.Integer(), nullable=False),
        sa.Column("rows_updated", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_table(
        "raw_responses",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("run_id", sa.Integer()),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.Column("endpoint", sa.String(50), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("encoding", sa.String(20), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raw_responses"),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name="fk_raw_responses_run_id_sync_runs"),
    )
    op.create_table(
        "activity",
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("endpoint_id", sa.String(200), nullable=False),
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
        sa.PrimaryKeyConstraint("date", "endpoint_id", name="pk_activity"),
    )
    op.create_index("ix_activity_model_date", "activity", ["model", "date"])
    op.create_index("ix_activity_provider_name_date", "activity", ["provider_name", "date"])
    op.create_table(
        "archived_days",
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("first_archived_at", UTCDateTime(), nullable=False),
        sa.Column("last_fetched_at", UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.Integer()),
        sa.Column("raw_response_id", sa.Integer()),
        sa.PrimaryKeyConstraint("date", name="pk_archived_days"),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name="fk_archived_days_run_id_sync_runs"),
        sa.ForeignKeyConstraint(["raw_response_id"], ["raw_responses.id"], name="fk_archived_days_raw_response_id_raw_responses"),
    )
    op.create_table(
        "credits_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.Column("total_credits", sa.Float(), nullable=False),
        sa.Column("total_usage", sa.Float(), nullable=False),
        sa.Column("raw_response_id", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_credits_snapshots"),
        sa.ForeignKeyConstraint(["raw_response_id"], ["raw_responses.id"], name="fk_credits_snapshots_raw_response_id_raw_responses"),
    )


def downgrade() -> None:
    op.drop_table("credits_snapshots")
    op.drop_table("archived_days")
    op.drop_index("ix_activity_provider_name_date", table_name="activity")
    op.drop_index("ix_activity_model_date", table_name="activity")
    op.drop_table("activity")
    op.drop_table("raw_responses")
    op.drop_table("sync_runs")
