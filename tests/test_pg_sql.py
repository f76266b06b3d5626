"""`sql` on PostgreSQL: one query, read-only, whatever the statement tries; SQLite's messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conftest import query

REFUSED = "Error: refused: `sql` is read-only"
MARKER = Path("/tmp/openrouter-archive-pg-sql-test-marker")


@pytest.fixture
def pg_archive(cli_env, run, pg_url, monkeypatch):
    """A backfilled archive on PostgreSQL, owned by the test server's superuser (what initdb gives)."""
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("backfill").exit_code == 0
    with create_engine(pg_url, poolclass=NullPool).begin() as conn:  # a procedure that writes, for CALL
        conn.exec_driver_sql("CREATE PROCEDURE wipe() LANGUAGE sql AS $$ DELETE FROM activity $$")
    return pg_url


def fingerprint(url: str) -> list[tuple]:
    return query(url, "SELECT count(*), sum(usage), sum(requests) FROM activity") + query(
        url, "SELECT count(*), max(id) FROM sync_runs"
    ) + query(url, "SELECT last_value FROM sync_runs_id_seq") + query(url, "SELECT version_num FROM alembic_version")


ATTACKS = [
    "COMMIT; DELETE FROM activity",
    "ROLLBACK; BEGIN READ WRITE; DELETE FROM activity; COMMIT",
    "SET TRANSACTION READ WRITE",
    "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "DO $$ BEGIN DELETE FROM activity; END $$",
    "DO $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true); DELETE FROM activity; END $$",
    f"COPY (SELECT 1) TO PROGRAM 'touch {MARKER}'",
    f"COPY activity TO '{MARKER}'",
    "SELECT nextval('sync_runs_id_seq')",
    "SELECT setval('sync_runs_id_seq', 1)",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "SELECT * FROM pg_terminate_backend(pg_backend_pid())",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "CALL wipe()",
    "LOCK activity IN ACCESS EXCLUSIVE MODE",
    "WITH gone AS (DELETE FROM activity RETURNING *) SELECT count(*) FROM gone",
    "WITH up AS (UPDATE activity SET usage = 0 RETURNING 1) SELECT 1",
    "SELECT * INTO evil FROM activity",
    "DELETE FROM activity",
    "UPDATE activity SET usage = 0",
    "INSERT INTO sync_runs (started_at, trigger, outcome) VALUES (now(), 'x', 'x')",
    "DROP TABLE activity CASCADE",
    "TRUNCATE activity",
    "CREATE TABLE evil (x int)",
    "CREATE TEMP TABLE evil (x int)",
    "VACUUM activity",
    "ALTER SYSTEM SET fsync = on",
    "SELECT pg_reload_conf()",
    "SELECT pg_advisory_lock(1)",
    "/* hidden */ -- comment\n DELETE FROM activity",
    "(SELECT 1); DELETE FROM activity",
    "EXPLAIN ANALYZE DELETE FROM activity",
    "PREPARE p AS DELETE FROM activity",
]


@pytest.mark.slow
def test_every_way_in_is_refused_and_changes_nothing(run, pg_archive):
    # One archive for all the attempts (a backfill each would make this slow), each checked on its own.
    before = fingerprint(pg_archive)
    for statement in ATTACKS:
        MARKER.unlink(missing_ok=True)
        result = run("sql", statement)
        assert result.exit_code == 1, (statement, result.output)
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, (statement, result.output)
        assert "unexpected" not in result.stderr and "Traceback" not in result.output, (statement, result.output)
        assert REFUSED in result.stderr or "one statement at a time" in result.stderr, (statement, result.stderr)
        assert fingerprint(pg_archive) == before, statement
        assert not MARKER.exists(), statement
        assert query(pg_archive, "SELECT count(*) FROM pg_tables WHERE tablename = 'evil'") == [(0,)], statement
    # A later connection is read-only as before, and reads.
    assert json.loads(run("sql", "SELECT count(*) AS n FROM activity", "-f", "json").stdout) == [{"n": before[0][0]}]


def test_the_writer_is_not_killed_and_one_line_errors_match_sqlite(run, pg_archive):
    survivor = create_engine(pg_archive, poolclass=NullPool)
    with survivor.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        assert run("sql", f"SELECT pg_terminate_backend({pid})").exit_code == 1
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1  # still connected
    survivor.dispose()
    assert run("sql", "SELEC 1").stderr == 'Error: SQL error: syntax error at or near "SELEC"\n'
    assert run("sql", "select 1; select 2").stderr == "Error: SQL error: You can only execute one statement at a time.\n"
    assert run("sql", "SELECT * FROM nowhere").stderr.startswith('Error: SQL error: relation "nowhere" does not exist')
    deleted = run("sql", "DELETE FROM activity").stderr
    assert deleted.startswith(REFUSED + "; statements that change the archive")


def test_queries_and_views_give_plain_numbers(run, pg_archive):
    rows = json.loads(run("sql", "SELECT * FROM monthly_spend", "-f", "json").stdout)
    assert rows and all(isinstance(r["requests"], int) and isinstance(r["spend_usd"], float) for r in rows)
    summed = json.loads(run("sql", "SELECT sum(requests) AS n, avg(requests) AS a, count(*) AS c FROM activity", "-f", "json").stdout)
    assert isinstance(summed[0]["n"], int) and isinstance(summed[0]["a"], float) and isinstance(summed[0]["c"], int)
    assert summed[0]["n"] == query(pg_archive, "SELECT CAST(sum(requests) AS bigint) FROM activity")[0][0]
    csv_out = run("sql", "WITH m AS (SELECT model, sum(usage) AS s FROM activity GROUP BY model) SELECT count(*) FROM m", "-f", "csv")
    assert csv_out.exit_code == 0 and int(csv_out.stdout.splitlines()[1]) > 1
    assert run("sql", "SELECT random() < 2 AS yes, now() IS NOT NULL AS t").exit_code == 0


def test_a_long_query_is_cancelled_by_the_statement_timeout(pg_archive, monkeypatch):
    from etl import postgres
    from etl.db import run_read_only
    from etl.errors import WarehouseError

    monkeypatch.setattr(postgres, "STATEMENT_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(postgres.run_read_only, "__defaults__", (0.2,))
    with pytest.raises(WarehouseError, match="ran longer than 0.2s"):
        run_read_only(pg_archive, "SELECT count(*) FROM generate_series(1, 100000000)")


def test_a_select_only_role_reads_the_archive_and_nothing_else(run, pg_archive, monkeypatch):
    """The README's read-only role: it can SELECT tables and views, and `sql` still refuses writes."""
    admin = create_engine(pg_archive, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    role = "reader_" + make_url(pg_archive).database
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw-9f3a1c'")
        conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {make_url(pg_archive).database} TO {role}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        reader = make_url(pg_archive).set(username=role, password="reader-pw-9f3a1c").render_as_string(hide_password=False)
        monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", reader)
        ok = run("sql", "SELECT sum(spend_usd) AS s FROM monthly_spend", "-f", "json")
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)[0]["s"] == pytest.approx(query(pg_archive, "SELECT sum(usage) FROM activity")[0][0])
        assert run("report", "-g", "model", "-f", "json").exit_code == 0
        assert run("status").exit_code == 0
        with create_engine(reader, poolclass=NullPool).connect() as conn:  # the database itself refuses, too
            with pytest.raises(Exception, match="permission denied"):
                conn.exec_driver_sql("DELETE FROM activity")
        assert "reader-pw-9f3a1c" not in ok.output
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()
