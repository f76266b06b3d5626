"""Active alerts for ``status``: lines to show, and whether ``status --check`` must fail
(an active budget alert at or over 100% of its limit). A warehouse older than the alerts
table (``status`` never migrates) simply has none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, inspect

from etl.alerts import store


def active_alerts(engine: Engine) -> tuple[list[dict[str, Any]], bool]:
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alerts"):
                return [], False
            rows = store.listed(conn)
    except Exception:  # a missing or unreadable file: status reports that on its own
        return [], False
    items = [{"id": r.id, "kind": r.kind, "text": r.text, "first_fired_at": r.first_fired_at.isoformat(timespec="seconds")} for r in rows]
    over = any(r.kind == "budget" and r.threshold and float(r.threshold) >= 1.0 for r in rows)
    return items, over


def lines(items: list[dict[str, Any]], over: bool) -> list[str]:
    if not items:
        return ["alerts        none active"]
    head = f"alerts        {len(items)} active" + ("; WARNING: a budget is at or over its limit" if over else "")
    return [head, *(f"              {i['kind']}: {i['text']}" for i in items)]
