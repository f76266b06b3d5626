"""How a sync ends: which outcome is recorded, what exits non-zero, what never runs.

Real CLI, real stand-in, real SQLite. Database failures are produced by SQLite itself
(a trigger that aborts a statement), so the product meets a real driver error.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from conftest import KEY, query
from etl import migrate
from etl.client import OpenRouterClient
from etl.config import parse_config
from etl.db import open_engine
from etl.standin import Fault
from etl.sync import plan_backfill, run_sync
from oracle import ACTIVITY_SQL, assert_same_rows, expected_row, standin_rows, window

CONFIG = "[openrouter]\nmax_attempts = 2\nbackoff_initial = 0.01\nbackoff_max = 0.02\ntimeout_seconds = 5\n"


def today():
    return datetime.now(timezone.utc).date()


def item(day, endpoint, **overrides):
    base = {"date": day.isoformat(), "model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025-04-14", "endpoint_id": endpoint,
            "provider_name": "OpenAI", "usage": 0.25, "byok_usage_inference": 0.0, "requests": 3, "prompt_tokens": 100,
            "completion_tokens": 40, "reasoning_tokens": 0}
    return {**base, **overrides}


def execute(url, *statements):
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def fail_inserts_into(url, table, message="simulated disk failure"):
    """A real SQLite error on the next write to ``table``."""
    execute(url, f"CREATE TRIGGER boom BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END")


@pytest.fixture
def fast(cli_env, tmp_path):
    def write(extra=""):
        (tmp_path / "config.toml").write_text(CONFIG + extra)

    write()
    return write


# -- outcomes -------------------------------------------------------------------------------


def test_one_archived_day_of_three_is_a_partial_run(run, api, warehouse_url, fast):
    d1, d2, d3 = (window(today())[1] - timedelta(days=k) for k in (2, 1, 0))
    body = {"data": [item(d1, "e1"), item(d2, "e1", requests=-1), item(d3, "e1", usage="lots")]}
    api.inject(Fault("body", body=json.dumps(body).encode(), path="/activity"))
    result = run("backfill", "--days", "3")
    assert result.exit_code == 1
    assert query(warehouse_url, "SELECT outcome, days_requested, days_fetched FROM sync_runs") == [("partial", 3, 1)]
    assert query(warehouse_url, "SELECT date FROM archived_days") == [(d1.isoformat(),)]
    assert_same_rows(query(warehouse_url, ACTIVITY_SQL), [expected_row(item(d1, "e1"))])
    assert "Traceback" not in result.output


@pytest.mark.parametrize("bad", [0, 2], ids=["oldest", "newest"])
def test_a_rejected_day_at_either_end_of_the_range_is_a_partial_run(run, api, warehouse_url, fast, bad):
    days = [window(today())[1] - timedelta(days=k) for k in (2, 1, 0)]
    items = [item(d, "e1", requests=-1) if n == bad else item(d, "e1") for n, d in enumerate(days)]
    api.inject(Fault("body", body=json.dumps({"data": items}).encode(), path="/activity"))
    result = run("backfill", "--days", "3")
    assert result.exit_code == 1
    assert query(warehouse_url, "SELECT outcome, days_requested, days_fetched FROM sync_runs") == [("partial", 3, 2)]
    assert query(warehouse_url, "SELECT date FROM archived_days ORDER BY date") == [(d.isoformat(),) for n, d in enumerate(days) if n != bad]


def test_no_day_archived_is_a_failed_run(run, api, warehouse_url, fast):
    d1, d2 = (window(today())[1] - timedelta(days=k) for k in (1, 0))
    body = {"data": [item(d1, "e1", requests=True), item(d2, "e1", prompt_tokens=1.5)]}
    api.inject(Fault("body", body=json.dumps(body).encode(), path="/activity"))
    assert run("backfill", "--days", "2").exit_code == 1
    assert query(warehouse_url, "SELECT outcome, days_fetched FROM sync_runs") == [("failed", 0)]
    assert query(warehouse_url, "SELECT count(*) FROM activity") == [(0,)]


def test_sync_exits_1_when_a_day_was_rejected(run, api, warehouse_url, fast):
    api.inject(Fault("malformed"))
    result = run("sync")
    assert result.exit_code == 1
    rejected = [line for line in result.stdout.splitlines() if "  rejected  " in line]
    assert len(rejected) == 1
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(29,)]
    assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("partial",)]


def test_a_clean_sync_exits_0_and_records_ok(run, api, warehouse_url, fast):
    result = run("sync")
    assert result.exit_code == 0 and result.stderr == ""
    assert query(warehouse_url, "SELECT outcome, days_requested, days_fetched, requests FROM sync_runs") == [("ok", 30, 30, 1)]
    assert_same_rows(query(warehouse_url, ACTIVITY_SQL), standin_rows(api.dataset, plan_backfill(today())))


# -- breakdowns ------------------------------------------------------------------------------


def test_breakdowns_do_not_run_when_the_account_fetch_failed(run, api, warehouse_url, fast):
    fast('[sync]\nbreakdowns = ["key", "workspace"]\n')
    api.inject(Fault("503", path="/activity"), Fault("503", path="/activity"))
    result = run("sync")
    assert result.exit_code == 1 and "failed after 2 attempt(s)" in result.stderr
    assert [r.path for r in api.requests] == ["/api/v1/activity"] * 2  # no /keys, no per-key or per-workspace request
    assert query(warehouse_url, "SELECT count(*) FROM archived_breakdown_days") == [(0,)]
    assert query(warehouse_url, "SELECT outcome, details FROM sync_runs") == [("failed", None)]


def test_a_failed_breakdown_makes_the_sync_exit_1(run, api, warehouse_url, fast):
    fast('[sync]\nbreakdowns = ["key"]\n')
    api.inject(Fault("503", path="/keys"), Fault("503", path="/keys"))
    result = run("sync")
    assert result.exit_code == 1
    assert "listing key subjects" in result.stdout
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]  # the account days are kept
    assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("partial",)]


# -- database errors --------------------------------------------------------------------------


def test_a_database_error_while_writing_a_day_is_a_clean_warehouse_error(run, api, warehouse_url, fast):
    assert run("db", "upgrade").exit_code == 0
    fail_inserts_into(warehouse_url, "activity")
    result = run("sync")
    assert result.exit_code == 1
    message = f"warehouse {warehouse_url.removeprefix('sqlite:///')}: simulated disk failure"
    assert result.stderr.splitlines() == [f"Error: {message}"]
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(0,)]
    assert query(warehouse_url, "SELECT outcome, error FROM sync_runs") == [("failed", message)]


def test_a_database_error_is_returned_by_run_sync_not_raised(api, warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    fail_inserts_into(warehouse_url, "raw_responses", "no space left")
    config = parse_config({"openrouter": {"base_url": api.base_url, "max_attempts": 1}}, "test")
    with OpenRouterClient.from_config(config.openrouter, KEY) as client:
        report = run_sync(engine, client, plan_backfill(today(), 2), trigger="test")
    engine.dispose()
    assert not report.ok and report.error == f"warehouse {warehouse_url.removeprefix('sqlite:///')}: no space left (the disk is full: free some space and run it again; every day already written is intact)"
    assert {o.status for o in report.outcomes} == {"failed"}


def test_a_failed_day_mark_takes_the_days_rows_with_it(run, api, warehouse_url, fast):
    # The product's own transaction: a day's rows and its archived mark commit together.
    assert run("db", "upgrade").exit_code == 0
    fail_inserts_into(warehouse_url, "archived_days", "mark failed")
    result = run("backfill", "--days", "1")
    assert result.exit_code == 1 and "mark failed" in result.stderr
    assert query(warehouse_url, "SELECT count(*) FROM activity") == [(0,)]
    execute(warehouse_url, "DROP TRIGGER boom")
    assert run("backfill", "--days", "1").exit_code == 0
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(1,)]


def test_a_database_error_when_the_run_starts_is_a_clean_warehouse_error(run, api, warehouse_url, fast):
    assert run("db", "upgrade").exit_code == 0
    fail_inserts_into(warehouse_url, "sync_runs", "disk I/O error")
    result = run("sync")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: warehouse {warehouse_url.removeprefix('sqlite:///')}: disk I/O error")
    assert "unexpected" not in result.stderr


# -- stopping ----------------------------------------------------------------------------------


def test_a_stop_request_ends_the_run_after_the_day_being_written(api, warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    stop = threading.Event()
    config = parse_config({"openrouter": {"base_url": api.base_url}}, "test")
    with OpenRouterClient.from_config(config.openrouter, KEY, stop=stop) as client:
        report = run_sync(engine, client, plan_backfill(today(), 5), trigger="test", stop=stop, on_day=lambda _o: stop.set())
    engine.dispose()
    assert report.interrupted and not report.ok
    assert [o.status for o in report.outcomes] == ["archived", "failed", "failed", "failed", "failed"]
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(1,)]
    assert query(warehouse_url, "SELECT outcome, days_fetched FROM sync_runs") == [("interrupted", 1)]


# -- the registry row of this issue -------------------------------------------------------------


def test_the_archive_equals_the_served_json_column_by_column():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import reliability_report as rr

    row = rr.archive_equals_served_json()
    assert row.ok and row.rows_lost == 0, row
    assert "held exactly, 0 extra" in row.result
