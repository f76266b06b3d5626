"""Breakdowns: the same completed days, split by API key, workspace or organisation member.

What the API offers (2026, see ``shared/reference/api-notes.md``): ``/activity`` accepts
``api_key_hash`` (SHA-256 hex from ``GET /keys``), ``user_id`` (org member) and
``group_by=workspace``, which adds ``workspace_id`` to each row. So:

* ``key``: ``GET /keys`` (paged with ``offset``, disabled keys included: a disabled key
  still has history), then one ``/activity`` request per key;
* ``workspace``: one ``/activity?group_by=workspace`` request for every workspace;
* ``member``: one ``/activity?user_id=`` request per configured member.

Each request covers the whole window unless the subject needs a single day. Requests run
at most ``concurrency`` at a time and start at least ``pacing_seconds`` apart; a failure
on one subject (after the client's retries) is reported and the others carry on. Each
day of a breakdown is then written in one transaction, every subject's rows with their
archived marks, so a day is never split half-way across keys.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from sqlalchemy import Engine

from etl import warehouse
from etl.client import Fetched, OpenRouterClient
from etl.config import SyncConfig
from etl.errors import ArchiveError, Interrupted
from etl.validate import parse_activity
from etl.window import completed_window

log = logging.getLogger(__name__)

WORKSPACES = "*"  # the single subject of the workspace breakdown


@dataclass
class BreakdownResult:
    breakdown: str
    subjects: int = 0
    requests: int = 0
    days_archived: int = 0
    days_failed: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    rows_retired: int = 0  # no longer listed by the API: moved to the history table

    @property
    def ok(self) -> bool:
        return not self.errors and self.days_failed == 0

    def describe(self) -> str:
        text = (
            f"{self.breakdown} breakdown: {self.subjects} subject(s), {self.days_archived} day(s) archived in "
            f"{self.requests} request(s); rows: {self.rows_inserted} new, {self.rows_updated} changed, "
            f"{self.rows_unchanged} unchanged" + (f", {self.rows_retired} retired" if self.rows_retired else "")
        )
        return text + (f"; {len(self.errors)} error(s): " + "; ".join(self.errors[:3]) if self.errors else "")


def details_json(results: Iterable[BreakdownResult]) -> str:
    return json.dumps({r.breakdown: asdict(r) for r in results})


class Pacer:
    """Spaces request starts at least ``interval`` seconds apart, across threads."""

    def __init__(self, interval: float, stop: threading.Event):
        self._interval, self._stop = interval, stop
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._stop.wait(start - now)


@dataclass(frozen=True)
class Subject:
    breakdown: str
    subject: str  # key hash, member id, or "*" for all workspaces
    days: tuple[date, ...]

    def params(self) -> dict[str, str]:
        if self.breakdown == "key":
            return {"api_key_hash": self.subject}
        if self.breakdown == "member":
            return {"user_id": self.subject}
        return {"group_by": "workspace"}


def run_breakdowns(
    engine: Engine,
    client: OpenRouterClient,
    settings: SyncConfig,
    today: date,
    plan: Callable[[set[str]], list[date]],
    *,
    run_id: int | None,
    now: Callable[[], datetime],
    stop: threading.Event,
) -> list[BreakdownResult]:
    """Archive every configured breakdown; ``plan`` turns a subject's archived days into days to fetch."""
    results = []
    window = completed_window(today)
    for breakdown in settings.breakdowns:
        if stop.is_set():
            break
        result = BreakdownResult(breakdown)
        results.append(result)
        try:
            subjects = _subjects(engine, client, breakdown, settings, run_id, now, result)
        except ArchiveError as exc:
            result.errors.append(f"listing {breakdown} subjects: {exc}")
            continue
        result.subjects = len(subjects)
        todo = []
        with engine.connect() as conn:
            for name in subjects:
                have = warehouse.archived_breakdown_dates(conn, breakdown, name, window[0].isoformat(), window[1].isoformat())
                days = plan(have)
                if days:
                    todo.append(Subject(breakdown, name, tuple(days)))
        _fetch_all(engine, client, todo, settings, window, result, run_id, now, stop)
        log.info("%s", result.describe())
    return results


