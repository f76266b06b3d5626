"""Sync: decide which completed days to fetch, fetch them, validate, load.

The API window is the 30 completed UTC days before today (today−30 … today−1); a day
older than that is gone from OpenRouter for good, so the warehouse is its only copy and
is never touched again. A sync fetches every day of the window not yet archived plus the
``refetch_days`` most recent ones (late data); a backfill fetches the whole window, or its
last N days.

Requests: one ``GET /activity`` without ``date`` returns the whole window, so any plan of
two or more days costs a single request; a plan of exactly one day asks for that day
alone (``date=``), which keeps the response small (the rule is ``etl.context.plan_requests``).
Days of the response that were not planned are neither validated nor loaded (the raw
response still keeps them): a daily sync of two days pays for checking two days, not 30.

The window's edges: OpenRouter's clock need not agree with ours about the UTC date, so a
planned day absent from the answer is archived as a day without activity only when the
API has shown it inside its window (``etl.edges``): the answer lists a strictly older and
a strictly newer day, or a ``date=`` request for it answers 200. Otherwise one ``date=``
request per window end settles it (usually none: days with rows prove themselves); a 400
means the day is outside the API's window: at the new end it is *not served yet* (left
to fetch, not an error), at the old end it is *gone* (reported lost, exit status 1).
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
from etl.analytics import AnalyticsProgress, AnalyticsResult, AnalyticsRun
from etl.breakdowns import BreakdownResult, details_json, run_breakdowns
from etl.client import OpenRouterClient
from etl.config import SyncConfig
from etl.context import RunContext, plan_requests
from etl.db import describe_failure
from etl.edges import Moment, WindowEvidence
from etl.errors import ArchiveError, BadRequestError, Interrupted, WarehouseError
from etl.fetched import Fetched
from etl.validate import parse_activity
from etl.window import completed_window, days_between

log = logging.getLogger(__name__)

# not_served: outside the API's window at its new end (its clock is behind): fetched later.
# gone: outside it at the old end: OpenRouter no longer has the day, and we never got it.
DayStatus = Literal["archived", "rejected", "failed", "not_served", "gone"]


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
    evidence: WindowEvidence = field(default_factory=WindowEvidence)
    analytics: AnalyticsResult | None = None

    @property
    def ok(self) -> bool:
        """Every planned day archived, or not served by the API yet (nothing is lost: it stays
        to fetch). A day the API no longer serves is not ok: it is lost."""
        settled = {o.day for o in self.outcomes if o.status in ("archived", "not_served")}
        analytics_ok = self.analytics is None or self.analytics.ok
        return self.error is None and settled >= set(self.planned) and all(b.ok for b in self.breakdowns) and analytics_ok

    def days(self, status: DayStatus) -> list[str]:
        return sorted(o.day for o in self.outcomes if o.status == status)

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
    analytics_progress: AnalyticsProgress | None = None,
    analytics: AnalyticsRun | None = None,
) -> SyncReport:
    """Fetch, validate and load ``days``; every day is archived whole or not at all.

    Never raises for an expected failure: the report (and the run log) says which days
    were archived, which were rejected and why, and the error that ended the run, if any.
    Setting ``stop`` ends the run between two days (or during a retry wait); the day being
    written is committed first. With ``settings.breakdowns``, the same run then archives
    each breakdown, fetching for every subject the days ``subject_plan`` picks from the
    days already archived for it. ``analytics``: the Analytics API's series, already
    fetching (a first sync starts them before its warehouse exists); by default they start
    here, with ``settings.analytics_series``. Either way they are this run's: written after
    ``/activity``, or abandoned.
    """
    stop = stop or threading.Event()
    today = now().date()
    started = time.monotonic()
    with _writing(engine):
        run_id = warehouse.start_run(engine, trigger, now())
    ctx = RunContext(engine, client, run_id, now, stop)
    report = SyncReport(run_id, trigger, [d.isoformat() for d in days])
    # The Analytics API is fetched from now on (or since before the warehouse existed),
    # beside /activity (its threads only read the warehouse); it is written after
    # /activity, or abandoned if /activity failed.
    if analytics is not None and analytics.today != today:
        # Started before midnight, UTC: its days end a day short of this run's. Asked again.
        analytics.abandon()
        analytics = None
    if analytics is None and settings and settings.analytics_series:
        analytics = _start_analytics(ctx, settings, trigger, days, today, analytics_progress)
    try:
        try:
            _Account(ctx, report, on_day, completed_window(today)).fetch(days)
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
                    report.breakdowns = run_breakdowns(ctx, settings, today, plan, evidence=report.evidence)
            except ArchiveError as exc:  # days already written stay; the next sync fetches the rest
                report.error = f"breakdowns: {exc}"
                report.interrupted = isinstance(exc, Interrupted)
            report.interrupted = report.interrupted or stop.is_set()
        if analytics is not None and report.error is None:
            _archive_analytics(ctx, analytics, report)
    except BaseException as exc:
        # Ctrl-C (KeyboardInterrupt) or a bug: record how the run ended, then let it go on.
        # Days already committed stay; the day being written rolled back.
        report.interrupted = isinstance(exc, KeyboardInterrupt)
        report.error = "interrupted (Ctrl-C)" if report.interrupted else f"unexpected {type(exc).__name__}: {exc}"
        _finish(ctx, report, started)
        raise
    finally:
        if analytics is not None:
            analytics.abandon()  # /activity failed, or the run ended otherwise: nothing more is fetched
    _finish(ctx, report, started)
    return report


def _start_analytics(
    ctx: RunContext, settings: SyncConfig, trigger: str, days: list[date], today: date, progress: AnalyticsProgress | None,
) -> AnalyticsRun:
    """The Analytics API's series (etl/analytics.py), fetching; a backfill of the whole window refetches their whole reach."""
    whole = trigger in ("backfill", "demo") and len(days) >= len(days_between(*completed_window(today)))
    refetch = None if whole else (len(days) if trigger in ("backfill", "demo") else settings.refetch_days)
    return AnalyticsRun(ctx.engine, ctx.client, settings, today, refetch_days=refetch, stop=ctx.stop, progress=progress)


