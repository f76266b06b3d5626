"""Archiving the Analytics API end to end: real CLI, real HTTP to the stand-in, real SQLite.

Expected values come from the stand-in's own generator (`Analytics.facts`, the per-key
/activity rows it is built from), summed here, never from our parser.
"""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta, timezone

import pytest

from conftest import FAST_CONFIG, KEY, query
from etl import migrate
from etl.analytics import run_analytics
from etl.client import OpenRouterClient, RetryPolicy
from etl.config import SyncConfig
from etl.db import open_engine
from etl.schema import ANALYTICS_METRICS
from etl.standin import Dataset, Fault, StandIn
from etl.standin.analytics import Analytics
from etl.window import utc_today

TODAY = utc_today()


def expected_account(analytics: Analytics, first: date, last: date) -> dict[tuple[str, str, str], dict[str, object]]:
    """(date, model, variant) -> metric values, summed from the generator's facts."""
    out: dict[tuple[str, str, str], dict[str, object]] = {}
    day = first
    while day <= last:
        for fact in analytics.facts(day):
            key = (day.isoformat(), fact.dims["model"], fact.dims["variant"])
            row = out.setdefault(key, {})
            for metric in ANALYTICS_METRICS:
                value = fact.values[metric]
                if value is None:
                    row.setdefault(metric, None)
                else:
                    row[metric] = (row.get(metric) or 0) + value
        day += timedelta(days=1)
    for row in out.values():
        for metric in ("usage_cache", "usage_data", "usage_web", "usage_upstream_web"):
            row[metric] = row[metric] if row[metric] is not None else 0.0  # served as 0 unless null_components
    return out


def stored_account(url: str) -> dict[tuple[str, str, str], dict[str, object]]:
    cols = ", ".join(ANALYTICS_METRICS)
    rows = query(url, f"SELECT date, model, variant, {cols} FROM analytics_daily WHERE series = 'account' AND subject = '*'")
    return {tuple(r[:3]): dict(zip(ANALYTICS_METRICS, r[3:])) for r in rows}


def assert_equal_values(stored, expected):
    assert set(stored) == set(expected)
    for key, row in expected.items():
        for metric, value in row.items():
            got = stored[key][metric]
            if isinstance(value, float):
                assert got == pytest.approx(value, abs=1e-9), (key, metric)
            else:
                assert got == value, (key, metric)


@pytest.fixture
def dataset():
    return Dataset(anchor=TODAY, keys=3, endpoints_per_day=4, first_key_age_days=400)


@pytest.fixture
def server(dataset):
    with StandIn(dataset, management_key=KEY) as s:
        yield s


