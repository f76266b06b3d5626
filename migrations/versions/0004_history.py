"""History tables; rows that older versions double counted are retired.

``activity`` and the breakdown tables keep only the current rows: OpenRouter's latest
answer for each day. Every superseded version goes to ``<table>_history`` (``revised``:
the values before an in-place revision; ``retired``: a row the latest answer no longer
lists), with when and by which fetch.

Older versions never removed a row, so a day whose answer stopped listing an endpoint
(its id changed, or the day shrank) kept the old row beside the new ones and was counted
twice. The upgrade repairs that exactly from the stored answers: for every archived day
(and breakdown subject) whose latest raw response is kept, the rows that response does
not list are moved to history, superseded by that fetch. A day whose response is gone
cannot be repaired; ``status`` flags it (its row count differs from ``row_count``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic import op

from etl.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Current table -> its subject column (None for the account-level table).
TABLES = {"activity": None, "activity_by_key": "api_key_hash", "activity_by_workspace": "workspace_id", "activity_by_member": "user_id"}
BREAKDOWNS = {"activity_by_key": "key", "activity_by_workspace": "workspace", "activity_by_member": "member"}
VALUES = (
    "model", "model_permaslug", "provider_name", "usage", "byok_usage_inference", "requests", "prompt_tokens",
    "completion_tokens", "reasoning_tokens", "cached_tokens", "first_archived_at", "updated_at",
)


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


def _keys(subject: str | None) -> list[str]:
    return ["date", *([subject] if subject else []), "endpoint_id"]


def upgrade() -> None:
    for table, subject in TABLES.items():
        name = f"{table}_history"
        op.create_table(
            name,
            sa.Column("id", sa.Integer(), autoincrement=True),
            *(sa.Column(c, sa.String(200 if c != "date" else 10), nullable=False) for c in _keys(subject)),
            *_activity_columns(),
            sa.Column("superseded_at", UTCDateTime(), nullable=False),
            sa.Column("superseded_by_run", sa.Integer()),
            sa.Column("superseded_by_raw_response_id", sa.Integer()),
            sa.Column("reason", sa.String(10), nullable=False),
            sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
            sa.ForeignKeyConstraint(["superseded_by_run"], ["sync_runs.id"], name=f"fk_{name}_run"),
            sa.ForeignKeyConstraint(["superseded_by_raw_response_id"], ["raw_responses.id"], name=f"fk_{name}_raw"),
        )
        op.create_index(f"ix_{name}_date", name, ["date"])
    retire_unlisted_rows(op.get_bind(), datetime.now(timezone.utc))


def downgrade() -> None:
    conn = op.get_bind()
    for table, subject in reversed(list(TABLES.items())):
        name = f"{table}_history"
        # Retired rows go back where older versions kept them, so that the downgrade loses
        # no row; earlier versions of revised rows have no place there and are dropped.
        columns = ", ".join([*_keys(subject), *VALUES])
        same = " AND ".join(f"o.{c} = h.{c}" for c in _keys(subject))
        conn.execute(
            sa.text(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {name} h WHERE h.reason = 'retired' "
                f"AND h.id = (SELECT max(o.id) FROM {name} o WHERE o.reason = 'retired' AND {same}) "
                f"AND NOT EXISTS (SELECT 1 FROM {table} o WHERE {same})"
            )
        )
        op.drop_index(f"ix_{name}_date", table_name=name)
        op.drop_table(name)


# -- the repair ------------------------------------------------------------------------------


def retire_unlisted_rows(conn: sa.Connection, now: datetime) -> None:
    """Move every current row that its day's latest stored answer does not list to history."""
    marks = conn.execute(sa.text("SELECT date, NULL, run_id, raw_response_id FROM archived_days WHERE raw_response_id IS NOT NULL"))
    _repair(conn, "activity", marks, now)
    for table, breakdown in BREAKDOWNS.items():
        marks = conn.execute(
            sa.text("SELECT date, subject, run_id, raw_response_id FROM archived_breakdown_days WHERE breakdown = :b AND raw_response_id IS NOT NULL"),
            {"b": breakdown},
        )
        _repair(conn, table, marks, now)


def _repair(conn: sa.Connection, table: str, marks: Iterable[Any], now: datetime) -> None:
    subject = TABLES[table]
    whole_day = table == "activity_by_workspace"  # one answer lists every workspace of the day
    by_raw: dict[int, list[tuple[str, str | None, int | None]]] = {}
    for day, who, run_id, raw_id in marks:
        by_raw.setdefault(raw_id, []).append((day, who, run_id))
    keys = _keys(subject)
    columns = ", ".join([*keys, *VALUES])
    match = " AND ".join(f"{c} = :{c}" for c in keys)
    move = sa.text(
        f"INSERT INTO {table}_history ({columns}, superseded_at, superseded_by_run, superseded_by_raw_response_id, reason) "
        # Typed, so that PostgreSQL need not guess the type of a NULL run.
        f"SELECT {columns}, :now, CAST(:run AS INTEGER), CAST(:raw AS INTEGER), 'retired' FROM {table} WHERE {match}"
    ).bindparams(sa.bindparam("now", type_=UTCDateTime()))
    drop = sa.text(f"DELETE FROM {table} WHERE {match}")
    for raw_id, days in sorted(by_raw.items()):  # one body in memory at a time
        listed = _listed(conn, raw_id, "workspace_id" if whole_day else None)
        if listed is None:
            continue
        for day, who, run_id in days:
            if day in listed.unreadable:
                continue
            scope = "" if whole_day or subject is None else f" AND {subject} = :who"
            params = {"day": day, **({"who": who} if scope else {})}
            held = conn.execute(sa.text(f"SELECT {', '.join(keys)} FROM {table} WHERE date = :day{scope}"), params)
            gone = [dict(zip(keys, r)) for r in held if (r[1:] if whole_day else r[-1]) not in listed.days.get(day, set())]
            if gone:
                conn.execute(move, [{**g, "now": now, "run": run_id, "raw": raw_id} for g in gone])
                conn.execute(drop, gone)


class _Listing:
    def __init__(self) -> None:
        self.days: dict[str, set[Any]] = {}
        self.unreadable: set[str] = set()


def _listed(conn: sa.Connection, raw_id: int, pair: str | None) -> _Listing | None:
    """Per day, the endpoint ids (or (workspace_id, endpoint_id) pairs) a stored answer lists."""
    row = conn.execute(sa.text("SELECT encoding, body FROM raw_responses WHERE id = :id"), {"id": raw_id}).first()
    if row is None:
        return None
    try:
        content = gzip.decompress(row[1]) if row[0] == "gzip" else bytes(row[1])
        document = json.loads(content)
    except (OSError, EOFError, ValueError):
        return None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return None
    listing = _Listing()
    for item in data:
        day = item.get("date") if isinstance(item, dict) else None
        if not isinstance(day, str):
            return None  # older versions archived no day of such an answer
        day = day.strip()[:10]  # 'YYYY-MM-DD' or 'YYYY-MM-DD 00:00:00'
        endpoint, scope = item.get("endpoint_id"), item.get(pair) if pair else None
        if not isinstance(endpoint, str) or (pair and not isinstance(scope, str)):
            listing.unreadable.add(day)
            continue
        listing.days.setdefault(day, set()).add((scope, endpoint) if pair else endpoint)
    return listing
