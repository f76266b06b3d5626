"""Archive OpenRouter's Analytics API (``POST /analytics/query``) beside ``/activity``.

``/activity`` serves 30 days; the Analytics API keeps the long-range metrics (spend,
requests, tokens by model, variant, key, member, workspace and app) for about 365 days and
the provider dimension with latency and throughput for 31. A first sync (or ``backfill``)
recovers all of it; later syncs fetch the days not yet archived plus ``refetch_days``.

Series (``[sync] analytics_series``; ``account`` and ``provider`` by default):

* ``account``: model x variant, one request for the whole range (split when truncated);
* ``provider``: model x provider, 31 days, with avg/p50/p90/p99 latency and throughput;
* ``key``: per API key, filtered by its hash (listed with ``GET /keys``), by model;
* ``member``: per ``[sync] members`` user id, by model;
* ``workspace``: per workspace UUID (from ``GET /keys``), by model;
* ``app``: by app x model in one request; stored under the app's title (the API gives no
  app id to filter by, see the README).

Per-subject series ask for the subject's label dimension too (key name, member e-mail,
workspace name): the answer then carries the display label, kept in ``analytics_labels``
while the rows are stored under the stable id.

The API's rules: at most 2 dimensions; ``limit`` at most 10,000 rows, ranges cut to fit
where the rows per day are known (``size_ranges``) and a ``truncated`` answer never stored
(the range is split, sized from the rows per day the cut answer showed, and asked again);
the 365- and 31-day reaches; 64 requests a minute, paced by ``RateLimiter`` (a slot per
attempt, held until its answer is in; 429s and their ``Retry-After`` are the client's retry
policy). All series are fetched at once, each written as soon as its answers are in. A 403
or 404 means the key cannot use the Analytics API: the rest is skipped with one line and
``/activity`` is archived as usual; nothing is committed before every series' first answer
(the series answered sooner are written meanwhile, into one transaction held open until
then: ``_Writes``), so that a refusal leaves nothing half-archived. Each (series, day) is written whole, every
subject with its ``archived_analytics_days`` mark, in transactions of several days
(``save_series_days``; a day with revised rows through ``warehouse.save_rows``), so that
revisions move superseded versions to the history tables instead of counting twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from itertools import repeat
from operator import itemgetter
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Engine, Table, select

from etl import rawstore, warehouse
from etl.client import Fetched, OpenRouterClient
from etl.config import SyncConfig
from etl.db import Positional, upsert
from etl.errors import ArchiveError, BadRequestError, Interrupted, NotFoundError, PermissionDeniedError, TruncatedAnswerError
from etl.schema import (
    ANALYTICS_AMOUNTS,
    ANALYTICS_COUNTS,
    ANALYTICS_METRICS,
    PROVIDER_AMOUNTS,
    PROVIDER_COUNTS,
    PROVIDER_MEASURES,
    PROVIDER_METRICS,
    analytics_daily,
    analytics_labels,
    analytics_provider_daily,
    archived_analytics_days,
)
from etl.validate_analytics import AMOUNT, COUNT, MEASURE, ParsedAnswer, answer_decoder, held_days, parse_answer, runs, split_range

log = logging.getLogger(__name__)

LONG_REACH = 365
SHORT_REACH = 31
MAX_ROWS = 10_000
GROUP_ROWS = 10_000  # rows (and marks) written per transaction; see _load
MAX_REACH_SHORTFALL = 7  # days the API's reach may fall short of the nominal one before a 400 is an error
WHOLE = "*"  # the subject of a series that one request covers entirely
LABEL = "_label"  # internal column: the label dimension of a per-subject series


@dataclass(frozen=True)
class Series:
    name: str
    table: Table
    reach: int
    dimensions: dict[str, str]  # API dimension -> column
    metrics: dict[str, str]  # metric -> kind
    filter_field: str | None = None  # per-subject series: the id filter

    @property
    def per_subject(self) -> bool:
        return self.filter_field is not None

    @property
    def compared(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    @property
    def key(self) -> tuple[str, ...]:
        return ("model", "provider") if self.table is analytics_provider_daily else ("subject", "model", "variant")


_LONG = {**dict.fromkeys(ANALYTICS_AMOUNTS, AMOUNT), **dict.fromkeys(ANALYTICS_COUNTS, COUNT)}
_SHORT = {**dict.fromkeys(PROVIDER_AMOUNTS, AMOUNT), **dict.fromkeys(PROVIDER_COUNTS, COUNT), **dict.fromkeys(PROVIDER_MEASURES, MEASURE)}
assert tuple(_LONG) == ANALYTICS_METRICS and tuple(_SHORT) == PROVIDER_METRICS

SERIES: dict[str, Series] = {
    "account": Series("account", analytics_daily, LONG_REACH, {"model": "model", "variant": "variant"}, _LONG),
    "provider": Series("provider", analytics_provider_daily, SHORT_REACH, {"model": "model", "provider": "provider"}, _SHORT),
    "key": Series("key", analytics_daily, LONG_REACH, {"api_key_id": LABEL, "model": "model"}, _LONG, "api_key_id"),
    "member": Series("member", analytics_daily, LONG_REACH, {"user": LABEL, "model": "model"}, _LONG, "user"),
    "workspace": Series("workspace", analytics_daily, LONG_REACH, {"workspace": LABEL, "model": "model"}, _LONG, "workspace"),
    "app": Series("app", analytics_daily, LONG_REACH, {"app": "subject", "model": "model"}, _LONG),
}


# -- planning (pure) ---------------------------------------------------------------------------


def series_range(today: date, reach: int) -> tuple[date, date]:
    """The completed days a series reaches: today−reach … today−1."""
    return today - timedelta(days=reach), today - timedelta(days=1)


def plan_days(today: date, reach: int, have: Iterable[str], refetch_days: int | None) -> list[date]:
    """Days to fetch: those not archived, plus the ``refetch_days`` most recent (None: all)."""
    first, last = series_range(today, reach)
    held = set(have)
    every = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if refetch_days is None:
        return every
    recent = last - timedelta(days=refetch_days - 1) if refetch_days > 0 else last + timedelta(days=1)
    return [d for d in every if d.isoformat() not in held or d >= recent]


def resplit(first: date, last: date, returned_rows: int, returned_days: int, limit: int, first_held: date | None = None) -> list[tuple[date, date]]:
    """Ranges to ask instead of a truncated ``first`` … ``last``, sized from what the cut answer held.

    A cut answer sorted by date starts at the first day with rows (``first_held``; the days
    before it are empty, so one request covers them) and holds ``returned_days`` days, the
    last one partly: the rows per day are about ``returned_rows / returned_days``. Chunks
    aim at 90% of ``limit``.
    """
    out: list[tuple[date, date]] = []
    if first_held is not None and first < first_held <= last:
        out.append((first, first_held - timedelta(days=1)))
        first = first_held
    days = (last - first).days + 1
    per_day = returned_rows / max(1, returned_days)
    chunk = max(1, math.floor(limit * 0.9 / max(per_day, 1e-9)))
    parts = max(1 if out else 2, math.ceil(days / chunk))
    return out + split_range(first, last, parts)


def size_ranges(first: date, last: date, known: Mapping[str, int], limit: int) -> list[tuple[date, date]]:
    """``first`` … ``last`` cut so that each range's answer should fit under ``limit`` the first time.

    ``known`` holds the rows per day of days archived before (``archived_analytics_days``);
    a day not in it counts as the mean of the known ones (none known: one range, split later
    only if its answer comes back truncated). Ranges aim at 90% of ``limit``: the rows of a
    refetched day can grow a little.
    """
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    counts = [known[d.isoformat()] for d in days if d.isoformat() in known]
    if not counts:
        return [(first, last)]
    guess = sum(counts) / len(counts)
    budget = limit * 0.9
    out: list[tuple[date, date]] = []
    start, total = first, 0.0
    for day in days:
        rows = known.get(day.isoformat(), guess)
        if total and total + rows > budget:
            out.append((start, day - timedelta(days=1)))
            start, total = day, 0.0
        total += rows
    out.append((start, last))
    return out


def query_body(series: Series, first: date, last: date, limit: int, subject: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metrics": list(series.metrics),
        "dimensions": list(series.dimensions),
        "granularity": "day",
        "time_range": {"start": f"{first.isoformat()}T00:00:00Z", "end": f"{(last + timedelta(days=1)).isoformat()}T00:00:00Z"},
        "limit": limit,
        "order_by": {"field": "date", "direction": "asc"},
    }
    if series.filter_field is not None and subject is not None:
        body["filters"] = [{"field": series.filter_field, "operator": "eq", "value": subject}]
    return body


# -- pacing ------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` requests in any ``window`` seconds as the server counts them, across threads.

    The server counts a request when it arrives, some time after we send it and before its
    answer is back; how long after, the network and the scheduler decide. So a request
    holds its slot from before it is sent until its answer is in, and the slot stays counted
    for ``window`` seconds after that: a new request starts only when fewer than ``limit``
    slots are in flight or ended within the last ``window`` seconds. Then any ``limit + 1``
    arrivals span at least ``window`` seconds, however late each one arrived, with no margin
    to guess: the cost is one round trip per ``limit`` requests, never a sleep when fewer
    than ``limit`` requests are made. Not a token bucket: a bucket of ``limit`` tokens
    refilled at ``limit`` a window lets up to twice ``limit`` through in some windows.
    """

    def __init__(self, limit: int, window: float, stop: threading.Event, clock: Callable[[], float] = time.monotonic):
        self._limit, self._window = limit, window
        self._stop, self._clock = stop, clock
        self._ends: dict[int, float] = {}  # per slot: when its answer came in (math.inf while in flight)
        self._next = 0
        self._closed = threading.Event()
        self._changed = threading.Condition()
        self.waited = 0.0
        self.most = 0  # the most slots counted at once: never above ``limit``

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot around one request (one attempt); waits for one to be free."""
        ticket = self._acquire()
        try:
            yield
        finally:
            with self._changed:
                self._ends[ticket] = self._clock()
                self._changed.notify_all()

    def close(self) -> None:
        """No slot is given any more: a request waiting for one, or asking later, is Interrupted."""
        self._closed.set()

    def _acquire(self) -> int:
        with self._changed:
            while True:
                if self._closed.is_set():
                    raise Interrupted("not sent: the run ended early")
                now = self._clock()
                for ticket in [t for t, end in self._ends.items() if end <= now - self._window]:
                    del self._ends[ticket]
                if len(self._ends) < self._limit:
                    ticket, self._next = self._next, self._next + 1
                    self._ends[ticket] = math.inf
                    self.most = max(self.most, len(self._ends))
                    return ticket
                soonest = min(self._ends.values()) + self._window - now  # inf: every slot still in flight
                started = self._clock()
                self._changed.wait(min(soonest, 0.05))  # wake up now and then to honour the stop event
                self.waited += self._clock() - started
                if self._stop.is_set():
                    raise Interrupted("interrupted: stop requested")


# -- results -----------------------------------------------------------------------------------


@dataclass
class SeriesResult:
    series: str
    subjects: int = 0
    requests: int = 0
    splits: int = 0  # truncated answers that were split and asked again
    days_archived: int = 0
    days_failed: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_retired: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.days_failed == 0

    def describe(self) -> str:
        subjects = f"{self.subjects} subject(s), " if SERIES[self.series].per_subject else ""
        text = (
            f"analytics {self.series}: {subjects}{self.days_archived} day(s) archived in {self.requests} request(s)"
            + (f" ({self.splits} truncated answer(s) split)" if self.splits else "")
            + f"; rows: {self.rows_inserted} new, {self.rows_updated} changed, {self.rows_unchanged} unchanged"
            + (f", {self.rows_retired} retired" if self.rows_retired else "")
        )
        if self.warnings:
            text += f"; {len(self.warnings)} warning(s): " + "; ".join(self.warnings[:2])
        return text + (f"; {len(self.errors)} error(s): " + "; ".join(self.errors[:3]) if self.errors else "")


@dataclass
class AnalyticsResult:
    series: list[SeriesResult] = field(default_factory=list)
    skipped: str | None = None  # why the Analytics API was not used (403/404)
    requests: int = 0  # every request, /keys pages included
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.series)

    @property
    def days_archived(self) -> int:
        return sum(s.days_archived for s in self.series)

    def describe(self) -> list[str]:
        if self.skipped:
            return [f"analytics: skipped: {self.skipped}"]
        return [s.describe() for s in self.series]

    def as_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "requests": self.requests, "series": {s.series: asdict(s) for s in self.series}}


# -- the run -----------------------------------------------------------------------------------


class AnalyticsProgress(Protocol):
    """What a run reports as it goes: the CLI's progress bar on a terminal (etl/render.py)."""

    def planned(self, series: str, days: int) -> None:
        """``days`` (subject, day) pairs of ``series`` are to be fetched."""

    def fetched(self, series: str, days: int) -> None:
        """An answer for ``days`` more (subject, day) pairs is in (a truncated one counts none)."""

    def loaded(self, series: str) -> None:
        """The series is written."""


