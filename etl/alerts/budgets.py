"""Budget rules, pure: the period a day belongs to, the forecast, and which thresholds hold.

Periods are UTC: ``day``, ``week`` (ISO, from Monday) and ``month``. Spend so far is the
archived complete days of the period plus today's partial spend.

Forecast (documented in the README): spend so far + (mean daily spend of the last 7
complete days) x (days left in the period, the rest of today included, as a fraction).
It needs at least 3 of those 7 days in the archive; with fewer there is no forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone

from etl.alerts.config import Budget
from etl.alerts.findings import Finding, usd

FORECAST_DAYS = 7
FORECAST_MIN_DAYS = 3


def period_bounds(period: str, today: date) -> tuple[date, date, str]:
    """(first day, day after the last, label) of the period holding ``today``."""
    if period == "day":
        return today, today + timedelta(days=1), today.isoformat()
    if period == "week":
        first = today - timedelta(days=today.weekday())
        year, week, _ = today.isocalendar()
        return first, first + timedelta(days=7), f"{year}-W{week:02d}"
    if period == "month":
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return first, following, today.strftime("%Y-%m")
    raise ValueError(f"unknown period {period!r}")


def days_left(now: datetime, end: date) -> float:
    """Days from ``now`` to the period's end (midnight UTC of ``end``), as a fraction."""
    end_moment = datetime.combine(end, time(), tzinfo=timezone.utc)
    return max(0.0, (end_moment - now).total_seconds() / 86400)


def forecast(spent: float, recent_days: Sequence[float], now: datetime, end: date) -> float | None:
    """Spend so far + mean of the recent complete days x days left; None below 3 days of data."""
    recent = list(recent_days)[-FORECAST_DAYS:]
    if len(recent) < FORECAST_MIN_DAYS:
        return None
    return spent + sum(recent) / len(recent) * days_left(now, end)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def evaluate(budget: Budget, spent: float, recent_days: Sequence[float], now: datetime, *, today_source: str = "") -> list[Finding]:
    """Every (threshold, actual or forecast) of ``budget`` that holds now."""
    first, end, label = period_bounds(budget.period, now.date())
    scope = budget.scope_text
    where = "" if scope == "*" else f" ({scope})"
    details = {"period_start": first.isoformat(), "period_end": (end - timedelta(days=1)).isoformat(), "spent": spent,
               "metric": budget.metric, "limit_usd": budget.limit_usd, "today_source": today_source}
    out = []
    for fraction in budget.thresholds:
        limit = budget.limit_usd * fraction
        if spent >= limit:
            text = (f'budget "{budget.name}"{where}: {usd(spent)} of {usd(budget.limit_usd)} ({_pct(spent / budget.limit_usd)}) '
                    f"in {budget.period} {label}, at or over its {_pct(fraction)} threshold")
            out.append(Finding("budget", budget.name, scope, label, f"{fraction:g}", spent, limit, text=text, details=details))
    projected = forecast(spent, recent_days, now, end) if budget.forecast else None
    if projected is not None:
        for fraction in budget.thresholds:
            limit = budget.limit_usd * fraction
            if projected >= limit:
                text = (f'budget "{budget.name}"{where}: forecast {usd(projected)} of {usd(budget.limit_usd)} '
                        f"({_pct(projected / budget.limit_usd)}) for {budget.period} {label} crosses its {_pct(fraction)} "
                        f"threshold ({usd(spent)} so far)")
                extra = {**details, "forecast": projected, "recent_days": list(recent_days)[-FORECAST_DAYS:]}
                out.append(Finding("forecast", budget.name, scope, label, f"{fraction:g}", projected, limit, text=text, details=extra))
    return out
