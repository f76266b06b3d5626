"""Revised days are never counted twice, and every earlier version stays queryable.

Issue 9 item 3 and issue 15's load blind spots: when OpenRouter's latest answer for a day
no longer lists a row (its endpoint id changed, or the day shrank), the row leaves the
current tables for a history table; a revised row leaves its previous values there. The
real CLI against the stand-in over loopback, real SQLite files, real migrations.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import query
from etl import migrate, warehouse
from etl.db import open_engine
from etl.standin import Dataset, Fault, StandIn
from etl.validate import parse_activity
from etl.window import completed_window, utc_today

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability_report as rr  # noqa: E402

ROW = (
    "date, endpoint_id, model, model_permaslug, provider_name, usage, byok_usage_inference, requests, "
    "prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens"
)
NOW = datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)


def item(day: str, endpoint: str, usage: float, **overrides):
    base = {
        "date": day, "model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025-04-14", "endpoint_id": endpoint,
        "provider_name": "OpenAI", "usage": usage, "byok_usage_inference": 0.0, "requests": 3, "prompt_tokens": 100,
        "completion_tokens": 40, "reasoning_tokens": 0, "cached_tokens": None,
    }
    return {**base, **overrides}


def body(*items) -> bytes:
    return json.dumps({"data": list(items)}).encode()


def api_rows(dataset: Dataset, day, **filters) -> list[tuple]:
    """The stand-in's latest answer for ``day``, as rows of the warehouse."""
    window = completed_window(utc_today())
    subject = "workspace_id" if filters.get("group_by") else None
    parsed = parse_activity({"data": dataset.activity(day, **filters)}, window, subject)
    return sorted(tuple(r.values()) for r in parsed.days.get(day.isoformat(), []))


def api_spend(dataset: Dataset, day) -> float:
    return math.fsum(i["usage"] for i in dataset.activity(day))


def report_spend(run, first, last) -> dict[str, float]:
    result = run("report", "-g", "date", "--since", first.isoformat(), "--until", last.isoformat(), "-f", "json")
    assert result.exit_code == 0, result.output
    return {r["date"]: r["usage"] for r in json.loads(result.stdout)}


def busy_day(dataset: Dataset, needed: int = 4):
    """A recent day of the window with at least ``needed`` rows (the stand-in has empty days)."""
    last = completed_window(utc_today())[1]
    return next(d for d in (last - timedelta(days=n) for n in range(2)) if len(dataset.activity(d)) >= needed)


# -- the stand-in can revise a day the way OpenRouter does ------------------------------------


# Revisions on SQLite and on PostgreSQL (tests using the warehouse_url fixture).
pytestmark = pytest.mark.both_backends


def test_standin_amend_keeps_per_key_and_account_answers_consistent():
    dataset = Dataset(keys=2, seed=7)
    a, b = dataset.api_keys
    last = completed_window(utc_today())[1]
    day = next(d for d in (last - timedelta(days=n) for n in range(5)) if len(dataset.activity(d, api_key_hash=a.hash)) >= 2)
    first, second = (i["endpoint_id"] for i in dataset.activity(day, api_key_hash=a.hash)[:2])
    dataset.amend(day, first, drop=True)
    dataset.amend(day, second, api_key_hash=a.hash, endpoint_id="ep-moved", provider_name="Elsewhere")
    account = dataset.activity(day)
    assert first not in {i["endpoint_id"] for i in account}
    (moved,) = [i for i in account if i["endpoint_id"] == "ep-moved"]
    assert moved["provider_name"] == "Elsewhere"
    assert second not in {i["endpoint_id"] for i in dataset.activity(day, api_key_hash=a.hash)}
    per_key = dataset.activity(day, api_key_hash=a.hash) + dataset.activity(day, api_key_hash=b.hash)
    assert sum(i["requests"] for i in per_key) == sum(i["requests"] for i in account)
    assert math.isclose(math.fsum(i["usage"] for i in per_key), math.fsum(i["usage"] for i in account), abs_tol=1e-9)
    with pytest.raises(ValueError):
        dataset.amend(day, first, usage=1.0)  # type: ignore[arg-type]