class _Silent:
    def planned(self, series: str, days: int) -> None:
        pass

    def fetched(self, series: str, days: int) -> None:
        pass

    def loaded(self, series: str) -> None:
        pass


class DeferredProgress:
    """An ``AnalyticsProgress`` for a run started before its display exists: what the run
    reports is kept, in order, until ``attach`` hands it on, and handed on as it comes after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: AnalyticsProgress | None = None
        self._kept: list[tuple[str, tuple[Any, ...]]] = []

    def attach(self, target: AnalyticsProgress) -> None:
        with self._lock:
            for name, args in self._kept:
                getattr(target, name)(*args)
            self._kept.clear()
            self._target = target

    def _say(self, name: str, *args: Any) -> None:
        with self._lock:
            if self._target is None:
                self._kept.append((name, args))
                return
        getattr(self._target, name)(*args)

    def planned(self, series: str, days: int) -> None:
        self._say("planned", series, days)

    def fetched(self, series: str, days: int) -> None:
        self._say("fetched", series, days)

    def loaded(self, series: str) -> None:
        self._say("loaded", series)


@dataclass
class _Fetch:
    series: Series
    subject: str  # WHOLE, or the subject's id
    first: date
    last: date
    oldest: bool = False  # starts at the oldest day of the series' reach
    shift: int = 0  # days the start was moved forward because OpenRouter no longer served them
    fetched: Fetched | None = None
    parsed: ParsedAnswer | None = None
    packed: rawstore.Packed | None = None  # the raw answer cut, hashed and compressed in the fetch thread
    error: str | None = None

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


class _Unavailable(Exception):
    """The key cannot use the Analytics API (403 or 404)."""


class _Gate:
    """Opens when every series has had its first answer (or ended), or one found the API refused.

    Nothing is committed before it opens: a 403 or 404 on any series' first request then
    skips the whole Analytics API, with nothing of it half-archived. ``opened`` is a future
    done at that moment, for the writing thread to wait on beside the series' own.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._waiting = set(names)
        self._lock = threading.Lock()
        self.opened: Future[None] = Future()
        self.refused: _Unavailable | None = None
        if not self._waiting:
            self.opened.set_result(None)

    def arrive(self, name: str) -> None:
        with self._lock:
            self._waiting.discard(name)
            if not self._waiting:
                self._open()

    def refuse(self, exc: _Unavailable) -> None:
        with self._lock:
            self.refused = self.refused or exc
            self._open()

    def _open(self) -> None:  # under the lock: opened once
        if not self.opened.done():
            self.opened.set_result(None)

    def wait(self) -> None:
        self.opened.result()  # every series arrives at the latest when its worker ends
        if self.refused is not None:
            raise self.refused


