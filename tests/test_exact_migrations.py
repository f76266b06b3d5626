"""Issue 9, items 1, 8 (part) and 10: migrations are all-or-nothing and happen under the
writer lock, runs never stay `running`, a newer warehouse is named as such, readers create
nothing, a waiting writer names the lock holder, and `demo` keeps out of real archives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from conftest import KEY
from etl import migrate
from etl.db import open_engine
from etl.errors import WarehouseError
from etl.standin import StandIn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability_report as rr  # noqa: E402


def tables(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def raw(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(sql).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def cli_process(args, env, cwd, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args], env={**os.environ, **env}, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def wait_for(condition, timeout=30.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def fail_on(engine, fragment: str) -> None:
    """Make the statement containing ``fragment`` fail, as a full disk or a crash would."""

    @event.listens_for(engine, "before_cursor_execute")
    def _fail(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if fragment in statement:
            raise sqlite3.OperationalError(f"injected failure at: {statement.split('(')[0].strip()}")


# -- item 1: atomic migrations ------------------------------------------------------------


def test_a_migration_that_fails_midway_leaves_no_table(tmp_path):
    db = tmp_path / "w.db"
    engine = open_engine(f"sqlite:///{db}")
    fail_on(engine, "CREATE TABLE archived_days")  # the fourth table of revision 0001
    with pytest.raises(WarehouseError, match="migration failed, the warehouse is unchanged"):
        migrate.upgrade(engine)
    engine.dispose()
    assert tables(db) == set()
    engine = open_engine(f"sqlite:///{db}")
    assert migrate.upgrade(engine) == (None, migrate.head_revision())
    engine.dispose()


def test_a_failed_upgrade_leaves_the_older_schema_and_its_data_as_they_were(tmp_path):
    db = tmp_path / "w.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate.upgrade(engine, "0002")
    engine.dispose()
    raw(db, "INSERT INTO archived_days (date, row_count, first_archived_at, last_fetched_at) VALUES ('2026-11-01', 0, '2026-11-02', '2026-11-02')")
    before = tables(db)
    engine = open_engine(f"sqlite:///{db}")
    fail_on(engine, "CREATE TABLE activity_by_workspace")  # midway through 0003
    with pytest.raises(WarehouseError, match="the warehouse is unchanged"):
        migrate.upgrade(engine)
    engine.dispose()
    assert tables(db) == before
    assert raw(db, "SELECT version_num FROM alembic_version") == [("0002",)]
    assert raw(db, "SELECT date FROM archived_days") == [("2026-11-01",)]


def test_sqlite_keeps_wal_and_foreign_keys_with_explicit_transactions(tmp_path):
    db = tmp_path / "w.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # A transaction that rolls back leaves nothing, DDL included.
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
            raise RuntimeError("roll back")
    engine.dispose()
    assert "scratch" not in tables(db)


@pytest.mark.slow
def test_a_first_sync_interrupted_during_its_migration_does_not_brick_the_warehouse():
    # Before atomic migrations, a signal a few ms after the first table appeared left
    # tables without a revision, and every later sync failed.
    trials = rr.first_run_interrupts(points=[("5 ms after the first table", "table", 0.005)])
    assert trials.tried == 3
    assert trials.failures == []
    assert trials.rows_lost == 0


@pytest.mark.slow
def test_interrupting_first_syncs_never_bricks_the_warehouse():
    # New warehouses, each interrupted by SIGINT, SIGTERM or SIGKILL at one of the points of
    # its first sync (migration included); the next sync must exit 0 with an exact archive.
    # The point inside the migration has its own test above; scripts/reliability_report.py
    # runs the row with every point.
    points = [p for p in rr.FIRST_RUN_POINTS if p[1] != "table" or p[2] != 0.005]
    trials = rr.first_run_interrupts(points=points)
    assert trials.tried == 3 * len(points) == 12
    assert trials.failures == []
    assert trials.rows_lost == 0


def test_a_warehouse_bricked_by_an_older_version_is_recovered_when_its_tables_are_empty(cli_env, run, tmp_path):
    db = Path(cli_env["OPENROUTER_ARCHIVE_DB"].removeprefix("sqlite:///"))
    # What an interrupted first run of an older version left: the first tables of revision
    # 0001, each committed on its own, and an empty alembic_version; no data.
    engine = open_engine(cli_env["OPENROUTER_ARCHIVE_DB"])
    migrate.upgrade(engine, "0001")
    engine.dispose()
    raw(db, "DROP TABLE credits_snapshots")
    raw(db, "DROP TABLE archived_days")
    raw(db, "DELETE FROM alembic_version")
    result = run("sync")
    assert result.exit_code == 0, result.stderr
    assert raw(db, "SELECT count(*) FROM archived_days") == [(30,)]


def test_leftover_tables_that_hold_data_are_never_dropped(cli_env, run, tmp_path):
    db = Path(cli_env["OPENROUTER_ARCHIVE_DB"].removeprefix("sqlite:///"))
    raw(db, "CREATE TABLE sync_runs (id INTEGER PRIMARY KEY, note TEXT)")
    raw(db, "INSERT INTO sync_runs (note) VALUES ('precious')")
    result = run("sync")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "no schema revision" in result.stderr
    assert raw(db, "SELECT note FROM sync_runs") == [("precious",)]


# -- item 1: every command that may migrate does it under the writer lock --------------------


def hold_lock(url: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from etl.lock import writer_lock\n"
         "with writer_lock(sys.argv[1], 0):\n    print('locked', flush=True); time.sleep(120)", url],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.parametrize("command", [["credits"], ["run"], ["sync"], ["db", "upgrade"]])
def test_no_command_migrates_without_the_writer_lock(command, cli_env, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 0.3\n")
    db = Path(cli_env["OPENROUTER_ARCHIVE_DB"].removeprefix("sqlite:///"))
    holder = hold_lock(cli_env["OPENROUTER_ARCHIVE_DB"])
    try:
        proc = cli_process(command, cli_env, tmp_path)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 75, err
        assert not db.exists() or tables(db) == set()
    finally:
        holder.kill()
        holder.wait()


# -- item 8: a waiting writer names the holder ------------------------------------------------


def test_a_waiting_writer_says_whose_lock_it_waits_for(warehouse_url, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 0.5\n")
    with StandIn(management_key=KEY, latency=30) as api:
        env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}
        holder = cli_process(["sync"], env, tmp_path)
        try:
            db = Path(warehouse_url.removeprefix("sqlite:///"))
            wait_for(lambda: db.exists() and "sync_runs" in tables(db) and raw(db, "SELECT count(*) FROM sync_runs")[0][0] == 1)
            waiter = cli_process(["sync"], env, tmp_path)
            _out, err = waiter.communicate(timeout=60)
            reader = cli_process(["status", "--json"], env, tmp_path)
            out, _ = reader.communicate(timeout=60)
            assert json.loads(out)["last_run"]["outcome"] == "running"  # live: its writer holds the lock
        finally:
            holder.kill()
            holder.wait()
    assert waiter.returncode == 75, err
    assert f"pid {holder.pid}" in err and socket.gethostname() in err
    assert "sync" in err and "since 20" in err


# -- item 8: no run stays `running` for ever ------------------------------------------------


def test_a_sync_stopped_by_ctrl_c_is_recorded_as_interrupted(warehouse_url, tmp_path):
    (tmp_path / "config.toml").write_text("")
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    with StandIn(management_key=KEY, latency=30) as api:
        env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}
        proc = cli_process(["sync"], env, tmp_path)
        try:
            wait_for(lambda: db.exists() and "sync_runs" in tables(db) and raw(db, "SELECT count(*) FROM sync_runs")[0][0] == 1)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130
    outcome, finished = raw(db, "SELECT outcome, finished_at FROM sync_runs")[0]
    assert outcome == "interrupted" and finished is not None


def test_a_killed_run_shows_as_abandoned_and_the_next_writer_closes_it(warehouse_url, tmp_path, run, monkeypatch):
    (tmp_path / "config.toml").write_text("")
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    with StandIn(management_key=KEY, latency=30) as api:
        env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}
        proc = cli_process(["sync"], env, tmp_path)
        try:
            wait_for(lambda: db.exists() and "sync_runs" in tables(db) and raw(db, "SELECT count(*) FROM sync_runs")[0][0] == 1)
            proc.send_signal(signal.SIGHUP)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    assert raw(db, "SELECT outcome FROM sync_runs") == [("running",)]  # nobody could record the end
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = json.loads(run("status", "--json").stdout)
    assert status["last_run"]["outcome"] == "interrupted"
    assert "abandoned" in status["last_run"]["error"]
    with StandIn(management_key=KEY) as api:
        monkeypatch.setenv("OPENROUTER_BASE_URL", api.base_url)
        assert run("sync").exit_code == 0
    (first_outcome, first_error), (second_outcome, _) = raw(db, "SELECT outcome, error FROM sync_runs ORDER BY id")
    assert first_outcome == "interrupted" and "abandoned" in first_error
    assert second_outcome == "ok"


# -- item 8: a warehouse made by a newer version ------------------------------------------------


@pytest.mark.parametrize("command", [["sync"], ["backfill"], ["db", "upgrade"], ["credits"], ["status"], ["report"]])
def test_a_newer_warehouse_is_named_as_such(command, cli_env, run):
    assert run("db", "upgrade").exit_code == 0
    db = Path(cli_env["OPENROUTER_ARCHIVE_DB"].removeprefix("sqlite:///"))
    raw(db, "UPDATE alembic_version SET version_num = '9999'")
    result = run(*command)
    assert result.exit_code != 0
    assert "made by a newer openrouter-archive" in result.stderr and "9999" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert raw(db, "SELECT version_num FROM alembic_version") == [("9999",)]


# -- item 8: read-only commands create nothing -------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["report"], ["sql", "SELECT 1"]])
def test_read_only_commands_on_a_missing_warehouse_create_nothing(command, tmp_path, run, monkeypatch):
    (tmp_path / "config.toml").write_text("")
    existing = tmp_path / "existing"
    existing.mkdir()
    for folder in (tmp_path / "missing" / "deeper", existing):
        monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", f"sqlite:///{folder / 'archive.db'}")
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        result = run(*command)
        assert "Traceback" not in result.stderr
        if result.exit_code != 0:
            assert len(result.stderr.strip().splitlines()) == 1 and "no archive" in result.stderr
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# -- item 10: demo keeps out of real archives --------------------------------------------------


@pytest.mark.slow
def test_demo_refuses_a_real_archive_and_leaves_it_untouched():
    row = rr.demo_refusal()
    assert row.ok, row.result
    assert row.rows_lost == 0


@pytest.mark.parametrize(
    "setup",
    [
        "not a database",
        "credits only",  # data without runs
    ],
)
def test_demo_refuses_anything_but_a_demo_warehouse(setup, tmp_path, run, cli_env, monkeypatch):
    db = tmp_path / "other.db"
    if setup == "not a database":
        db.write_text("my notes, not a database\n")
    else:
        monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", f"sqlite:///{db}")
        assert run("credits").exit_code == 0
    before = rr.file_digest(db)
    result = run("demo", "--db", str(db))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "demo" in result.stderr
    assert rr.file_digest(db) == before


def test_a_run_whose_end_could_not_be_written_is_closed_by_the_next_run(api, tmp_path):
    from datetime import timedelta

    from etl.client import OpenRouterClient
    from etl.config import parse_config
    from etl.sync import run_sync
    from etl.window import utc_today

    db = tmp_path / "w.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    config = parse_config({"openrouter": {"base_url": api.base_url, "max_attempts": 1}}, "test")
    days = [utc_today() - timedelta(days=1)]

    def fail_finish(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if statement.startswith("UPDATE sync_runs SET finished_at"):  # the database fails at the end
            raise sqlite3.OperationalError("disk I/O error")

    with OpenRouterClient.from_config(config.openrouter, KEY) as client:
        event.listen(engine, "before_cursor_execute", fail_finish)
        first = run_sync(engine, client, days, trigger="test")
        event.remove(engine, "before_cursor_execute", fail_finish)
        assert raw(db, "SELECT outcome FROM sync_runs") == [("running",)]
        second = run_sync(engine, client, days, trigger="test")
    engine.dispose()
    assert first.ok and second.ok
    rows = raw(db, "SELECT id, outcome, error FROM sync_runs ORDER BY id")
    assert rows[0][1] == "interrupted" and "abandoned" in rows[0][2]
    assert rows[1][1] == "ok"
