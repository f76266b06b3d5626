"""The API's retention window, in UTC calendar days (pure, no I/O).

``GET /activity`` serves the 30 *completed* UTC days before today: today−30 … today−1.
A day older than that is gone from OpenRouter for good.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

WINDOW_DAYS = 30


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def completed_window(today: date, days: int = WINDOW_DAYS) -> tuple[date, date]:
    """First and last day OpenRouter still serves: today−30 … today−1."""
    return today - timedelta(days=days), today - timedelta(days=1)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