class _Writes:
    """The transactions of a run's series: all in one, held open, until the gate opens; each its own after.

    The writing thread loads each series as soon as its answers are in. Before the gate
    opens that is into one transaction (SQLite's write lock is taken by its first write and
    kept: this thread is the run's only writer, the fetch threads only read), committed
    when the gate opens and rolled back if the API refused: the rows are prepared and
    written while the slowest series (the key series, after its ``/keys`` pages) is still
    fetching, yet nothing is committed that a refusal would leave half-archived.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.holding = True  # from the start: the gate opens later, if ever
        self._held: Connection | None = None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        if not self.holding:
            with self.engine.begin() as conn:
                yield conn
            return
        if self._held is None:
            self._held = self.engine.connect()
            self._held.begin()
        yield self._held

    def commit(self) -> None:
        """End the hold: what it holds is committed, later writes are their own transactions."""
        self.holding = False
        if self._held is not None:
            held, self._held = self._held, None
            try:
                held.commit()
            finally:
                held.close()

    def release(self) -> None:
        """End the hold without committing (a refusal, a failure): its writes roll back."""
        self.holding = False
        if self._held is not None:
            held, self._held = self._held, None
            held.close()  # closing a connection in a transaction rolls it back


class _Keys:
    """``GET /keys``, listed once for the key and workspace series, by whichever asks first."""

    def __init__(self, client: OpenRouterClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._listed: tuple[list[dict[str, Any]], list[Fetched]] | None = None
        self._error: ArchiveError | None = None
        self.stored = False

    def get(self) -> tuple[list[dict[str, Any]], list[Fetched]]:
        with self._lock:
            if self._listed is None and self._error is None:
                try:
                    self._listed = self._client.list_keys(include_disabled=True)
                except ArchiveError as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
            assert self._listed is not None
            return self._listed


def run_analytics(
    engine: Engine,
    client: OpenRouterClient,
    settings: SyncConfig,
    today: date,
    *,
    refetch_days: int | None,
    run_id: int | None,
    now: Callable[[], datetime],
    stop: threading.Event,
    rate_window: float = 60.0,
    on_series: Callable[[SeriesResult], None] = lambda _: None,
    progress: AnalyticsProgress | None = None,
) -> AnalyticsResult:
    """Archive every configured series; ``refetch_days`` None refetches the whole reach (backfill).

    ``AnalyticsRun`` started and written at once. Raises only Interrupted and WarehouseError
    (after committing the days already written).
    """
    fetching = AnalyticsRun(engine, client, settings, today, refetch_days=refetch_days, stop=stop, rate_window=rate_window,
                            progress=progress)
    return fetching.write(run_id=run_id, now=now, on_series=on_series)


class AnalyticsRun:
    """The series of one run, fetching from the moment it is made; ``write`` archives them.

    Every series starts at once, each in its own thread (listing ``/keys`` first if it needs
    the keys), at most ``settings.analytics_concurrency`` requests in flight between them,
    all paced by one shared rate limiter. The fetch threads only read the warehouse (what is
    archived already), so a sync starts them before ``/activity`` and writes them after it
    (``abandon`` when ``/activity`` failed). ``write`` writes each series in the calling
    thread as soon as all its answers are in, while the others are still fetching; until
    every series has had its first answer, into one held transaction (``_Writes``).

    ``engine`` None: the warehouse does not exist yet, so nothing is archived and there is
    nothing to read. A first sync starts its run so, before the warehouse is created and
    migrated (``cli``), and passes the engine to ``write``.
    """

    def __init__(
        self, engine: Engine | None, client: OpenRouterClient, settings: SyncConfig, today: date, *, refetch_days: int | None,
        stop: threading.Event, rate_window: float = 60.0, progress: AnalyticsProgress | None = None,
    ) -> None:
        self.today = today
        self._engine, self._stop = engine, stop
        self._started = time.monotonic()
        self._progress = progress or _Silent()
        self._limiter = limiter = RateLimiter(settings.analytics_requests_per_minute, rate_window, stop)
        in_flight = threading.BoundedSemaphore(settings.analytics_concurrency)  # requests of all series together
        names = list(dict.fromkeys(settings.analytics_series))
        self._outcomes = {name: SeriesResult(name) for name in names}
        self._keys = _Keys(client)
        self._gate = _Gate(names)
        self._halt = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="series")
        self._futures = {
            self._pool.submit(_run_series, engine, client, SERIES[name], settings, today, refetch_days, self._keys, stop, self._halt,
                              self._gate, limiter, in_flight, self._outcomes[name], self._progress): name
            for name in names
        }

    def abandon(self) -> None:
        """Stop fetching (the requests in flight end first), writing nothing; idempotent."""
        self._halt.set()  # the series still fetching stop at their next request
        self._limiter.close()  # and those waiting for a slot of the rate limit stop waiting
        self._pool.shutdown(wait=True)

    def write(self, *, run_id: int | None, now: Callable[[], datetime],
              on_series: Callable[[SeriesResult], None] = lambda _: None, engine: Engine | None = None) -> AnalyticsResult:
        """Write every series as its answers come in; the result once all are written (or skipped).

        Into ``engine``, or the engine the run was made with."""
        engine = engine or self._engine
        if engine is None:
            raise RuntimeError("bug: an analytics run made before its warehouse existed is written without an engine")
        outcomes, keys, gate, progress = self._outcomes, self._keys, self._gate, self._progress
        result = AnalyticsResult()
        result.series = list(outcomes.values())
        writes = _Writes(engine)
        held: list[str] = []  # series loaded into the held transaction, reported when it commits

        def report(name: str) -> None:
            outcome = outcomes[name]
            result.requests += outcome.requests
            progress.loaded(name)
            on_series(outcome)
            log.info("%s", outcome.describe())

        try:
            try:
                fetching: set[Future[Any]] = set(self._futures)
                while fetching or writes.holding:
                    watched = fetching | ({gate.opened} if writes.holding else set())
                    done, _ = wait(watched, return_when=FIRST_COMPLETED)
                    if writes.holding and gate.opened.done():
                        gate.wait()  # raises if the API refused: the held writes roll back
                        writes.commit()
                        for name in held:
                            report(name)
                    for future in done & fetching:
                        fetching.discard(future)
                        name = self._futures[future]
                        jobs = future.result()  # a refusal raises here (its series' worker)
                        if name in ("key", "workspace") and not keys.stored and jobs is not None:
                            _store_keys(writes, keys, run_id, now, result)
                        _load(writes, SERIES[name], jobs or [], run_id, now, self._stop, outcomes[name])
                        if writes.holding:
                            held.append(name)
                        else:
                            report(name)
            finally:
                writes.release()  # a way out before the gate opened: nothing of the API is committed
                self.abandon()
        except _Unavailable as exc:
            result.series.clear()
            result.skipped = str(exc)
            log.warning("analytics: skipped: %s", exc)
        result.seconds = time.monotonic() - self._started
        return result


def _unavailable(exc: ArchiveError) -> _Unavailable:
    return _Unavailable(
        f"this key cannot use OpenRouter's Analytics API ({exc}); the year of history it holds is not archived, "
        "/activity is archived as usual"
    )


def _run_series(
    engine: Engine | None, client: OpenRouterClient, series: Series, settings: SyncConfig, today: date, refetch_days: int | None,
    keys: _Keys, stop: threading.Event, halt: threading.Event, gate: _Gate, limiter: RateLimiter, in_flight: threading.Semaphore,
    outcome: SeriesResult, progress: AnalyticsProgress,
) -> list[_Fetch] | None:
    """A series' subjects, plan and answers (None: its subjects could not be listed)."""
    try:
        if series.per_subject:
            try:
                listed = keys.get()[0] if series.name in ("key", "workspace") else []
            except (PermissionDeniedError, NotFoundError) as exc:
                raise _unavailable(exc) from None
            except Interrupted:
                raise
            except ArchiveError as exc:
                outcome.errors.append(f"listing {series.name} subjects: {exc}")
                return None
            subjects = _subjects(series.name, settings, listed)
        else:
            subjects = [WHOLE]
        outcome.subjects = len(subjects)
        todo = _plan_series(engine, series, subjects, today, refetch_days, settings.analytics_row_limit)
        progress.planned(series.name, sum(job.days for job in todo))
        return _fetch_series(client, series, todo, settings, stop, halt, limiter, outcome, lambda: gate.arrive(series.name), progress,
                             gate.refuse, in_flight)
    except _Unavailable as exc:
        gate.refuse(exc)
        raise
    finally:
        gate.arrive(series.name)