# -- the reported double count, through the real CLI ---------------------------------------


def test_a_changed_endpoint_id_is_not_counted_twice(cli_env, run, api, warehouse_url):
    yesterday = completed_window(utc_today())[1].isoformat()
    api.inject(Fault("body", body=body(item(yesterday, "ep-old", 3.0)), path="/activity"))
    assert run("sync").exit_code == 0
    api.inject(Fault("body", body=body(item(yesterday, "ep-new", 3.0)), path="/activity"))
    second = run("sync")
    assert second.exit_code == 0, second.output

    assert report_spend(run, *[completed_window(utc_today())[1]] * 2) == {yesterday: 3.0}  # was $6.00
    assert query(warehouse_url, f"SELECT sum(usage) FROM activity WHERE date = '{yesterday}'") == [(3.0,)]
    assert query(warehouse_url, f"SELECT spend_usd FROM daily_spend WHERE date = '{yesterday}'") == [(3.0,)]
    assert query(warehouse_url, f"SELECT endpoint_id FROM activity WHERE date = '{yesterday}'") == [("ep-new",)]
    assert query(warehouse_url, f"SELECT row_count FROM archived_days WHERE date = '{yesterday}'") == [(1,)]

    (run_id,) = query(warehouse_url, "SELECT max(id) FROM sync_runs")[0]
    # The answer that superseded the row is the one the day's mark points to.
    (raw_id,) = query(warehouse_url, f"SELECT raw_response_id FROM archived_days WHERE date = '{yesterday}'")[0]
    history = query(warehouse_url, "SELECT endpoint_id, usage, reason, superseded_by_run, superseded_by_raw_response_id, superseded_at FROM activity_history")
    assert [h[:5] for h in history] == [("ep-old", 3.0, "retired", run_id, raw_id)]

    status = json.loads(run("status", "--json").stdout)
    assert status["history"]["activity"]["retired"] == 1
    assert status["history"]["activity"]["last_superseded_at"].startswith(str(history[0][5])[:19].replace(" ", "T"))
    assert status["miscounted_days"] == []
    assert "1 row(s) retired" in run("status").stdout


def test_a_day_that_shrinks_and_a_relabelled_row_equal_the_latest_answer(cli_env, run, api, warehouse_url):
    dataset = api.dataset
    assert run("backfill").exit_code == 0
    day = busy_day(dataset)
    listed = dataset.activity(day)
    dropped, renamed, relabelled = (i["endpoint_id"] for i in listed[:3])
    old = {i["endpoint_id"]: i for i in listed}
    dataset.amend(day, dropped, drop=True)
    dataset.amend(day, renamed, endpoint_id="ep-renamed-" + renamed[:8])
    dataset.amend(day, relabelled, model="acme/new-model", model_permaslug="acme/new-model-2026", provider_name="Acme")
    dataset.revise(day)
    result = run("sync")
    assert result.exit_code == 0, result.output

    first, last = completed_window(utc_today())
    # reports, views and a plain SQL sum all equal the API's latest answer, to the cent
    spend = {}
    d = first
    while d <= last:
        if dataset.activity(d):
            spend[d.isoformat()] = api_spend(dataset, d)
        d += timedelta(days=1)
    expected = {day: round(v, 2) for day, v in spend.items()}
    assert {k: round(v, 2) for k, v in report_spend(run, first, last).items()} == expected
    views = {d: round(v, 2) for d, v in query(warehouse_url, "SELECT date, spend_usd FROM daily_spend")}
    assert views == expected
    assert round(query(warehouse_url, "SELECT sum(usage) FROM activity")[0][0], 2) == round(math.fsum(spend.values()), 2)
    assert query(warehouse_url, f"SELECT {ROW} FROM activity WHERE date = '{day}' ORDER BY endpoint_id") == api_rows(dataset, day)
    assert query(warehouse_url, f"SELECT row_count FROM archived_days WHERE date = '{day}'") == [(len(api_rows(dataset, day)),)]

    # the earlier versions, with the fetch that superseded them
    (run_id,) = query(warehouse_url, "SELECT max(id) FROM sync_runs")[0]
    (raw_id,) = query(warehouse_url, "SELECT max(id) FROM raw_responses")[0]
    history = {
        (r[0], r[1]): r[2:]
        for r in query(warehouse_url, f"SELECT endpoint_id, reason, superseded_by_run, superseded_by_raw_response_id, model, model_permaslug, provider_name, usage FROM activity_history WHERE date = '{day}'")
    }
    assert history[(dropped, "retired")][:2] == (run_id, raw_id)
    assert history[(renamed, "retired")][:2] == (run_id, raw_id)
    assert history[(relabelled, "revised")][2:5] == (old[relabelled]["model"], old[relabelled]["model_permaslug"], old[relabelled]["provider_name"])
    assert query(warehouse_url, f"SELECT model, model_permaslug, provider_name FROM activity WHERE date = '{day}' AND endpoint_id = '{relabelled}'") == [
        ("acme/new-model", "acme/new-model-2026", "Acme")
    ]
    # every superseded version is kept exactly as it was archived, and only that day's
    assert all(values[5] == old[endpoint]["usage"] for (endpoint, _), values in history.items())
    assert query(warehouse_url, f"SELECT count(*) FROM activity_history WHERE date <> '{day}'") == [(0,)]

    # a second sync with nothing new changes nothing, and keeps the history
    before = query(warehouse_url, "SELECT count(*) FROM activity_history")
    again = run("sync")
    assert "0 new, 0 changed" in again.stdout
    assert query(warehouse_url, "SELECT count(*) FROM activity_history") == before


