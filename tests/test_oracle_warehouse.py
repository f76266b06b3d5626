"""The warehouse writes exactly what it was given, and only when something changed."""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
from datetime import datetime, timezone

import pytest

from conftest import query
from etl import migrate, warehouse
from etl.client import Fetched
from etl.db import open_engine
from oracle import COLUMNS

T1 = datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc)
T2 = datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)
DAY = "2026-11-01"


def row(endpoint="e1", **overrides):
    base = {"date": DAY, "endpoint_id": endpoint, "model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025-04-14",
            "provider_name": "OpenAI", "usage": 0.25, "byok_usage_inference": 0.125, "requests": 3, "prompt_tokens": 100,
            "completion_tokens": 40, "reasoning_tokens": 7, "cached_tokens": 11}
    return {**base, **overrides}


@pytest.fixture
def engine(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def plain(tmp_path):
    def read(sql):
        with sqlite3.connect(tmp_path / "w.db") as conn:
            return conn.execute(sql).fetchall()

    return read


def save(engine, rows, now, day=DAY):
    with engine.begin() as conn:
        return warehouse.save_day(conn, day, rows, now=now)


@pytest.mark.parametrize(
    "change",
    [{"cached_tokens": 12}, {"cached_tokens": None}, {"model": "openai/gpt-4.1-renamed"}, {"model_permaslug": "p2"},
     {"provider_name": "Azure"}, {"usage": 0.2500001}, {"byok_usage_inference": 0.0}, {"requests": 4},
     {"prompt_tokens": 101}, {"completion_tokens": 41}, {"reasoning_tokens": 8}],
    ids=lambda c: next(iter(c)),
)
def test_a_change_in_any_single_column_is_an_update_and_is_written(engine, plain, change):
    save(engine, [row()], T1)
    written = save(engine, [row(**change)], T2)
    assert (written.inserted, written.updated, written.unchanged) == (0, 1, 0)
    ((*stored, first, updated),) = plain(f"SELECT {', '.join(COLUMNS)}, first_archived_at, updated_at FROM activity")
    assert tuple(stored) == tuple(row(**change)[c] for c in COLUMNS)
    assert first.startswith("2026-11-22 01:00") and updated.startswith("2026-11-23 01:00")


def test_a_refetched_day_keeps_its_first_archive_time_and_counts_all_its_rows(engine, plain):
    save(engine, [row("e1"), row("e2")], T1)
    save(engine, [row("e1"), row("e2"), row("e3")], T2)
    ((count, first, last),) = plain("SELECT row_count, first_archived_at, last_fetched_at FROM archived_days")
    assert count == 3  # every row of the day, not only the new one
    assert first.startswith("2026-11-22 01:00") and last.startswith("2026-11-23 01:00")


def test_raw_responses_carry_a_checksum_of_the_exact_bytes(engine, plain):
    body = json.dumps({"data": [row()]}).encode() + b"\n"
    fetched = Fetched("activity", {"date": DAY}, 200, "application/json", body, None, T1)
    with engine.begin() as conn:
        warehouse.store_raw(conn, fetched, None)
    ((stored, size, digest, params, endpoint),) = plain("SELECT body, body_bytes, sha256, params, endpoint FROM raw_response_bodies")
    assert gzip.decompress(stored) == body
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    assert (json.loads(params), endpoint) == ({"date": DAY}, "activity")


def test_keys_are_stored_as_listed_and_kept_when_no_longer_listed(engine, plain):
    keys = [
        {"hash": "h1", "name": "Production", "label": "sk-or-v1-aaa...1111", "disabled": False, "workspace_id": "w1", "creator_user_id": "u1",
         "created_at": "2026-01-01T00:00:00Z"},
        {"hash": "h2", "name": "Old", "label": "sk-or-v1-bbb...2222", "disabled": True, "workspace_id": "w2", "creator_user_id": "u2",
         "created_at": "2025-06-01T00:00:00Z"},
    ]
    with engine.begin() as conn:
        assert warehouse.save_keys(conn, keys, T1) == 2
    with engine.begin() as conn:
        warehouse.save_keys(conn, [{**keys[0], "name": "Prod"}], T2)
    stored = plain("SELECT hash, name, label, disabled, workspace_id, creator_user_id, first_seen_at, last_seen_at FROM api_keys ORDER BY hash")
    assert [s[:6] for s in stored] == [("h1", "Prod", "sk-or-v1-aaa...1111", 0, "w1", "u1"), ("h2", "Old", "sk-or-v1-bbb...2222", 1, "w2", "u2")]
    assert stored[0][6].startswith("2026-11-22") and stored[0][7].startswith("2026-11-23")
    assert stored[1][7].startswith("2026-11-22")  # not listed the second time: kept as it was


def test_archived_date_ranges_include_both_ends(engine):
    for day in ("2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"):
        save(engine, [], T1, day)
        with engine.begin() as conn:
            warehouse.save_breakdown_day(conn, "key", "h1", day, [], now=T1)
    with engine.connect() as conn:
        assert warehouse.archived_dates(conn, "2026-11-02", "2026-11-03") == {"2026-11-02", "2026-11-03"}
        assert warehouse.archived_dates(conn) == {"2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"}
        assert warehouse.archived_breakdown_dates(conn, "key", "h1", "2026-11-02", "2026-11-03") == {"2026-11-02", "2026-11-03"}
        assert warehouse.archived_breakdown_dates(conn, "key", "h2", "2026-11-01", "2026-11-04") == set()


def test_per_key_rows_are_compared_with_the_same_keys_rows_only(engine, plain):
    with engine.begin() as conn:
        first = [warehouse.save_breakdown_day(conn, "key", h, DAY, [row("e1", requests=n), row("e2", requests=n)], now=T1) for h, n in (("h1", 1), ("h2", 5))]
    with engine.begin() as conn:
        again = [warehouse.save_breakdown_day(conn, "key", h, DAY, [row("e1", requests=n), row("e2", requests=n)], now=T2) for h, n in (("h1", 1), ("h2", 5))]
    assert [(w.inserted, w.updated, w.unchanged, w.retired) for w in first] == [(2, 0, 0, 0), (2, 0, 0, 0)]
    assert [(w.inserted, w.updated, w.unchanged, w.retired) for w in again] == [(0, 0, 2, 0), (0, 0, 2, 0)]
    ((stamp,),) = plain("SELECT DISTINCT updated_at FROM activity_by_key")
    assert stamp.startswith("2026-11-22 01:00")  # unchanged rows are not rewritten
    assert plain("SELECT count(*) FROM activity") == [(0,)]


def test_the_same_endpoint_in_two_workspaces_is_two_rows(engine, plain):
    rows = [{**row("e1"), "workspace_id": "w1"}, {**row("e1", requests=9), "workspace_id": "w2"}]
    with engine.begin() as conn:
        first = warehouse.save_breakdown_day(conn, "workspace", "*", DAY, rows, now=T1)
    with engine.begin() as conn:
        again = warehouse.save_breakdown_day(conn, "workspace", "*", DAY, rows, now=T2)
    assert (first.inserted, again.unchanged, again.updated) == (2, 2, 0)
    assert plain("SELECT workspace_id, requests FROM activity_by_workspace ORDER BY 1") == [("w1", 3), ("w2", 9)]


def test_a_second_backfill_with_breakdowns_changes_nothing(cli_env, run, tmp_path, warehouse_url):
    (tmp_path / "config.toml").write_text('[openrouter]\nbackoff_initial = 0.01\n[sync]\nbreakdowns = ["key", "workspace"]\n')
    assert run("backfill").exit_code == 0
    stamps = "SELECT api_key_hash, endpoint_id, date, updated_at FROM activity_by_key ORDER BY 1, 2, 3"
    before = query(warehouse_url, stamps)
    second = run("backfill")
    assert second.exit_code == 0
    key_line = next(line for line in second.stdout.splitlines() if line.startswith("key breakdown"))
    assert f"rows: 0 new, 0 changed, {len(before)} unchanged" in key_line
    assert query(warehouse_url, stamps) == before