def _store_keys(writes: _Writes, keys: _Keys, run_id: int | None, now: Callable[[], datetime], result: AnalyticsResult) -> None:
    listed, pages = keys.get()
    result.requests += len(pages)
    with writes.begin() as conn:
        for page in pages:
            warehouse.store_raw(conn, page, run_id)
        warehouse.save_keys(conn, listed, now())
    keys.stored = True


def _subjects(name: str, settings: SyncConfig, keys: list[dict[str, Any]]) -> list[str]:
    if name == "key":
        return [k["hash"] for k in keys]
    if name == "member":
        return list(settings.members)
    return sorted({k["workspace_id"] for k in keys if k.get("workspace_id")})


def _plan_series(
    engine: Engine | None, series: Series, subjects: list[str], today: date, refetch_days: int | None, limit: int,
) -> list[_Fetch]:
    """Requests per subject: runs of consecutive days to fetch, cut to fit ``limit`` where the rows per day are known.

    ``engine`` None: no warehouse yet, nothing archived."""
    first, last = series_range(today, series.reach)
    todo: list[_Fetch] = []
    with engine.connect() if engine is not None else nullcontext() as conn:
        for subject in subjects:
            have = _archived(conn, series.name, subject, first.isoformat(), last.isoformat()) if conn is not None else {}
            for start, end in runs(plan_days(today, series.reach, have, refetch_days)):
                for a, b in size_ranges(start, end, have, limit):
                    todo.append(_Fetch(series, subject, a, b, oldest=a == first))
    return todo


