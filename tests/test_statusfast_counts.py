"""`status` from the monthly counts (migration 0009) reports exactly what it reported before.

An archive spread over two years with whole and partial months, gaps older than the window
(lost) and inside it (pending), empty days, revised and retired rows, a key breakdown, a day
the API refused, and miscounted days far outside the window (a mark changed by hand, a base
row deleted behind the load path's back). ``status`` at 0009 (counts) must equal, key for
key, ``status`` after a real downgrade to 0008 (every mark and summary read, the code that ran
before), and again after the upgrade that builds the counts from existing rows; the counts
themselves must equal a recount after every write. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from etl import counts, migrate, warehouse
from etl.db import open_engine
from etl.schema import sync_runs
from etl.status import read_status

pytestmark = pytest.mark.both_backends

TODAY = date(2031, 1, 20)
NOW = datetime(2031, 1, 20, tzinfo=timezone.utc)
KEY_A, KEY_B = "a" * 64, "b" * 64


def rows(day: str, n: int, bump: int = 0) -> list[dict]:
    return [{
        "date": day, "endpoint_id": f"ep-{i}", "model": f"v/m{i % 3}", "model_permaslug": f"v/m{i % 3}-1",
        "provider_name": f"P{i % 2}", "usage": 0.25 * (i + 1) + bump, "byok_usage_inference": 0.0,
        "requests": i + 1 + bump, "prompt_tokens": 10, "completion_tokens": 5, "reasoning_tokens": 0, "cached_tokens": None,
    } for i in range(n)]


def days() -> list[str]:
    """2029-11-03 .. yesterday, less some: a hole in March 2030, all of May 2030, days inside the window."""
    first, yesterday = date(2029, 11, 3), TODAY - timedelta(days=1)
    skip = {date(2030, 3, 9), date(2030, 3, 10), date(2031, 1, 2), date(2031, 1, 15)}
    out = []
    d = first
    while d <= yesterday:
        if d not in skip and not (d.year == 2030 and d.month == 5):
            out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def status_json(url: str) -> dict:
    engine = open_engine(url, read_only=True)
    try:
        found = read_status(engine, TODAY).as_dict()
    finally:
        engine.dispose()
    found.pop("schema_revision")
    found.pop("warehouse_bytes")
    return json.loads(json.dumps(found, default=str))


def assert_counts_exact(engine) -> None:
    with engine.connect() as conn:
        assert counts.differences(conn) == []


def test_status_from_counts_equals_status_before_them(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        warehouse.save_keys(conn, [{"hash": h, "name": h[:1], "label": "sk-or-v1-x...", "disabled": False} for h in (KEY_A, KEY_B)], NOW)
    for i, day in enumerate(days()):
        n = 0 if i % 17 == 5 else 1 + i % 4
        with engine.begin() as conn:
            warehouse.save_day(conn, day, rows(day, n), now=NOW)
            if day >= "2030-09-01":
                day_rows = rows(day, n)
                warehouse.save_breakdown_day(conn, "key", KEY_A, day, [{**r, "api_key_hash": KEY_A} for r in day_rows[::2]], now=NOW)
                warehouse.save_breakdown_day(conn, "key", KEY_B, day, [{**r, "api_key_hash": KEY_B} for r in day_rows[1::2]], now=NOW)
    assert_counts_exact(engine)
    with engine.begin() as conn:  # a revision, a retired row, a day that grew
        warehouse.save_day(conn, "2031-01-10", rows("2031-01-10", 4, bump=3), now=NOW)
        warehouse.save_day(conn, "2031-01-11", rows("2031-01-11", 6), now=NOW)
        warehouse.save_day(conn, "2031-01-11", rows("2031-01-11", 1), now=NOW)
        warehouse.save_day(conn, "2030-12-31", rows("2030-12-31", 6), now=NOW)
        conn.execute(sync_runs.insert().values(started_at=NOW, finished_at=NOW, trigger="sync", outcome="ok",
                                               details=json.dumps({"window": {"gone": ["2031-01-02", "2031-01-03"]}})))
    assert_counts_exact(engine)
    with engine.begin() as conn:  # miscounted days far outside the window, behind the load path's back
        conn.execute(text("UPDATE archived_days SET row_count = row_count + 2 WHERE date = '2030-01-07'"))
        conn.execute(text("UPDATE archived_breakdown_days SET row_count = row_count + 1 WHERE date = '2030-10-04' AND subject = :k"), {"k": KEY_B})
        conn.execute(text("DELETE FROM activity WHERE date = '2030-06-12' AND endpoint_id = 'ep-0'"))
    assert_counts_exact(engine)
    engine.dispose()

    fast = status_json(warehouse_url)
    assert {(m["table"], m["date"]) for m in fast["miscounted_days"]} == {
        ("activity", "2030-01-07"), ("activity_by_key", "2030-10-04"), ("activity", "2030-06-12")}
    assert "2030-05-01..2030-05-31" not in fast["lost"] and "2030-05-17" in fast["lost"] and "2030-03-09" in fast["lost"]
    assert "2031-01-15" in fast["pending"] and "2031-01-02" in fast["lost"] and fast["empty_days"] > 0
    assert fast["history"]["activity"]["revised"] > 0 and fast["history"]["activity"]["retired"] > 0
    assert fast["summaries"]["mismatches"] == []
    assert fast["problems"] and any("different number of rows" in p for p in fast["problems"])

    engine = open_engine(warehouse_url)
    migrate.downgrade(engine, "0008")
    assert migrate.current_revision(engine) == "0008"
    engine.dispose()
    assert status_json(warehouse_url) == fast  # every mark and summary read, as before the counts

    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)  # builds the counts from the rows held
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    assert_counts_exact(engine)
    engine.dispose()
    assert status_json(warehouse_url) == fast


def test_counts_changed_by_hand_fail_the_check_until_rebuilt(warehouse_url):
    from etl import summaries

    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    for day in ("2030-12-30", "2030-12-31", "2031-01-18", "2031-01-19"):
        with engine.begin() as conn:
            warehouse.save_day(conn, day, rows(day, 2), now=NOW)
    with engine.begin() as conn:
        conn.execute(text("UPDATE month_counts SET marked_days = marked_days + 1 WHERE month = '2031-01'"))
    engine.dispose()
    found = status_json(warehouse_url)
    assert [m["table"] for m in found["summaries"]["mismatches"]] == ["month_counts"]
    assert any("rebuild-summaries" in p for p in found["problems"])
    engine = open_engine(warehouse_url)
    with engine.begin() as conn:
        assert summaries.rebuild(conn)["month_counts"] == 1
    assert_counts_exact(engine)
    engine.dispose()
    assert status_json(warehouse_url)["summaries"]["mismatches"] == []
