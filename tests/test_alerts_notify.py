"""Notifiers over loopback: a webhook receiver, a real SMTP server (aiosmtpd), a command;
a failing notifier retried by the next check; a crash between notify and record never
duplicates; anomalies found and named; the daemon's alerts job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from alerts_helpers import Receiver, write_config
from conftest import KEY, query
from etl import migrate
from etl.alerts.check import run_check
from etl.client import OpenRouterClient
from etl.config import load_config
from etl.db import open_engine
from etl.standin import Dataset, Spike, StandIn

TODAY = datetime.now(timezone.utc).date()


def _setup(tmp_path, api, warehouse_url, alerts, sync='breakdowns = ["key"]\n'):
    path = tmp_path / "alerts.toml"
    write_config(path, alerts, sync)
    config = load_config(path, env={"OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url})
    from etl.sync import pending_days, run_sync

    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    with OpenRouterClient.from_config(config.openrouter, KEY) as client:
        run_sync(engine, client, pending_days(engine, TODAY, 2), trigger="sync", settings=config.sync)
    return config, engine


def _check(engine, config, **kw):
    with OpenRouterClient.from_config(config.openrouter, KEY) as client:
        return run_check(engine, client, config, sleep=lambda s: None, **kw)


BUDGET = """
[[alerts.budgets]]
name = "tiny"
period = "month"
limit_usd = 0.01
thresholds = [1.0]
"""


def test_webhook_slack_format_with_header_from_env_smtp_and_command(tmp_path, api, warehouse_url, monkeypatch):
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    sink = Sink()
    import socket

    with socket.socket() as probe:  # aiosmtpd cannot start on port 0: take a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    out = tmp_path / "command-got.json"
    monkeypatch.setenv("ALERT_WEBHOOK_AUTH", "Bearer hook-secret-123456")
    try:
        with Receiver() as hook:
            alerts = f"""