@pytest.fixture
def env(server, warehouse_url, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENROUTER_ARCHIVE_ANALYTICS")
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", warehouse_url)

    def configure(sync: str = "") -> None:
        (tmp_path / "config.toml").write_text(FAST_CONFIG + ("[sync]\n" + sync if sync else ""))

    configure()
    return configure


def marks(url: str, series: str) -> list[str]:
    return [d for (d,) in query(url, f"SELECT date FROM archived_analytics_days WHERE series = '{series}' ORDER BY date")]


def queries(url: str, run_id: int | None = None) -> list[dict]:
    where = f" AND run_id = {run_id}" if run_id else ""
    rows = query(url, f"SELECT params FROM raw_responses WHERE endpoint = 'analytics/query'{where} ORDER BY id")
    return [json.loads(json.loads(p)["query"]) for (p,) in rows]


def test_first_sync_recovers_365_days_exactly(env, run, server, warehouse_url):
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert "analytics account: 365 day(s) archived in 1 request(s)" in result.stdout
    assert "analytics provider: 31 day(s) archived in 1 request(s)" in result.stdout
    first, last = TODAY - timedelta(days=365), TODAY - timedelta(days=1)
    days = [(first + timedelta(days=i)).isoformat() for i in range(365)]
    assert marks(warehouse_url, "account") == days  # empty days are marked too: never a gap
    assert marks(warehouse_url, "provider") == days[-31:]
    expected = expected_account(server.analytics, first, last)
    assert len({k[0] for k in expected}) > 300  # the account really has a year of history
    assert_equal_values(stored_account(warehouse_url), expected)
    # The provider series: spend and p90 latency per (day, model, provider), from the generator.
    day = last
    facts = [f for f in server.analytics.facts(day)]
    if facts:
        model, provider = facts[0].dims["model"], facts[0].dims["provider"]
        group = [f for f in facts if f.dims["model"] == model and f.dims["provider"] == provider]
        requests = sum(f.values["request_count"] for f in group)
        p90 = round(sum(f.values["_lat"][2] * f.values["request_count"] for f in group) / requests, 2)
        assert query(warehouse_url, f"SELECT request_count, p90_latency FROM analytics_provider_daily WHERE date = '{day}' AND model = '{model}' AND provider = '{provider}'") == [(requests, p90)]
    assert server.analytics.rate_limited == 0


def test_a_later_sync_fetches_only_the_missing_and_recent_days(env, run, warehouse_url):
    assert run("sync").exit_code == 0
    query_count = len(queries(warehouse_url))
    result = run("sync")
    assert result.exit_code == 0, result.output
    later = queries(warehouse_url)[query_count:]
    assert len(later) == 2  # account and provider
    for body in later:
        assert body["time_range"] == {"start": f"{TODAY - timedelta(days=2)}T00:00:00Z", "end": f"{TODAY}T00:00:00Z"}
    assert "analytics account: 2 day(s) archived in 1 request(s)" in result.stdout


def test_truncated_answers_are_split_and_never_stored(env, run, server, warehouse_url):
    env("analytics_row_limit = 400\nanalytics_series = [\"account\"]\n")
    result = run("sync")
    assert result.exit_code == 0, result.output
    bodies = queries(warehouse_url)  # raw answers kept: only the complete ones
    assert len(bodies) > 1 and "truncated answer(s) split" in result.stdout
    spans = sorted((b["time_range"]["start"], b["time_range"]["end"]) for b in bodies)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end == start  # stored answers tile the year without overlap
    first, last = TODAY - timedelta(days=365), TODAY - timedelta(days=1)
    assert_equal_values(stored_account(warehouse_url), expected_account(server.analytics, first, last))
    # Theoretical minimum: rows / limit. The split stays within 1.5x of it (plus the cut answer).
    rows = len(expected_account(server.analytics, first, last))
    minimum = -(-rows // 400)
    assert len(bodies) <= 1.5 * minimum + 1


def use_server(server, warehouse_url, tmp_path, monkeypatch, sync: str) -> None:
    monkeypatch.delenv("OPENROUTER_ARCHIVE_ANALYTICS")
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", warehouse_url)
    (tmp_path / "config.toml").write_text(FAST_CONFIG + "[sync]\n" + sync)


def test_a_day_beyond_the_row_limit_is_never_stored_partially(run, warehouse_url, tmp_path, monkeypatch):
    # Two weeks of history: the empty year before it costs one request, each busy day one more.
    dataset = Dataset(anchor=TODAY, keys=2, endpoints_per_day=4, first_key_age_days=10)
    with StandIn(dataset, management_key=KEY) as server:
        use_server(server, warehouse_url, tmp_path, monkeypatch, 'analytics_row_limit = 2\nanalytics_series = ["account"]\n')
        result = run("sync")
    assert len(queries(warehouse_url)) + server.analytics.served < 60
    assert result.exit_code == 1
    assert "a single day cannot be split further" in result.stdout
    # Days of more than 2 rows are neither stored nor marked; /activity is archived anyway.
    bad = query(warehouse_url, "SELECT m.date FROM archived_analytics_days m WHERE m.row_count > 2")
    assert bad == []
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]
    assert query(warehouse_url, "SELECT count(*) FROM analytics_daily a LEFT JOIN archived_analytics_days m "
                 "ON m.series = a.series AND m.date = a.date WHERE m.date IS NULL") == [(0,)]


@pytest.mark.parametrize("status", ["403", "401"])
def test_an_analytics_refusal_keeps_activity_working(env, run, server, warehouse_url, status):
    # 403: the key may not use the Analytics API. (401 here stands in for a 404 gateway.)
    fault = Fault("403", path="/analytics/query") if status == "403" else None
    if fault is None:
        server.analytics.admit = _refuse_404  # type: ignore[method-assign]
    else:
        server.inject(fault)
    result = run("sync")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stdout.splitlines() if line.startswith("analytics")]
    assert len(skipped) == 1 and skipped[0].startswith("analytics: skipped: this key cannot use OpenRouter's Analytics API")
    assert "/activity is archived as usual" in skipped[0]
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]
    assert query(warehouse_url, "SELECT count(*) FROM analytics_daily") == [(0,)]


