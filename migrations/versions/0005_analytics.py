"""The Analytics API archive: daily long-range series, the 31-day provider series, day marks, labels.

``analytics_daily`` holds every long-range series (account by model x variant; per key,
app, member and workspace by model), keyed by (series, subject, date, model, variant);
``analytics_provider_daily`` the 31-day series by model x provider with latency and
throughput; ``archived_analytics_days`` marks each (series, subject, day) fetched, also
without activity; ``analytics_labels`` keeps the display names of ids. Both data tables get
a ``*_history`` table, as ``activity`` does. Nothing existing changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from etl.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

AMOUNTS = ("total_usage", "credits_usage", "byok_usage", "usage_upstream", "usage_cache", "usage_data", "usage_web", "usage_upstream_web")
COUNTS = ("request_count", "byok_request_count", "tokens_prompt", "tokens_completion", "tokens_total", "reasoning_tokens", "cached_tokens")
PROVIDER_AMOUNTS = ("total_usage", "credits_usage", "byok_usage")
PROVIDER_COUNTS = ("request_count", "tokens_prompt", "tokens_completion")
PROVIDER_MEASURES = ("avg_latency", "p50_latency", "p90_latency", "p99_latency", "avg_throughput")

DAILY_KEYS = (("series", 20), ("subject", 200), ("date", 10), ("model", 200), ("variant", 100))
PROVIDER_KEYS = (("date", 10), ("model", 200), ("provider", 200))


def _keys(keys: tuple[tuple[str, int], ...]) -> list[sa.Column]:
    return [sa.Column(name, sa.String(size), nullable=False) for name, size in keys]


def _daily_values() -> list[sa.Column]:
    return [
        *(sa.Column(n, sa.Float()) for n in AMOUNTS),
        *(sa.Column(n, sa.BigInteger(), nullable=False) for n in COUNTS),
        sa.Column("first_archived_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _provider_values() -> list[sa.Column]:
    return [
        *(sa.Column(n, sa.Float()) for n in PROVIDER_AMOUNTS),
        *(sa.Column(n, sa.BigInteger(), nullable=False) for n in PROVIDER_COUNTS),
        *(sa.Column(n, sa.Float()) for n in PROVIDER_MEASURES),
        sa.Column("first_archived_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _history(name: str, keys: tuple[tuple[str, int], ...], values: list[sa.Column]) -> None:
    history = f"{name}_history"
    op.create_table(
        history,
        sa.Column("id", sa.Integer(), autoincrement=True),
        *_keys(keys),
        *values,
        sa.Column("superseded_at", UTCDateTime(), nullable=False),
        sa.Column("superseded_by_run", sa.Integer()),
        sa.Column("superseded_by_raw_response_id", sa.Integer()),
        sa.Column("reason", sa.String(10), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{history}"),
        sa.ForeignKeyConstraint(["superseded_by_run"], ["sync_runs.id"], name=f"fk_{history}_run"),
        sa.ForeignKeyConstraint(["superseded_by_raw_response_id"], ["raw_responses.id"], name=f"fk_{history}_raw"),
    )
    op.create_index(f"ix_{history}_date", history, ["date"])


def upgrade() -> None:
    op.create_table(
        "analytics_daily",
        *_keys(DAILY_KEYS),
        *_daily_values(),
        sa.PrimaryKeyConstraint(*(k for k, _ in DAILY_KEYS), name="pk_analytics_daily"),
    )
    op.create_index("ix_analytics_daily_series_date", "analytics_daily", ["series", "date"])
    op.create_index("ix_analytics_daily_model_date", "analytics_daily", ["model", "date"])
    op.create_table(
        "analytics_provider_daily",
        *_keys(PROVIDER_KEYS),
        *_provider_values(),
        sa.PrimaryKeyConstraint(*(k for k, _ in PROVIDER_KEYS), name="pk_analytics_provider_daily"),
    )
    op.create_index("ix_analytics_provider_daily_provider_date", "analytics_provider_daily", ["provider", "date"])
    op.create_table(
        "archived_analytics_days",
        sa.Column("series", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("first_archived_at", UTCDateTime(), nullable=False),
        sa.Column("last_fetched_at", UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.Integer()),
        sa.Column("raw_response_id", sa.Integer()),
        sa.PrimaryKeyConstraint("series", "subject", "date", name="pk_archived_analytics_days"),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name="fk_archived_analytics_days_run_id_sync_runs"),
        sa.ForeignKeyConstraint(["raw_response_id"], ["raw_responses.id"], name="fk_archived_analytics_days_raw_response_id_raw_responses"),
    )
    op.create_table(
        "analytics_labels",
        sa.Column("series", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("label", sa.String(1000), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("series", "subject", name="pk_analytics_labels"),
    )
    _history("analytics_daily", DAILY_KEYS, _daily_values())
    _history("analytics_provider_daily", PROVIDER_KEYS, _provider_values())


def downgrade() -> None:
    for name in ("analytics_provider_daily_history", "analytics_daily_history"):
        op.drop_index(f"ix_{name}_date", table_name=name)
        op.drop_table(name)
    op.drop_table("analytics_labels")
    op.drop_table("archived_analytics_days")
    op.drop_index("ix_analytics_provider_daily_provider_date", table_name="analytics_provider_daily")
    op.drop_table("analytics_provider_daily")
    op.drop_index("ix_analytics_daily_model_date", table_name="analytics_daily")
    op.drop_index("ix_analytics_daily_series_date", table_name="analytics_daily")
    op.drop_table("analytics_daily")
