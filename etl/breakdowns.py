"""Breakdowns: the same completed days, split by API key, workspace or organisation member.

What the API offers (2026; the stand-in, ``etl/standin``, serves the same): ``/activity`` accepts
``api_key_hash`` (SHA-256 hex from ``GET /keys``), ``user_id`` (org member) and
``group_by=workspace``, which adds ``workspace_id`` to each row. So:

* ``key``: ``GET /keys`` (paged with ``offset``, disabled keys included: a disabled key
  still has history), then one ``/activity`` request per key;
* ``workspace``: one ``/activity?group_by=workspace`` request for every workspace;
* ``member``: one ``/activity?user_id=`` request per configured member.

Each request covers the whole window unless the subject needs a single day (the rule of
``etl.context.plan_requests``); only the subject's planned days are validated. Requests run
at most ``concurrency`` at a time and start at least ``pacing_seconds`` apart; a failure
on one subject (after the client's retries) is reported and the others carry on. Each
day of a breakdown is then written in one transaction, every subject's rows with their
archived marks, so a day is never split half-way across keys.

A key with no rows on a day is normal, so a day absent from a subject's answer is archived
as empty only when the API has shown that day inside its window at that moment
(``etl.edges``). The account-level answers of the same run are that proof for every
subject: they came before, which shows the window's new end, and the old end has moved at
most a day since; the subjects' answers show it for each other too. What they cannot show
costs one account-level ``date=`` request per run, not one per subject: before the
subjects' requests for a new-end day nobody has shown yet, after them for an old-end day
no later answer listed. A day still unproven is left to fetch when the API does not serve
it yet, or reported lost when it no longer does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from etl import warehouse
from etl.config import SyncConfig
from etl.context import Request, RunContext, plan_requests
from etl.edges import Edge, Moment, WindowEvidence
from etl.errors import ArchiveError, BadRequestError, Interrupted
from etl.fetched import Fetched
from etl.validate import ParsedActivity, parse_activity
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
    days_not_served: int = 0  # outside the API's window at its new end: left to fetch
    days_gone: int = 0  # outside it at the old end: never archived, no longer served
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
        if self.days_not_served:
            text += f"; {self.days_not_served} day(s) not served by OpenRouter yet (left to fetch)"
        return text + (f"; {len(self.errors)} error(s): " + "; ".join(self.errors[:3]) if self.errors else "")


def details_json(results: Iterable[BreakdownResult], **extra: object) -> str | None:
    """``sync_runs.details``: per-breakdown counts, plus any ``extra`` sections that are set."""
    details: dict[str, object] = {r.breakdown: asdict(r) for r in results}
    details.update({name: value for name, value in extra.items() if value is not None})
    return json.dumps(details) if details else None


class Pacer:
    """Spaces request starts at least ``interval`` seconds apart, across threads."""

    def __init__(self, interval: float, stop: threading.Event):
        self._interval, self._stop = interval, stop
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> float:
        """Wait for this caller's slot; returns the slot's start (``time.monotonic()``)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._stop.wait(start - now)
        return start


@dataclass(frozen=True)
class Subject:
    breakdown: str
    subject: str  # key hash, member id, or "*" for all workspaces
    days: tuple[date, ...]
    request: Request  # what to ask for these days

    def params(self) -> dict[str, str]:
        if self.breakdown == "key":
            return {"api_key_hash": self.subject}
        if self.breakdown == "member":
            return {"user_id": self.subject}
        return {"group_by": "workspace"}


def run_breakdowns(
    ctx: RunContext, settings: SyncConfig, today: date, plan: Callable[[set[str]], list[date]],
    *, evidence: WindowEvidence | None = None,
) -> list[BreakdownResult]:
    """Archive every configured breakdown; ``plan`` turns a subject's archived days into days to fetch.

    ``evidence``: what the run's account-level answers showed of the API's window.
    """
    results = []
    window = completed_window(today)
    evidence = evidence if evidence is not None else WindowEvidence()
    for breakdown in settings.breakdowns:
        if ctx.stop.is_set():
            break
        result = BreakdownResult(breakdown)
        results.append(result)
        try:
            subjects = _subjects(ctx, breakdown, settings, result)
        except ArchiveError as exc:
            result.errors.append(f"listing {breakdown} subjects: {exc}")
            continue
        result.subjects = len(subjects)
        todo = []
        with ctx.engine.connect() as conn:
            for name in subjects:
                have = warehouse.archived_breakdown_dates(conn, breakdown, name, window[0].isoformat(), window[1].isoformat())
                days = plan(have)
                for request in plan_requests(days, window):
                    todo.append(Subject(breakdown, name, tuple(days), request))
        proof = _Proof(ctx, evidence, window, result)
        proof.new_end({d for subject in todo for d in subject.days})
        _fetch_all(ctx, todo, settings, window, result, proof)
        log.info("%s", result.describe())
    return results