def _refuse_404() -> None:
    from etl.standin.analytics import QueryError

    raise QueryError(404, "Not Found")


@pytest.mark.both_backends
def test_reconciliation_finds_an_injected_disagreement(env, run, server, warehouse_url, dataset):
    day = next(TODAY - timedelta(days=n) for n in range(3, 20) if dataset.activity(TODAY - timedelta(days=n)))
    model = dataset.activity(day)[0]["model_permaslug"]
    server.analytics.skew(day, model, "credits_usage", 0.25)
    server.analytics.skew(day, model, "request_count", 2)
    assert run("sync").exit_code == 0
    healthy = run("status")
    assert f"{day} {model} credits_usage" in healthy.stdout and f"{day} {model} request_count" in healthy.stdout
    assert "(+0.25)" in healthy.stdout and "(+2)" in healthy.stdout
    checked = run("status", "--check")
    assert checked.exit_code == 1 and "disagree on 2 (day, model, metric) value(s)" in checked.stdout
    data = json.loads(run("status", "--json").stdout)
    assert [(d["date"], d["metric"], d["difference"]) for d in data["reconciliation"]["disagreements"]] == [
        (day.isoformat(), "credits_usage", 0.25), (day.isoformat(), "request_count", 2)]


@pytest.mark.both_backends
def test_agreeing_sources_and_a_small_difference_pass_the_check(env, run, server, warehouse_url, dataset):
    day = next(TODAY - timedelta(days=n) for n in range(3, 20) if dataset.activity(TODAY - timedelta(days=n)))
    model = dataset.activity(day)[0]["model_permaslug"]
    server.analytics.skew(day, model, "credits_usage", 0.004)  # under a cent: shown, not failing
    assert run("sync").exit_code == 0
    checked = run("status", "--check")
    assert checked.exit_code == 0, checked.stdout
    assert "1 disagreement(s)" in checked.stdout


def test_rate_limit_is_never_exceeded(dataset, tmp_path):
    # A lowered limit on both sides (the stand-in counts), so that pacing must really wait. The
    # client's window is the longer (as 64 a minute is, with its margin, against OpenRouter's),
    # so that a loaded machine delaying one request more than the next cannot break the limit.
    analytics = Analytics(dataset, rate_limit=3, rate_window=0.5)
    with StandIn(dataset, management_key=KEY, analytics=analytics) as server:
        engine = open_engine(f"sqlite:///{tmp_path / 'rate.db'}")
        migrate.upgrade(engine)
        settings = SyncConfig(analytics_series=("account", "provider", "key", "member", "workspace", "app"),
                              members=tuple(dataset.user_ids), analytics_requests_per_minute=3, analytics_concurrency=4)
        with OpenRouterClient(server.base_url, KEY, retry=RetryPolicy(max_attempts=1)) as client:
            result = run_analytics(engine, client, settings, TODAY, refetch_days=None, run_id=None,
                                   now=lambda: datetime.now(timezone.utc), stop=threading.Event(), rate_window=0.8)
        engine.dispose()
    assert result.ok, result.describe()
    sent = sum(s.requests for s in result.series)
    assert sent == 1 + 1 + 3 + 2 + 2 + 1  # account, provider, 3 keys, 2 members, 2 workspaces, apps
    assert analytics.served == sent and analytics.rate_limited == 0 and analytics.max_in_window <= 3