def _fetch_series(
    client: OpenRouterClient, series: Series, todo: list[_Fetch], settings: SyncConfig, stop: threading.Event,
    halt: threading.Event, limiter: RateLimiter, outcome: SeriesResult, answered: Callable[[], None] = lambda: None,
    progress: AnalyticsProgress | None = None, on_refusal: Callable[[_Unavailable], None] = lambda _: None,
    in_flight: threading.Semaphore | None = None,
) -> list[_Fetch]:
    """Every planned request answered (or failed), truncated answers replaced by their splits.

    ``answered`` is called after each request that was not refused, ``on_refusal`` at once on a
    refusal (before this series' other requests end); every attempt, retries
    included (OpenRouter counts those too), holds a slot of the rate limiter.
    """
    limit = settings.analytics_row_limit
    progress = progress or _Silent()
    in_flight = in_flight or threading.BoundedSemaphore(settings.analytics_concurrency)
    decode = answer_decoder(series.dimensions, series.metrics)
    done: list[_Fetch] = []
    lock = threading.Lock()

    @contextmanager
    def pace() -> Iterator[None]:
        with limiter.slot():
            with lock:
                outcome.requests += 1
            yield

    def fetch(job: _Fetch) -> list[_Fetch]:
        """The job answered, or the jobs its truncated answer was split into."""
        if stop.is_set():
            raise Interrupted("interrupted: stop requested")
        if halt.is_set():
            job.error = "not fetched: the run ended early"
            return [job]
        subject = None if job.subject == WHOLE else job.subject
        refused = False  # this request's
        try:
            with in_flight:
                if halt.is_set():  # the run ended while this request waited for its turn
                    job.error = "not fetched: the run ended early"
                    return [job]
                job.fetched = client.analytics_query(query_body(series, job.first, job.last, limit, subject), around_attempt=pace,
                                                     decode=decode)
        except (PermissionDeniedError, NotFoundError) as exc:
            # Made known at once, and not an arrival: arriving last, or after another request
            # of this series arrived, would open the gate before the refusal were known.
            refused = True
            unavailable = _unavailable(exc)
            on_refusal(unavailable)
            raise unavailable from None
        except BadRequestError as exc:
            if job.oldest and job.first < job.last and job.shift < MAX_REACH_SHORTFALL:
                # "About 365 days": the oldest day may already be gone. Start a day later;
                # a day OpenRouter no longer serves is not a failure.
                log.info("analytics %s: %s refused (%s); asking from %s", series.name, job.first, exc, job.first + timedelta(days=1))
                progress.fetched(series.name, 1)
                return [job, _Fetch(series, job.subject, job.first + timedelta(days=1), job.last, oldest=True, shift=job.shift + 1)]
            job.error = str(exc)
            return [job]
        except Interrupted:
            raise
        except ArchiveError as exc:
            job.error = str(exc)
            return [job]
        finally:
            if not refused:
                answered()
        try:
            job.parsed = parse_answer(
                job.fetched.document, dimensions=series.dimensions, metrics=series.metrics, first=job.first, last=job.last,
                merge_duplicates=series.name == "app",  # app titles are labels, not unique: add them up
            )
        except TruncatedAnswerError as exc:
            if job.first == job.last:
                job.error = f"{job.first}: {exc}, and a single day cannot be split further"
                return [job]
            rows = job.fetched.document["data"]["data"]
            returned_days, first_held = held_days(job.fetched.document)
            with lock:
                outcome.splits += 1
            log.info("analytics %s: %s .. %s truncated at %d rows; splitting", series.name, job.first, job.last, len(rows))
            parts = resplit(job.first, job.last, len(rows), returned_days, limit, first_held)
            return [job, *(_Fetch(series, job.subject, a, b) for a, b in parts)]
        except ArchiveError as exc:
            job.error = str(exc)
        else:
            job.packed = rawstore.pack(job.fetched.body)  # here, off the writing thread (see rawstore.Packed)
        progress.fetched(series.name, job.days)
        return [job]

    # A truncated answer's replacements are asked in the next round, until none is left.
    with ThreadPoolExecutor(max_workers=settings.analytics_concurrency, thread_name_prefix="analytics") as pool:
        while todo:
            followups: list[_Fetch] = []
            for answered_jobs in pool.map(fetch, todo):
                head, *rest = answered_jobs
                if rest:
                    followups += rest  # head was truncated: nothing of it is stored
                else:
                    done.append(head)
            todo = followups
    return done