def _subjects(ctx: RunContext, breakdown: str, settings: SyncConfig, result: BreakdownResult) -> list[str]:
    if breakdown == "workspace":
        return [WORKSPACES]
    if breakdown == "member":
        return list(settings.members)
    keys, pages = ctx.client.list_keys(include_disabled=True)
    result.requests += len(pages)
    with ctx.engine.begin() as conn:
        for page in pages:
            warehouse.store_raw(conn, page, ctx.run_id)
        warehouse.save_keys(conn, keys, ctx.now())
    return [k["hash"] for k in keys]


class _Proof:
    """Account-level ``date=`` requests that show where the API's window is, for every subject."""

    def __init__(self, ctx: RunContext, evidence: WindowEvidence, window: tuple[date, date], result: BreakdownResult) -> None:
        self.ctx, self.evidence, self.window, self.result = ctx, evidence, window, result

    def ask(self, day: date) -> Edge | None:
        """None when the API serves ``day`` now, else the end of its window ``day`` is off.

        The rows are the account's: kept raw, not loaded (the account's own plan does that).
        """
        self.result.requests += 1
        sent = time.monotonic()
        try:
            fetched = self.ctx.client.activity(day.isoformat())
        except BadRequestError:
            return self.evidence.refuse(day, Moment(sent, time.monotonic()), self.window)
        self.evidence.saw([day], Moment(sent, time.monotonic()))
        with self.ctx.engine.begin() as conn:
            warehouse.store_raw(conn, fetched, self.ctx.run_id)
        return None

    def new_end(self, days: set[date]) -> None:
        """Before the subjects' requests: show the new end for the newest days nobody showed yet."""
        now = Moment(time.monotonic(), time.monotonic())

        def unshown(d: date) -> bool:
            known = any(s.last >= d for s in self.evidence.served) or self.evidence.refused_new(d)
            return not known and not self.evidence.gone(d, now)

        for day in sorted(days, reverse=True):
            if not unshown(day):
                continue
            try:
                if self.ask(day) is None:
                    return  # served: every older day's new end is shown too
            except Interrupted:
                raise
            except ArchiveError as exc:  # without the proof, days absent from an answer stay to fetch
                self.result.errors.append(f"showing {day} inside the API's window: {exc}")
                return


@dataclass
class _Answer:
    subject: Subject
    at: Moment
    fetched: Fetched | None  # None: the subject's `date=` request was answered 400


def _fetch_all(
    ctx: RunContext, todo: list[Subject], settings: SyncConfig, window: tuple[date, date], result: BreakdownResult, proof: _Proof,
) -> None:
    pacer = Pacer(settings.pacing_seconds, ctx.stop)

    def fetch(subject: Subject) -> _Answer:
        ctx.check_stop()
        pacer.wait()
        sent = time.monotonic()
        try:
            fetched = ctx.client.activity(subject.request.date_param, **subject.params())
        except BadRequestError:
            if subject.request.day is None:
                raise
            return _Answer(subject, Moment(sent, time.monotonic()), None)
        return _Answer(subject, Moment(sent, time.monotonic()), fetched)

    answers: list[_Answer] = []
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="breakdown") as pool:
        futures = {pool.submit(fetch, s): s for s in todo}
        for future in as_completed(futures):
            subject = futures[future]
            result.requests += 1
            try:
                answers.append(future.result())
            except ArchiveError as exc:
                _fail(result, subject, len(subject.days), str(exc))
    if answers:
        verdicts = _judge(ctx, answers, window, result, proof)
        _load(ctx, verdicts, result)


# A subject's day: its rows (possibly none, when shown inside the window), or why not.
_Verdict = tuple[Subject, int, list[dict[str, Any]]]
_GONE, _NOT_SERVED = "gone", "not served"