@pytest.mark.both_backends
def test_per_subject_series_store_ids_and_labels(env, run, server, warehouse_url, dataset):
    members = json.dumps(list(dataset.user_ids))
    env(f'analytics_series = ["key", "member", "workspace", "app"]\nmembers = {members}\n')
    assert run("sync").exit_code == 0
    subjects = dict(query(warehouse_url, "SELECT series, count(DISTINCT subject) FROM archived_analytics_days GROUP BY series"))
    assert subjects == {"key": 3, "member": 2, "workspace": 2, "app": 1}
    labels = dict(query(warehouse_url, "SELECT subject, label FROM analytics_labels WHERE series = 'key'"))
    assert labels == {k.hash: k.name for k in dataset.api_keys}
    # Per key, the year's spend equals the generator's facts for that key.
    first = TODAY - timedelta(days=365)
    key = dataset.api_keys[0]
    spend = sum(f.values["credits_usage"] for d in range(365) for f in server.analytics.facts(first + timedelta(days=d)) if f.dims["api_key_id"] == key.hash)
    ((stored,),) = query(warehouse_url, f"SELECT sum(credits_usage) FROM analytics_daily WHERE series = 'key' AND subject = '{key.hash}'")
    assert stored == pytest.approx(spend, rel=1e-12)
    # Every series sums to the account total over the year.
    totals = dict(query(warehouse_url, "SELECT series, round(sum(request_count)) FROM analytics_daily GROUP BY series"))
    assert len(set(totals.values())) == 1


def test_a_member_id_openrouter_cannot_resolve_is_an_error_not_a_year_of_empty_days(env, run, server, warehouse_url, dataset):
    """The API answers an unknown filter id with zero rows and a warning. Stored, that would be
    a year of zero spend for a member who may well have spent (a typo in [sync] members)."""
    good = dataset.user_ids[0]
    env(f'analytics_series = ["member"]\nmembers = ["{good}", "user_typo"]\n')
    result = run("sync")
    assert result.exit_code == 1, result.output
    assert "user_typo" in result.stderr + result.stdout and "[sync] members" in result.stderr + result.stdout
    marked = dict(query(warehouse_url, "SELECT subject, count(*) FROM archived_analytics_days WHERE series = 'member' GROUP BY subject"))
    assert marked == {good: 365}  # the known member archived; the unknown id's days left to fetch, not marked empty
    assert query(warehouse_url, "SELECT count(*) FROM analytics_daily WHERE subject = 'user_typo'") == [(0,)]


@pytest.mark.both_backends
def test_a_revised_day_is_not_counted_twice(env, run, server, warehouse_url, dataset):
    env('analytics_series = ["account"]\n')
    assert run("sync").exit_code == 0
    day = next(TODAY - timedelta(days=n) for n in range(1, 3) if dataset.activity(TODAY - timedelta(days=n)))
    dataset.revise(day)
    assert run("sync").exit_code == 0  # refetch_days covers it
    first, last = TODAY - timedelta(days=365), TODAY - timedelta(days=1)
    assert_equal_values(stored_account(warehouse_url), expected_account(server.analytics, first, last))
    assert query(warehouse_url, f"SELECT count(*) > 0 FROM analytics_daily_history WHERE date = '{day}' AND reason = 'revised'") == [(1,)]


@pytest.mark.both_backends
def test_string_counts_and_null_components_are_stored_exactly(dataset, warehouse_url, tmp_path, monkeypatch, run):
    analytics = Analytics(dataset, string_counts=True, null_components=True)
    with StandIn(dataset, management_key=KEY, analytics=analytics) as server:
        use_server(server, warehouse_url, tmp_path, monkeypatch, 'analytics_series = ["account"]\n')
        assert run("sync").exit_code == 0
    assert query(warehouse_url, "SELECT count(*) FROM analytics_daily WHERE usage_web IS NOT NULL") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) > 0 FROM analytics_daily WHERE usage_cache IS NULL") == [(1,)]
    if warehouse_url.startswith("sqlite"):  # SQLite's column types are advisory: the values must be integers
        assert query(warehouse_url, "SELECT typeof(request_count) FROM analytics_daily GROUP BY 1") == [("integer",)]
    else:
        assert query(warehouse_url, "SELECT pg_typeof(request_count)::text FROM analytics_daily GROUP BY 1") == [("bigint",)]


def test_a_reach_shorter_than_365_days_is_followed(dataset, warehouse_url, tmp_path, monkeypatch, run):
    # "About 365 days": when OpenRouter already dropped the oldest day, the sync starts later.
    analytics = Analytics(dataset, long_reach=363)
    with StandIn(dataset, management_key=KEY, analytics=analytics) as server:
        use_server(server, warehouse_url, tmp_path, monkeypatch, 'analytics_series = ["account"]\n')
        result = run("sync")
    assert result.exit_code == 0, result.output
    days = marks(warehouse_url, "account")
    assert len(days) == 363 and days[0] == (TODAY - timedelta(days=363)).isoformat()
    assert "analytics account: 363 day(s) archived in 3 request(s)" in result.stdout


