"""Exit codes, each from the situation that should produce it (README "Exit status").

0: every day asked for was archived; 1: anything not archived (API error, rejected day,
warehouse error, an unexpected failure); 2: usage or configuration; 75: another writer
held the warehouse too long; 130: interrupted from the keyboard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, text

from conftest import query
from etl.lock import writer_lock
from etl.standin import Fault


def test_0_when_everything_was_archived(cli_env, run):
    assert run("sync").exit_code == 0
    assert run("backfill", "--days", "3").exit_code == 0
    assert run("status", "--check").exit_code == 0


@pytest.mark.parametrize("command", ["sync", "backfill"])
def test_1_when_a_day_was_rejected(cli_env, run, api, command):
    api.inject(Fault("malformed"))
    result = run(command)
    assert result.exit_code == 1 and " rejected " in result.stdout


@pytest.mark.parametrize("command", ["sync", "backfill", "credits"])
def test_1_when_the_api_fails(cli_env, run, api, command):
    api.set_fault_rate(1.0, ["503"])
    result = run(command)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: GET /{'credits' if command == 'credits' else 'activity'} failed after")
    assert "Traceback" not in result.output


def test_1_when_the_warehouse_cannot_be_written(cli_env, run, warehouse_url):
    assert run("db", "upgrade").exit_code == 0
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER boom BEFORE INSERT ON raw_responses BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
    engine.dispose()
    result = run("sync")
    path = warehouse_url.removeprefix("sqlite:///")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: warehouse {path}: disk full (the disk is full") and len(result.stderr.splitlines()) == 1


def test_1_when_sql_is_refused(cli_env, run):
    assert run("sync").exit_code == 0
    result = run("sql", "DELETE FROM activity")
    assert result.exit_code == 1 and result.stderr.startswith("Error: refused: `sql` is read-only")


def test_1_when_status_check_finds_a_problem(cli_env, run):
    result = run("status", "--check")
    assert result.exit_code == 1 and "holds no day yet" in result.stdout
    assert run("status").exit_code == 0  # without --check, status only reports


@pytest.fixture
def damaged(cli_env, run, warehouse_url):
    """A warehouse at the newest revision with a table gone: something no code path expects."""
    assert run("sync").exit_code == 0
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("PRAGMA foreign_keys = OFF"))
        conn.execute(text("DROP TABLE archived_days"))
    engine.dispose()


def test_1_without_a_traceback_on_a_damaged_warehouse(run, damaged, warehouse_url):
    result = run("status")
    assert result.exit_code == 1
    # A missing table is the warehouse's fault, not a bug: one line naming it and the cause.
    assert result.stderr.startswith("Error: warehouse ") and "no such table" in result.stderr
    assert "Traceback" not in result.output and "[SQL:" not in result.output


def test_an_unexpected_error_is_one_line(run, damaged):
    result = run("status")
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_1_and_one_line_for_a_bug(cli_env, run, monkeypatch):
    # A failure no situation should produce (a bug), stood in for by a function that raises:
    # the damaged warehouse above is an operational failure, with its own message.
    import etl.status

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    assert run("sync").exit_code == 0
    monkeypatch.setattr(etl.status, "read_status", broken)
    result = run("status")
    assert result.exit_code == 1
    assert result.stderr == "Error: unexpected RuntimeError: a bug (run with --debug for details)\n"


@pytest.mark.parametrize(
    ("args", "config"),
    [(["report", "-g", "colour"], ""), (["report", "--since", "2026-02-30"], ""), (["sync"], "[sync]\nrefetch_days = -1\n"),
     (["backfill", "--days", "31"], ""), (["frobnicate"], "")],
)
def test_2_for_usage_and_configuration_errors(cli_env, run, tmp_path, args, config):
    (tmp_path / "config.toml").write_text(config)
    result = run(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_2_without_a_key(cli_env, run, monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY")
    assert run("sync").exit_code == 2


def test_75_when_another_writer_holds_the_warehouse(cli_env, run, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 0.1\n")
    with writer_lock(cli_env["OPENROUTER_ARCHIVE_DB"], timeout=0):
        for command in (["sync"], ["backfill"], ["db", "upgrade"]):
            result = run(*command)
            assert result.exit_code == 75, command
            assert "another sync is writing to this warehouse" in result.stderr


def _interrupted_sync(api, cli_env, tmp_path):
    """A real `sync` process, sent SIGINT while it waits for the API's answer."""
    api.latency = 60.0  # the answer never comes before the signal; stop() wakes the handler
    (tmp_path / "config.toml").write_text("[openrouter]\ntimeout_seconds = 300\n")  # no timeout, no retry: it just waits
    # As from a terminal: SIGINT raises KeyboardInterrupt even when this test runs in the
    # background, where the shell has set SIGINT to be ignored (which children inherit).
    terminal = "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); " \
               "sys.argv = ['openrouter-archive', 'sync']; runpy.run_module('etl', run_name='__main__')"
    proc = subprocess.Popen([sys.executable, "-c", terminal], env={**os.environ, **cli_env}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _run_started(cli_env["OPENROUTER_ARCHIVE_DB"]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.2)  # the request is on its way; nothing here depends on how fast
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err


def _run_started(url):
    try:
        return query(url, "SELECT count(*) FROM sync_runs")[0][0] > 0
    except Exception:  # not created or not migrated yet
        return False


def test_130_when_interrupted_from_the_keyboard(api, cli_env, tmp_path):
    code, _out, err = _interrupted_sync(api, cli_env, tmp_path)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted." and "Traceback" not in err


def test_a_run_stopped_by_ctrl_c_is_recorded_as_interrupted(api, cli_env, tmp_path):
    _interrupted_sync(api, cli_env, tmp_path)
    assert query(cli_env["OPENROUTER_ARCHIVE_DB"], "SELECT outcome FROM sync_runs") == [("interrupted",)]