def _archive_analytics(ctx: RunContext, analytics: AnalyticsRun, report: SyncReport) -> None:
    try:
        with _writing(ctx.engine):
            report.analytics = analytics.write(run_id=ctx.run_id, now=ctx.now, engine=ctx.engine)
    except ArchiveError as exc:  # days already written stay; the next sync fetches the rest
        report.error = f"analytics: {exc}"
        report.interrupted = isinstance(exc, Interrupted)


class _Account:
    """The account-level days of one run: fetch them, write each in one transaction, report each outcome.

    ``ours``: the window by our clock, which the API's may not share (``etl.edges``).
    """

    def __init__(self, ctx: RunContext, report: SyncReport, on_day: Callable[[DayOutcome], None], ours: tuple[date, date]) -> None:
        self.ctx, self.report, self.on_day, self.ours = ctx, report, on_day, ours

    def fetch(self, days: list[date]) -> None:
        for request in plan_requests(days, self.ours):
            if request.day is not None:
                self.fetch_day(request.day)
            else:
                self.fetch_window([d for d in days if request.covers[0] <= d <= request.covers[1]], request.covers)

    def fetch_window(self, wanted: list[date], covers: tuple[date, date]) -> None:
        """One whole-window request for ``wanted``: rows, or empty when shown inside the API's window, else confirmed.

        Only the wanted days are validated; the raw answer keeps all of them.
        """
        report = self.report
        self.ctx.check_stop()
        report.requests += 1
        sent = time.monotonic()
        fetched = self.ctx.client.activity(None)
        at = Moment(sent, time.monotonic())
        raw_id = self.raw(fetched)
        keys = {d.isoformat() for d in wanted}
        parsed = parse_activity(fetched.document, covers, planned=keys)
        listed = [date.fromisoformat(d) for d in parsed.listed()]
        report.evidence.saw(listed, at)
        _log_unplanned(parsed.rejected, keys, self.ours)
        unproven = []
        for day in wanted:
            key = day.isoformat()
            if key in parsed.rejected:
                self.outcome(DayOutcome(key, "rejected", error=parsed.rejected[key]))
            elif key in parsed.days or report.evidence.held(day, at, listed):
                self.day(day, parsed.days.get(key, []), raw_id)
            else:
                unproven.append(day)
        # Absent and not shown inside the window: ask for the oldest day whose old end is not
        # shown, else the newest; each answer settles that day and may prove the others.
        while unproven:
            for day in [d for d in unproven if report.evidence.held(d, at, listed)]:
                unproven.remove(day)
                self.day(day, [], raw_id)  # absent from an answer that covered it: no activity
            if unproven:
                no_old_end = [d for d in unproven if not report.evidence.old_end(d, at, listed)]
                day = no_old_end[0] if no_old_end else unproven[-1]
                unproven.remove(day)
                self.fetch_day(day)

    def fetch_day(self, day: date) -> None:
        """``date=day``: its rows (200, perhaps none), or not served yet / gone (400)."""
        report = self.report
        self.ctx.check_stop()
        report.requests += 1
        sent = time.monotonic()
        try:
            fetched = self.ctx.client.activity(day.isoformat())
        except BadRequestError as exc:
            edge = report.evidence.refuse(day, Moment(sent, time.monotonic()), self.ours)
            said = exc.api_message or str(exc)
            if edge == "new":
                why = f"OpenRouter does not serve this day yet ({said}); left to fetch"
                self.outcome(DayOutcome(day.isoformat(), "not_served", error=why))
            else:
                why = f"OpenRouter no longer serves this day ({said}) and it was never archived"
                self.outcome(DayOutcome(day.isoformat(), "gone", error=why))
            return
        at = Moment(sent, time.monotonic())
        raw_id = self.raw(fetched)
        parsed = parse_activity(fetched.document, (day, day))
        report.evidence.saw([day], at)  # answered 200: inside the window, rows or not
        key = day.isoformat()
        _log_unplanned(parsed.rejected, {key}, self.ours)
        if key in parsed.rejected:
            self.outcome(DayOutcome(key, "rejected", error=parsed.rejected[key]))
        else:
            self.day(day, parsed.days.get(key, []), raw_id)

    def raw(self, fetched: Fetched) -> int:
        with _writing(self.ctx.engine):
            with self.ctx.engine.begin() as conn:
                raw_id = warehouse.store_raw(conn, fetched, self.ctx.run_id)
        return raw_id

    def day(self, day: date, rows: list[dict[str, object]], raw_id: int) -> None:
        self.ctx.check_stop()
        with _writing(self.ctx.engine):
            with self.ctx.engine.begin() as conn:
                written = warehouse.save_day(conn, day.isoformat(), rows, now=self.ctx.now(), run_id=self.ctx.run_id, raw_response_id=raw_id)
        if written.retired:
            log.info("%s: %d row(s) no longer listed by the API retired to activity_history", day, written.retired)
        self.outcome(
            DayOutcome(day.isoformat(), "archived", written.rows, written.inserted, written.updated, written.unchanged, retired=written.retired)
        )

    def outcome(self, outcome: DayOutcome) -> None:
        self.report.outcomes.append(outcome)
        self.on_day(outcome)


