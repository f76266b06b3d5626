"""On PostgreSQL a day's rows go in one statement, so the summary triggers run once a day.

psycopg's executemany sends one statement per row, and a statement-level trigger ran once
per row: a 200k-row load took several times as long as before the summaries.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from etl import migrate, summaries, warehouse
from etl.db import open_engine, unnest_values

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def test_unnest_values_replaces_the_tuple_with_one_array_per_column():
    sql = "INSERT INTO t (a, b) VALUES (%s::VARCHAR, cast(%s AS TIMESTAMP)) ON CONFLICT (a) DO UPDATE SET b = excluded.b"
    assert unnest_values(sql, ["VARCHAR(10)", "TIMESTAMP WITH TIME ZONE"]) == (
        "INSERT INTO t (a, b) SELECT * FROM unnest(%s::VARCHAR(10)[], %s::TIMESTAMP WITH TIME ZONE[]) ON CONFLICT (a) DO UPDATE SET b = excluded.b"
    )


def _rows(day: str, n: int, usage: float) -> list[dict]:
    return [{"date": day, "endpoint_id": f"e{i}", "model": f"m{i % 7}", "model_permaslug": f"m{i % 7}-1", "provider_name": f"P{i % 3}",
             "usage": usage * (i + 1), "byok_usage_inference": 0.0, "requests": i, "prompt_tokens": 2 * i, "completion_tokens": i,
             "reasoning_tokens": 0, "cached_tokens": None} for i in range(n)]


def test_a_day_of_2500_rows_runs_the_insert_triggers_once_per_batch(pg_url):
    engine = open_engine(pg_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL track_functions = 'pl'")
        warehouse.save_day(conn, "2026-11-01", _rows("2026-11-01", 2500, 0.001), now=NOW)
        calls = dict(conn.execute(text("SELECT funcname, calls FROM pg_stat_xact_user_functions")).all())
    assert calls["activity_monthly_ins"] == 1, calls  # 2,500 rows in one statement, not 2,500 statements
    assert max(calls.values()) <= 2, calls  # the summaries' own upsert fires the counts' insert and update triggers
    with engine.begin() as conn:  # a revision: every row changes, still exact
        warehouse.save_day(conn, "2026-11-01", _rows("2026-11-01", 2400, 0.002), now=NOW)
    with engine.connect() as conn:
        assert summaries.verify(conn, "0000-00", "9999-99") == []
        total = conn.execute(text("SELECT count(*), sum(requests) FROM activity")).one()
        summed = conn.execute(text("SELECT sum(row_count), sum(requests) FROM activity_monthly")).one()
    assert tuple(total) == tuple(summed) == (2400, sum(range(2400)))
    engine.dispose()


@pytest.mark.parametrize("n", [1, 2, 999, 1000, 1001])
def test_batch_edges_store_every_row(pg_url, n):
    engine = open_engine(pg_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        warehouse.save_day(conn, "2026-11-02", _rows("2026-11-02", n, 0.5), now=NOW)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT endpoint_id) FROM activity")).one() == (n, n)
        assert summaries.verify(conn, "0000-00", "9999-99") == []
    engine.dispose()
