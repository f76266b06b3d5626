"""Reports across both sources: `/activity`'s archive, then the Analytics API's year before it.

For an account-level report (no breakdown) grouped by time and/or model, the days the
``activity`` table does not hold are taken from the ``account`` analytics series, so a
report over a year reaches back past the 30 days ``/activity`` served. Nothing is counted
twice: a day ``archived_days`` marks is read from ``activity`` only.

Mapping: ``activity.usage`` ← ``credits_usage``, ``byok_usage_inference`` ← ``byok_usage``,
``requests`` ← ``request_count``, the token columns ← ``tokens_prompt``,
``tokens_completion``, ``reasoning_tokens``, ``cached_tokens``. The analytics ``model`` is
the permaslug; it is mapped to the model id through the (model, permaslug) pairs the
archive holds, using the variant (``:free`` …) where a permaslug has several; an unmapped
permaslug stays itself. Groups the older history cannot give (provider, endpoint) and
provider filters leave the report on ``/activity`` alone, with a note saying so.

Every row gets ``source``: ``activity``, ``analytics`` or ``both`` (a group spanning days
of each).
"""

from __future__ import annotations

import fnmatch
from datetime import date
from typing import Any

from sqlalchemy import Connection, inspect, select

from etl.schema import activity, analytics_daily, archived_days

SUPPORTED = {"date", "week", "month", "year", "model", "permaslug"}
PAIRS = {
    "usage": "credits_usage",
    "byok_usage_inference": "byok_usage",
    "requests": "request_count",
    "prompt_tokens": "tokens_prompt",
    "completion_tokens": "tokens_completion",
    "reasoning_tokens": "reasoning_tokens",
    "cached_tokens": "cached_tokens",
}


def _variant(model: str) -> str:
    return model.partition(":")[2] or "standard"


def model_map(conn: Connection) -> dict[tuple[str, str], str]:
    """(permaslug, variant) -> model id, from the pairs ``activity`` holds (read from its
    monthly summary where there is one: the same pairs, without a scan of every row)."""
    from etl.schema import activity_monthly
    from etl.summaries import tables_present

    t = activity_monthly if tables_present(conn) else activity
    pairs = conn.execute(select(t.c.model_permaslug, t.c.model).distinct())
    return {(permaslug, _variant(model)): model for permaslug, model in pairs}


def _group_value(name: str, day: str, model: str, permaslug: str) -> str:
    if name == "date":
        return day
    if name == "month":
        return day[:7]
    if name == "year":
        return day[:4]
    if name == "week":
        year, week, _ = date.fromisoformat(day).isocalendar()
        return f"{year}-W{week:02d}"
    return model if name == "model" else permaslug


def extend(conn: Connection, spec: Any, rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> tuple[list[dict[str, Any]], str | None]:
    """``rows`` (from ``activity``) plus the analytics history of the days ``activity`` lacks; and a note."""
    if spec.breakdown or not inspect(conn).has_table(analytics_daily.name):
        return rows, None
    unsupported = [g for g in spec.group_by if g not in SUPPORTED]
    t = analytics_daily
    query = select(t.c.date, t.c.model, t.c.variant, *(t.c[c] for c in PAIRS.values())).where(
        t.c.series == "account", t.c.subject == "*", t.c.date.not_in(select(archived_days.c.date))
    )
    if spec.since:
        query = query.where(t.c.date >= spec.since)
    if spec.until:
        query = query.where(t.c.date <= spec.until)
    history = list(conn.execute(query))
    if not history:
        return rows, None
    first, last = min(r[0] for r in history), max(r[0] for r in history)
    if unsupported or spec.providers:
        why = f"group {', '.join(unsupported)}" if unsupported else "a provider filter"
        return rows, f"{first} .. {last} are in the Analytics API history only, which cannot give {why}: those days are left out"
    names = model_map(conn)
    for current in rows:
        current["source"] = "activity"
    by_group = {tuple(r[g] for g in spec.group_by): r for r in rows}
    for day, permaslug, variant, *values in history:
        model = names.get((permaslug, variant or "standard"), permaslug)
        if spec.models and not any(fnmatch.fnmatchcase(model, p) for p in spec.models):
            continue
        key = tuple(_group_value(g, day, model, permaslug) for g in spec.group_by)
        row = by_group.get(key)
        if row is None:
            row = by_group[key] = {**dict(zip(spec.group_by, key)), **{m: 0 for m in metrics}, "source": "analytics"}
            rows.append(row)
        elif row["source"] == "activity":
            row["source"] = "both"
        for metric, value in zip(PAIRS, values):
            row[metric] += value or 0
        row["total_tokens"] += (values[3] or 0) + (values[4] or 0)
    return rows, f"{first} .. {last} come from the Analytics API history (no endpoint or provider detail); `source` in CSV and JSON says which rows"