def _archived(conn: Connection, series: str, subject: str, first: str, last: str) -> dict[str, int]:
    """The days of (series, subject) archived between ``first`` and ``last``, with their row counts."""
    t = archived_analytics_days
    query = select(t.c.date, t.c.row_count).where(t.c.series == series, t.c.subject == subject, t.c.date >= first, t.c.date <= last)
    return {d: n for d, n in conn.execute(query)}


def _load(
    writes: _Writes, series: Series, jobs: list[_Fetch], run_id: int | None, now: Callable[[], datetime],
    stop: threading.Event, outcome: SeriesResult,
) -> None:
    """Write the series day by day, each day of every subject whole, in transactions of about ``GROUP_ROWS`` rows.

    Each (series, day) is written whole or not at all, with its marks: a transaction commits
    only between two days, and a failure rolls back its days, none of which is then marked.
    Grouping the days spares a commit per day (an fsync with ``synchronous=FULL``): a year
    of five series is 1,500 (series, day) pairs, whose commits were most of a first sync's
    time. A crash loses at most the open group, fetched again by the next sync. The outcome
    counts committed days only.
    """
    for job in jobs:
        if job.error is None and (unresolved := _unresolved(series, job)) is not None:
            job.error = unresolved
    answered = [j for j in jobs if j.error is None and j.parsed is not None and j.fetched is not None]
    for job in jobs:
        if job.error is not None:
            outcome.days_failed += job.days
            outcome.errors.append(f"{_describe(series, job.subject)} {job.first} .. {job.last}: {job.error}")
            log.warning("analytics %s: %s", series.name, outcome.errors[-1])
    if not answered:
        return
    raw: dict[int, int] = {}
    with writes.begin() as conn:
        for job in answered:
            assert job.fetched is not None and job.parsed is not None
            raw[id(job)] = warehouse.store_raw(conn, job.fetched, run_id, job.packed)
            outcome.warnings += [f"{_describe(series, job.subject)}: {w}" for w in job.parsed.warnings]
    by_day: dict[str, list[_Fetch]] = {}
    for job in answered:
        moment = job.first
        while moment <= job.last:
            by_day.setdefault(moment.isoformat(), []).append(job)
            moment += timedelta(days=1)
    group: list[_Day] = []
    size = 0
    for day in sorted(by_day):
        if stop.is_set():
            _write_group(writes, series, group, run_id, outcome)  # the days already prepared are complete: keep them
            raise Interrupted("interrupted: stop requested")
        ready: list[tuple[str, list[dict[str, Any]], int | None]] = []  # (subject, rows, raw response id)
        labels: dict[str, str] = {}
        for job in by_day[day]:
            assert job.parsed is not None
            try:
                if day in job.parsed.rejected:
                    raise ValueError(job.parsed.rejected[day])
                rows, seen = _rows(series, job.subject, job.parsed.days.get(day, []))
            except ValueError as exc:
                outcome.days_failed += 1
                outcome.errors.append(f"{_describe(series, job.subject)} {day}: rejected: {exc}")
                continue
            ready.append((job.subject, rows, raw[id(job)]))
            labels.update(seen)
        if not ready:
            continue
        group.append(_Day(day, now(), ready, labels))
        size += sum(1 + len(rows) for _, rows, _ in ready)  # a mark per subject, and the rows
        if size >= GROUP_ROWS:
            _write_group(writes, series, group, run_id, outcome)
            group, size = [], 0
    _write_group(writes, series, group, run_id, outcome)


