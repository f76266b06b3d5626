"""The writer lock on PostgreSQL: an advisory lock on the server, whatever the client's host,
user, data folder or spelling of the URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conftest import query
from etl.schema import sync_runs

HOLD = (
    "import sys, time; from etl.lock import writer_lock\n"
    "with writer_lock(sys.argv[1], 0, command='openrouter-archive sync'):\n"
    "    print('locked', flush=True); time.sleep(120)"
)


def env_with(tmp_path, name: str, url: str, extra: dict | None = None) -> dict:
    """A process environment with its own data folder: the file lock would not see the others."""
    data = tmp_path / f"data-{name}"
    data.mkdir(exist_ok=True)
    return {**os.environ, "XDG_DATA_HOME": str(data), "OPENROUTER_ARCHIVE_DB": url, **(extra or {})}


def spelled(url: str, host: str) -> str:
    return make_url(url).set(host=host).render_as_string(hide_password=False)


def hold(tmp_path, url: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True, env=env_with(tmp_path, "holder", url))
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.slow
def test_a_second_writer_elsewhere_waits_names_the_holder_and_exits_75(cli_env, pg_url, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 0.5\n")
    holder = hold(tmp_path, spelled(pg_url, "127.0.0.1"))
    try:
        other = spelled(pg_url, "localhost")  # another spelling of the same server, another data folder
        env = env_with(tmp_path, "writer", other, {k: v for k, v in cli_env.items() if k != "OPENROUTER_ARCHIVE_DB"})
        for command in (["sync"], ["db", "upgrade"], ["credits"]):
            done = subprocess.run([sys.executable, "-m", "etl", *command], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 75, (command, done.stderr)
            assert f"pid {holder.pid} on " in done.stderr and "openrouter-archive sync" in done.stderr, done.stderr
            assert make_url(pg_url).password not in done.stderr + done.stdout
        assert query(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]  # nothing migrated
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The server released the lock of the killed holder: the next writer goes ahead.
    done = subprocess.run([sys.executable, "-m", "etl", "sync"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_four_writers_at_once_on_a_new_warehouse_take_turns(cli_env, pg_url, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 60\n")
    procs = [
        subprocess.Popen([sys.executable, "-m", "etl", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env_with(tmp_path, f"w{i}", spelled(pg_url, "127.0.0.1" if i % 2 else "localhost"),
                                      {k: v for k, v in cli_env.items() if k != "OPENROUTER_ARCHIVE_DB"}))
        for i, command in enumerate(["backfill", "sync", "backfill", "sync"])
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert not any("deadlock" in err or "already exists" in err for _, err in results)
    runs = query(pg_url, "SELECT outcome, count(*) FROM sync_runs GROUP BY outcome")
    assert runs == [("ok", 4)]
    assert query(pg_url, "SELECT count(*) FROM archived_days") == [(30,)]
    for p in procs:
        p.stdout.close(), p.stderr.close()


def test_status_tells_a_live_run_from_an_abandoned_one(cli_env, run, pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("db", "upgrade").exit_code == 0
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(insert(sync_runs).values(started_at=datetime.now(timezone.utc), trigger="sync", outcome="running"))
    engine.dispose()
    holder = hold(tmp_path, pg_url)
    try:
        assert json.loads(run("status", "--json").stdout)["last_run"]["outcome"] == "running"
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 30  # the server notices the closed connection at once; allow a loaded machine
    while json.loads(run("status", "--json").stdout)["last_run"]["outcome"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(run("status", "--json").stdout)["last_run"]["outcome"] == "interrupted"