def _judge(
    ctx: RunContext, answers: list[_Answer], window: tuple[date, date], result: BreakdownResult, proof: _Proof,
) -> dict[str, list[_Verdict]]:
    """Per day, what to write for each subject; unproven absent days are settled here."""
    evidence = proof.evidence
    lost: dict[date, int] = {}
    with ctx.engine.begin() as conn:
        raw_ids = {a.subject.subject: warehouse.store_raw(conn, a.fetched, ctx.run_id) for a in answers if a.fetched}
    rows: dict[tuple[str, date], tuple[Subject, list[dict[str, Any]]]] = {}
    unproven: list[tuple[_Answer, date, list[date]]] = []
    judged: list[tuple[_Answer, ParsedActivity, list[date]]] = []
    for answer in answers:  # first every answer as evidence: the subjects' answers show each other's window
        subject = answer.subject
        if answer.fetched is None:  # a single day, answered 400
            day = subject.days[0]
            edge = evidence.refuse(day, answer.at, window)
            _settle(result, subject, day, _GONE if edge == "old" else _NOT_SERVED, lost)
            continue
        single = subject.request.day is not None
        try:
            parsed = parse_activity(
                answer.fetched.document, subject.request.covers, "workspace_id" if subject.breakdown == "workspace" else None,
                planned={d.isoformat() for d in subject.days},
            )
        except ArchiveError as exc:
            _fail(result, subject, len(subject.days), str(exc))
            continue
        own = [date.fromisoformat(d) for d in parsed.listed()] + ([subject.days[0]] if single else [])
        evidence.saw(own, answer.at)
        judged.append((answer, parsed, own))
    for answer, parsed, own in judged:
        subject = answer.subject
        for day in subject.days:
            key = day.isoformat()
            if key in parsed.rejected:
                _fail(result, subject, 1, f"{key}: {parsed.rejected[key]}")
            elif key in parsed.days or evidence.held(day, answer.at, own):
                rows[(subject.subject, day)] = (subject, parsed.days.get(key, []))
            elif evidence.gone(day, answer.at):
                _settle(result, subject, day, _GONE, lost)
            else:
                unproven.append((answer, day, own))
    # The old end, after every answer: one account-level request for the oldest day that
    # lacks it settles that day for every subject at once.
    while unproven:
        for item in [u for u in unproven if evidence.held(u[1], u[0].at, u[2])]:
            unproven.remove(item)
            rows[(item[0].subject.subject, item[1])] = (item[0].subject, [])
        lacking = sorted({d for a, d, own in unproven if not evidence.old_end(d, a.at, own)})
        if not lacking:
            break
        try:
            off = proof.ask(lacking[0])
        except Interrupted:
            raise
        except ArchiveError as exc:  # no proof: those days stay unarchived, the next sync fetches them
            result.errors.append(f"showing {lacking[0]} inside the API's window: {exc}")
            for item in [u for u in unproven if not evidence.old_end(u[1], u[0].at, u[2])]:
                unproven.remove(item)
                result.days_failed += 1
            continue
        if off is not None:  # not served now: whatever a subject lacked of it cannot be fetched
            for item in [u for u in unproven if u[1] <= lacking[0]]:
                unproven.remove(item)
                _settle(result, item[0].subject, item[1], _GONE if off == "old" else _NOT_SERVED, lost)
    for answer, day, _own in unproven:  # the new end is not shown: not served when asked
        _settle(result, answer.subject, day, _NOT_SERVED, lost)
    _report_lost(result, lost)
    by_day: dict[str, list[_Verdict]] = {}
    for (name, day), (subject, day_rows) in sorted(rows.items(), key=lambda item: item[0][1]):
        by_day.setdefault(day.isoformat(), []).append((subject, raw_ids[name], day_rows))
    return by_day


def _settle(result: BreakdownResult, subject: Subject, day: date, why: str, lost: dict[date, int]) -> None:
    if why == _NOT_SERVED:
        result.days_not_served += 1
        log.info("%s: %s not served by OpenRouter yet; left to fetch", _label(subject), day)
    else:
        result.days_gone += 1
        lost[day] = lost.get(day, 0) + 1


def _report_lost(result: BreakdownResult, lost: dict[date, int]) -> None:
    """One error for all the subject-days the API no longer served: they are lost."""
    if lost:
        days = ", ".join(f"{d} ({n} subject(s))" for d, n in sorted(lost.items()))
        error = f"OpenRouter no longer serves, and we never archived: {days}"
        result.errors.append(error)
        log.warning("%s breakdown: %s", result.breakdown, error)


def _load(ctx: RunContext, verdicts: dict[str, list[_Verdict]], result: BreakdownResult) -> None:
    """Write the breakdown day by day: each day, for every subject, in one transaction."""
    for day, todo in verdicts.items():
        ctx.check_stop()
        with ctx.engine.begin() as conn:
            for subject, raw_id, day_rows in todo:
                written = warehouse.save_breakdown_day(
                    conn, subject.breakdown, subject.subject, day, day_rows,
                    now=ctx.now(), run_id=ctx.run_id, raw_response_id=raw_id,
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