def test_a_day_that_becomes_empty_retires_all_its_rows(cli_env, run, api, warehouse_url):
    dataset = api.dataset
    assert run("backfill").exit_code == 0
    day = busy_day(dataset, needed=1)
    count = len(dataset.activity(day))
    for i in dataset.activity(day):
        dataset.amend(day, i["endpoint_id"], drop=True)
    result = run("sync")
    assert result.exit_code == 0
    assert f"{count} retired" in result.stdout
    assert query(warehouse_url, f"SELECT count(*) FROM activity WHERE date = '{day}'") == [(0,)]
    assert query(warehouse_url, f"SELECT row_count FROM archived_days WHERE date = '{day}'") == [(0,)]
    assert query(warehouse_url, f"SELECT count(*) FROM activity_history WHERE date = '{day}' AND reason = 'retired'") == [(count,)]


# -- breakdowns: the scope of a day -------------------------------------------------------


def shared_endpoint(dataset: Dataset, a, b):
    """(day, endpoint id) that keys a and b both used on a recent day."""
    last = completed_window(utc_today())[1]
    for n in range(2):
        day = last - timedelta(days=n)
        common = {i["endpoint_id"] for i in dataset.activity(day, api_key_hash=a.hash)} & {
            i["endpoint_id"] for i in dataset.activity(day, api_key_hash=b.hash)
        }
        if common:
            return day, sorted(common)[0]
    pytest.skip("no endpoint shared by two keys in the last two days of this stand-in")


@pytest.fixture
def two_keys():
    dataset = Dataset(keys=2, seed=7)
    with StandIn(dataset, management_key=rr.KEY) as server:
        yield server


