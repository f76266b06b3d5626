"""Load: write validated days, raw responses, run records and credit snapshots.

Each day is written in one transaction together with its ``archived_days`` mark, as an
idempotent upsert on (date, endpoint_id): a row that did not change is not touched, a
revised row is updated in place, and nothing is ever deleted. Callers own transactions
(``with engine.begin() as conn``) so that a day is committed whole or not at all.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from etl.client import Fetched
from etl.db import upsert
from etl.schema import (
    ACTIVITY_ATTRIBUTES,
    ACTIVITY_METRICS,
    activity,
    archived_days,
    credits_snapshots,
    raw_responses,
    sync_runs,
)

_COMPARED = (*ACTIVITY_ATTRIBUTES, *ACTIVITY_METRICS)


@dataclass(frozen=True)
class RowDiff:
    """How an incoming day relates to what the warehouse already holds."""

    inserted: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    vanished: list[str] = field(default_factory=list)  # archived endpoints the API no longer lists


def diff_rows(existing: Mapping[str, Sequence[Any]], incoming: Iterable[Mapping[str, Any]]) -> RowDiff:
    """Classify incoming rows against existing ones, keyed by endpoint_id.

    ``existing`` maps endpoint_id to the values of ``_COMPARED`` in that order.
    """
    diff = RowDiff()
    seen: set[str] = set()
    unchanged = 0
    for row in incoming:
        endpoint = row["endpoint_id"]
        seen.add(endpoint)
        old = existing.get(endpoint)
        if old is None:
            diff.inserted.append(dict(row))
        elif tuple(old) != tuple(row[c] for c in _COMPARED):
            diff.updated.append(dict(row))
        else:
            unchanged += 1
    vanished = sorted(set(existing) - seen)
    return RowDiff(diff.inserted, diff.updated, unchanged, vanished)


@dataclass(frozen=True)
class DayWrite:
    day: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    vanished: int


def save_day(
    conn: Connection,
    day: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    run_id: int | None = None,
    raw_response_id: int | None = None,
) -> DayWrite:
    """Upsert one day's rows and mark the day archived, inside the caller's transaction."""
    existing = {
        r[0]: r[1:]
        for r in conn.execute(
            select(activity.c.endpoint_id, *(activity.c[c] for c in _COMPARED)).where(activity.c.date == day)
        )
    }
    diff = diff_rows(existing, rows)
    changed = diff.inserted + diff.updated
    if changed:
        stmt = upsert(conn.engine, activity, ("date", "endpoint_id"), (*_COMPARED, "updated_at"))
        conn.execute(stmt, [{**r, "date": day, "first_archived_at": now, "updated_at": now} for r in changed])
    mark = upsert(conn.engine, archived_days, ("date",), ("row_count", "last_fetched_at", "run_id", "raw_response_id"))
    conn.execute(
        mark,
        {
            "date": day,
            "row_count": len(rows),
            "first_archived_at": now,
            "last_fetched_at": now,
            "run_id": run_id,
            "raw_response_id": raw_response_id,
        },
    )
    return DayWrite(day, len(rows), len(diff.inserted), len(diff.updated), diff.unchanged, len(diff.vanished))


def store_raw(conn: Connection, fetched: Fetched, run_id: int | None) -> int:
    """Keep the exact bytes OpenRouter sent, compressed, so any day can be re-derived."""
    result = conn.execute(
        raw_responses.insert().values(
            run_id=run_id,
            fetched_at=fetched.fetched_at,
            endpoint=fetched.path,
            params=json.dumps(fetched.params, sort_keys=True),
            status=fetched.status,
            content_type=fetched.content_type[:200],
            encoding="gzip",
            body=gzip.compress(fetched.body, compresslevel=6, mtime=0),
            body_bytes=len(fetched.body),
            sha256=hashlib.sha256(fetched.body).hexdigest(),
        )
    )
    return int(result.inserted_primary_key[0])


def read_raw(conn: Connection, raw_id: int) -> bytes:
    row = conn.execute(select(raw_responses.c.encoding, raw_responses.c.body).where(raw_responses.c.id == raw_id)).one()
    return gzip.decompress(row.body) if row.encoding == "gzip" else bytes(row.body)


def save_credits(conn: Connection, total_credits: float, total_usage: float, fetched_at: datetime, raw_response_id: int | None) -> None:
    conn.execute(
        credits_snapshots.insert().values(
            fetched_at=fetched_at, total_credits=total_credits, total_usage=total_usage, raw_response_id=raw_response_id
        )
    )


def archived_dates(conn: Connection, first: str | None = None, last: str | None = None) -> set[str]:
    query = select(archived_days.c.date)
    if first:
        query = query.where(archived_days.c.date >= first)
    if last:
        query = query.where(archived_days.c.date <= last)
    return set(conn.execute(query).scalars())


# -- the run log ----------------------------------------------------------------------------


def start_run(engine: Engine, trigger: str, now: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            sync_runs.insert().values(
                started_at=now,
                trigger=trigger,
                outcome="running",
                days_requested=0,
                days_fetched=0,
                requests=0,
                rows_inserted=0,
                rows_updated=0,
                rows_unchanged=0,
            )
        )
        return int(result.inserted_primary_key[0])


def finish_run(engine: Engine, run_id: int, *, now: datetime, outcome: str, error: str | None = None, **counts: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(sync_runs).where(sync_runs.c.id == run_id).values(finished_at=now, outcome=outcome, error=error, **counts)
        )
