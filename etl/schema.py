"""The warehouse tables, as SQLAlchemy Core metadata.

These definitions are what queries are written against; the database itself is created
and evolved only by the Alembic migrations in ``migrations/``, and a test checks that the
two agree. Timestamps are UTC; ``activity.date`` is the UTC calendar day as ``YYYY-MM-DD``
text, the API's own format, so that it sorts and compares as a date on every engine.

``activity`` and the breakdown tables hold only the current rows, OpenRouter's latest
answer for each day, so that a plain ``sum(usage)`` is exact; every superseded version is
kept in the matching ``*_history`` table.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect

from etl.fetched import ACTIVITY_ATTRIBUTES as ACTIVITY_ATTRIBUTES
from etl.fetched import ACTIVITY_METRICS as ACTIVITY_METRICS

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the engine keeps.

    SQLite has no datetime type: there the value is ISO text (``2026-11-22 00:30:00.000000``,
    which SQLite's date functions read), formatted once per distinct value rather than
    once per row, because a day's upsert binds the same timestamp to every row.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return _sqlite_text(value) if dialect.name == "sqlite" else value.astimezone(timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        moment: datetime = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return moment


@lru_cache(maxsize=256)
def _sqlite_text(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("trigger", String(20), nullable=False),  # sync | backfill | demo | daemon
    Column("outcome", String(20), nullable=False),  # running | ok | partial | failed | interrupted
    Column("days_requested", Integer, nullable=False, default=0),
    Column("days_fetched", Integer, nullable=False, default=0),
    Column("requests", Integer, nullable=False, default=0),
    Column("rows_inserted", Integer, nullable=False, default=0),
    Column("rows_updated", Integer, nullable=False, default=0),
    Column("rows_unchanged", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("details", Text),  # JSON: per-breakdown counts (keys, key-days, requests, errors)
)

# Raw answers are content-addressed (migration 0007, etl/rawstore.py): one row per fetch in
# raw_responses, naming its body; one row per distinct body (SHA-256 of the exact bytes) in
# raw_bodies; the body as an ordered list of pieces (raw_body_chunks), each distinct piece
# stored once, compressed, in raw_chunks. The raw_response_bodies view joins them back
# into the old shape: a fetch with its whole body as one gzip stream.
raw_chunks = Table(
    "raw_chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False),  # of the uncompressed piece
    Column("encoding", String(20), nullable=False),  # compression of data: gzip (one member)
    Column("data", LargeBinary, nullable=False),
    Column("data_bytes", BigInteger, nullable=False),  # size before compression
    UniqueConstraint("sha256", name="uq_raw_chunks_sha256"),
)

raw_bodies = Table(
    "raw_bodies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False),  # of the uncompressed body
    Column("body_bytes", BigInteger, nullable=False),  # size before compression
    Column("chunk_count", Integer, nullable=False),
    UniqueConstraint("sha256", name="uq_raw_bodies_sha256"),
)

raw_body_chunks = Table(
    "raw_body_chunks",
    metadata,
    Column("body_id", Integer, ForeignKey("raw_bodies.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 0, 1, ...: the pieces' order
    Column("chunk_id", Integer, ForeignKey("raw_chunks.id"), nullable=False),
    sqlite_with_rowid=False,  # a few integers a row: no second copy in a rowid table
)

raw_responses = Table(
    "raw_responses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("sync_runs.id")),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("endpoint", String(50), nullable=False),
    Column("params", Text, nullable=False),  # JSON object of the query parameters
    Column("status", Integer, nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the uncompressed body
    Column("raw_body_id", Integer, ForeignKey("raw_bodies.id"), nullable=False),
)

activity = Table(
    "activity",
    metadata,
    Column("date", String(10), primary_key=True),
    Column("endpoint_id", String(200), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("model_permaslug", String(200), nullable=False),
    Column("provider_name", String(200), nullable=False),
    Column("usage", Float, nullable=False),
    Column("byok_usage_inference", Float, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger),
    Column("first_archived_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "model", "date"),
    Index(None, "provider_name", "date"),
)

archived_days = Table(
    "archived_days",
    metadata,
    Column("date", String(10), primary_key=True),
    Column("row_count", Integer, nullable=False),
    Column("first_archived_at", UTCDateTime, nullable=False),
    Column("last_fetched_at", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("sync_runs.id")),
    Column("raw_response_id", Integer, ForeignKey("raw_responses.id")),
)

credits_snapshots = Table(
    "credits_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("total_credits", Float, nullable=False),
    Column("total_usage", Float, nullable=False),
    Column("raw_response_id", Integer, ForeignKey("raw_responses.id")),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("hash", String(64), primary_key=True),  # SHA-256 hex, as GET /keys gives it
    Column("name", String(200), nullable=False),
    Column("label", String(200), nullable=False),  # the masked key, e.g. sk-or-v1-0e6...1c96
    Column("disabled", Boolean, nullable=False),
    Column("created_at", String(40)),  # ISO 8601, as OpenRouter gives it
    Column("workspace_id", String(64)),
    Column("creator_user_id", String(100)),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
)


def _breakdown_table(name: str, subject: str) -> Table:
    """Activity split by one more key: the same columns as ``activity`` plus the subject."""
    return Table(
        name,
        metadata,
        Column("date", String(10), primary_key=True),
        Column(subject, String(200), primary_key=True),
        Column("endpoint_id", String(200), primary_key=True),
        *(Column(c.name, c.type, nullable=c.nullable) for c in activity.columns if c.name not in ("date", "endpoint_id")),
        Index(None, subject, "date"),
    )


activity_by_key = _breakdown_table("activity_by_key", "api_key_hash")
activity_by_workspace = _breakdown_table("activity_by_workspace", "workspace_id")
activity_by_member = _breakdown_table("activity_by_member", "user_id")

# One row per (breakdown, subject, completed day) fetched, also without activity, so that
# a key that spent nothing on a day is never mistaken for a gap. The workspace breakdown
# has one subject, "*": one request covers every workspace.
archived_breakdown_days = Table(
    "archived_breakdown_days",
    metadata,
    Column("breakdown", String(20), primary_key=True),
    Column("subject", String(200), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("row_count", Integer, nullable=False),
    Column("first_archived_at", UTCDateTime, nullable=False),
    Column("last_fetched_at", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("sync_runs.id")),
    Column("raw_response_id", Integer, ForeignKey("raw_responses.id")),
)


def _history_table(current: Table) -> Table:
    """Every superseded version of a row of ``current``, with when and by which fetch.

    ``reason`` is ``revised`` (the row's values before OpenRouter revised it in place) or
    ``retired`` (the row itself, once OpenRouter's answer for its day stopped listing it).
    The row's own ``first_archived_at`` and ``updated_at`` say when that version was
    written, so a version was current from ``updated_at`` until ``superseded_at``.
    """
    name = f"{current.name}_history"
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        *(Column(c.name, c.type, nullable=c.nullable) for c in current.columns),
        Column("superseded_at", UTCDateTime, nullable=False),
        # Short names: the conventional ones would pass PostgreSQL's 63-character limit.
        Column("superseded_by_run", Integer, ForeignKey("sync_runs.id", name=f"fk_{name}_run")),
        Column("superseded_by_raw_response_id", Integer, ForeignKey("raw_responses.id", name=f"fk_{name}_raw")),
        Column("reason", String(10), nullable=False),  # revised | retired
        Index(None, "date"),
    )


activity_history = _history_table(activity)
activity_by_key_history = _history_table(activity_by_key)
activity_by_workspace_history = _history_table(activity_by_workspace)
activity_by_member_history = _history_table(activity_by_member)
HISTORY_TABLES = {
    activity.name: activity_history,
    activity_by_key.name: activity_by_key_history,
    activity_by_workspace.name: activity_by_workspace_history,
    activity_by_member.name: activity_by_member_history,
}

BREAKDOWN_TABLES = {"key": activity_by_key, "workspace": activity_by_workspace, "member": activity_by_member}
BREAKDOWN_SUBJECTS = {"key": "api_key_hash", "workspace": "workspace_id", "member": "user_id"}

# ACTIVITY_METRICS and ACTIVITY_ATTRIBUTES, the value columns of /activity rows, are defined
# in etl.fetched (no SQLAlchemy there, so validation shares them) and re-exported here.


# -- the Analytics API (POST /analytics/query), migration 0005 -------------------------------
# Long-range metrics (about 365 days): costs in USD (NULL where OpenRouter says a component
# does not apply), then whole counts.
ANALYTICS_AMOUNTS = (
    "total_usage", "credits_usage", "byok_usage", "usage_upstream", "usage_cache", "usage_data", "usage_web", "usage_upstream_web",
)
ANALYTICS_COUNTS = (
    "request_count", "byok_request_count", "tokens_prompt", "tokens_completion", "tokens_total", "reasoning_tokens", "cached_tokens",
)
ANALYTICS_METRICS = ANALYTICS_AMOUNTS + ANALYTICS_COUNTS
# The 31-day series by model x provider: spend, requests, tokens, latency (ms), throughput.
PROVIDER_AMOUNTS = ("total_usage", "credits_usage", "byok_usage")
PROVIDER_COUNTS = ("request_count", "tokens_prompt", "tokens_completion")
PROVIDER_MEASURES = ("avg_latency", "p50_latency", "p90_latency", "p99_latency", "avg_throughput")
PROVIDER_METRICS = PROVIDER_AMOUNTS + PROVIDER_COUNTS + PROVIDER_MEASURES

# Every long-range series in one table: `series` is account | key | app | member | workspace,
# `subject` the stable identity within it ('*' for the account, the key hash, the member's
# user id, the workspace UUID; for apps the title, as the API gives no app id). `variant` is
# split for the account series only ('' where the series has no variant dimension).
analytics_daily = Table(
    "analytics_daily",
    metadata,
    Column("series", String(20), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("date", String(10), nullable=False),
    Column("model", String(200), nullable=False),  # the permaslug
    Column("variant", String(100), nullable=False),
    *(Column(name, Float) for name in ANALYTICS_AMOUNTS),
    *(Column(name, BigInteger, nullable=False) for name in ANALYTICS_COUNTS),
    Column("first_archived_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The day second (migration 0010): every question of the table ranges over a series'
    # days, so the key serves them all and the table has no other index (migration 0011).
    PrimaryKeyConstraint("series", "date", "subject", "model", "variant"),
    sqlite_with_rowid=False,  # the key is the table: no second copy of it beside a rowid table
)

analytics_provider_daily = Table(
    "analytics_provider_daily",
    metadata,
    Column("date", String(10), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("provider", String(200), primary_key=True),
    *(Column(name, Float) for name in PROVIDER_AMOUNTS),
    *(Column(name, BigInteger, nullable=False) for name in PROVIDER_COUNTS),
    *(Column(name, Float) for name in PROVIDER_MEASURES),
    Column("first_archived_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "provider", "date"),
)

# One row per (series, subject, day) fetched, also without activity: an empty day is never a
# gap. Series that one request covers for every subject (account, app, provider) use '*'.
archived_analytics_days = Table(
    "archived_analytics_days",
    metadata,
    Column("series", String(20), primary_key=True),
    Column("subject", String(200), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("row_count", Integer, nullable=False),
    Column("first_archived_at", UTCDateTime, nullable=False),
    Column("last_fetched_at", UTCDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("sync_runs.id")),
    Column("raw_response_id", Integer, ForeignKey("raw_responses.id")),
)

# Display labels as the API last gave them (key name, member name or email, workspace name):
# names that may change, beside the stable ids the series are stored under.
analytics_labels = Table(
    "analytics_labels",
    metadata,
    Column("series", String(20), primary_key=True),
    Column("subject", String(200), primary_key=True),
    Column("label", String(1000), nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
)

analytics_daily_history = _history_table(analytics_daily)
analytics_provider_daily_history = _history_table(analytics_provider_daily)
HISTORY_TABLES[analytics_daily.name] = analytics_daily_history
HISTORY_TABLES[analytics_provider_daily.name] = analytics_provider_daily_history


# -- alerts (issue 12), migration 0006 ---------------------------------------------------------
# One row per alert: (kind, rule, scope, period, threshold) fires once; resolved_at is set
# when it no longer holds (and cleared, without a new notification, if it holds again).
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # budget | forecast | anomaly | new_spender
    Column("rule", String(200), nullable=False),  # the budget's name, or "anomaly"
    Column("scope", String(500), nullable=False),
    Column("period", String(20), nullable=False),
    Column("threshold", String(20), nullable=False),  # "0.8"; "" for anomalies
    Column("value", Float, nullable=False),
    Column("limit_usd", Float),
    Column("baseline", Float),
    Column("text", Text, nullable=False),
    Column("details", Text, nullable=False),  # JSON
    Column("first_fired_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    UniqueConstraint("kind", "rule", "scope", "period", "threshold", name="uq_alerts_identity"),
    Index(None, "resolved_at"),
)

# One row per (alert, notifier), written with the alert, before anything is sent:
# pending -> sending (claimed, committed before the send) -> sent | failed (retried by the
# next check). A row found still "sending" by the next check was interrupted mid-send: its
# delivery is unknown and it becomes "unknown", never sent twice.
alert_notifications = Table(
    "alert_notifications",
    metadata,
    Column("alert_id", Integer, ForeignKey("alerts.id"), primary_key=True),
    Column("notifier", String(100), primary_key=True),
    Column("state", String(20), nullable=False),  # pending | sending | sent | failed | unknown
    Column("attempts", Integer, nullable=False),
    Column("last_attempt_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("last_error", Text),
)


# -- monthly summaries (issue 13), migration 0008 ------------------------------------------
# Per month and (subject,) model, permaslug and provider: the row count and the sums of each
# metric, kept exact by triggers on the base table (etl/summaries.py) so that any writer,
# the load path or a hand-written INSERT, keeps them current in its own transaction. Money
# is summed as whole units of 1e-10 USD (etl/summaries.py: MONEY_UNITS), so that a sum of
# monthly sums is the very same number as one flat sum over the rows.
SUMMARY_MONEY = {"usage": "usage_units", "byok_usage_inference": "byok_usage_units"}
SUMMARY_COUNTS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
SUMMARY_DIMENSIONS = ("model", "model_permaslug", "provider_name")


def _summary_table(base: Table, subject: str | None) -> Table:
    return Table(
        f"{base.name}_monthly",
        metadata,
        Column("month", String(7), primary_key=True),  # YYYY-MM
        *([Column(subject, String(200), primary_key=True)] if subject else []),
        *(Column(name, String(200), primary_key=True) for name in SUMMARY_DIMENSIONS),
        Column("row_count", BigInteger, nullable=False),
        *(Column(name, BigInteger, nullable=False) for name in SUMMARY_MONEY.values()),
        *(Column(name, BigInteger, nullable=False) for name in SUMMARY_COUNTS),  # cached_tokens: NULL counts 0
    )


activity_monthly = _summary_table(activity, None)
SUMMARY_TABLES = {activity.name: activity_monthly}
SUMMARY_SUBJECTS: dict[str, str | None] = {activity.name: None}
for _breakdown, _table in BREAKDOWN_TABLES.items():
    SUMMARY_TABLES[_table.name] = _summary_table(_table, BREAKDOWN_SUBJECTS[_breakdown])
    SUMMARY_SUBJECTS[_table.name] = BREAKDOWN_SUBJECTS[_breakdown]
activity_by_key_monthly = SUMMARY_TABLES[activity_by_key.name]


# -- monthly counts (issue 13), migration 0009 --------------------------------------------
# Per counted table (``activity`` and each breakdown table), subject ('' for ``activity`` and
# the workspace breakdown, which has one mark per day for every workspace) and month: how many
# marks (``archived_days`` / ``archived_breakdown_days``) the month has, how many of them are
# empty, the sum of their ``row_count``, and the rows the monthly summary holds. Triggers on
# the marks and on the summaries keep it exact (etl/counts.py), so that ``status`` reads
# a few rows per month instead of every mark and every summary row.
month_counts = Table(
    "month_counts",
    metadata,
    Column("counted", String(40), primary_key=True),
    Column("subject", String(200), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("marked_days", BigInteger, nullable=False),
    Column("empty_days", BigInteger, nullable=False),
    Column("marked_rows", BigInteger, nullable=False),
    Column("held_rows", BigInteger, nullable=False),
)
DERIVED_TABLES = (*(t.name for t in SUMMARY_TABLES.values()), month_counts.name)