def test_key_breakdown_with_two_keys_sharing_an_endpoint(two_keys, run, tmp_path, monkeypatch, warehouse_url):
    api, dataset = two_keys, two_keys.dataset
    (tmp_path / "config.toml").write_text('[openrouter]\nmax_attempts = 2\n[sync]\nbreakdowns = ["key", "workspace"]\n')
    monkeypatch.setenv("OPENROUTER_API_KEY", rr.KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", api.base_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", warehouse_url)
    assert run("backfill").exit_code == 0
    a, b = dataset.api_keys
    day, endpoint = shared_endpoint(dataset, a, b)
    b_before = query(warehouse_url, f"SELECT * FROM activity_by_key WHERE date = '{day}' AND api_key_hash = '{b.hash}' ORDER BY endpoint_id")
    # key a's row moves to a new endpoint id; key b still uses the old one
    dataset.amend(day, endpoint, api_key_hash=a.hash, endpoint_id="ep-moved")
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert "1 retired" in result.stdout  # the key breakdown's line

    for key in (a, b):
        held = query(warehouse_url, f"SELECT {ROW} FROM activity_by_key WHERE date = '{day}' AND api_key_hash = '{key.hash}' ORDER BY endpoint_id")
        assert held == api_rows(dataset, day, api_key_hash=key.hash)
        assert query(warehouse_url, f"SELECT row_count FROM archived_breakdown_days WHERE breakdown = 'key' AND subject = '{key.hash}' AND date = '{day}'") == [(len(held),)]
    assert query(warehouse_url, f"SELECT * FROM activity_by_key WHERE date = '{day}' AND api_key_hash = '{b.hash}' ORDER BY endpoint_id") == b_before
    history = query(warehouse_url, "SELECT api_key_hash, endpoint_id, reason FROM activity_by_key_history")
    assert (a.hash, endpoint, "retired") in history
    assert all(h[0] == a.hash for h in history)  # key b's row was never superseded
    ws = query(warehouse_url, f"SELECT {ROW.replace('endpoint_id', 'workspace_id, endpoint_id')} FROM activity_by_workspace WHERE date = '{day}' ORDER BY workspace_id, endpoint_id")
    window = completed_window(utc_today())
    parsed = parse_activity({"data": dataset.activity(day, group_by="workspace")}, window, "workspace_id")
    expected_ws = sorted(
        tuple(r[c] for c in ["date", "workspace_id", *ROW.replace(" ", "").split(",")[1:]]) for r in parsed.days[day.isoformat()]
    )
    assert ws == expected_ws
    status = json.loads(run("status", "--json").stdout)
    assert status["breakdowns"]["key"]["mismatches"] == [] and status["breakdowns"]["workspace"]["mismatches"] == []
    assert status["history"]["key"]["retired"] == sum(1 for h in history if h[2] == "retired")
    assert status["miscounted_days"] == []