def _unresolved(series: Series, job: _Fetch) -> str | None:
    """Why a per-subject answer is not the subject's history: the API did not know its id.

    OpenRouter answers a filter id it cannot resolve with zero rows and a ``warnings``
    entry, not an error (api-notes). Stored, that answer would mark the subject's whole range
    as days without activity: a year of zero spend for, say, a mistyped member id.
    """
    parsed = job.parsed
    if not series.per_subject or parsed is None or any(parsed.days.values()):
        return None
    named = [w for w in parsed.warnings if job.subject in w]
    if not named:
        return None
    fix = "; check [sync] members" if series.name == "member" else ""
    return f"OpenRouter could not resolve this id ({named[0]}), so its days are not archived{fix}"


@dataclass
class _Day:
    """One (series, day) ready to write: every subject answered for it."""

    day: str
    now: datetime
    answers: list[tuple[str, list[dict[str, Any]], int | None]]  # (subject, rows, raw response id)
    labels: dict[str, str]


def _write_group(writes: _Writes, series: Series, days: list[_Day], run_id: int | None, outcome: SeriesResult) -> None:
    """Write ``days`` in one transaction (or the held one), then count them in ``outcome``."""
    if not days:
        return
    with writes.begin() as conn:
        written = save_series_days(conn, series, days, run_id=run_id)
        labels: dict[str, str] = {}
        for item in days:
            labels.update(item.labels)
        _save_labels(conn, series.name, labels, days[-1].now)
    for item, w in zip(days, written):
        outcome.days_archived += len(item.answers)
        outcome.rows_inserted += w.inserted
        outcome.rows_updated += w.updated
        outcome.rows_unchanged += w.unchanged
        outcome.rows_retired += w.retired


def save_series_days(conn: Connection, series: Series, days: list[_Day], *, run_id: int | None) -> list[warehouse.DayWrite]:
    """``save_series_day`` for many days in the caller's transaction, in a few statements.

    One SELECT reads what the days already hold; a day whose rows are all new or unchanged
    (every day of a first sync, nearly every day of a later one) is written by one upsert
    shared by all such days, its marks by another. A day with a revised or vanished row goes
    through ``save_series_day`` (``warehouse.save_rows``), which keeps the old versions in
    the history table. The result is the same as writing the days one by one.
    """
    if not days:
        return []
    table, key, compared = series.table, series.key, series.compared
    where = [table.c.date >= min(d.day for d in days), table.c.date <= max(d.day for d in days)]
    if table is analytics_daily:
        where.append(table.c.series == series.name)
    # The scope of a day, as in save_series_day: the subjects answered for it (per-subject
    # series), else the whole day of the series.
    wanted = {d.day: {s for s, _, _ in d.answers} for d in days}
    subject_at = key.index("subject") if series.per_subject else None
    existing: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for r in conn.execute(select(table.c.date, *(table.c[k] for k in key), *(table.c[c] for c in compared)).where(*where)):
        day, ident = r[0], tuple(r[1 : 1 + len(key)])
        if day not in wanted or (subject_at is not None and ident[subject_at] not in wanted[day]):
            continue  # a day or subject not in this write: its rows stay as they are
        existing.setdefault(day, {})[ident] = tuple(r[1 + len(key) :])
    out: list[warehouse.DayWrite] = []
    pk = tuple(c.name for c in table.primary_key.columns)
    update = (*compared, "updated_at")
    fresh: dict[Positional, list[tuple[Any, ...]]] = {}  # the upsert of a set of columns, with its rows' parameters
    # Marks bound by position like the rows, their day's stamp once: a first sync marks
    # thousands of (series, subject, day).
    mark = warehouse.upsert_statement(conn.dialect, archived_analytics_days, _MARK_KEY, _MARK_UPDATE, _MARK_COLUMNS)
    marks: list[tuple[Any, ...]] = []
    for item in days:
        rows = [r for _, subject_rows, _ in item.answers for r in subject_rows]
        held = existing.get(item.day)
        if held:
            diff = warehouse.diff_rows(held, rows, key, compared)
            if diff.updated or diff.vanished:
                out.append(save_series_day(conn, series, item.answers, item.day, now=item.now, run_id=run_id))
                continue
            # diff_rows hands back the incoming rows themselves: this run's own dicts (_rows)
            inserted, unchanged = cast("list[dict[str, Any]]", diff.inserted), diff.unchanged
        else:
            inserted, unchanged = rows, 0  # nothing held for the day (a first sync): every row is new
        if inserted:
            # The day's stamp binds once for all its rows (_bound), as the /activity load
            # binds its own (warehouse.save_rows); each row holds its day already.
            stamp = {"first_archived_at": item.now, "updated_at": item.now}
            columns = tuple(c.name for c in table.columns if c.name in inserted[0] or c.name in stamp)
            stmt = warehouse.upsert_statement(conn.dialect, table, pk, update, columns)
            fresh.setdefault(stmt, []).extend(_bound(stmt, inserted, stamp))
        marked = {"series": series.name, "date": item.day, "first_archived_at": item.now, "last_fetched_at": item.now, "run_id": run_id}
        marks += mark.bind_many([{"subject": s, "row_count": len(r), "raw_response_id": i} for s, r, i in item.answers], marked)
        out.append(warehouse.DayWrite(item.day, len(rows), len(inserted), 0, unchanged, 0))
    for stmt, params in fresh.items():
        conn.exec_driver_sql(stmt.sql, params)
    if marks:
        conn.exec_driver_sql(mark.sql, marks)
    return out