def _log_unplanned(rejected: dict[str, str], wanted: set[str], ours: tuple[date, date]) -> None:
    """Days of an answer that were not asked for are left alone; say why when it is odd."""
    beside = {(ours[0] - timedelta(days=1)).isoformat(), (ours[1] + timedelta(days=1)).isoformat()}
    for day in sorted(set(rejected) - wanted):
        if day in beside:
            # The API's clock is ahead (today is complete by its clock: we fetch it
            # tomorrow) or behind (the day before our window is still served).
            log.info("left alone %s, outside our window %s..%s: OpenRouter's clock and ours disagree", day, *ours)
        else:
            log.warning("ignored %s: %s", day, rejected[day])


class _writing:
    """Turn database failures into a one-line WarehouseError; the transaction has rolled back."""

    def __init__(self, engine: Engine) -> None:
        self._url = str(engine.url)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, SQLAlchemyError):
            raise WarehouseError(describe_failure(exc, self._url)) from None


def _window_details(report: SyncReport) -> dict[str, object] | None:
    """What the API showed of its window; ``gone`` days are what ``status`` reports lost."""
    span = report.evidence.span()
    gone, not_served = report.days("gone"), report.days("not_served")
    if not (gone or not_served):
        return None
    return {"served": [d.isoformat() for d in span] if span else None, "gone": gone, "not_served": not_served}


def _finish(ctx: RunContext, report: SyncReport, started: float) -> None:
    engine = ctx.engine
    report.seconds = time.monotonic() - started
    failed = [o for o in report.outcomes if o.status not in ("archived", "not_served")]
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
            now=ctx.now(),
            outcome=outcome,
            error=error,
            days_requested=len(report.planned),
            days_fetched=report.archived,
            requests=report.requests,
            rows_inserted=report.total("inserted"),
            rows_updated=report.total("updated"),
            rows_unchanged=report.total("unchanged"),
            details=details_json(
                report.breakdowns, window=_window_details(report), analytics=report.analytics.as_dict() if report.analytics else None
            ),
        )
    except SQLAlchemyError as exc:  # the days themselves are already committed
        log.error("could not record the end of run %d: %s", report.run_id, describe_failure(exc, str(engine.url)))