@pytest.fixture
def engine(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def test_per_key_counts_when_two_keys_share_an_endpoint(engine):
    day = "2026-11-01"
    shared = item(day, "ep-shared", 1.0)
    with engine.begin() as conn:
        first = [warehouse.save_breakdown_day(conn, "key", k, day, [shared], now=NOW) for k in ("key-a", "key-b")]
    assert [(w.inserted, w.updated, w.unchanged, w.retired) for w in first] == [(1, 0, 0, 0), (1, 0, 0, 0)]
    with engine.begin() as conn:
        a = warehouse.save_breakdown_day(conn, "key", "key-a", day, [{**shared, "usage": 2.0}, item(day, "ep-2", 0.5)], now=LATER)
        b = warehouse.save_breakdown_day(conn, "key", "key-b", day, [], now=LATER)
    assert (a.inserted, a.updated, a.unchanged, a.retired) == (1, 1, 0, 0)
    assert (b.inserted, b.updated, b.unchanged, b.retired) == (0, 0, 0, 1)
    with engine.connect() as conn:
        current = conn.execute(text("SELECT api_key_hash, endpoint_id, usage FROM activity_by_key ORDER BY 1, 2")).all()
        history = conn.execute(text("SELECT api_key_hash, endpoint_id, usage, reason FROM activity_by_key_history ORDER BY 1")).all()
        counts = conn.execute(text("SELECT subject, row_count FROM archived_breakdown_days ORDER BY 1")).all()
    assert [tuple(r) for r in current] == [("key-a", "ep-2", 0.5), ("key-a", "ep-shared", 2.0)]
    assert [tuple(r) for r in history] == [("key-a", "ep-shared", 1.0, "revised"), ("key-b", "ep-shared", 1.0, "retired")]
    assert [tuple(r) for r in counts] == [("key-a", 2), ("key-b", 0)]


def test_workspace_breakdown_scope_is_the_whole_day(engine):
    day = "2026-11-01"
    rows = [{**item(day, "ep-1", 1.0), "workspace_id": "ws-a"}, {**item(day, "ep-1", 2.0), "workspace_id": "ws-b"}]
    with engine.begin() as conn:
        warehouse.save_breakdown_day(conn, "workspace", "*", day, rows, now=NOW)
    with engine.begin() as conn:
        written = warehouse.save_breakdown_day(conn, "workspace", "*", day, rows[1:], now=LATER)
    assert (written.unchanged, written.retired) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT workspace_id FROM activity_by_workspace")).all() == [("ws-b",)]
        assert conn.execute(text("SELECT workspace_id, reason FROM activity_by_workspace_history")).all() == [("ws-a", "retired")]


def test_a_revision_of_model_permaslug_and_provider_keeps_the_old_values(engine):
    day = "2026-11-01"
    with engine.begin() as conn:
        warehouse.save_day(conn, day, [item(day, "ep-1", 1.0)], now=NOW)
    with engine.begin() as conn:
        written = warehouse.save_day(
            conn, day, [item(day, "ep-1", 1.0, model="m2", model_permaslug="m2-2026", provider_name="P2")], now=LATER, run_id=None
        )
    assert (written.updated, written.retired) == (1, 0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT model, model_permaslug, provider_name FROM activity")).all() == [("m2", "m2-2026", "P2")]
        old = conn.execute(text("SELECT model, model_permaslug, provider_name, reason, first_archived_at, updated_at, superseded_at FROM activity_history")).one()
    assert tuple(old[:4]) == ("openai/gpt-4.1", "openai/gpt-4.1-2025-04-14", "OpenAI", "revised")
    assert old[4] == old[5] < old[6]  # the old version's own timestamps, then when it was superseded


def test_row_count_follows_a_refetch_that_changes_the_row_count(engine):
    day = "2026-11-01"
    with engine.begin() as conn:
        warehouse.save_day(conn, day, [item(day, "a", 1.0), item(day, "b", 1.0), item(day, "c", 1.0)], now=NOW)
    with engine.begin() as conn:
        warehouse.save_day(conn, day, [item(day, "a", 1.0), item(day, "d", 1.0)], now=LATER)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT row_count FROM archived_days")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM activity")).scalar() == 2
        assert conn.execute(text("SELECT endpoint_id FROM activity_history ORDER BY 1")).all() == [("b",), ("c",)]


# -- archives made by older versions ------------------------------------------------------


def _raw(conn, content: bytes, run_id: int) -> int:
    """A raw response as versions before revision 0007 stored it: the gzip body in its row."""
    result = conn.execute(
        text("INSERT INTO raw_responses (run_id, fetched_at, endpoint, params, status, content_type, encoding, body, body_bytes, sha256) "
             "VALUES (:run, '2026-11-21 00:30:00.000000', '/activity', '{}', 200, 'application/json', 'gzip', :body, :n, :sha)"),
        {"run": run_id, "body": gzip.compress(content, mtime=0), "n": len(content), "sha": hashlib.sha256(content).hexdigest()},
    )
    return result.lastrowid


def _insert(conn, table: str, row: dict) -> None:
    row = {**row, "cached_tokens": None, "first_archived_at": "2026-11-20 00:30:00.000000", "updated_at": "2026-11-20 00:30:00.000000"}
    conn.execute(text(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + c for c in row)})"), row)


