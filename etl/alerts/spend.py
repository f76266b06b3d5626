"""Daily spend from the archive, by dimension, and today's partial spend.

Sources per dimension (``metric`` total_usage = credits + BYOK, usage = credits only):

* ``account`` and ``model``: ``activity`` for the days ``archived_days`` holds, the
  Analytics API's ``account`` series for the days it holds and ``activity`` does not
  (permaslugs mapped to model ids as ``etl.query_history`` does);
* ``key``, ``member``, ``workspace``: the breakdown tables (``activity_by_*``) when that
  breakdown is archived, else the Analytics API series of the same name;
* ``app``: the Analytics API's ``app`` series (``/activity`` has no app).

Today's partial spend: the Analytics API with granularity ``hour`` for the current UTC day,
by model and the scope's subject. When the Analytics API is off or fails, an unscoped
budget uses the credit balance instead: today's spend is the change of
``GET /credits``'s ``total_usage`` since the first snapshot taken today (the check stores a
snapshot each time), so it counts from that snapshot on: a lower bound, credits only.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, func, select

from etl.query_history import model_map
from etl.schema import (
    BREAKDOWN_SUBJECTS,
    BREAKDOWN_TABLES,
    activity,
    analytics_daily,
    analytics_labels,
    api_keys,
    archived_analytics_days,
    archived_breakdown_days,
    archived_days,
    credits_snapshots,
)

log = logging.getLogger(__name__)

DIMENSIONS = ("model", "key", "member", "workspace", "app")


@dataclass(frozen=True)
class SpendRow:
    day: date
    subject: str  # model id, key hash, user id, workspace id, app title; "*" for account rows
    label: str  # what people call it (key name, e-mail...); the subject when nothing better
    model: str  # model id (or the permaslug when no id is known)
    permaslug: str
    amount: float


@dataclass
class DimensionSpend:
    rows: list[SpendRow]
    held: set[date]  # days the archive holds for this dimension (a missing subject spent $0)


def _amount(metric: str, credits: float | None, byok: float | None) -> float:
    return (credits or 0.0) + ((byok or 0.0) if metric == "total_usage" else 0.0)


def _variant(model: str) -> str:
    return model.partition(":")[2] or "standard"


def _analytics(conn: Connection, series: str, metric: str, first: date, last: date, skip: set[date],
               labels: dict[str, str], models: dict[tuple[str, str], str]) -> tuple[list[SpendRow], set[date]]:
    t = analytics_daily
    held_q = select(archived_analytics_days.c.date).where(
        archived_analytics_days.c.series == series, archived_analytics_days.c.date.between(first.isoformat(), last.isoformat())
    ).distinct()
    held = {date.fromisoformat(d) for (d,) in conn.execute(held_q)} - skip
    if not held:
        return [], set()
    query = select(t.c.date, t.c.subject, t.c.model, t.c.variant, t.c.credits_usage, t.c.byok_usage, t.c.total_usage).where(
        t.c.series == series, t.c.date.between(first.isoformat(), last.isoformat())
    )
    rows = []
    for day, subject, permaslug, variant, credits, byok, total in conn.execute(query):
        d = date.fromisoformat(day)
        if d not in held:
            continue
        amount = (total if total is not None else _amount("total_usage", credits, byok)) if metric == "total_usage" else (credits or 0.0)
        model = models.get((permaslug, variant or "standard")) or next((m for (p, _), m in models.items() if p == permaslug), permaslug)
        rows.append(SpendRow(d, subject, labels.get(subject, subject), model, permaslug, amount))
    return rows, held


def _labels(conn: Connection, series: str) -> dict[str, str]:
    query = select(analytics_labels.c.subject, analytics_labels.c.label).where(analytics_labels.c.series == series)
    return dict(conn.execute(query).all())


def daily_spend(conn: Connection, dimension: str, metric: str, first: date, last: date) -> DimensionSpend:
    """Spend per day in ``first`` … ``last`` for ``dimension`` (``account`` or one of DIMENSIONS)."""
    models = model_map(conn)
    span = (first.isoformat(), last.isoformat())
    if dimension in ("account", "model"):
        held = {date.fromisoformat(d) for (d,) in conn.execute(select(archived_days.c.date).where(archived_days.c.date.between(*span)))}
        a = activity
        query = select(a.c.date, a.c.model, a.c.model_permaslug, a.c.usage, a.c.byok_usage_inference).where(a.c.date.between(*span))
        rows = [SpendRow(date.fromisoformat(d), m, m, m, p, _amount(metric, u, b)) for d, m, p, u, b in conn.execute(query)]
        older, older_held = _analytics(conn, "account", metric, first, last, held, {}, models)
        rows += [SpendRow(r.day, r.model, r.model, r.model, r.permaslug, r.amount) for r in older]
        return DimensionSpend(rows, held | older_held)
    if dimension in BREAKDOWN_TABLES:
        marks = archived_breakdown_days
        held_q = select(marks.c.date).where(marks.c.breakdown == dimension, marks.c.date.between(*span)).distinct()
        held = {date.fromisoformat(d) for (d,) in conn.execute(held_q)}
        if held:
            table, column = BREAKDOWN_TABLES[dimension], BREAKDOWN_SUBJECTS[dimension]
            labels = dict(conn.execute(select(api_keys.c.hash, api_keys.c.name)).all()) if dimension == "key" else _labels(conn, dimension)
            subject = table.c[column]
            query = select(table.c.date, subject, table.c.model, table.c.model_permaslug, table.c.usage, table.c.byok_usage_inference).where(
                table.c.date.between(*span)
            )
            rows = [
                SpendRow(date.fromisoformat(r[0]), r[1], str(labels.get(r[1], r[1])), r[2], r[3], _amount(metric, r[4], r[5]))
                for r in conn.execute(query)
            ]
            return DimensionSpend(rows, held)
    labels = _labels(conn, dimension)
    if dimension == "key":
        labels = {**labels, **dict(conn.execute(select(api_keys.c.hash, api_keys.c.name)).all())}
    rows, held = _analytics(conn, dimension, metric, first, last, set(), labels, models)
    return DimensionSpend(rows, held)


def matches(pattern: str, *values: str) -> bool:
    return any(fnmatch.fnmatchcase(v, pattern) for v in values if v)


def in_scope(row: SpendRow, scope: Iterable[tuple[str, str]]) -> bool:
    for name, pattern in scope:
        if name == "model":
            if not matches(pattern, row.model, row.permaslug):
                return False
        elif not matches(pattern, row.subject, row.label):
            return False
    return True


def scope_dimension(scope: Iterable[tuple[str, str]]) -> str:
    """The table a scope is read from: its subject field, else model, else the account."""
    names = [n for n, _ in scope]
    return next((n for n in names if n != "model"), "model" if names else "account")


# -- today ---------------------------------------------------------------------------------------

_HOURLY_DIMENSION = {"account": [], "model": [], "key": ["api_key_id"], "member": ["user"], "workspace": ["workspace"], "app": ["app"]}


@dataclass
class Today:
    """Today's partial spend per dimension (None: unavailable), and where it came from."""

    rows: dict[str, list[SpendRow] | None] = field(default_factory=dict)
    credits_delta: float | None = None
    credits_since: datetime | None = None
    notes: list[str] = field(default_factory=list)

    def source(self, dimension: str) -> str:
        if self.rows.get(dimension) is not None:
            return "analytics (hourly)"
        if dimension == "account" and self.credits_delta is not None:
            since = self.credits_since.strftime("%H:%M") if self.credits_since else "now"
            return f"credit balance since {since} UTC"
        return "none"


