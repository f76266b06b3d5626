"""A stop request ends the wait for the writer lock.

The daemon promises to exit within 30 s of SIGTERM; a job waiting for the lock held by a
manual `backfill` waited out the whole `lock_timeout_seconds` (120 s by default) first, and
systemd's TimeoutStopSec would then kill it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import KEY
from etl.errors import Interrupted
from etl.lock import writer_lock
from test_daemon import cli_process

pytestmark = pytest.mark.both_backends


def test_a_stop_request_ends_the_wait_for_the_lock(warehouse_url):
    stop = threading.Event()
    with writer_lock(warehouse_url, timeout=0):
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Interrupted, match="writer lock"):
            with writer_lock(warehouse_url, timeout=300, stop=stop):
                pytest.fail("took a lock another writer holds")
        assert time.monotonic() - started < 300  # ended by the stop, not the timeout
    with writer_lock(warehouse_url, timeout=0, stop=stop):  # free again; a set stop does not refuse a free lock
        pass


def test_sigterm_while_the_daemon_waits_for_the_lock_exits_promptly(api, warehouse_url, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from etl.lock import writer_lock\n"
         "with writer_lock(sys.argv[1], 0):\n    print('locked', flush=True); time.sleep(600)", warehouse_url],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 600\n")
        env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}
        daemon = cli_process(["run"], env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 120
            err = ""
            assert daemon.stderr is not None
            while "waiting up to" not in err and time.monotonic() < deadline:
                line = daemon.stderr.readline()
                if not line:
                    break
                err += line
            assert "waiting up to 600s for the writer lock" in err, err
            daemon.send_signal(signal.SIGTERM)
            _out, rest = daemon.communicate(timeout=120)  # well inside the 600 s the lock would take
        finally:
            daemon.kill()
        assert daemon.returncode == 0, err + rest
        assert "daemon stopped" in rest
        assert "Traceback" not in err + rest
    finally:
        holder.kill()


def test_a_job_waiting_for_the_lock_stops_without_counting_a_failure(api, warehouse_url):
    from etl import migrate
    from etl.client import OpenRouterClient
    from etl.config import parse_config
    from etl.daemon import Daemon
    from etl.db import open_engine

    config = parse_config({"openrouter": {"base_url": api.base_url}, "warehouse": {"url": warehouse_url},
                           "sync": {"lock_timeout_seconds": 300}}, "test")
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    stop = threading.Event()
    from apscheduler.schedulers.background import BackgroundScheduler

    with OpenRouterClient.from_config(config.openrouter, KEY, stop=stop) as client:
        daemon = Daemon.build(config, engine, client, stop, scheduler=BackgroundScheduler())
        with writer_lock(warehouse_url, timeout=0):
            threading.Timer(0.3, stop.set).start()
            with pytest.raises(Interrupted, match="writer lock"):
                daemon.sync_job()
    engine.dispose()