[alerts]
sensitivity = 1000
retry_backoff_seconds = 0.01
notify = [
  {{ kind = "webhook", url = "{hook.url}", format = "slack", headers_env = {{ Authorization = "ALERT_WEBHOOK_AUTH" }} }},
  {{ kind = "email", host = "127.0.0.1", port = {port}, starttls = false, from = "archive@example.com", to = ["finance@example.com"] }},
  {{ kind = "command", run = ["{sys.executable}", "-c", "import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\\\n')"] }},
]
{BUDGET}"""
            config, engine = _setup(tmp_path, api, warehouse_url, alerts, sync="")
            monkeypatch.setenv("OPENROUTER_ARCHIVE_ANALYTICS", "on")
            config = load_config(tmp_path / "alerts.toml", env={**os.environ, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url})
            result = _check(engine, config)
            assert result.failures == [] and result.sent == 3
            assert _check(engine, config).sent == 0  # once
            assert len(hook.bodies) == 1 and set(hook.bodies[0]) == {"text"} and 'budget "tiny"' in hook.bodies[0]["text"]
            assert hook.headers[0]["Authorization"] == "Bearer hook-secret-123456"
        (sender, rcpts, content), = sink.messages
        assert sender == "archive@example.com" and rcpts == ["finance@example.com"]
        assert "Subject: [openrouter-archive] Budget alert: tiny" in content and "threshold: 1.0" in content
        lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0]["rule"] == "tiny" and lines[0]["kind"] == "budget" and lines[0]["limit"] == 0.01
    finally:
        smtp.stop()


def test_a_notifier_that_fails_then_succeeds_is_retried_by_the_next_check(tmp_path, api, warehouse_url, monkeypatch, caplog):
    monkeypatch.setenv("OPENROUTER_ARCHIVE_ANALYTICS", "on")
    with Receiver(fail_first=2) as hook:
        alerts = f'[alerts]\nsensitivity = 1000\nretry_attempts = 2\nretry_backoff_seconds = 0.01\nnotify = [{{ kind = "webhook", url = "{hook.url}" }}]\n{BUDGET}'
        config, engine = _setup(tmp_path, api, warehouse_url, alerts, sync="")
        first = _check(engine, config)
        assert first.sent == 0 and len(first.failures) == 1 and "HTTP 503" in first.failures[0] and "after 2 attempt(s)" in first.failures[0]
        assert "secretpath" not in first.failures[0] and "secretpath" not in caplog.text  # the path of a hook URL is a credential
        assert query(warehouse_url, "SELECT state, attempts FROM alert_notifications") == [("failed", 1)]
        second = _check(engine, config)
        assert second.sent == 1 and second.failures == [] and len(hook.bodies) == 1
        assert query(warehouse_url, "SELECT state FROM alert_notifications") == [("sent",)]
        assert hook.calls == 3


@pytest.mark.slow
def test_a_crash_between_notify_and_record_never_duplicates(tmp_path, api, warehouse_url):
    """The command delivers, then kills the check (SIGKILL) before it can record the send."""
    delivered = tmp_path / "delivered.txt"
    script = tmp_path / "notify_then_crash.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        with open({str(delivered)!r}, "a") as f:
            f.write(sys.stdin.read() + "\\n")
        os.kill(os.getppid(), signal.SIGKILL)
    """))
    alerts = f'[alerts]\nsensitivity = 1000\nnotify = [{{ kind = "command", run = ["{sys.executable}", "{script}"] }}]\n{BUDGET}'
    write_config(tmp_path / "config.toml", alerts)
    env = {**os.environ, "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url,
           "OPENROUTER_ARCHIVE_ANALYTICS": "on"}
    subprocess.run([sys.executable, "-m", "etl", "sync"], env=env, check=True, capture_output=True, timeout=120)
    crashed = subprocess.run([sys.executable, "-m", "etl", "alerts", "check"], env=env, capture_output=True, timeout=120)
    assert crashed.returncode == -9
    assert len(delivered.read_text().splitlines()) == 1
    assert query(warehouse_url, "SELECT state FROM alert_notifications") == [("sending",)]
    again = subprocess.run([sys.executable, "-m", "etl", "alerts", "check"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "interrupted while sending" in again.stderr
    assert len(delivered.read_text().splitlines()) == 1  # not sent twice
    assert query(warehouse_url, "SELECT state FROM alert_notifications") == [("unknown",)]
    listed = subprocess.run([sys.executable, "-m", "etl", "alerts", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "unknown" in listed.stdout


def test_a_spike_is_found_and_named_and_cents_never_alert(tmp_path, warehouse_url):
    yesterday = TODAY - timedelta(days=1)
    dataset = Dataset(anchor=TODAY)
    key = dataset.api_keys[0]
    dataset = Dataset(anchor=TODAY, spikes=[Spike(yesterday, 120.0, key.hash, "openai/o3")])
    with StandIn(dataset, management_key=KEY) as api:
        config, engine = _setup(tmp_path, api, warehouse_url, "[alerts]\nanomaly_min_usd = 5\n")
        result = run_check(engine, None, config)
    spikes = [f for f in result.findings if f.kind == "anomaly"]
    by_scope = {f.scope: f for f in spikes}
    assert f"key={key.name}" in by_scope and "model=openai/o3" in by_scope, [f.text for f in result.findings]
    for scope in (f"key={key.name}", "model=openai/o3"):
        f = by_scope[scope]
        assert f.period == yesterday.isoformat() and f.value >= 120 and f.baseline is not None and f.baseline < 20
        assert scope.split("=", 1)[1] in f.text and "baseline" in f.text
    # The same spike at 3 cents is below the floor: no anomaly at all.
    small = Dataset(anchor=TODAY, spikes=[Spike(yesterday, 0.03, key.hash, "openai/o3")])
    (tmp_path / "b").mkdir()
    with StandIn(small, management_key=KEY) as api:
        url = f"sqlite:///{tmp_path / 'b' / 'archive.db'}"
        config, engine = _setup(tmp_path / "b", api, url, "[alerts]\nanomaly_min_usd = 5\nsensitivity = 0.5\n")
        quiet = run_check(engine, None, config)
    assert [f for f in quiet.findings if f.kind == "anomaly" and f.value - (f.baseline or 0) < 5] == []


def test_the_daemon_checks_after_each_sync_and_on_its_trigger(tmp_path, api, warehouse_url, monkeypatch):
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from etl.daemon import Daemon

    monkeypatch.setenv("OPENROUTER_ARCHIVE_ANALYTICS", "on")
    with Receiver() as hook:
        alerts = f'[alerts]\nsensitivity = 1000\nnotify = [{{ kind = "webhook", url = "{hook.url}" }}]\n{BUDGET}'
        write_config(tmp_path / "d.toml", alerts)
        config = load_config(tmp_path / "d.toml", env={"OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url})
        engine = open_engine(warehouse_url)
        migrate.upgrade(engine)
        stop = threading.Event()
        client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
        checks: list[float] = []
        daemon = Daemon.build(config, engine, client, stop, scheduler=BackgroundScheduler(),
                              sync_trigger=IntervalTrigger(hours=1), alerts_trigger=IntervalTrigger(seconds=0.2))
        original = daemon.alerts_job
        daemon.alerts_job = lambda: (original(), checks.append(time.monotonic()))[0]  # count the runs
        daemon.scheduler.add_job(daemon.alerts_job, IntervalTrigger(seconds=0.2), id="alerts", replace_existing=True)
        daemon.scheduler.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (len(checks) < 3 or not hook.bodies):
                time.sleep(0.05)
        finally:
            stop.set()
            daemon.scheduler.shutdown(wait=True)
            client.close()
            engine.dispose()
        assert len(checks) >= 3 and len(hook.bodies) == 1  # checked again and again, sent once
        assert query(warehouse_url, "SELECT kind, rule FROM alerts") == [("budget", "tiny")]
