"""How the Analytics API is fetched (issue 10): a year exactly, every series; the limits kept.

Real CLI or run_analytics, real HTTP to the stand-in, real SQLite (and PostgreSQL where
marked). Expected values are summed here from the stand-in's own generator
(``Analytics.facts``), never from the archiver's parser.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from conftest import FAST_CONFIG, KEY, query
from etl import migrate
from etl.cli import cli
from etl.analytics import RateLimiter, run_analytics, size_ranges
from etl.client import OpenRouterClient, RetryPolicy
from etl.config import SyncConfig
from etl.db import open_engine
from etl.schema import ANALYTICS_METRICS, PROVIDER_AMOUNTS, PROVIDER_COUNTS, PROVIDER_MEASURES
from etl.standin import Dataset, Fault, StandIn
from etl.standin.analytics import LATENCY_METRICS, Analytics
from etl.window import utc_today

TODAY = utc_today()
FIRST, LAST = TODAY - timedelta(days=365), TODAY - timedelta(days=1)
YEAR = [(FIRST + timedelta(days=i)).isoformat() for i in range(365)]
ALL_SERIES = ["account", "provider", "key", "app", "member", "workspace"]


@pytest.fixture
def dataset():
    return Dataset(anchor=TODAY, keys=3, endpoints_per_day=4, first_key_age_days=400)


def configure(monkeypatch, tmp_path, server, url, sync: str) -> None:
    monkeypatch.setenv("OPENROUTER_ARCHIVE_ANALYTICS", "on")
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", url)
    (tmp_path / "config.toml").write_text(FAST_CONFIG + "[sync]\n" + sync)


def series_config(dataset, names=ALL_SERIES, extra: str = "") -> str:
    return f"analytics_series = {json.dumps(names)}\nmembers = {json.dumps(list(dataset.user_ids))}\n" + extra


# -- what the stand-in holds, from its generator -----------------------------------------------


def _add(row: dict, fact, metrics) -> None:
    for metric in metrics:
        value = fact.values[metric]
        if value is not None:
            row[metric] = (row.get(metric) or 0) + value
        else:
            row.setdefault(metric, None)


def expected_daily(analytics: Analytics) -> dict[tuple[str, str, str, str, str], dict]:
    """(series, subject, date, model, variant) -> metrics, for every long-range series."""
    out: dict[tuple, dict] = {}
    for n in range(365):
        day = FIRST + timedelta(days=n)
        for fact in analytics.facts(day):
            d, model = day.isoformat(), fact.dims["model"]
            app = fact.dims["app"]
            for key in (
                ("account", "*", d, model, fact.dims["variant"]),
                ("key", fact.dims["api_key_id"], d, model, ""),
                ("member", fact.dims["user"], d, model, ""),
                ("workspace", fact.dims["workspace"], d, model, ""),
                ("app", analytics.app_title(app) if app is not None else "", d, model, ""),  # stored under its title
            ):
                _add(out.setdefault(key, {}), fact, ANALYTICS_METRICS)
    for row in out.values():  # components that never applied are served as 0 (null_components off)
        for metric, value in row.items():
            if value is None:
                row[metric] = 0.0
    return out


def expected_provider(analytics: Analytics) -> dict[tuple[str, str, str], dict]:
    out: dict[tuple, dict] = {}
    groups: dict[tuple, list] = defaultdict(list)
    for n in range(31):
        day = LAST - timedelta(days=n)
        for fact in analytics.facts(day):
            groups[(day.isoformat(), fact.dims["model"], fact.dims["provider"])].append(fact)
    for key, facts in groups.items():
        row: dict = {}
        for fact in facts:
            _add(row, fact, PROVIDER_AMOUNTS + PROVIDER_COUNTS)
        requests = sum(f.values["request_count"] for f in facts)
        for i, metric in enumerate(LATENCY_METRICS):
            row[metric] = round(sum(f.values["_lat"][i] * f.values["request_count"] for f in facts) / requests, 2) if requests else None
        row["avg_throughput"] = round(sum(f.values["_tput"] * f.values["request_count"] for f in facts) / requests, 2) if requests else None
        out[key] = row
    return out


def assert_same(stored: dict, expected: dict) -> None:
    assert set(stored) == set(expected), (sorted(set(stored) ^ set(expected))[:5])
    for key, row in expected.items():
        for metric, value in row.items():
            got = stored[key][metric]
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-12, abs=1e-9), (key, metric)
            else:
                assert got == value, (key, metric)


def stored_daily(url: str) -> dict:
    cols = ", ".join(ANALYTICS_METRICS)
    rows = query(url, f"SELECT series, subject, date, model, variant, {cols} FROM analytics_daily")
    return {tuple(r[:5]): dict(zip(ANALYTICS_METRICS, r[5:])) for r in rows}


def stored_provider(url: str) -> dict:
    metrics = PROVIDER_AMOUNTS + PROVIDER_COUNTS + PROVIDER_MEASURES
    rows = query(url, f"SELECT date, model, provider, {', '.join(metrics)} FROM analytics_provider_daily")
    return {tuple(r[:3]): dict(zip(metrics, r[3:])) for r in rows}


def analytics_queries(url: str, run_id: int | None = None) -> list[dict]:
    where = f" AND run_id = {run_id}" if run_id else ""
    rows = query(url, f"SELECT params FROM raw_responses WHERE endpoint = 'analytics/query'{where} ORDER BY id")
    return [json.loads(json.loads(p)["query"]) for (p,) in rows]


# -- a first sync recovers everything ------------------------------------------------------------


@pytest.mark.both_backends
def test_a_first_sync_recovers_every_series_day_and_value(dataset, warehouse_url, tmp_path, monkeypatch, run):
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset))
        result = run("sync")
        analytics = server.analytics
    assert result.exit_code == 0, result.output
    assert_same(stored_daily(warehouse_url), expected_daily(analytics))
    assert_same(stored_provider(warehouse_url), expected_provider(analytics))
    # Every (series, subject) is marked for every day of its reach, empty days included.
    marks = defaultdict(list)
    for series, subject, day in query(warehouse_url, "SELECT series, subject, date FROM archived_analytics_days ORDER BY date"):
        marks[(series, subject)].append(day)
    subjects = {
        "account": ["*"], "app": ["*"], "provider": ["*"],
        "key": [k.hash for k in dataset.api_keys], "member": list(dataset.user_ids), "workspace": sorted({k.workspace_id for k in dataset.api_keys}),
    }
    assert set(marks) == {(s, x) for s, xs in subjects.items() for x in xs}
    for (series, _), days in marks.items():
        assert days == (YEAR[-31:] if series == "provider" else YEAR)
    assert analytics.rate_limited == 0


# -- later syncs: only what is missing, plus refetch_days -----------------------------------------


def test_a_later_sync_fetches_a_gap_and_the_recent_days_only(dataset, warehouse_url, tmp_path, monkeypatch, run):
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account", "key"]))
        assert run("sync").exit_code == 0
        # A hole in one key's history (as if an earlier run had stopped there): 10 days in March.
        hole = [(FIRST + timedelta(days=100 + i)).isoformat() for i in range(10)]
        victim = dataset.api_keys[1].hash
        before = stored_daily(warehouse_url)
        from sqlalchemy import create_engine, text

        engine = create_engine(warehouse_url)
        with engine.begin() as conn:
            for table in ("analytics_daily", "archived_analytics_days"):
                conn.execute(text(f"DELETE FROM {table} WHERE series = 'key' AND subject = :s AND date >= :a AND date <= :b"),
                             {"s": victim, "a": hole[0], "b": hole[-1]})
        engine.dispose()
        result = run("sync")
        assert result.exit_code == 0, result.output
        ((run_id,),) = query(warehouse_url, "SELECT max(id) FROM sync_runs")
        asked = analytics_queries(warehouse_url, run_id)
    recent = {"start": f"{TODAY - timedelta(days=2)}T00:00:00Z", "end": f"{TODAY}T00:00:00Z"}
    gap = {"start": f"{hole[0]}T00:00:00Z", "end": f"{date.fromisoformat(hole[-1]) + timedelta(days=1)}T00:00:00Z"}
    ranges = sorted((b.get("filters", [{}])[0].get("value", "*"), b["time_range"]["start"], b["time_range"]["end"]) for b in asked)
    expected = sorted([("*", recent["start"], recent["end"])] + [(k.hash, recent["start"], recent["end"]) for k in dataset.api_keys]
                      + [(victim, gap["start"], gap["end"])])
    assert ranges == expected
    assert stored_daily(warehouse_url) == before  # the hole is filled again, exactly


def test_a_backfill_sizes_its_requests_from_the_rows_it_knows(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # A first sync cannot know the rows per day: with a 400-row limit its answers come back
    # truncated and are split. A backfill knows them from the marks: no answer is truncated.
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account"], "analytics_row_limit = 400\n"))
        first = run("sync")
        assert first.exit_code == 0 and "truncated answer(s) split" in first.stdout
        again = run("backfill")
    assert again.exit_code == 0, again.output
    line = next(line for line in again.stdout.splitlines() if line.startswith("analytics account"))
    assert "365 day(s) archived" in line and "truncated" not in line
    ((run_id,),) = query(warehouse_url, "SELECT max(id) FROM sync_runs")
    rows = query(warehouse_url, "SELECT count(*) FROM analytics_daily WHERE series = 'account'")[0][0]
    asked = analytics_queries(warehouse_url, run_id)
    assert len(asked) == len(size_ranges(FIRST, LAST, dict(query(warehouse_url, "SELECT date, row_count FROM archived_analytics_days")), 400))
    assert len(asked) <= 1.5 * -(-rows // 400) + 1  # near rows / limit


def test_size_ranges_fit_the_limit_where_rows_are_known():
    first = date(2026, 1, 1)
    known = {(first + timedelta(days=i)).isoformat(): 100 for i in range(30)}
    parts = size_ranges(first, first + timedelta(days=29), known, 1000)
    assert parts[0][0] == first and parts[-1][1] == first + timedelta(days=29)
    assert all((b - a).days + 1 <= 9 for a, b in parts)  # 9 x 100 rows <= 90% of 1000
    assert all((n - p).days == 1 for (_, p), (n, _) in zip(parts, parts[1:]))  # contiguous, no overlap
    assert size_ranges(first, first + timedelta(days=29), {}, 1000) == [(first, first + timedelta(days=29))]
    # Unknown days count as the mean of the known ones.
    half = {k: v for k, v in known.items() if k < "2026-01-16"}
    assert len(size_ranges(first, first + timedelta(days=29), half, 1000)) == len(parts)


# -- the rate limit ---------------------------------------------------------------------------------


def test_the_limiter_never_lets_more_than_its_limit_arrive_within_a_window():
    # Requests arrive at the server at any moment between being sent and being answered; the
    # slowest of them must not let the next window's first ones in early. Threads stand in
    # for requests: each records its "arrival" at a random point inside its slot.
    limit, window = 4, 0.3
    limiter = RateLimiter(limit, window, threading.Event())
    arrivals: list[float] = []
    lock = threading.Lock()
    rng = random.Random(7)
    delays = [(rng.uniform(0, 0.2), rng.uniform(0, 0.2)) for _ in range(24)]

    def request(before: float, after: float) -> None:
        with limiter.slot():
            time.sleep(before)
            with lock:
                arrivals.append(time.monotonic())
            time.sleep(after)

    threads = [threading.Thread(target=request, args=d) for d in delays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arrivals.sort()
    assert len(arrivals) == 24 and limiter.most <= limit
    assert all(arrivals[i + limit] - arrivals[i] >= window for i in range(len(arrivals) - limit))


def test_the_limiter_can_be_stopped_while_waiting():
    stop = threading.Event()
    limiter = RateLimiter(1, 60.0, stop)
    with limiter.slot():
        pass
    threading.Timer(0.2, stop.set).start()
    from etl.errors import Interrupted

    with pytest.raises(Interrupted):
        with limiter.slot():
            pass


def test_retries_are_paced_like_first_attempts(dataset, tmp_path):
    # OpenRouter counts every request: each retry holds a slot of the limiter and is counted.
    with StandIn(dataset, management_key=KEY) as server:
        server.inject(Fault("503", path="/analytics/query"), Fault("503", path="/analytics/query"))
        engine = open_engine(f"sqlite:///{tmp_path / 'retry.db'}")
        migrate.upgrade(engine)
        settings = SyncConfig(analytics_series=("account",))
        with OpenRouterClient(server.base_url, KEY, retry=RetryPolicy(max_attempts=5, initial=0.01, max_wait=0.02)) as client:
            result = run_analytics(engine, client, settings, TODAY, refetch_days=None, run_id=None,
                                   now=lambda: datetime.now(timezone.utc), stop=threading.Event())
        engine.dispose()
        seen = [r for r in server.requests if r.path.endswith("/analytics/query")]
    assert result.ok, result.describe()
    assert len(seen) == 3 and result.series[0].requests == 3


def test_many_subjects_in_parallel_never_exceed_the_limit(tmp_path):
    # 12 keys, 4 members, 4 workspaces and the three whole series: 23 requests against a
    # limit of 5 in any 0.4 s (the stand-in counts; a 429 would fail a request: one attempt).
    dataset = Dataset(anchor=TODAY, keys=12, users=4, endpoints_per_day=2, first_key_age_days=60)
    analytics = Analytics(dataset, rate_limit=5, rate_window=0.4)
    with StandIn(dataset, management_key=KEY, analytics=analytics, latency=0.02) as server:
        engine = open_engine(f"sqlite:///{tmp_path / 'rate.db'}")
        migrate.upgrade(engine)
        settings = SyncConfig(analytics_series=tuple(ALL_SERIES), members=tuple(dataset.user_ids), analytics_requests_per_minute=5,
                              analytics_concurrency=8)
        with OpenRouterClient(server.base_url, KEY, retry=RetryPolicy(max_attempts=1)) as client:
            result = run_analytics(engine, client, settings, TODAY, refetch_days=None, run_id=None,
                                   now=lambda: datetime.now(timezone.utc), stop=threading.Event(), rate_window=0.4)
        engine.dispose()
        assert server.analytics is analytics
    assert result.ok, result.describe()
    sent = sum(s.requests for s in result.series)
    workspaces = len({k.workspace_id for k in dataset.api_keys})
    assert sent == 3 + 12 + 4 + workspaces
    assert analytics.served == sent and analytics.rate_limited == 0 and analytics.max_in_window <= 5


def test_requests_in_flight_never_exceed_analytics_concurrency_across_series(tmp_path):
    # Every series fetches at once; analytics_concurrency bounds their requests together,
    # not each series' own. The stand-in holds each request a while, so that they overlap.
    dataset = Dataset(anchor=TODAY, keys=8, users=4, endpoints_per_day=2, first_key_age_days=60)
    analytics = Analytics(dataset)
    lock, in_flight, most = threading.Lock(), [0], [0]
    original = analytics.admit

    def admit() -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.05)
            original()
        finally:
            with lock:
                in_flight[0] -= 1

    analytics.admit = admit  # type: ignore[method-assign]
    with StandIn(dataset, management_key=KEY, analytics=analytics) as server:
        engine = open_engine(f"sqlite:///{tmp_path / 'flight.db'}")
        migrate.upgrade(engine)
        settings = SyncConfig(analytics_series=tuple(ALL_SERIES), members=tuple(dataset.user_ids), analytics_concurrency=3, concurrency=8)
        with OpenRouterClient(server.base_url, KEY, retry=RetryPolicy(max_attempts=1)) as client:
            result = run_analytics(engine, client, settings, TODAY, refetch_days=None, run_id=None,
                                   now=lambda: datetime.now(timezone.utc), stop=threading.Event())
        engine.dispose()
    assert result.ok, result.describe()
    assert analytics.served == sum(s.requests for s in result.series) > 3
    assert 2 <= most[0] <= 3  # they did overlap, and never more than 3 at once


def test_the_analytics_api_is_fetched_while_activity_is_still_answering(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # The series start with the run, beside /activity (they only read the warehouse), and are
    # written after it: a slow /activity no longer delays them. Its answer takes 1.5 s here.
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account", "provider"]))
        server.inject(Fault("slow", delay=1.5, path="/activity"))
        result = run("sync")
        assert result.exit_code == 0, result.output
        activity = next(r.at for r in server.requests if r.path.endswith("/activity"))
        queries = [r.at for r in server.requests if r.path.endswith("/analytics/query")]
    assert len(queries) == 2 and max(queries) < activity + 1.5  # both asked while /activity was held
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]
    assert query(warehouse_url, "SELECT count(DISTINCT series) FROM archived_analytics_days") == [(2,)]


def _asked(server: StandIn) -> int:
    return sum(r.path.endswith("/analytics/query") for r in server.requests)


def test_a_first_sync_asks_for_its_year_before_the_warehouse_exists(dataset, tmp_path, monkeypatch, run):
    # A warehouse that does not exist yet holds nothing: the series' plan needs no warehouse,
    # so their requests go out before the file is created and migrated. The migration here
    # waits (up to 10 s) for the stand-in to have answered one; before, none came until after
    # it. A second sync plans from what the warehouse holds: after its migration, as before.
    url = f"sqlite:///{tmp_path / 'new' / 'archive.db'}"
    upgrade = migrate.upgrade
    asked_before_migrating: list[int] = []
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, url, series_config(dataset, ["account", "provider", "key"]))

        def upgrade_once_asked(engine, revision="head"):
            deadline = time.monotonic() + 10
            while not asked_before_migrating and not _asked(server) and time.monotonic() < deadline:
                time.sleep(0.01)
            asked_before_migrating.append(_asked(server))
            return upgrade(engine, revision)

        monkeypatch.setattr(migrate, "upgrade", upgrade_once_asked)
        first = run("sync")
        before_second = _asked(server)
        second = run("sync")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert asked_before_migrating[0] >= 1
    assert asked_before_migrating[1] == before_second  # the second sync's series start after its migration
    assert query(url, "SELECT count(*) FROM archived_analytics_days WHERE series = 'account'") == [(365,)]
    assert query(url, "SELECT count(DISTINCT subject) FROM archived_analytics_days WHERE series = 'key'") == [(len(dataset.api_keys),)]
    assert "analytics key: 3 subject(s)" in first.stdout


def test_a_first_sync_whose_warehouse_cannot_be_made_stops_its_series(dataset, tmp_path, monkeypatch, run):
    # The series of a first sync fetch before its warehouse exists; if it cannot be made (a
    # full disk during the migrations, here), the sync fails with one line and nothing is left
    # fetching behind it. One request a minute: the other series are waiting for the rate
    # limiter when the migration fails.
    from etl.errors import WarehouseError

    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, f"sqlite:///{tmp_path / 'archive.db'}",
                  series_config(dataset, ["account", "provider", "key"], "analytics_requests_per_minute = 1\n"))

        def disk_full(engine, revision="head"):
            deadline = time.monotonic() + 10
            while not _asked(server) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise WarehouseError("warehouse archive.db: database or disk is full")

        monkeypatch.setattr(migrate, "upgrade", disk_full)
        result = CliRunner().invoke(cli, ["sync"])
        asked = _asked(server)
        alive = [t.name for t in threading.enumerate() if t.name.startswith(("series", "analytics"))]
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == ["Error: warehouse archive.db: database or disk is full"]
    assert asked == 1  # the first request; the others never went out
    assert not alive


def test_a_run_started_before_midnight_is_asked_again_for_the_new_day(dataset, tmp_path):
    # A series run made before midnight (UTC) and written by a sync after it would end a
    # day short; run_sync abandons it and asks again with its own day.
    from etl.analytics import AnalyticsRun
    from etl.sync import run_sync

    engine = open_engine(f"sqlite:///{tmp_path / 'midnight.db'}")
    migrate.upgrade(engine)
    settings = SyncConfig(analytics_series=("account",))
    with StandIn(dataset, management_key=KEY) as server:
        with OpenRouterClient(server.base_url, KEY, retry=RetryPolicy(max_attempts=1)) as client:
            early = AnalyticsRun(None, client, settings, TODAY - timedelta(days=1), refetch_days=settings.refetch_days,
                                 stop=threading.Event())
            report = run_sync(engine, client, [], trigger="sync", settings=settings, analytics=early)
    marked = [d for (d,) in query(f"sqlite:///{tmp_path / 'midnight.db'}", "SELECT date FROM archived_analytics_days ORDER BY date")]
    engine.dispose()
    assert report.analytics is not None and report.analytics.ok, report.analytics
    assert marked == YEAR  # up to yesterday, not the day before


def test_a_failed_activity_request_writes_nothing_of_the_analytics_api(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # The series fetched beside /activity are abandoned when /activity fails: the run failed,
    # and the next one fetches both again.
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account", "provider", "key"]))
        server.inject(*[Fault("500", path="/activity") for _ in range(5)])  # every attempt (max_attempts = 5)
        result = run("sync")
    assert result.exit_code != 0
    assert "analytics" not in result.stdout
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM archived_analytics_days") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM analytics_daily") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM analytics_provider_daily") == [(0,)]


def test_an_abandoned_run_sends_no_more_analytics_requests(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # One analytics request a minute: the second series waits for the rate limiter when
    # /activity fails. Abandoned, it must stop waiting and never be sent (before, the run
    # sat out the minute, then sent it, and threw the answer away).
    with StandIn(dataset, management_key=KEY) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url,
                  series_config(dataset, ["account", "provider"], "analytics_requests_per_minute = 1\n"))
        server.inject(*[Fault("500", path="/activity") for _ in range(5)])  # every attempt (max_attempts = 5)
        result = run("sync")
        sent = [r for r in server.requests if r.path.endswith("/analytics/query")]
    assert result.exit_code != 0
    assert len(sent) == 1
    assert query(warehouse_url, "SELECT count(*) FROM archived_analytics_days") == [(0,)]


# -- a key that cannot use the Analytics API ---------------------------------------------------


def assert_analytics_skipped_whole(result, warehouse_url) -> None:  # type: ignore[no-untyped-def]
    """One line says the Analytics API is skipped, and nothing of it is written."""
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("analytics")]
    assert len(lines) == 1 and lines[0].startswith("analytics: skipped: this key cannot use OpenRouter's Analytics API"), lines
    assert query(warehouse_url, "SELECT count(*) FROM analytics_daily") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM analytics_provider_daily") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM archived_analytics_days") == [(0,)]


@pytest.mark.parametrize("status", ["403", "404"])
def test_a_refusal_of_any_first_request_writes_no_analytics_at_all(dataset, warehouse_url, tmp_path, monkeypatch, run, status):
    # Every series starts at once; whichever request OpenRouter refuses, nothing of the
    # Analytics API is written, /activity is archived, and one line says why.
    with StandIn(dataset, management_key=KEY, latency=0.02) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account", "provider", "app", "key", "member"]))
        if status == "403":
            server.inject(Fault("403", path="/analytics/query"))
        else:
            from etl.standin.analytics import QueryError

            original = server.analytics.admit
            calls = iter(range(1_000_000))

            def admit() -> None:
                if next(calls) == 2:  # the third request to arrive, whichever series it is
                    raise QueryError(404, "Not Found")
                original()

            server.analytics.admit = admit  # type: ignore[method-assign]
        result = run("sync")
    assert_analytics_skipped_whole(result, warehouse_url)
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]


def test_a_refusal_arriving_last_still_writes_no_analytics(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # The refused request is the last first answer to come back, so that its arrival would
    # open the gate (every series has answered); the refusal must be known by then. The
    # window between the two is widened (a thread's timing, which no server can set).
    import time as clock

    from etl import analytics as analytics_module
    from etl.standin.analytics import QueryError

    with StandIn(dataset, management_key=KEY, latency=0.02) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account", "provider"]))
        original, calls = server.analytics.admit, iter(range(1_000_000))

        def admit() -> None:
            if next(calls) == 1:  # the second request: answered well after the first
                clock.sleep(0.5)
                raise QueryError(404, "Not Found")
            original()

        server.analytics.admit = admit  # type: ignore[method-assign]
        real_refuse = analytics_module._Gate.refuse

        def slow_refuse(self, exc):  # type: ignore[no-untyped-def]
            clock.sleep(0.5)
            real_refuse(self, exc)

        monkeypatch.setattr(analytics_module._Gate, "refuse", slow_refuse)
        result = run("sync")
    assert_analytics_skipped_whole(result, warehouse_url)


def test_a_refusal_while_its_series_still_has_requests_out_writes_no_analytics(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # One member's first request is refused at once while the other members' are slow: the
    # refusal must be known before those come back (they would make the member series
    # arrive at the gate, and the account series be written), not when the last of them ends.
    import time as clock

    from etl.standin.analytics import QueryError

    with StandIn(dataset, management_key=KEY, latency=0.02) as server:
        configure(monkeypatch, tmp_path, server, warehouse_url, series_config(dataset, ["account", "member"]))
        refused_member, real_encoded = dataset.user_ids[0], server.analytics.encoded

        def encoded(document, today):  # type: ignore[no-untyped-def]
            if refused_member in json.dumps(document):
                raise QueryError(404, "Not Found")
            if "user" in json.dumps(document):
                clock.sleep(0.5)  # the other members' answers come back late
            return real_encoded(document, today)

        server.analytics.encoded = encoded  # type: ignore[method-assign]
        result = run("sync")
    assert_analytics_skipped_whole(result, warehouse_url)


def test_the_stand_in_without_granularity_gives_one_total_per_group(dataset):
    analytics = Analytics(dataset)
    body = {"metrics": ["request_count"], "dimensions": ["model"], "time_range": {"start": f"{LAST - timedelta(days=9)}T00:00:00Z", "end": f"{TODAY}T00:00:00Z"}}
    rows = analytics.query(body, TODAY)["data"]["data"]
    expected: dict[str, int] = defaultdict(int)
    for n in range(10):
        for fact in analytics.facts(LAST - timedelta(days=n)):
            expected[fact.dims["model"]] += fact.values["request_count"]
    assert {r["model"]: r["request_count"] for r in rows} == expected and len(rows) == len(expected)


def test_the_stand_in_answers_a_year_asked_again_the_same(dataset):
    # Its per-day cache must not change an answer: the same query twice, and by halves.
    analytics = Analytics(dataset)
    from etl.analytics import SERIES, query_body

    whole = analytics.query(query_body(SERIES["app"], FIRST, LAST, 10_000), TODAY)["data"]["data"]
    assert analytics.query(query_body(SERIES["app"], FIRST, LAST, 10_000), TODAY)["data"]["data"] == whole
    middle = FIRST + timedelta(days=180)
    halves = [analytics.query(query_body(SERIES["app"], a, b, 10_000), TODAY)["data"]["data"] for a, b in ((FIRST, middle), (middle + timedelta(days=1), LAST))]
    assert halves[0] + halves[1] == whole
    day = LAST - timedelta(days=3)
    dataset.revise(day)  # a revised day is computed again
    again = analytics.query(query_body(SERIES["app"], FIRST, LAST, 10_000), TODAY)["data"]["data"]
    assert again == Analytics(dataset).query(query_body(SERIES["app"], FIRST, LAST, 10_000), TODAY)["data"]["data"]  # no cache
    assert again != whole


@pytest.mark.both_backends
def test_the_bulk_upsert_stores_what_sqlalchemy_would(warehouse_url):
    # save_series_days hands the driver the compiled statement's parameters itself
    # (warehouse.upsert_statement, Positional.bind_many, the day's stamp as constants): the
    # stored rows (timestamps, NULLs, integers, an update on conflict) must be those of conn.execute.
    from sqlalchemy import select

    from etl import warehouse
    from etl.db import upsert
    from etl.schema import ANALYTICS_COUNTS, analytics_daily

    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    moments = [datetime(2026, 11, 1, 12, 30, 15, 123456, tzinfo=timezone.utc), datetime(2026, 11, 2, tzinfo=timezone.utc)]

    def rows(series: str, n: int) -> list[dict]:
        out = []
        for i in range(6):
            row = {"series": series, "subject": f"s{i % 2}", "date": f"2026-01-0{1 + i % 3}", "model": f"m{i}", "variant": "" if i % 2 else "free"}
            for j, metric in enumerate(ANALYTICS_METRICS):
                row[metric] = (i * 1000 + j + n) if metric in ANALYTICS_COUNTS else (None if (i + j) % 4 == 0 else -0.1 * (i + j + n))
            row["first_archived_at"] = row["updated_at"] = moments[n]
            out.append(row)
        return out

    pk = [c.name for c in analytics_daily.primary_key.columns]
    stmt = upsert(engine, analytics_daily, pk, (*ANALYTICS_METRICS, "updated_at"))
    for n in (0, 1):  # the second pass updates every row on conflict
        with engine.begin() as conn:
            conn.execute(stmt, rows("plain", n))
            bulk = rows("bulk", n)
            stamp = {"first_archived_at": moments[n], "updated_at": moments[n]}
            for row in bulk:
                del row["first_archived_at"], row["updated_at"]
            columns = tuple(c.name for c in analytics_daily.columns if c.name in bulk[0] or c.name in stamp)
            positional = warehouse.upsert_statement(conn.dialect, analytics_daily, tuple(pk), (*ANALYTICS_METRICS, "updated_at"), columns)
            conn.exec_driver_sql(positional.sql, positional.bind_many(bulk, stamp))
    with engine.connect() as conn:
        stored = {s: sorted(tuple(v for k, v in r._mapping.items() if k != "series") for r in conn.execute(select(analytics_daily).where(analytics_daily.c.series == s)))
                  for s in ("plain", "bulk")}
    engine.dispose()
    assert len(stored["bulk"]) == 6 and stored["bulk"] == stored["plain"]


def test_a_stop_between_days_keeps_every_day_written_whole(dataset, tmp_path):
    # The daemon's SIGTERM sets `stop`; the load checks it between two days of a series,
    # commits the days it has prepared and stops: each of them whole with its mark, no other.
    from etl.errors import Interrupted

    stop = threading.Event()
    calls = 0

    def now() -> datetime:
        nonlocal calls
        calls += 1
        if calls == 100:  # once per day prepared: stop while the 100th is being prepared
            stop.set()
        return datetime.now(timezone.utc)

    with StandIn(dataset, management_key=KEY) as server:
        url = f"sqlite:///{tmp_path / 'stop.db'}"
        engine = open_engine(url)
        migrate.upgrade(engine)
        with OpenRouterClient(server.base_url, KEY) as client, pytest.raises(Interrupted):
            run_analytics(engine, client, SyncConfig(analytics_series=("account",)), TODAY, refetch_days=None, run_id=None, now=now, stop=stop)
        engine.dispose()
        analytics = server.analytics
    marked = [d for (d,) in query(url, "SELECT date FROM archived_analytics_days ORDER BY date")]
    assert marked == YEAR[:100]
    expected = {k: v for k, v in expected_daily(analytics).items() if k[0] == "account" and k[2] in set(marked)}
    assert_same({k: v for k, v in stored_daily(url).items()}, expected)