def hourly_rows(client: Any, dimension: str, metric: str, now: datetime, models: dict[tuple[str, str], str]) -> list[SpendRow]:
    """Today's spend by the Analytics API (granularity ``hour``), as rows of the dimension."""
    midnight = datetime.combine(now.date(), time(), tzinfo=timezone.utc)
    body = {
        "metrics": ["total_usage", "credits_usage"],
        "dimensions": [*_HOURLY_DIMENSION[dimension], "model"],
        "granularity": "hour",
        "time_range": {"start": midnight.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": (midnight + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "limit": 10_000,
    }
    fetched = client.analytics_query(body)
    document = fetched.document if isinstance(fetched.document, dict) else {}
    answer = document.get("data") if isinstance(document.get("data"), dict) else {}
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        from etl.errors import InvalidResponseError

        raise InvalidResponseError("POST /analytics/query (hourly): unexpected body")
    by_permaslug: dict[str, str] = {}
    for (permaslug, _variant_name), model in sorted(models.items()):
        by_permaslug.setdefault(permaslug, model)
    out = []
    key = _HOURLY_DIMENSION[dimension][0] if _HOURLY_DIMENSION[dimension] else None
    for item in items:
        if not isinstance(item, dict):
            continue
        permaslug = str(item.get("model") or "")
        model = by_permaslug.get(permaslug, permaslug)
        credits = float(item.get("credits_usage") or 0.0)
        total = item.get("total_usage")
        amount = (float(total) if total is not None else credits) if metric == "total_usage" else credits
        subject = str(item.get(key) or "") if key else (model if dimension == "model" else "*")
        out.append(SpendRow(now.date(), subject, subject, model, permaslug, amount))
    return out


def credits_today(conn: Connection, client: Any, now: datetime) -> tuple[float, datetime]:
    """Store a credits snapshot; today's spend since the first snapshot of today (credits only)."""
    from etl import warehouse

    fetched = client.credits()
    data = fetched.document.get("data") if isinstance(fetched.document, dict) else None
    try:
        used = float(data["total_usage"])  # type: ignore[index]
        total = float(data["total_credits"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        from etl.errors import InvalidResponseError

        raise InvalidResponseError("GET /credits: unexpected body") from None
    midnight = datetime.combine(now.date(), time(), tzinfo=timezone.utc)
    c = credits_snapshots.c
    first = conn.execute(
        select(c.fetched_at, c.total_usage).where(c.fetched_at >= midnight).order_by(c.fetched_at, c.id).limit(1)
    ).first()
    raw_id = warehouse.store_raw(conn, fetched, None)
    warehouse.save_credits(conn, total, used, fetched.fetched_at, raw_id)
    if first is None:
        return 0.0, fetched.fetched_at
    return max(0.0, used - float(first.total_usage)), first.fetched_at


def count_rows(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(activity)).scalar_one())
