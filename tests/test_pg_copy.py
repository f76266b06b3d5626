"""`db copy --to URL`: a whole archive from SQLite to PostgreSQL and back, verified."""

from __future__ import annotations

import json

import pytest

from conftest import query
from etl.schema import metadata

ROW_TABLES = [t.name for t in metadata.sorted_tables]


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the archive, in a comparable form."""
    out = {}
    for table in metadata.sorted_tables:
        order = ", ".join(c.name for c in table.primary_key.columns)
        rows = query(url, f"SELECT * FROM {table.name} ORDER BY {order}")
        out[table.name] = [tuple(v.isoformat() if hasattr(v, "isoformat") else bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return out


def normalised(dumped: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    # SQLite keeps timestamps as text, PostgreSQL as timestamptz: compare them as instants.
    from datetime import datetime, timezone

    def value(v):
        if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] in " T" and v[13] == ":":
            parsed = datetime.fromisoformat(v)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        return bool(v) if v in (True, False) and not isinstance(v, float) else v

    return {t: [tuple(value(v) for v in r) for r in rows] for t, rows in dumped.items()}


@pytest.fixture
def rich_archive(api, cli_env, run, tmp_path):
    """A SQLite archive with breakdowns, history (a revised and a shrunk day), credits and runs."""
    (tmp_path / "config.toml").write_text('[openrouter]\nmax_attempts = 2\n[sync]\nbreakdowns = ["key", "workspace"]\n')
    assert run("backfill").exit_code == 0
    from etl.window import completed_window, utc_today

    last = completed_window(utc_today())[1]
    api.dataset.revise(last)
    rows = api.dataset.activity(last)
    api.dataset.amend(last, rows[0]["endpoint_id"], drop=True)
    assert run("backfill", "--days", "3").exit_code == 0
    assert run("credits").exit_code == 0
    source = cli_env["OPENROUTER_ARCHIVE_DB"]
    assert all(query(source, f"SELECT count(*) FROM {t}")[0][0] > 0 for t in ("activity_history", "activity_by_key", "credits_snapshots", "api_keys"))
    return source


def test_sqlite_to_postgresql_and_back_keeps_every_row(rich_archive, run, pg_url, tmp_path, monkeypatch):
    copied = run("db", "copy", "--to", pg_url)
    assert copied.exit_code == 0, copied.output
    assert "verified" in copied.stdout
    assert normalised(dump(pg_url)) == normalised(dump(rich_archive))
    back = f"sqlite:///{tmp_path / 'back.db'}"
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("db", "copy", "--to", back).exit_code == 0
    assert dump(back) == dump(rich_archive)  # byte for byte, timestamps included
    # Reports agree, and the copies keep working as warehouses (PostgreSQL's sequences moved on).
    reports = []
    for url in (rich_archive, pg_url, back):
        monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", url)
        reports.append(json.loads(run("report", "-g", "month,key", "-f", "json").stdout))
    for other in reports[1:]:  # equal, money up to the order of a float sum
        assert [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in other] == [
            {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in reports[0]
        ]
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("sync").exit_code == 0
    assert run("status", "--check").exit_code == 0


def test_a_non_empty_target_is_refused_unless_merge_which_is_idempotent(rich_archive, run, pg_url, monkeypatch):
    assert run("db", "copy", "--to", pg_url).exit_code == 0
    before = dump(pg_url)
    again = run("db", "copy", "--to", pg_url)
    assert again.exit_code == 2 and "already holds rows" in again.stderr and "--merge" in again.stderr
    merged = run("db", "copy", "--to", pg_url, "--merge")
    assert merged.exit_code == 0, merged.output
    assert dump(pg_url) == before


def test_merge_refuses_another_archive(rich_archive, run, pg_url, monkeypatch, api):
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("sync").exit_code == 0  # the target's own history: run #1 is another run
    before = dump(pg_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", rich_archive)
    refused = run("db", "copy", "--to", pg_url, "--merge")
    assert refused.exit_code == 2 and "another archive" in refused.stderr, refused.output
    assert dump(pg_url) == before


def test_an_interrupted_copy_is_finished_by_merge(rich_archive, run, pg_url, monkeypatch):
    from etl import copy as copier

    real = copier._write
    calls = {"n": 0}

    def failing(target, table, batch, merge):  # a fault no server produces on demand: the link drops mid-copy
        calls["n"] += 1
        if table.name == "activity_history":  # after its parents, sync_runs and raw_responses
            raise ConnectionError("link dropped")
        return real(target, table, batch, merge)

    monkeypatch.setattr(copier, "_write", failing)
    broken = run("db", "copy", "--to", pg_url)
    assert broken.exit_code == 1 and "link dropped" in broken.stderr
    monkeypatch.setattr(copier, "_write", real)
    assert query(pg_url, "SELECT count(*) FROM activity_history") == [(0,)]
    assert query(pg_url, "SELECT count(*) FROM sync_runs")[0][0] > 0  # the copy broke off half-way
    done = run("db", "copy", "--to", pg_url, "--merge")
    assert done.exit_code == 0, done.output
    assert normalised(dump(pg_url)) == normalised(dump(rich_archive))


def test_verification_catches_a_target_that_differs(rich_archive, run, pg_url):
    from etl.copy import CopyVerificationFailed, verify
    from etl.db import open_engine

    assert run("db", "copy", "--to", pg_url).exit_code == 0
    target = open_engine(pg_url)
    with target.begin() as conn:
        conn.exec_driver_sql("UPDATE activity SET usage = usage + 0.01 WHERE date = (SELECT max(date) FROM activity)")
    source = open_engine(rich_archive)
    with source.connect() as a, target.connect() as b, pytest.raises(CopyVerificationFailed, match="activity 20"):
        verify(a, b, merge=False)
    source.dispose(), target.dispose()


def test_copy_to_itself_and_from_an_empty_source_are_refused(cli_env, run, pg_url, monkeypatch):
    missing = run("db", "copy", "--to", pg_url)
    assert missing.exit_code == 1 and "run `openrouter-archive sync` first" in missing.stderr
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("db", "upgrade").exit_code == 0
    itself = run("db", "copy", "--to", pg_url.replace("127.0.0.1", "localhost"))
    assert itself.exit_code == 2 and "is the configured warehouse itself" in itself.stderr


def test_every_table_of_the_schema_is_copied():
    """Tables added by later migrations are picked up from the metadata, parents first."""
    from etl.copy import tables

    from etl.schema import SUMMARY_TABLES

    names = [t.name for t in tables()]
    # The monthly summaries and counts are derived: the target's triggers make them from the rows copied.
    assert set(names) == set(metadata.tables) - {t.name for t in SUMMARY_TABLES.values()} - {"month_counts"}
    for i, table in enumerate(tables()):
        for fk in table.foreign_keys:
            assert names.index(fk.column.table.name) <= i


@pytest.mark.slow
def test_reliability_check_postgresql_warehouse(pg_server, monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "scripts"))
    from reliability_report import postgresql_warehouse

    row = postgresql_warehouse()
    assert row.ok, row
    assert row.rows_lost == 0