def test_migration_retires_rows_double_counted_by_older_versions(tmp_path, run, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = open_engine(url)
    migrate.upgrade(engine, "0003")
    d1, d2, d3 = "2026-11-18", "2026-11-19", "2026-11-20"
    with engine.begin() as conn:
        for run_id, started in ((1, "2026-11-19 00:30:00"), (2, "2026-11-21 00:30:00")):
            conn.execute(
                text("INSERT INTO sync_runs (id, started_at, trigger, outcome, days_requested, days_fetched, requests, rows_inserted, rows_updated, rows_unchanged) "
                     "VALUES (:id, :at, 'sync', 'ok', 0, 0, 1, 0, 0, 0)"),
                {"id": run_id, "at": started},
            )
        # run 2's answer (live date format) lists ep-new on d1 and nothing on d2; d3's answer was not kept
        raw = _raw(conn, body(item(d1 + " 00:00:00", "ep-new", 3.0)), 2)
        key_raw = _raw(conn, body(item(d1, "ep-new", 3.0)), 2)
        ws_raw = _raw(conn, body({**item(d1, "ep-new", 3.0), "workspace_id": "ws-1"}), 2)
        for day, count, raw_id in ((d1, 1, raw), (d2, 0, raw), (d3, 1, None)):
            conn.execute(
                text("INSERT INTO archived_days VALUES (:d, :n, '2026-11-19 00:30:00', '2026-11-21 00:30:00', 2, :r)"), {"d": day, "n": count, "r": raw_id}
            )
        for endpoint in ("ep-old", "ep-new"):
            _insert(conn, "activity", item(d1, endpoint, 3.0))
            _insert(conn, "activity_by_key", {**item(d1, endpoint, 3.0), "api_key_hash": "k1"})
            _insert(conn, "activity_by_workspace", {**item(d1, endpoint, 3.0), "workspace_id": "ws-1"})
        _insert(conn, "activity", item(d2, "ep-gone", 1.0))
        _insert(conn, "activity", item(d3, "ep-x", 1.0))
        _insert(conn, "activity", item(d3, "ep-y", 1.0))  # d3 is double counted, with no answer to repair it from
        for breakdown, subject, raw_id in (("key", "k1", key_raw), ("workspace", "*", ws_raw)):
            conn.execute(
                text("INSERT INTO archived_breakdown_days VALUES (:b, :s, :d, 1, '2026-11-19 00:30:00', '2026-11-21 00:30:00', 2, :r)"),
                {"b": breakdown, "s": subject, "d": d1, "r": raw_id},
            )
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", url)
    before = json.loads(run("status", "--json").stdout)  # an old archive: flagged even before the upgrade
    assert {(m["table"], m["date"]) for m in before["miscounted_days"]} >= {("activity", d1), ("activity", d2), ("activity", d3)}

    migrate.upgrade(engine)
    assert query(url, "SELECT date, endpoint_id FROM activity ORDER BY 1, 2") == [(d1, "ep-new"), (d3, "ep-x"), (d3, "ep-y")]
    assert query(url, "SELECT date, endpoint_id, reason, superseded_by_run, superseded_by_raw_response_id FROM activity_history ORDER BY 1") == [
        (d1, "ep-old", "retired", 2, raw), (d2, "ep-gone", "retired", 2, raw)
    ]
    assert query(url, "SELECT api_key_hash, endpoint_id FROM activity_by_key") == [("k1", "ep-new")]
    assert query(url, "SELECT api_key_hash, endpoint_id, reason, superseded_by_raw_response_id FROM activity_by_key_history") == [("k1", "ep-old", "retired", key_raw)]
    assert query(url, "SELECT workspace_id, endpoint_id FROM activity_by_workspace") == [("ws-1", "ep-new")]
    assert query(url, "SELECT endpoint_id FROM activity_by_workspace_history") == [("ep-old",)]
    assert query(url, f"SELECT spend_usd FROM daily_spend WHERE date = '{d1}'") == [(3.0,)]

    result = run("status", "--json", "--check")
    after = json.loads(result.stdout)
    assert result.exit_code == 1  # d3 cannot be made exact: flagged, and unhealthy
    assert [(m["table"], m["date"], m["row_count"], m["rows"]) for m in after["miscounted_days"]] == [("activity", d3, 1, 2)]
    assert any(d3 in p for p in after["problems"])
    assert after["history"]["activity"]["retired"] == 2 and after["history"]["key"]["retired"] == 1

    # downgrading puts retired rows back (nothing lost), upgrading retires them again
    migrate.downgrade(engine, "0003")
    assert query(url, "SELECT count(*) FROM activity") == [(5,)]
    migrate.upgrade(engine)
    assert query(url, "SELECT count(*) FROM activity") == [(3,)]
    engine.dispose()


# -- the reliability report's row ---------------------------------------------------------


@pytest.mark.slow
def test_reliability_check_revised_days():
    row = rr.check_revised_days_not_double_counted()
    assert row.ok, row
    assert row.rows_lost == 0
    assert "retired" in row.result