@pytest.mark.both_backends
def test_migration_0010_rekeys_analytics_daily_keeping_every_row(env, run, warehouse_url, dataset):
    # Rows held at 0009 are the same rows, values and all, at 0010 and back at 0009; at
    # 0010 the key is (series, date, subject, model, variant), the (series, date) index is
    # gone, and on SQLite the table has no rowid. A sync on the rekeyed table adds nothing.
    from sqlalchemy import inspect

    members = json.dumps(list(dataset.user_ids))
    env(f'analytics_series = ["account", "key", "member", "app"]\nmembers = {members}\n')
    assert run("sync").exit_code == 0
    engine = open_engine(warehouse_url)
    migrate.downgrade(engine, "0009")
    engine.dispose()
    everything = "SELECT * FROM analytics_daily ORDER BY series, subject, date, model, variant"
    held = query(warehouse_url, everything)
    assert len(held) > 1000 and len({r[0] for r in held}) == 4

    def layout() -> tuple[list[str], set[str], bool]:
        engine = open_engine(warehouse_url)
        with engine.connect() as conn:
            inspector = inspect(conn)
            key = inspector.get_pk_constraint("analytics_daily")["constrained_columns"]
            indexes = {i["name"] for i in inspector.get_indexes("analytics_daily")}
            rowid = conn.dialect.name != "sqlite" or "WITHOUT ROWID" not in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'analytics_daily'").scalar_one()
        engine.dispose()
        return key, indexes, rowid

    assert layout() == (["series", "subject", "date", "model", "variant"],
                        {"ix_analytics_daily_series_date", "ix_analytics_daily_model_date"}, True)
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine, "0010")
    engine.dispose()
    sqlite = warehouse_url.startswith("sqlite")
    assert layout() == (["series", "date", "subject", "model", "variant"], {"ix_analytics_daily_model_date"}, not sqlite)
    assert query(warehouse_url, everything) == held
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)  # and on to the head (0011 drops the model index)
    engine.dispose()
    assert run("sync").exit_code == 0  # refetches the newest days: upserts on the new key
    assert len(query(warehouse_url, everything)) == len(held)
    engine = open_engine(warehouse_url)
    migrate.downgrade(engine, "0009")
    engine.dispose()
    assert layout() == (["series", "subject", "date", "model", "variant"],
                        {"ix_analytics_daily_series_date", "ix_analytics_daily_model_date"}, True)
    assert len(query(warehouse_url, everything)) == len(held)


@pytest.mark.both_backends
def test_migration_0011_drops_the_model_index_and_nothing_else(env, run, warehouse_url, dataset):
    # At 0011 analytics_daily has no index but its key; its rows, and a report across a
    # year of them, are those of 0010; a downgrade brings the index back.
    from sqlalchemy import inspect

    members = json.dumps(list(dataset.user_ids))
    env(f'analytics_series = ["account", "key", "member", "app"]\nmembers = {members}\n')
    assert run("sync").exit_code == 0

    def indexes() -> set[str]:
        engine = open_engine(warehouse_url)
        with engine.connect() as conn:
            found = {i["name"] for i in inspect(conn).get_indexes("analytics_daily")}
        engine.dispose()
        return found

    def migrate_to(revision: str) -> None:
        engine = open_engine(warehouse_url)
        if revision == "head":
            migrate.upgrade(engine)
        else:
            migrate.downgrade(engine, revision)
        engine.dispose()

    everything = "SELECT * FROM analytics_daily ORDER BY series, date, subject, model, variant"
    held = query(warehouse_url, everything)
    assert len(held) > 1000
    assert indexes() == set()
    since = (utc_today() - timedelta(days=300)).isoformat()
    report = ("report", "--since", since, "-g", "month", "-g", "model", "-f", "json")
    at_head = run(*report)
    assert at_head.exit_code == 0, at_head.output
    assert len(json.loads(at_head.stdout)) > 10  # a report with rows, not an empty one
    migrate_to("0010")
    assert indexes() == {"ix_analytics_daily_model_date"}
    assert query(warehouse_url, everything) == held
    assert run(*report).stdout == at_head.stdout
    migrate_to("head")
    assert indexes() == set()
    assert query(warehouse_url, everything) == held
