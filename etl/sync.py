"""Sync: decide which completed days to fetch, fetch them, validate, load.

The API window is the 30 completed UTC days before today (today−30 … today−1); a day
older than that is gone from OpenRouter for good, so the warehouse is its only copy and
is never touched again. A sync fetches every day of the window not yet archived plus the
``refetch_days`` most recent ones (late data); a backfill fetches the whole window, or its
last N days.

Requests: one ``GET /activity`` without ``date`` returns the whole window, so any plan of
two or more days costs a single request; a plan of exactly one day asks for that day
alone (``date=``), which keeps the response small. Days of the response that were not
planned are left alone (the raw response still keeps them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl import warehouse
from etl.analytics import AnalyticsResult, details_json
from etl.breakdowns import BreakdownResult, run_breakdowns
from etl.client import OpenRouterClient
from etl.config import SyncConfig
from etl.db import describe_failure
from etl.errors import ArchiveError, Interrupted, WarehouseError
from etl.validate import parse_activity
from etl.window import completed_window, days_between

log = logging.getLogger(__name__)

DayStatus = Literal["archived", "rejected", "failed"]


def plan_sync(today: date, archived: Iterable[str], refetch_days: int) -> list[date]:
    """Days a sync fetches: missing ones in the window, plus the most recent ``refetch_days``."""
    first, last = completed_window(today)
    have = set(archived)
    recent = set(days_between(last - timedelta(days=refetch_days - 1), last)) if refetch_days > 0 else set()
    return [d for d in days_between(first, last) if d.isoformat() not in have or d in recent]


def plan_backfill(today: date, days: int | None = None) -> list[date]:
    first, last = completed_window(today)
    if days is not None:
        first = max(first, last - timedelta(days=days - 1))
    return days_between(first, last)


def plan_requests(days: list[date], api_window: tuple[date, date]) -> list[tuple[date | None, tuple[date, date]]]:
    """(date parameter, window the answer covers) per request: one request whatever the plan.

    Without ``date`` the answer is the whole API window; its unplanned days are not loaded.
    """
    if not days:
        return []
    if len(days) == 1:
        return [(days[0], (days[0], days[0]))]
    return [(None, api_window)]


@dataclass(frozen=True)
class DayOutcome:
    day: str
    status: DayStatus
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    retired: int = 0  # rows the API no longer lists, moved to activity_history


@dataclass
class SyncReport:
    run_id: int
    trigger: str
    planned: list[str]
    outcomes: list[DayOutcome] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False
    breakdowns: list[BreakdownResult] = field(default_factory=list)
    analytics: AnalyticsResult | None = None

    @property
    def ok(self) -> bool:
        archived = {o.day for o in self.outcomes if o.status == "archived"}
        analytics_ok = self.analytics is None or self.analytics.ok
        return self.error is None and archived >= set(self.planned) and all(b.ok for b in self.breakdowns) and analytics_ok

    def total(self, attribute: str) -> int:
        return sum(getattr(o, attribute) for o in self.outcomes)

    @property
    def archived(self) -> int:
        return sum(o.status == "archived" for o in self.outcomes)


def sync_subject_plan(today: date, refetch_days: int) -> Callable[[set[str]], list[date]]:
    """For breakdowns: each subject gets the plan a sync would make from its own archive."""
    return lambda have: plan_sync(today, have, refetch_days)


def pending_days(engine: Engine, today: date, refetch_days: int) -> list[date]:
    """The plan of a sync, from what the warehouse already holds."""
    first, last = completed_window(today)
    with engine.connect() as conn:
        have = warehouse.archived_dates(conn, first.isoformat(), last.isoformat())
    return plan_sync(today, have, refetch_days)


def run_sync(
    engine: Engine,
    client: OpenRouterClient,
    days: list[date],
    *,
    trigger: str,
    on_day: Callable[[DayOutcome], None] = lambda _: None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    stop: threading.Event | None = None,
    settings: SyncConfig | None = None,
    subject_plan: Callable[[set[str]], list[date]] | None = None,
) -> SyncReport:
    """Fetch, validate and load ``days``; every day is archived whole or not at all.

    Never raises for an expected failure: the report (and the run log) says which days
    were archived, which were rejected and why, and the error that ended the run, if any.
    Setting ``stop`` ends the run between two days (or during a retry wait); the day being
    written is committed first. With ``settings.breakdowns``, the same run then archives
    each breakdown, fetching for every subject the days ``subject_plan`` picks from the
    days already archived for it.
    """
    stop = stop or threading.Event()
    today = now().date()
    started = time.monotonic()
    with _writing(engine):
        run_id = warehouse.start_run(engine, trigger, now())
    report = SyncReport(run_id, trigger, [d.isoformat() for d in days])
    try:
        for date_param, window in plan_requests(days, completed_window(today)):
            wanted = [d.isoformat() for d in days if window[0] <= d <= window[1]]
            _fetch_and_load(engine, client, report, date_param, window, wanted, on_day, now, stop)
    except ArchiveError as exc:
        # The request failed as a whole (auth, retries exhausted, unreadable body, disk):
        # every day not yet written fails with it, and is fetched again by the next sync.
        report.error = str(exc)
        report.interrupted = isinstance(exc, Interrupted)
        done = {o.day for o in report.outcomes}
        report.outcomes += [DayOutcome(d, "failed", error=str(exc)) for d in report.planned if d not in done]
    if settings is not None and settings.breakdowns and report.error is None:
        plan = subject_plan or (lambda _have: list(days))
        try:
            with _writing(engine):
                report.breakdowns = run_breakdowns(engine, client, settings, today, plan, run_id=run_id, now=now, stop=stop)
        except ArchiveError as exc:  # days already written stay; the next sync fetches the rest
            report.error = f"breakdowns: {exc}"
            report.interrupted = isinstance(exc, Interrupted)
        report.interrupted = report.interrupted or stop.is_set()
    if settings is not None and settings.analytics_series and report.error is None:
        _archive_analytics(engine, client, settings, report, days, today, now, stop)
    _finish(engine, report, started, now)
    return report


def _archive_analytics(
    engine: Engine, client: OpenRouterClient, settings: SyncConfig, report: SyncReport, days: list[date],
    today: date, now: Callable[[], datetime], stop: threading.Event,
) -> None:
    """The Analytics API's series (etl/analytics.py); a backfill of the whole window refetches their whole reach."""
    from etl.analytics import run_analytics

    whole = report.trigger in ("backfill", "demo") and len(days) >= len(days_between(*completed_window(today)))
    refetch = None if whole else (len(days) if report.trigger in ("backfill", "demo") else settings.refetch_days)
    try:
        with _writing(engine):
            report.analytics = run_analytics(engine, client, settings, today, refetch_days=refetch, run_id=report.run_id, now=now, stop=stop)
    except ArchiveError as exc:  # days already written stay; the next sync fetches the rest
        report.error = f"analytics: {exc}"
        report.interrupted = isinstance(exc, Interrupted)