def _marks(series: Series, answers: list[tuple[str, list[dict[str, Any]], int | None]], day: str, now: datetime,
           run_id: int | None) -> list[dict[str, Any]]:
    return [
        {"series": series.name, "subject": subject, "date": day, "row_count": len(subject_rows), "first_archived_at": now,
         "last_fetched_at": now, "run_id": run_id, "raw_response_id": raw_id}
        for subject, subject_rows, raw_id in answers
    ]


_MARK_KEY = ("series", "subject", "date")
_MARK_UPDATE = ("row_count", "last_fetched_at", "run_id", "raw_response_id")
_MARK_COLUMNS = (*_MARK_KEY, "row_count", "first_archived_at", "last_fetched_at", "run_id", "raw_response_id")  # as _marks gives them


def _mark_statement(conn: Connection) -> Any:
    return upsert(conn.engine, archived_analytics_days, _MARK_KEY, _MARK_UPDATE)


def _rows(series: Series, subject: str, parsed: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows ready for the table, and the labels seen (subject -> label).

    The parsed answer's own dicts, used by nothing else, completed in place: the key columns
    the series' dimensions do not give (``_filled``), one ``dict.update`` a row; a year of
    series is tens of thousands of rows, and this runs on the writing thread.
    """
    labels: dict[str, str] = {}
    if series.table is analytics_provider_daily:
        return parsed, labels
    fill = _filled(series, subject)
    for row in parsed:
        row.update(fill)
    if series.per_subject:
        for row in parsed:
            label = row.pop(LABEL, None)
            if label:
                labels[subject] = label
        models = [row["model"] for row in parsed]
        if len(set(models)) < len(models):
            # Two labels for one filtered id on one day: the split between them is unknowable.
            twice = next(model for model in models if models.count(model) > 1)
            raise ValueError(f"model {twice!r} is listed under two labels")
    if series.name == "app":
        labels.update({r["subject"]: r["subject"] for r in parsed if r["subject"]})
    return parsed, labels


def _filled(series: Series, subject: str) -> dict[str, str]:
    """What each row of ``series`` gets besides its answer's columns: its series, and the
    subject and variant where no dimension gives them (a per-subject series' subject is the
    id it was filtered by; ``''`` is the variant of a series without that dimension)."""
    given = set(series.dimensions.values())
    fill = {"series": series.name}
    if "subject" not in given:
        fill["subject"] = subject
    if "variant" not in given:
        fill["variant"] = ""
    return fill


def _bound(stmt: Positional, rows: list[dict[str, Any]], stamp: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """``stmt.bind_many(rows, stamp)`` for rows of a checked answer, a tuple a row in one call.

    Their values are what the driver binds as they are (validate_analytics: amounts floats
    or None, counts ints, dimensions strings), so only the stamp's values go through their
    columns' bind processors, once; the stamp's columns must be the statement's last.
    """
    n = len(stmt.names) - len(stamp)
    if n < 2 or tuple(stmt.names[n:]) != tuple(stamp):  # (one name: itemgetter would give no tuple)
        return stmt.bind_many(rows, stamp)
    tail = tuple(stamp[name] if process is None else process(stamp[name]) for name, process in zip(stmt.names[n:], stmt.processors[n:]))
    return list(map(tuple.__add__, map(itemgetter(*stmt.names[:n]), rows), repeat(tail)))


def save_series_day(
    conn: Connection, series: Series, answers: list[tuple[str, list[dict[str, Any]], int | None]], day: str, *,
    now: datetime, run_id: int | None,
) -> warehouse.DayWrite:
    """Make one day of a series exactly the ``answers`` (subject, rows, raw response id) and mark it.

    Written in the caller's transaction, in one pass for every subject answered: the scope is
    those subjects, so a subject not fetched this time keeps its rows.
    """
    rows = [r for _, subject_rows, _ in answers for r in subject_rows]
    if series.table is analytics_provider_daily:
        scope: dict[str, str | tuple[str, ...]] = {}
    elif series.name == "app":
        scope = {"series": "app"}  # one answer holds every app of the day
    else:
        scope = {"series": series.name, "subject": tuple(subject for subject, _, _ in answers)}
    # With one raw answer, superseded versions name it; several (one per subject): the first.
    written = warehouse.save_rows(
        conn, series.table, day, rows, now=now, scope=scope, key=series.key, run_id=run_id,
        raw_response_id=answers[0][2], compared=series.compared,
    )
    conn.execute(_mark_statement(conn), _marks(series, answers, day, now, run_id))
    return written


def _save_labels(conn: Connection, series: str, labels: dict[str, str], now: datetime) -> None:
    if not labels:
        return
    stmt = upsert(conn.engine, analytics_labels, ("series", "subject"), ("label", "last_seen_at"))
    conn.execute(stmt, [
        {"series": series, "subject": s, "label": label[:1000], "first_seen_at": now, "last_seen_at": now} for s, label in labels.items()
    ])


def _describe(series: Series, subject: str) -> str:
    if subject == WHOLE:
        return series.name
    return f"{series.name} {subject[:12] + '…' if series.name == 'key' else subject}"
