"""Status of the Analytics API archive: what each series holds, and whether the sources agree.

* Coverage, per series: subjects, first and last day held, days still fetchable but not
  archived (``missing``: the next sync gets them) and holes older than the API's reach
  (``lost``: gone from OpenRouter for good).
* Reconciliation: for every day both ``/activity`` and the account series hold, per day and
  model (the permaslug), ``credits_usage`` ↔ ``usage``, ``byok_usage`` ↔
  ``byok_usage_inference``, ``request_count`` ↔ ``requests`` and the token columns. Any
  difference in a count, or above float noise in USD, is listed; a count difference or one
  of more than a cent is a health problem (``status --check`` exits 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from etl.schema import activity, analytics_daily, archived_analytics_days, archived_days

CENT = 0.01
NOISE = 1e-6  # float sums taken in another order differ by far less than this

# (analytics metric, /activity column, is money)
PAIRS = (
    ("credits_usage", "usage", True),
    ("byok_usage", "byok_usage_inference", True),
    ("request_count", "requests", False),
    ("tokens_prompt", "prompt_tokens", False),
    ("tokens_completion", "completion_tokens", False),
    ("reasoning_tokens", "reasoning_tokens", False),
)
REACH = {"provider": 31}
DEFAULT_REACH = 365


def _ranges(days: Iterable[date]) -> list[str]:
    out: list[list[date]] = []
    for day in sorted(set(days)):
        if out and (day - out[-1][1]).days == 1:
            out[-1][1] = day
        else:
            out.append([day, day])
    return [a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in out]


def coverage(conn: Connection, today: date) -> dict[str, dict[str, Any]]:
    """Per series: subjects, days held, first/last day, missing days within reach, lost holes."""
    t = archived_analytics_days
    held: dict[str, dict[str, set[date]]] = {}
    for series, subject, day in conn.execute(select(t.c.series, t.c.subject, t.c.date)):
        held.setdefault(series, {}).setdefault(subject, set()).add(date.fromisoformat(day))
    out: dict[str, dict[str, Any]] = {}
    for series, subjects in sorted(held.items()):
        first_in_reach = today - timedelta(days=REACH.get(series, DEFAULT_REACH))
        yesterday = today - timedelta(days=1)
        all_days = set().union(*subjects.values())
        missing: list[date] = []
        lost: list[date] = []
        for days in subjects.values():
            start = min(min(days), first_in_reach)
            day = start
            while day <= yesterday:
                if day not in days:
                    (missing if day >= first_in_reach else lost).append(day)
                day += timedelta(days=1)
        # A hole older than the reach is lost only when it lies between days held.
        lost = [d for d in lost if d > min(all_days)]
        out[series] = {
            "subjects": len(subjects),
            "days": len(all_days),
            "first_day": min(all_days).isoformat(),
            "last_day": max(all_days).isoformat(),
            "missing": _ranges(missing),
            "missing_days": len(missing),
            "lost": _ranges(lost),
        }
    return out


def reconcile(conn: Connection) -> dict[str, Any]:
    """Disagreements between /activity and the account series, per overlapping day and model."""
    a, m = archived_days, archived_analytics_days
    overlap = select(a.c.date).join(m, and_(m.c.date == a.c.date, m.c.series == "account", m.c.subject == "*"))
    days = [d for (d,) in conn.execute(overlap)]
    if not days:
        return {"days_checked": 0, "disagreements": [], "failing": 0}
    act: dict[tuple[str, str], tuple[Any, ...]] = {
        (r[0], r[1]): tuple(r[2:])
        for r in conn.execute(
            select(activity.c.date, activity.c.model_permaslug, *(func.sum(activity.c[col]) for _, col, _ in PAIRS))
            .where(activity.c.date.in_(overlap))
            .group_by(activity.c.date, activity.c.model_permaslug)
        )
    }
    ana: dict[tuple[str, str], tuple[Any, ...]] = {
        (r[0], r[1]): tuple(r[2:])
        for r in conn.execute(
            select(analytics_daily.c.date, analytics_daily.c.model, *(func.sum(analytics_daily.c[metric]) for metric, _, _ in PAIRS))
            .where(analytics_daily.c.series == "account", analytics_daily.c.subject == "*", analytics_daily.c.date.in_(overlap))
            .group_by(analytics_daily.c.date, analytics_daily.c.model)
        )
    }
    found = []
    for day, model in sorted(set(act) | set(ana)):
        left = act.get((day, model)) or (0,) * len(PAIRS)
        right = ana.get((day, model)) or (0,) * len(PAIRS)
        for (metric, column, money), x, y in zip(PAIRS, left, right):
            x, y = x or 0, y or 0
            difference = y - x
            if (money and abs(difference) > NOISE) or (not money and difference != 0):
                found.append({
                    "date": day, "model": model, "metric": metric, "activity_column": column,
                    "activity": round(x, 10) if money else int(x), "analytics": round(y, 10) if money else int(y),
                    "difference": round(difference, 10) if money else int(difference),
                    "failing": (abs(difference) > CENT) if money else True,
                })
    return {"days_checked": len(days), "disagreements": found, "failing": sum(f["failing"] for f in found)}


def problems(reconciliation: dict[str, Any]) -> list[str]:
    failing = [d for d in reconciliation.get("disagreements", []) if d["failing"]]
    if not failing:
        return []
    days = sorted({d["date"] for d in failing})
    return [
        f"/activity and the Analytics API disagree on {len(failing)} (day, model, metric) value(s) over {len(days)} day(s) "
        f"(first {days[0]}); see `status` for each"
    ]


def lines(cover: dict[str, dict[str, Any]], reconciliation: dict[str, Any]) -> list[str]:
    """Status lines for `status` (text)."""
    out = []
    for series, c in cover.items():
        subjects = f", {c['subjects']} subject(s)" if c["subjects"] > 1 or series in ("key", "member", "workspace") else ""
        text = f"{'analytics':<14}{series}: {c['days']} day(s), {c['first_day']} .. {c['last_day']}{subjects}"
        text += f"; to fetch: {', '.join(c['missing'][:4])}" if c["missing"] else "; to fetch: none"
        if c["lost"]:
            text += f"; lost: {', '.join(c['lost'][:4])}"
        out.append(text)
    if reconciliation.get("days_checked"):
        found = reconciliation["disagreements"]
        if not found:
            out.append(f"{'reconciled':<14}{reconciliation['days_checked']} day(s) in both sources: /activity and the Analytics API agree per day and model")
        else:
            out.append(f"{'reconciled':<14}{reconciliation['days_checked']} day(s) in both sources: {len(found)} disagreement(s) (day, model, metric: /activity vs analytics):")
            for d in found[:8]:
                out.append(f"{'':14}{d['date']} {d['model']} {d['metric']}: {d['activity']} vs {d['analytics']} ({d['difference']:+})")
            if len(found) > 8:
                out.append(f"{'':14}… {len(found) - 8} more (status --json lists them all)")
    return out