def _subjects(
    engine: Engine, client: OpenRouterClient, breakdown: str, settings: SyncConfig,
    run_id: int | None, now: Callable[[], datetime], result: BreakdownResult,
) -> list[str]:
    if breakdown == "workspace":
        return [WORKSPACES]
    if breakdown == "member":
        return list(settings.members)
    keys, pages = client.list_keys(include_disabled=True)
    result.requests += len(pages)
    with engine.begin() as conn:
        for page in pages:
            warehouse.store_raw(conn, page, run_id)
        warehouse.save_keys(conn, keys, now())
    return [k["hash"] for k in keys]


def _fetch_all(
    engine: Engine, client: OpenRouterClient, todo: list[Subject], settings: SyncConfig,
    window: tuple[date, date], result: BreakdownResult, run_id: int | None,
    now: Callable[[], datetime], stop: threading.Event,
) -> None:
    pacer = Pacer(settings.pacing_seconds, stop)

    def fetch(subject: Subject) -> Fetched:
        if stop.is_set():
            raise Interrupted("interrupted: stop requested")
        pacer.wait()
        date_param = subject.days[0].isoformat() if len(subject.days) == 1 else None
        return client.activity(date_param, **subject.params())

    fetched: list[tuple[Subject, Fetched]] = []
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="breakdown") as pool:
        futures = {pool.submit(fetch, s): s for s in todo}
        for future in as_completed(futures):
            subject = futures[future]
            result.requests += 1
            try:
                fetched.append((subject, future.result()))
            except ArchiveError as exc:
                _fail(result, subject, len(subject.days), str(exc))
    if fetched:
        _load(engine, fetched, window, result, run_id, now, stop)


def _load(
    engine: Engine, fetched: list[tuple[Subject, Fetched]], window: tuple[date, date], result: BreakdownResult,
    run_id: int | None, now: Callable[[], datetime], stop: threading.Event,
) -> None:
    """Write the breakdown day by day: each day, for every subject, in one transaction."""
    with engine.begin() as conn:
        raw_ids = {s.subject: warehouse.store_raw(conn, f, run_id) for s, f in fetched}
    parsed = {}
    for subject, response in fetched:
        request_window = (subject.days[0], subject.days[0]) if len(subject.days) == 1 else window
        try:
            parsed[subject] = parse_activity(
                response.document, request_window, "workspace_id" if subject.breakdown == "workspace" else None
            )
        except ArchiveError as exc:
            _fail(result, subject, len(subject.days), str(exc))
    for day in sorted({d.isoformat() for s in parsed for d in s.days}):
        if stop.is_set():
            raise Interrupted("interrupted: stop requested")
        todo = [(s, p) for s, p in parsed.items() if day in {d.isoformat() for d in s.days}]
        with engine.begin() as conn:
            for subject, days in todo:
                if day in days.rejected:
                    _fail(result, subject, 1, f"{day}: {days.rejected[day]}")
                    continue
                written = warehouse.save_breakdown_day(
                    conn, subject.breakdown, subject.subject, day, days.days.get(day, []),
                    now=now(), run_id=run_id, raw_response_id=raw_ids[subject.subject],
                )
                result.days_archived += 1
                result.rows_inserted += written.inserted
                result.rows_updated += written.updated
                result.rows_unchanged += written.unchanged
                result.rows_retired += written.retired


def _fail(result: BreakdownResult, subject: Subject, days: int, error: str) -> None:
    result.days_failed += days
    result.errors.append(f"{_label(subject)}: {error}")
    log.warning("%s: %s", _label(subject), error)


def _label(subject: Subject) -> str:
    name = subject.subject[:12] + "…" if subject.breakdown == "key" else subject.subject
    return f"{subject.breakdown} {name}"
