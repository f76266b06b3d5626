"""Read-only SQL, one refusal layer at a time, and the engine's SQLite settings.

``sql`` stacks three layers: a ``mode=ro`` connection, ``PRAGMA query_only``, and an
authorizer that allows only reads. Each is checked on its own here, with the layer that
said no named by SQLite's own message ("not authorized" is the authorizer, "readonly" the
connection), so that losing any one of them shows.
"""

from __future__ import annotations

import sqlite3

import pytest

from etl import db, migrate
from etl.db import ReadOnlyViolation, _read_only_authorizer, open_engine, run_read_only

WRITES = [
    "INSERT INTO credits_snapshots (fetched_at, total_credits, total_usage) VALUES ('2000-01-01', 1, 1)",
    "UPDATE activity SET usage = 0",
    "DELETE FROM activity",
    "DROP TABLE activity",
    "CREATE TABLE evil (x)",
    "ALTER TABLE activity ADD COLUMN evil",
    "CREATE INDEX evil ON activity (usage)",
    "PRAGMA user_version = 42",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA query_only = 0",
]
READS = [
    ("SELECT count(*) FROM activity", [(0,)]),
    ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT sum(i) FROM n", [(6,)]),
    ("PRAGMA user_version", [(0,)]),
    ("PRAGMA journal_mode", [("wal",)]),
    ("SELECT upper('x'), abs(-2)", [("X", 2)]),
]


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "archive.db"
    engine = open_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def read_write_with_authorizer(path):
    """A connection that could write (no mode=ro, no query_only): the authorizer stands alone.

    Autocommit, so that the driver's implicit BEGIN (which the authorizer also refuses) does
    not hide whether the write itself is refused.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.set_authorizer(_read_only_authorizer)
    return conn


@pytest.mark.parametrize("statement", WRITES)
def test_each_write_would_succeed_without_the_authorizer(archive, statement):
    conn = sqlite3.connect(archive, isolation_level=None)
    try:
        conn.execute(statement)  # the control: these are real, valid writes
    finally:
        conn.close()


@pytest.mark.parametrize("statement", WRITES)
def test_the_authorizer_alone_refuses_writes_and_pragma_assignments(archive, statement):
    conn = read_write_with_authorizer(archive)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute(statement)
    finally:
        conn.close()
    with sqlite3.connect(archive) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (0,)
        assert check.execute("SELECT count(*) FROM sqlite_master WHERE name = 'evil'").fetchone() == (0,)


@pytest.mark.parametrize(("statement", "rows"), READS)
def test_the_authorizer_lets_reads_through(archive, statement, rows):
    conn = read_write_with_authorizer(archive)
    try:
        assert conn.execute(statement).fetchall() == rows
    finally:
        conn.close()


@pytest.mark.parametrize("statement", WRITES)
def test_the_authorizer_is_the_layer_that_refuses_in_sql(archive, statement):
    with pytest.raises(ReadOnlyViolation) as refused:
        run_read_only(f"sqlite:///{archive}", statement)
    assert str(refused.value).startswith("refused: `sql` is read-only")
    assert str(refused.value).endswith("(not authorized)")


@pytest.mark.parametrize("statement", [WRITES[0], "UPDATE activity SET usage = 0", "DELETE FROM activity"])
def test_without_the_authorizer_the_connection_still_refuses_writes(archive, monkeypatch, statement):
    # A fault in one layer (an authorizer that allows everything): the others must hold.
    monkeypatch.setattr(db, "_read_only_authorizer", lambda *_args: sqlite3.SQLITE_OK)
    with pytest.raises(ReadOnlyViolation, match=r"\(attempt to write a readonly database\)$"):
        run_read_only(f"sqlite:///{archive}", statement)


def test_the_read_only_connection_is_query_only(archive, monkeypatch):
    monkeypatch.setattr(db, "_read_only_authorizer", lambda *_args: sqlite3.SQLITE_OK)
    assert run_read_only(f"sqlite:///{archive}", "PRAGMA query_only") == (["query_only"], [(1,)])


@pytest.mark.parametrize(("statement", "rows"), READS)
def test_sql_runs_reads(archive, statement, rows):
    assert run_read_only(f"sqlite:///{archive}", statement)[1] == rows


def test_sql_errors_are_not_refusals(archive):
    with pytest.raises(db.WarehouseError) as error:
        run_read_only(f"sqlite:///{archive}", "SELECT nope FROM activity")
    assert not isinstance(error.value, ReadOnlyViolation) and str(error.value).startswith("SQL error: no such column")


def test_every_warehouse_connection_is_wal_full_sync_with_foreign_keys(archive):
    engine = open_engine(f"sqlite:///{archive}")
    try:
        with engine.connect() as conn:
            settings = [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ("journal_mode", "synchronous", "foreign_keys")]
    finally:
        engine.dispose()
    assert settings == ["wal", 2, 1]  # synchronous 2 is FULL: a committed day survives a power cut
