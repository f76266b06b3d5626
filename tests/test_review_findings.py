"""Exactness findings of a review: each test fails on the code it was written against.

Real SQLite warehouses (etl.migrate.upgrade), the project's own load path, and every
expected figure computed apart from the code under test (a plain SQL sum).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from conftest import query
from etl import migrate, summaries, warehouse
from etl.db import open_engine
from etl.errors import BadArgument
from etl.query import ReportSpec, grouped_rows, run_report

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)
DAYS = {"2026-01-10": 1.0, "2026-01-20": 2.0, "2026-02-10": 4.0, "2026-03-10": 8.0}


def _row(day: str, endpoint: str, usage: float) -> dict:
    return {"date": day, "endpoint_id": endpoint, "model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025",
            "provider_name": "OpenAI", "usage": usage, "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 10,
            "completion_tokens": 5, "reasoning_tokens": 0, "cached_tokens": None}


@pytest.fixture
def archive(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        for day, usage in DAYS.items():
            warehouse.save_day(conn, day, [_row(day, "e1", usage)], now=NOW)
    yield engine
    engine.dispose()


# -- 1. A date typed without dashes was compared as text -------------------------------------


@pytest.mark.parametrize("since", ["20260115", "2026-W03-4"])
def test_a_since_date_in_another_iso_form_is_refused_not_compared_as_text(archive, warehouse_url, since):
    # Python 3.11's date.fromisoformat accepts 20260115 and 2026-W03-4 (both 2026-01-15), so
    # ReportSpec took them, and the filters compared the raw text with the stored
    # YYYY-MM-DD dates: "2026-01-20" < "20260115" as text. The report said 12.00 USD (the
    # summaries' whole months Feb and Mar, no January edge day), the plain path 0.00 USD;
    # the spend since 2026-01-15 is 14.00 USD.
    (want,) = query(warehouse_url, "SELECT sum(usage) FROM activity WHERE date >= '2026-01-15'")[0]
    assert want == 14.0
    with archive.connect() as conn:
        assert run_report(conn, ReportSpec(("month",), since="2026-01-15")).totals["usage"] == want
        with pytest.raises(BadArgument, match="YYYY-MM-DD"):
            ReportSpec(("month",), since=since)
        with pytest.raises(BadArgument, match="YYYY-MM-DD"):
            ReportSpec(("month",), until=since)


def test_the_cli_refuses_a_date_without_dashes(archive, warehouse_url, run, monkeypatch):
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", warehouse_url)
    result = run("report", "--group-by", "month", "--since", "20260115", "-f", "json")
    assert result.exit_code == 2, result.output
    assert "YYYY-MM-DD" in result.stderr


# -- 2. INSERT OR REPLACE deleted the old row without its delete trigger ---------------------


def test_insert_or_replace_keeps_the_summaries_and_counts_exact(archive, warehouse_url):
    # SQLite's REPLACE deletes the conflicting row without firing delete triggers unless
    # recursive_triggers is on: the summary kept the old row's 1.00 USD beside the new
    # 3.00 USD (4.00 USD, 2 rows for 1 row), and month_counts counted the mark twice.
    replace = (
        "INSERT OR REPLACE INTO activity (date, endpoint_id, model, model_permaslug, provider_name, usage, "
        "byok_usage_inference, requests, prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, "
        "first_archived_at, updated_at) VALUES ('2026-01-10', 'e1', 'openai/gpt-4.1', 'openai/gpt-4.1-2025', 'OpenAI', "
        "3.0, 0, 1, 10, 5, 0, NULL, '2026-05-01 00:00:00.000000', '2026-05-01 00:00:00.000000')"
    )
    mark = ("INSERT OR REPLACE INTO archived_days (date, row_count, first_archived_at, last_fetched_at) "
            "VALUES ('2026-01-10', 1, '2026-05-01 00:00:00.000000', '2026-05-01 00:00:00.000000')")
    with archive.begin() as conn:
        conn.execute(text(replace))
        conn.execute(text(mark))
    (want,) = query(warehouse_url, "SELECT sum(usage) FROM activity WHERE date LIKE '2026-01-%'")[0]
    assert want == 5.0
    with archive.connect() as conn:
        assert summaries.verify(conn, "0000-00", "9999-99") == []
        january = [r for r in grouped_rows(conn, ReportSpec(("month",))) if r["month"] == "2026-01"]
        assert january[0]["usage"] == want
