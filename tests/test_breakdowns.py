"""Spend per API key, workspace and member: archiving, consistency and reports."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from conftest import KEY, query
from etl import migrate
from etl.breakdowns import Pacer, run_breakdowns
from etl.context import RunContext
from etl.client import OpenRouterClient
from etl.config import parse_config
from etl.db import open_engine
from etl.standin import Dataset, Fault, StandIn
from etl.sync import plan_backfill, run_sync, sync_subject_plan
from etl.window import completed_window, utc_today



@pytest.fixture
def dataset():
    return Dataset(keys=5)


@pytest.fixture
def api(dataset):
    # Replaces conftest's stand-in: five keys (the last disabled, one created mid-window), /keys pages of two.
    with StandIn(dataset, management_key=KEY, page_size=2) as server:
        yield server


@pytest.fixture
def breakdown_config(cli_env, tmp_path, dataset):
    def write(breakdowns='["key", "workspace", "member"]', extra=""):
        (tmp_path / "config.toml").write_text(
            "[openrouter]\nmax_attempts = 2\nbackoff_initial = 0.01\nbackoff_max = 0.02\ntimeout_seconds = 5\n"
            f'[sync]\nbreakdowns = {breakdowns}\nmembers = ["{dataset.user_ids[0]}"]\n{extra}'
        )

    write()
    return write


@pytest.mark.both_backends
def test_backfill_archives_every_key_including_disabled_ones(run, api, dataset, warehouse_url, breakdown_config):
    result = run("backfill")
    assert result.exit_code == 0, result.output
    assert "key breakdown: 5 subject(s), 150 day(s) archived" in result.stdout
    keys = query(warehouse_url, "SELECT name, disabled FROM api_keys ORDER BY name")
    assert len(keys) == 5 and any(disabled for _, disabled in keys)
    offsets = [r.params.get("offset") for r in api.requests if r.path.endswith("/keys")]
    assert offsets == ["0", "2", "4", "5"]  # followed until a page came back empty
    assert all(r.params.get("include_disabled") == "true" for r in api.requests if r.path.endswith("/keys"))
    disabled_hash = next(k.hash for k in dataset.api_keys if k.disabled)
    assert query(warehouse_url, f"SELECT count(*) FROM archived_breakdown_days WHERE subject = '{disabled_hash}'") == [(30,)]


@pytest.mark.both_backends
def test_per_key_and_per_workspace_sums_equal_the_account(run, warehouse_url, breakdown_config):
    assert run("backfill").exit_code == 0
    for table in ("activity_by_key", "activity_by_workspace"):
        diff = query(
            warehouse_url,
            f"SELECT a.date FROM (SELECT date, sum(requests) r, sum(prompt_tokens) p, sum(usage) u FROM activity GROUP BY date) a "
            f"JOIN (SELECT date, sum(requests) r, sum(prompt_tokens) p, sum(usage) u FROM {table} GROUP BY date) b USING (date) "
            f"WHERE a.r != b.r OR a.p != b.p OR abs(a.u - b.u) > 1e-6",
        )
        assert diff == [], table
    status = json.loads(run("status", "--json").stdout)
    assert status["breakdowns"]["key"] == {"days_checked": 30, "mismatches": []}
    assert status["breakdowns"]["workspace"]["mismatches"] == []


@pytest.mark.both_backends
def test_consistency_check_shows_a_difference(run, warehouse_url, breakdown_config):
    assert run("backfill").exit_code == 0
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        day = conn.execute(text("SELECT max(date) FROM activity_by_key")).scalar()
        # One row of the day, by its key (no rowid on PostgreSQL).
        hash_, endpoint = conn.execute(text(
            f"SELECT api_key_hash, endpoint_id FROM activity_by_key WHERE date = '{day}' ORDER BY api_key_hash, endpoint_id LIMIT 1"
        )).one()
        conn.execute(text("UPDATE activity_by_key SET requests = requests + 7 WHERE date = :d AND api_key_hash = :h AND endpoint_id = :e"),
                     {"d": day, "h": hash_, "e": endpoint})
    engine.dispose()
    status = json.loads(run("status", "--json").stdout)
    (mismatch,) = status["breakdowns"]["key"]["mismatches"]
    assert mismatch["date"] == day and mismatch["metric"] == "requests" and mismatch["difference"] == 7
    assert f"{day} requests" in run("status").stdout


def test_key_created_mid_window_has_no_gap(run, dataset, warehouse_url, breakdown_config):
    assert run("backfill").exit_code == 0
    staging = next(k for k in dataset.api_keys if k.name == "Staging")
    first = query(warehouse_url, f"SELECT min(date) FROM activity_by_key WHERE api_key_hash = '{staging.hash}'")[0][0]
    window_first = completed_window(utc_today())[0].isoformat()
    assert first > window_first  # no activity before the key existed...
    marks = query(warehouse_url, f"SELECT count(*), sum(row_count = 0) FROM archived_breakdown_days WHERE subject = '{staging.hash}'")
    assert marks[0][0] == 30 and marks[0][1] > 0  # ...and those days are archived as empty, not missing


def test_sync_fetches_only_what_each_subject_misses(run, api, warehouse_url, breakdown_config):
    assert run("backfill").exit_code == 0
    api.requests.clear()
    result = run("sync")
    assert result.exit_code == 0
    assert "key breakdown: 5 subject(s), 10 day(s) archived" in result.stdout  # refetch_days=2 per key
    activity = [r for r in api.requests if r.path.endswith("/activity")]
    yesterday_empty = not api.dataset.activity(utc_today() - timedelta(days=1))  # then one `date=` shows it in the window
    assert len(activity) == 1 + yesterday_empty + 5 + 1 + 1  # account, keys, workspaces, one member


@pytest.mark.both_backends
def test_member_breakdown(run, dataset, warehouse_url, breakdown_config):
    assert run("backfill").exit_code == 0
    member = dataset.user_ids[0]
    (member_requests,) = query(warehouse_url, f"SELECT sum(requests) FROM activity_by_member WHERE user_id = '{member}'")[0]
    (account_requests,) = query(warehouse_url, "SELECT sum(requests) FROM activity")[0]
    assert 0 < member_requests < account_requests
    out = json.loads(run("report", "-g", "member", "-f", "json").stdout)
    assert [r["member"] for r in out] == [member]


@pytest.mark.both_backends
def test_reports_by_key_show_names_and_filter_by_name(run, dataset, warehouse_url, breakdown_config):
    assert run("backfill").exit_code == 0
    rows = json.loads(run("report", "-g", "key", "-f", "json").stdout)
    per_key = dict(query(warehouse_url, "SELECT k.name, sum(a.requests) FROM activity_by_key a JOIN api_keys k ON k.hash = a.api_key_hash GROUP BY 1"))
    assert len(per_key) >= 4  # every key with activity in the window has a row, under its name
    assert {r["key"]: r["requests"] for r in rows} == per_key
    assert set(per_key) <= {k.name for k in dataset.api_keys}
    production = json.loads(run("report", "--key", "Production", "-g", "model", "-f", "json").stdout)
    prod_hash = next(k.hash for k in dataset.api_keys if k.name == "Production")
    (expected,) = query(warehouse_url, f"SELECT sum(requests) FROM activity_by_key WHERE api_key_hash = '{prod_hash}'")[0]
    assert expected > 0 and sum(r["requests"] for r in production) == expected
    by_workspace = json.loads(run("report", "-g", "workspace", "-f", "json").stdout)
    per_workspace = dict(query(warehouse_url, "SELECT workspace_id, sum(requests) FROM activity_by_workspace GROUP BY 1"))
    assert {r["workspace"]: r["requests"] for r in by_workspace} == per_workspace
    assert set(per_workspace) == set(dataset.workspace_ids)
    unknown = run("report", "--key", "nope")
    assert unknown.exit_code == 2 and "known keys: " in unknown.stderr
    mixed = run("report", "-g", "key,workspace")
    assert mixed.exit_code == 2 and "different breakdowns" in mixed.stderr


def test_report_by_key_before_the_breakdown_is_enabled(run, cli_env):
    assert run("backfill").exit_code == 0
    result = run("report", "-g", "key")
    assert result.exit_code == 0 and 'add "key" to [sync] breakdowns' in result.stderr


def test_a_failing_key_is_reported_and_the_others_are_kept(api, dataset, warehouse_url):
    config = parse_config({"openrouter": {"base_url": api.base_url, "max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.02},
                           "sync": {"breakdowns": ["key"], "concurrency": 1}}, "test")
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    stop = threading.Event()
    client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
    today = utc_today()
    plan = sync_subject_plan(today, 2)
    now = lambda: datetime.now(timezone.utc)  # noqa: E731
    # The account-level answers of the same run show the API's window to the breakdown.
    evidence = run_sync(engine, client, plan_backfill(today), trigger="test").evidence
    api.inject(Fault("503", path="/activity"), Fault("503", path="/activity"))  # both attempts of the first key
    (first,) = run_breakdowns(RunContext(engine, client, None, now, stop), config.sync, today, plan, evidence=evidence)
    assert len(first.errors) == 1 and "503" in first.errors[0]
    assert first.days_failed == 30 and first.days_archived == 4 * 30
    api.requests.clear()
    (second,) = run_breakdowns(RunContext(engine, client, None, now, stop), config.sync, today, plan)
    assert second.ok and second.days_archived == 30 + 4 * 2  # the failed key's window, the others' refetch days
    assert query(warehouse_url, "SELECT count(*) FROM archived_breakdown_days") == [(150,)]
    client.close()
    engine.dispose()


def test_concurrency_is_bounded(api, dataset, warehouse_url):
    config = parse_config({"openrouter": {"base_url": api.base_url}, "sync": {"breakdowns": ["key"], "concurrency": 2}}, "test")
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    stop = threading.Event()
    client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
    in_flight, peak, lock = 0, 0, threading.Lock()
    real_activity = client.activity

    def spy(*args, **kwargs):  # counts concurrent real requests; the request itself is untouched
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return real_activity(*args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    client.activity = spy  # type: ignore[method-assign]
    api.latency = 0.1
    today = utc_today()
    (result,) = run_breakdowns(RunContext(engine, client, None, lambda: datetime.now(timezone.utc), stop), config.sync, today,
                               sync_subject_plan(today, 2))
    assert result.ok and result.subjects == 5
    assert peak == 2
    client.close()
    engine.dispose()


def test_pacer_spaces_request_starts():
    pacer = Pacer(0.05, threading.Event())
    starts: list[float] = []

    def go():
        slot = pacer.wait()
        assert time.monotonic() >= slot  # never released before its slot
        starts.append(slot)

    threads = [threading.Thread(target=go) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The slots, not the moments the threads got the CPU back: a loaded machine delays the
    # latter, which says nothing about the pacing.
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:])]
    assert len(starts) == 5 and all(gap >= 0.05 - 1e-9 for gap in gaps)


def test_bad_breakdown_setting_is_a_config_error(run, cli_env, tmp_path):
    (tmp_path / "config.toml").write_text('[sync]\nbreakdowns = ["keys"]\n')
    result = run("sync")
    assert result.exit_code == 2
    assert "[sync] breakdowns: unknown value 'keys'; choose from: key, workspace, member" in result.stderr


def test_stop_during_breakdowns_is_recorded_not_raised(api, warehouse_url):
    from etl.sync import run_sync

    config = parse_config({"openrouter": {"base_url": api.base_url}, "sync": {"breakdowns": ["key"]}}, "test")
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    stop = threading.Event()
    client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
    real_list_keys = client.list_keys

    def list_then_stop(*args, **kwargs):  # SIGTERM arrives while the keys are being listed
        result = real_list_keys(*args, **kwargs)
        stop.set()
        return result

    client.list_keys = list_then_stop  # type: ignore[method-assign]
    report = run_sync(engine, client, [utc_today() - timedelta(days=1)], trigger="test", stop=stop, settings=config.sync)
    assert report.interrupted and not report.ok
    assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("interrupted",)]
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(1,)]  # the account day stays
    client.close()
    engine.dispose()
