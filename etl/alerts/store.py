"""The ``alerts`` table and its per-notifier sent marks: fire once, resolve, send once.

Lifecycle, in one transaction per check: a finding whose (kind, rule, scope, period,
threshold) has no row is inserted with one ``pending`` mark per configured notifier; one
that has a row updates its value and ``last_seen_at`` (and clears ``resolved_at``: it holds
again, without a second notification); an active alert no finding matches is resolved.

Delivery, after that commit, one notification at a time: the mark becomes ``sending``
(committed) before the send, then ``sent`` or ``failed`` (committed) after. A ``failed``
mark is tried again by the next check. A mark still ``sending`` when a check starts (every
check runs under the writer lock, so none is running) was interrupted between the send and
its record: whether it arrived is unknown, and it becomes ``unknown``, reported and never
sent again. So delivery is exactly once, except that a crash in the middle of one send
makes that one at most once (and says so), never twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, update

from etl.alerts.findings import Finding
from etl.schema import alert_notifications, alerts


@dataclass
class Changes:
    fired: list[int]
    resolved: list[int]
    still: list[int]
    interrupted: int = 0
    fired_findings: list[Finding] = field(default_factory=list)


def _row_identity(row: Any) -> tuple[str, str, str, str, str]:
    return (row.kind, row.rule, row.scope, row.period, row.threshold)


def reconcile(conn: Connection, findings: Sequence[Finding], notifiers: Iterable[str], now: datetime) -> Changes:
    """Insert, update and resolve alerts so that the active ones are exactly ``findings``."""
    names = list(notifiers)
    existing = {_row_identity(r): r for r in conn.execute(select(alerts))}
    changes = Changes([], [], [])
    seen = set()
    for f in findings:
        if f.identity in seen:
            continue
        seen.add(f.identity)
        row = existing.get(f.identity)
        values = {
            "value": f.value, "limit_usd": f.limit, "baseline": f.baseline, "text": f.text,
            "details": json.dumps(f.details, sort_keys=True, default=str), "last_seen_at": now,
        }
        if row is None:
            inserted = conn.execute(
                alerts.insert().values(kind=f.kind, rule=f.rule, scope=f.scope, period=f.period, threshold=f.threshold,
                                       first_fired_at=now, resolved_at=None, **values)
            )
            alert_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
            for name in names:
                conn.execute(alert_notifications.insert().values(alert_id=alert_id, notifier=name, state="pending", attempts=0))
            changes.fired.append(alert_id)
            changes.fired_findings.append(f)
        else:
            conn.execute(update(alerts).where(alerts.c.id == row.id).values(resolved_at=None, **values))
            changes.still.append(row.id)
    for identity, row in existing.items():
        if identity not in seen and row.resolved_at is None:
            conn.execute(update(alerts).where(alerts.c.id == row.id).values(resolved_at=now))
            changes.resolved.append(row.id)
    return changes


def mark_interrupted(conn: Connection) -> int:
    """Marks left ``sending`` by a check that died mid-send become ``unknown``; how many."""
    result = conn.execute(
        update(alert_notifications).where(alert_notifications.c.state == "sending").values(
            state="unknown", last_error="interrupted while sending: delivery unknown, not repeated"
        )
    )
    return int(result.rowcount or 0)


def due(conn: Connection, notifiers: Iterable[str]) -> list[tuple[int, str, dict[str, Any]]]:
    """(alert id, notifier, alert document) for every mark still to send (pending or failed)."""
    n = alert_notifications
    query = select(alerts, n.c.notifier).join(n, n.c.alert_id == alerts.c.id).where(
        n.c.state.in_(("pending", "failed")), n.c.notifier.in_(list(notifiers))
    ).order_by(alerts.c.id, n.c.notifier)
    return [(row.id, row.notifier, document(row)) for row in conn.execute(query)]


def claim(engine: Engine, alert_id: int, notifier: str, now: datetime) -> None:
    n = alert_notifications
    with engine.begin() as conn:
        conn.execute(update(n).where(and_(n.c.alert_id == alert_id, n.c.notifier == notifier)).values(
            state="sending", attempts=n.c.attempts + 1, last_attempt_at=now))


def record(engine: Engine, alert_id: int, notifier: str, now: datetime, error: str | None) -> None:
    n = alert_notifications
    values: dict[str, Any] = {"state": "failed", "last_error": error} if error else {"state": "sent", "sent_at": now, "last_error": None}
    with engine.begin() as conn:
        conn.execute(update(n).where(and_(n.c.alert_id == alert_id, n.c.notifier == notifier)).values(**values))


def document(row: Any) -> dict[str, Any]:
    """The alert as notifiers send it and `alerts list --json` would show it."""
    return {
        "kind": row.kind,
        "rule": row.rule,
        "scope": row.scope,
        "period": row.period,
        "threshold": float(row.threshold) if row.threshold else None,
        "value": round(row.value, 6),
        "limit": None if row.limit_usd is None else round(row.limit_usd, 6),
        "baseline": None if row.baseline is None else round(row.baseline, 6),
        "text": row.text,
        "first_fired_at": row.first_fired_at.isoformat(timespec="seconds"),
        "details": json.loads(row.details),
    }


@dataclass
class Listed:
    id: int
    kind: str
    text: str
    first_fired_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    value: float
    limit: float | None
    threshold: str
    marks: dict[str, str]


def listed(conn: Connection, *, everything: bool = False) -> list[Listed]:
    query = select(alerts).order_by(alerts.c.first_fired_at, alerts.c.id)
    if not everything:
        query = query.where(alerts.c.resolved_at.is_(None))
    rows = list(conn.execute(query))
    marks: dict[int, dict[str, str]] = {}
    if rows:
        n = alert_notifications
        for alert_id, notifier, state in conn.execute(select(n.c.alert_id, n.c.notifier, n.c.state).where(n.c.alert_id.in_([r.id for r in rows]))):
            marks.setdefault(alert_id, {})[notifier] = state
    return [Listed(r.id, r.kind, r.text, r.first_fired_at, r.last_seen_at, r.resolved_at, r.value, r.limit_usd, r.threshold, marks.get(r.id, {})) for r in rows]
