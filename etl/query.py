"""Read the archive: grouped spend summaries for the terminal."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from etl.schema import activity

GROUPS = {"model": activity.c.model, "provider": activity.c.provider_name, "date": activity.c.date}


@dataclass(frozen=True)
class SpendRow:
    group: str
    usage: float
    byok_usage_inference: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


def spend_by(conn: Connection, group: str = "model", since: str | None = None, until: str | None = None) -> list[SpendRow]:
    """Spend and volume per group, biggest spend first. BYOK spend stays a separate column."""
    key = GROUPS[group]
    query = select(
        key,
        func.sum(activity.c.usage),
        func.sum(activity.c.byok_usage_inference),
        func.sum(activity.c.requests),
        func.sum(activity.c.prompt_tokens),
        func.sum(activity.c.completion_tokens),
        func.sum(activity.c.reasoning_tokens),
    ).group_by(key)
    if since:
        query = query.where(activity.c.date >= since)
    if until:
        query = query.where(activity.c.date <= until)
    rows = [SpendRow(r[0], r[1] or 0.0, r[2] or 0.0, r[3] or 0, r[4] or 0, r[5] or 0, r[6] or 0) for r in conn.execute(query)]
    return sorted(rows, key=lambda r: (-r.usage, -r.byok_usage_inference, r.group))