def _fetch_and_load(
    engine: Engine,
    client: OpenRouterClient,
    report: SyncReport,
    date_param: date | None,
    window: tuple[date, date],
    wanted: list[str],
    on_day: Callable[[DayOutcome], None],
    now: Callable[[], datetime],
    stop: threading.Event,
) -> None:
    _check(stop)
    report.requests += 1
    fetched = client.activity(date_param.isoformat() if date_param else None)
    with _writing(engine):
        with engine.begin() as conn:
            raw_id = warehouse.store_raw(conn, fetched, report.run_id)
    parsed = parse_activity(fetched.document, window)
    for day in sorted(set(parsed.rejected) - set(wanted)):
        log.warning("ignored %s: %s", day, parsed.rejected[day])
    for day in wanted:
        _check(stop)
        if day in parsed.rejected:
            outcome = DayOutcome(day, "rejected", error=parsed.rejected[day])
        else:
            rows = parsed.days.get(day, [])  # absent from the response: a day without activity
            with _writing(engine):
                with engine.begin() as conn:
                    written = warehouse.save_day(conn, day, rows, now=now(), run_id=report.run_id, raw_response_id=raw_id)
            if written.retired:
                log.info("%s: %d row(s) no longer listed by the API retired to activity_history", day, written.retired)
            outcome = DayOutcome(day, "archived", written.rows, written.inserted, written.updated, written.unchanged, retired=written.retired)
        report.outcomes.append(outcome)
        on_day(outcome)


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Interrupted("interrupted: stop requested")


class _writing:
    """Turn database failures into a one-line WarehouseError; the transaction has rolled back."""

    def __init__(self, engine: Engine) -> None:
        self._url = str(engine.url)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, SQLAlchemyError):
            raise WarehouseError(describe_failure(exc, self._url)) from None
        return False


def _finish(engine: Engine, report: SyncReport, started: float, now: Callable[[], datetime]) -> None:
    report.seconds = time.monotonic() - started
    failed = [o for o in report.outcomes if o.status != "archived"]
    if report.ok:
        outcome = "ok"
    elif report.interrupted:
        outcome = "interrupted"
    elif report.archived or any(b.days_archived for b in report.breakdowns) or (report.analytics and report.analytics.days_archived):
        outcome = "partial"
    else:
        outcome = "failed"
    errors = [f"{o.day}: {o.error}" for o in failed if o.error and o.error != report.error]
    errors += [e for b in report.breakdowns for e in b.errors]
    errors += [e for s in (report.analytics.series if report.analytics else []) for e in s.errors]
    error = "; ".join(([report.error] if report.error else []) + errors) or None
    try:
        warehouse.finish_run(
            engine,
            report.run_id,
            now=now(),
            outcome=outcome,
            error=error,
            days_requested=len(report.planned),
            days_fetched=report.archived,
            requests=report.requests,
            rows_inserted=report.total("inserted"),
            rows_updated=report.total("updated"),
            rows_unchanged=report.total("unchanged"),
            details=details_json(report.breakdowns, report.analytics) if report.breakdowns or report.analytics else None,
        )
    except SQLAlchemyError as exc:  # the days themselves are already committed
        log.error("could not record the end of run %d: %s", report.run_id, describe_failure(exc, str(engine.url)))
