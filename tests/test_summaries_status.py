"""`status --check` verifies the summaries of the API window's months; `db rebuild-summaries` repairs them.

Real CLI, real stand-in, real SQLite and PostgreSQL. A summary row changed behind the
triggers' back (the one way to make it wrong) shows in an all-history report, fails the
check, and is put right by the rebuild; the migration builds the summaries of an archive
that existed before them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from conftest import query
from etl import migrate, summaries, warehouse
from etl.db import open_engine

pytestmark = pytest.mark.both_backends


def execute(url: str, sql: str) -> None:
    """A write behind the project's back (the summaries' own triggers do not see it)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


@pytest.fixture
def archive(cli_env, run, tmp_path):
    (tmp_path / "config.toml").write_text('[openrouter]\nbackoff_initial = 0.01\n[sync]\nbreakdowns = ["key"]\n')
    assert run("backfill").exit_code == 0
    return cli_env["OPENROUTER_ARCHIVE_DB"]


def monthly_requests(run) -> dict[str, int]:
    result = run("report", "-g", "month", "-f", "json")
    assert result.exit_code == 0, result.output
    return {r["month"]: r["requests"] for r in json.loads(result.stdout)}


def test_a_summary_changed_by_hand_fails_the_check_until_rebuilt(archive, run):
    status = run("status", "--check", "--json")
    assert status.exit_code == 0, status.stdout
    checked = json.loads(status.stdout)["summaries"]
    assert checked["mismatches"] == [] and checked["months"][0] <= checked["months"][1]
    want = dict(query(archive, "SELECT substr(date, 1, 7), sum(requests) FROM activity GROUP BY 1"))
    assert monthly_requests(run) == want

    newest = checked["months"][1]
    execute(archive, f"UPDATE activity_monthly SET requests = requests + 7 WHERE month = '{newest}'")
    assert monthly_requests(run)[newest] > want[newest]  # the all-history report reads the summary
    status = run("status", "--check", "--json")
    assert status.exit_code == 1
    found = json.loads(status.stdout)
    assert {m["month"] for m in found["summaries"]["mismatches"]} == {newest}
    assert any("rebuild-summaries" in p for p in found["problems"])
    assert "summary row(s) differ" in run("status").stdout

    rebuilt = run("db", "rebuild-summaries")
    assert rebuilt.exit_code == 0
    assert f"{len(found['summaries']['mismatches'])} row(s) were wrong" in rebuilt.stdout
    assert run("status", "--check").exit_code == 0
    assert monthly_requests(run) == want
    again = run("db", "rebuild-summaries")
    assert "already exact" in again.stdout


def test_a_missing_or_extra_summary_row_is_found_too(archive, run):
    execute(archive, "DELETE FROM activity_by_key_monthly WHERE month = (SELECT max(month) FROM activity_by_key_monthly)")
    execute(archive, "INSERT INTO activity_monthly VALUES ((SELECT max(month) FROM activity_monthly), 'ghost/model', 'ghost', 'Nobody', 1, 5, 0, 1, 1, 1, 0, 0)")
    status = json.loads(run("status", "--json", "--check").stdout)
    tables = {(m["table"], m["held"] is None, m["expected"] is None) for m in status["summaries"]["mismatches"]}
    assert ("activity_by_key_monthly", True, False) in tables  # missing
    assert ("activity_monthly", False, True) in tables  # extra
    assert "ghost/model" in run("report", "-g", "model").stdout  # an all-history report reads the summaries
    assert run("db", "rebuild-summaries").exit_code == 0
    assert run("status", "--check").exit_code == 0
    assert "ghost/model" not in run("report", "-g", "model").stdout


def test_status_counts_the_rows_from_the_summaries(archive, run):
    status = json.loads(run("status", "--json").stdout)
    assert status["rows"] == query(archive, "SELECT count(*) FROM activity")[0][0] > 0


def test_the_migration_builds_the_summaries_of_an_existing_archive(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine, "0007")
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    row = {"endpoint_id": "e1", "model": "m", "model_permaslug": "m-1", "provider_name": "P", "usage": 0.1, "byok_usage_inference": 0.0,
           "requests": 2, "prompt_tokens": 3, "completion_tokens": 4, "reasoning_tokens": 0, "cached_tokens": None}
    with engine.begin() as conn:
        for day in ("2026-01-30", "2026-01-31", "2026-02-01"):
            warehouse.save_day(conn, day, [{**row, "date": day}], now=now)
    migrate.upgrade(engine)
    assert query(warehouse_url, "SELECT month, row_count, usage_units, requests FROM activity_monthly ORDER BY 1") == [
        ("2026-01", 2, 2 * 10**9, 4), ("2026-02", 1, 10**9, 2)]
    with engine.connect() as conn:
        assert summaries.verify(conn, "0000-00", "9999-99") == []
    migrate.downgrade(engine, "0007")  # and away again, leaving the rows
    assert query(warehouse_url, "SELECT count(*) FROM activity") == [(3,)]
    engine.dispose()
