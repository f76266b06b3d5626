"""Issue 9, item 6: the daemon never writes into a warehouse file that is no longer the one
at the configured path (removed, or replaced with `mv`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from conftest import KEY
from etl.client import OpenRouterClient
from etl.config import parse_config
from etl.daemon import Daemon
from etl.db import open_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability_report as rr  # noqa: E402


def wait_for(condition, timeout=120.0, interval=0.02):  # generous: a loaded machine is slow, not wrong
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def old_backup(tmp_path: Path) -> Path:
    """A backup made by an older version (revision 0002), holding one day the live file has not."""
    from etl import migrate

    backup = tmp_path / "backup.db"
    engine = open_engine(f"sqlite:///{backup}")
    migrate.upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO archived_days (date, row_count, first_archived_at, last_fetched_at) "
            "VALUES ('2020-01-01', 0, '2020-01-02 00:00:00', '2020-01-02 00:00:00')"
        )
    engine.dispose()
    return backup


@pytest.mark.slow
def test_rm_then_mv_over_the_file_under_a_running_daemon():
    row = rr.replaced_warehouse()
    assert row.ok, row.result
    assert row.rows_lost == 0


@pytest.fixture
def daemon(api, warehouse_url):
    config = parse_config(
        {
            "openrouter": {"base_url": api.base_url, "max_attempts": 2, "backoff_initial": 0.01, "timeout_seconds": 5},
            "warehouse": {"url": warehouse_url},
            "schedule": {"retry_delay_seconds": 0.2, "max_retries": 50},
            "sync": {"lock_timeout_seconds": 5},
        },
        "test",
    )
    stop = threading.Event()
    client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
    engine = open_engine(warehouse_url)
    built = Daemon.build(config, engine, client, stop, scheduler=BackgroundScheduler(), sync_trigger=IntervalTrigger(seconds=0.2))
    reports: list = []
    built.on_report = reports.append
    built.scheduler.start()
    yield built, reports
    stop.set()
    built.scheduler.shutdown(wait=True)
    client.close()
    built.engine.dispose()


def test_a_removed_file_is_recreated_migrated_and_filled_with_a_warning(daemon, warehouse_url, caplog):
    caplog.set_level(logging.INFO, logger="etl.daemon")
    built, reports = daemon
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    wait_for(lambda: len(reports) >= 1)
    db.unlink()
    wait_for(lambda: any("was removed" in r.getMessage() for r in caplog.records))
    warning = next(r for r in caplog.records if "was removed" in r.getMessage())
    assert warning.levelno == logging.WARNING and str(db) in warning.getMessage()
    assert getattr(warning, "event", None) == "warehouse_reopened"
    # The file at the path is new (its inode number may be the old one's, freed on close).
    wait_for(lambda: count(db, "SELECT count(*) FROM sync_runs WHERE outcome = 'ok'") >= 1)
    assert count(db, "SELECT count(*) FROM archived_days") == 30


def test_a_file_moved_over_the_warehouse_is_migrated_and_gets_the_next_runs(daemon, warehouse_url, tmp_path, caplog):
    from etl import migrate

    built, reports = daemon
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    wait_for(lambda: len(reports) >= 1)
    # A backup made by an older version, restored over the live file.
    backup = old_backup(tmp_path)
    os.replace(backup, db)
    wait_for(lambda: any("was replaced" in r.getMessage() for r in caplog.records))
    wait_for(lambda: count(db, "SELECT count(*) FROM archived_days") == 31)
    assert count(db, "SELECT count(*) FROM archived_days WHERE date = '2020-01-01'") == 1  # the backup, kept
    assert count(db, f"SELECT count(*) FROM alembic_version WHERE version_num = '{migrate.head_revision()}'") == 1


@pytest.fixture
def stepped(api, warehouse_url):
    """A daemon whose jobs the test runs by hand (its own trigger fires in an hour)."""
    config = parse_config(
        {"openrouter": {"base_url": api.base_url, "max_attempts": 1}, "warehouse": {"url": warehouse_url},
         "schedule": {"alerts_cron": ""}},
        "test",
    )
    stop = threading.Event()
    client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
    built = Daemon.build(config, open_engine(warehouse_url), client, stop, scheduler=BackgroundScheduler(),
                         sync_trigger=IntervalTrigger(hours=1))
    yield built
    client.close()
    built.engine.dispose()


def just_before_the_open(monkeypatch, action) -> None:
    """Run ``action`` once, in the window between the job's identity check and SQLite's open:
    the race no server can produce on demand, so the open itself is wrapped."""
    from etl import daemon as daemon_module

    real_upgrade = daemon_module.migrate.upgrade
    pending = [action]

    def wrapped(engine, *args, **kwargs):
        if pending:  # once: the sync's open, not the alerts check's after it
            pending.pop()()
        return real_upgrade(engine, *args, **kwargs)

    monkeypatch.setattr(daemon_module.migrate, "upgrade", wrapped)


def test_a_file_removed_between_the_identity_check_and_the_open_is_still_reported(stepped, warehouse_url, caplog, monkeypatch):
    """The race CI hit: `rm` lands after the job compared (device, inode) but before SQLite
    opened the path, so the job itself creates the new file (whose inode may even be the
    freed old one's). The daemon must still say the warehouse was removed."""
    caplog.set_level(logging.INFO, logger="etl.daemon")
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    stepped.sync_job()
    assert not any("was removed" in r.getMessage() for r in caplog.records)
    just_before_the_open(monkeypatch, db.unlink)
    report = stepped.sync_job()
    warnings = [r for r in caplog.records if "was removed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert getattr(warnings[0], "event", None) == "warehouse_reopened"
    assert report.ok and count(db, "SELECT count(*) FROM archived_days") == 30


def test_a_file_moved_over_between_the_identity_check_and_the_open_is_still_reported(stepped, warehouse_url, caplog, monkeypatch, tmp_path):
    """The same window for `mv other.db archive.db`: the job opens the new file itself, so the
    comparison made before the open saw the old one. The daemon must still say it was replaced."""
    from etl import migrate

    caplog.set_level(logging.INFO, logger="etl.daemon")
    other = tmp_path / "other.db"
    engine = open_engine(f"sqlite:///{other}")
    migrate.upgrade(engine)
    engine.dispose()
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    stepped.sync_job()
    just_before_the_open(monkeypatch, lambda: os.replace(other, db))
    report = stepped.sync_job()
    warnings = [r for r in caplog.records if "was replaced" in r.getMessage()]
    assert len(warnings) == 1 and getattr(warnings[0], "event", None) == "warehouse_reopened"
    assert not any("was removed" in r.getMessage() for r in caplog.records)
    assert report.ok and count(db, "SELECT count(*) FROM archived_days") == 30  # the runs land in the file now at the path


def test_a_file_moved_over_the_warehouse_during_a_sync_gets_no_write_of_it(stepped, api, warehouse_url, tmp_path, caplog):
    """The file is replaced in the middle of a sync, between its /activity and its analytics
    (whose threads open connections of their own): the run's writes must not be split into
    the new, unmigrated file; the job syncs again into the file now at the path, migrated
    first, and the runs after it succeed."""
    from etl import migrate

    caplog.set_level(logging.INFO, logger="etl.daemon")
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    stepped.sync_job()
    backup = old_backup(tmp_path)
    real_admit, pending = api.analytics.admit, [lambda: os.replace(backup, db)]

    def admit() -> None:  # the first analytics request: /activity is written, the analytics not yet
        if pending:
            pending.pop()()
        real_admit()

    api.analytics.admit = admit
    stepped.sync_job()
    assert not pending
    assert count(db, f"SELECT count(*) FROM alembic_version WHERE version_num = '{migrate.head_revision()}'") == 1
    assert count(db, "SELECT count(*) FROM archived_days") == 31
    assert count(db, "SELECT count(*) FROM archived_days WHERE date = '2020-01-01'") == 1  # the backup, kept
    again = stepped.sync_job()
    assert again.ok, again.error
    assert count(db, "SELECT count(*) FROM sync_runs WHERE outcome = 'ok'") >= 1


def test_a_file_moved_over_the_warehouse_while_the_job_opens_it_is_not_mixed_with_the_old(stepped, warehouse_url, tmp_path, caplog, monkeypatch):
    """The race CI hit next: `mv backup.db archive.db` lands after the job's migration opened
    the old file, before the job compared the file at the path again. The old file's pooled
    connection and its -wal at the path must not be used with the new file: SQLite would read
    the old file's WAL frames as the new file's (its foreign-key check then failed every run)."""
    from etl import daemon as daemon_module
    from etl import migrate

    caplog.set_level(logging.INFO, logger="etl.daemon")
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    stepped.sync_job()
    backup = old_backup(tmp_path)
    real_upgrade, pending = daemon_module.migrate.upgrade, [lambda: os.replace(backup, db)]

    def upgrade_then_move(engine, *args, **kwargs):
        result = real_upgrade(engine, *args, **kwargs)
        if pending:  # once, the old file open in the engine's pool
            pending.pop()()
        return result

    monkeypatch.setattr(daemon_module.migrate, "upgrade", upgrade_then_move)
    stepped.sync_job()
    assert not pending
    assert any("was replaced" in r.getMessage() for r in caplog.records)
    again = stepped.sync_job()
    assert again.ok, again.error
    assert count(db, f"SELECT count(*) FROM alembic_version WHERE version_num = '{migrate.head_revision()}'") == 1
    assert count(db, "SELECT count(*) FROM archived_days") == 31
    assert count(db, "SELECT count(*) FROM archived_days WHERE date = '2020-01-01'") == 1  # the backup, kept


def test_a_file_removed_while_the_job_opens_it_is_reported_removed_and_refilled(stepped, warehouse_url, caplog, monkeypatch):
    """`rm archive.db` after the job's migration opened it: the job must not sync into the
    removed file (whose rows nobody could read again), but create the file anew and fill it."""
    from etl import daemon as daemon_module

    caplog.set_level(logging.INFO, logger="etl.daemon")
    db = Path(warehouse_url.removeprefix("sqlite:///"))
    stepped.sync_job()
    real_upgrade, pending = daemon_module.migrate.upgrade, [db.unlink]

    def upgrade_then_remove(engine, *args, **kwargs):
        result = real_upgrade(engine, *args, **kwargs)
        if pending:
            pending.pop()()
        return result

    monkeypatch.setattr(daemon_module.migrate, "upgrade", upgrade_then_remove)
    report = stepped.sync_job()
    warnings = [r for r in caplog.records if "was removed" in r.getMessage()]
    assert len(warnings) == 1 and getattr(warnings[0], "event", None) == "warehouse_reopened"
    assert report.ok and count(db, "SELECT count(*) FROM archived_days") == 30
