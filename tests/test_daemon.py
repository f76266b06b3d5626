"""The daemon, the single-writer lock and the health check, without waiting a day.

Scheduling logic runs in-process on a BackgroundScheduler with a fast trigger; signals
and lock contention use real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from conftest import KEY, query
from etl import migrate
from etl.client import OpenRouterClient
from etl.config import parse_config
from etl.daemon import Daemon
from etl.db import open_engine
from etl.lock import writer_lock
from etl.standin import Dataset, Fault, StandIn



def wait_for(condition, timeout=20.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def start_daemon(api, warehouse_url):
    """Build and start an in-process daemon; stops it at teardown."""
    started: list[Daemon] = []

    def start(trigger_seconds: float = 3600, **schedule) -> tuple[Daemon, list]:
        config = parse_config(
            {
                "openrouter": {"base_url": api.base_url, "max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.02, "timeout_seconds": 2},
                "warehouse": {"url": warehouse_url},
                "schedule": {"retry_delay_seconds": 0.2, "max_retries": 2, **schedule},
                "sync": {"lock_timeout_seconds": 120},  # a job may wait for the catch-up sync on a loaded machine
            },
            "test",
        )
        engine = open_engine(warehouse_url)
        migrate.upgrade(engine)
        stop = threading.Event()
        client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
        daemon = Daemon.build(
            config, engine, client, stop, scheduler=BackgroundScheduler(), sync_trigger=IntervalTrigger(seconds=trigger_seconds)
        )
        reports: list = []
        daemon.on_report = reports.append
        daemon.scheduler.start()
        started.append(daemon)
        return daemon, reports

    yield start
    for daemon in started:
        daemon.stop.set()
        daemon.scheduler.shutdown(wait=True)
        daemon.client.close()
        daemon.engine.dispose()


def test_syncs_at_start_then_on_its_trigger(start_daemon, warehouse_url):
    daemon, reports = start_daemon(trigger_seconds=0.3)
    wait_for(lambda: len(reports) >= 3)
    assert reports[0].archived == 30  # the catch-up run at start
    assert all(r.ok for r in reports)
    assert [len(r.planned) for r in reports[1:3]] == [2, 2]  # then refetch_days each time
    outcomes = query(warehouse_url, "SELECT DISTINCT trigger, outcome FROM sync_runs")
    assert outcomes == [("daemon", "ok")]


def test_catch_up_after_downtime(api, start_daemon, warehouse_url, run, cli_env):
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
    with time_machine.travel(start + timedelta(days=5), tick=True):
        _daemon, reports = start_daemon()
        wait_for(lambda: reports)
    assert reports[0].ok
    assert len(reports[0].planned) == 5  # the five missing days; refetch days fall inside them
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(35,)]


def test_failed_run_is_retried_and_then_succeeds(api, start_daemon, warehouse_url, caplog):
    api.inject(Fault("503", path="/activity"), Fault("503", path="/activity"))  # both attempts of the first run's /activity
    with caplog.at_level("INFO", logger="etl.daemon"):
        _daemon, reports = start_daemon()
        wait_for(lambda: any(r.ok for r in reports))
    assert query(warehouse_url, "SELECT outcome FROM sync_runs ORDER BY id") == [("failed",), ("ok",)]
    messages = [r.getMessage() for r in caplog.records]
    assert any("retry 1 of 2" in m for m in messages)
    assert any(m.startswith("sync ok: 30/30") and "next run" in m for m in messages)


def test_retries_are_bounded_and_the_schedule_goes_on(api, start_daemon, warehouse_url, caplog):
    api.set_fault_rate(1.0, ["503"])
    with caplog.at_level("INFO", logger="etl.daemon"):
        daemon, _ = start_daemon()
        wait_for(lambda: any("giving up" in r.getMessage() for r in caplog.records))
        time.sleep(0.5)
    assert query(warehouse_url, "SELECT count(*) FROM sync_runs") == [(3,)]  # 1 run + max_retries=2
    assert daemon.next_run() is not None  # the regular schedule is still there


def test_credits_job_on_its_own_schedule(api, start_daemon, warehouse_url):
    def next_0317(now):
        want = now.replace(hour=3, minute=17, second=0, microsecond=0)
        return want if want > now else want + timedelta(days=1)

    before = datetime.now(timezone.utc)
    daemon, _ = start_daemon(credits_cron="17 3 * * *")
    job = daemon.scheduler.get_job("credits")
    assert job is not None and job.func == daemon.credits_job
    # The schedule itself: the next run is the next 03:17 UTC, whatever sync does.
    assert job.next_run_time in {next_0317(before), next_0317(datetime.now(timezone.utc))}
    assert daemon.scheduler.get_job("sync").trigger is not job.trigger
    daemon.credits_job()  # waiting for the cron time is too long; the job itself stores a snapshot
    assert query(warehouse_url, "SELECT count(*) FROM credits_snapshots") == [(1,)]


# Was a product bug: APScheduler 3's CronTrigger.from_crontab numbers weekdays from Monday = 0,
# so cron's '2' (Tuesday) ran on Wednesdays and '0' (Sunday) on Mondays.
def test_a_cron_day_of_week_means_what_cron_says(api, start_daemon):
    daemon, _ = start_daemon(credits_cron="17 3 * * 2")  # cron: Tuesdays
    assert daemon.scheduler.get_job("credits").next_run_time.strftime("%A") == "Tuesday"


@pytest.mark.parametrize(
    ("field", "days"),
    [("2", {"Tuesday"}), ("0", {"Sunday"}), ("7", {"Sunday"}), ("1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
     ("*/2", {"Sunday", "Tuesday", "Thursday", "Saturday"}), ("0,6", {"Sunday", "Saturday"}), ("mon", {"Monday"}), ("*", None)],
)
def test_cron_weekdays_fire_on_the_days_cron_means(field, days):
    from etl.daemon import cron_trigger

    trigger = cron_trigger(f"0 12 * * {field}", "sync_cron", "test")
    moment, seen = datetime(2026, 11, 30, tzinfo=timezone.utc), set()  # a Monday
    for _ in range(14):
        moment = trigger.get_next_fire_time(None, moment)
        seen.add(moment.strftime("%A"))
        moment += timedelta(minutes=1)
    assert seen == (days or {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"})


def test_bad_cron_expression_is_a_config_error(cli_env, run, tmp_path):
    (tmp_path / "config.toml").write_text('[schedule]\nsync_cron = "every day"\n')
    result = run("run")
    assert result.exit_code == 2
    assert "[schedule] sync_cron: not a valid cron expression 'every day'" in result.stderr


# -- real processes ---------------------------------------------------------------------


def cli_process(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "etl", *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def archived_count(url) -> int:
    try:
        return query(url, "SELECT count(*) FROM archived_days")[0][0]
    except Exception:  # not created or not migrated yet
        return 0


@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_partial_day_and_exits_0(warehouse_url, tmp_path):
    big = Dataset(endpoints_per_day=1500)
    with StandIn(big, management_key=KEY) as api:
        env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}
        daemon = cli_process(["run"], env, cwd=tmp_path)
        try:
            wait_for(lambda: archived_count(warehouse_url) > 0, timeout=300, interval=0.01)  # a loaded CI machine is slow to start
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=60)
        finally:
            daemon.kill()
        assert daemon.returncode == 0, err
        assert "SIGTERM: finishing the day being written" in err and "daemon stopped" in err
        days = query(warehouse_url, "SELECT date, row_count FROM archived_days")
        assert 0 < len(days) < 30  # stopped mid-run
        for day, row_count in days:
            stored = query(warehouse_url, f"SELECT count(*) FROM activity WHERE date = '{day}'")[0][0]
            assert stored == row_count == len(big.activity(datetime.fromisoformat(day).date()))
        assert query(warehouse_url, "SELECT count(DISTINCT date) FROM activity")[0][0] == len(days)
        assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("interrupted",)]


@pytest.mark.slow
def test_second_writer_waits_then_exits_75_while_readers_are_not_blocked(cli_env, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 0.5\n")
    with writer_lock(cli_env["OPENROUTER_ARCHIVE_DB"], timeout=0):
        started = time.monotonic()
        blocked = cli_process(["sync"], cli_env, cwd=tmp_path)
        _out, err = blocked.communicate(timeout=30)
        assert blocked.returncode == 75, err
        assert time.monotonic() - started >= 0.5
        assert "another sync is writing to this warehouse" in err and "gave up after 0.5s" in err
        reader = cli_process(["status"], cli_env, cwd=tmp_path)
        out, err = reader.communicate(timeout=30)
        assert reader.returncode == 0, err
    after = cli_process(["sync"], cli_env, cwd=tmp_path)
    assert after.wait(timeout=60) == 0


def test_lock_is_released_when_its_holder_is_killed(cli_env, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from etl.lock import writer_lock\n"
         "with writer_lock(sys.argv[1], 0):\n    print('locked', flush=True); time.sleep(120)", cli_env["OPENROUTER_ARCHIVE_DB"]],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 0.2\n")
        assert cli_process(["sync"], cli_env, cwd=tmp_path).wait(timeout=30) == 75
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        (tmp_path / "config.toml").write_text("[sync]\nlock_timeout_seconds = 10\n")
        assert cli_process(["sync"], cli_env, cwd=tmp_path).wait(timeout=60) == 0
    finally:
        holder.kill()


# -- health ------------------------------------------------------------------------------


def test_status_check_flags_an_empty_a_stale_and_an_endangered_archive(cli_env, run):
    empty = run("status", "--check")
    assert empty.exit_code == 1 and "holds no day yet" in empty.stdout
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
        healthy = run("status", "--check")
        assert healthy.exit_code == 0, healthy.stdout
        assert "health        ok" in healthy.stdout
    with time_machine.travel(start + timedelta(days=3), tick=True):
        stale = run("status", "--check")
        assert stale.exit_code == 1
        assert "stale: the newest archived day" in stale.stdout
        assert run("status").exit_code == 0  # without --check, status only reports
    with time_machine.travel(start + timedelta(days=25), tick=True):
        endangered = run("status", "--check", "--json")
        assert endangered.exit_code == 1
        import json

        problems = json.loads(endangered.stdout)["problems"]
        assert any("leave the API window within 7 day(s)" in p for p in problems)
