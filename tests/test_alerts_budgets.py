"""Budgets end to end: the stand-in, a real sync, real SQLite, today's hourly spend, the CLI."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from alerts_helpers import Receiver, day_total, write_config
from conftest import KEY, query
from etl import migrate
from etl.alerts.check import run_check
from etl.client import OpenRouterClient
from etl.config import load_config
from etl.db import open_engine
from etl.standin import Dataset, StandIn


@pytest.fixture
def clock():
    """The stand-in's today, movable."""
    return {"today": datetime.now(timezone.utc).date() - timedelta(days=3)}


@pytest.fixture
def account(clock):
    with StandIn(Dataset(anchor=clock["today"]), management_key=KEY, today=lambda: clock["today"]) as server:
        yield server


def _config(tmp_path, api, warehouse_url, alerts: str):
    path = tmp_path / "alerts.toml"
    write_config(path, alerts)
    env = {"OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}
    return load_config(path, env=env)


def _sync(config, api, warehouse_url):
    from etl.sync import pending_days, run_sync

    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    with OpenRouterClient.from_config(config.openrouter, KEY) as client:
        today = api._today()
        run_sync(engine, client, pending_days(engine, today, 2), trigger="sync", settings=config.sync)
    return engine


def _check(engine, config, api, now, **kw):
    with OpenRouterClient.from_config(config.openrouter, KEY) as client:
        return run_check(engine, client, config, now=now, sleep=lambda s: None, **kw)


def test_80_then_100_percent_fire_once_each_and_resolve_next_period(tmp_path, account, clock, warehouse_url):
    today = clock["today"]
    partial = day_total(account.dataset, today) / 2  # the stand-in's hourly series serves half of today
    assert partial > 0.5
    with Receiver() as hook:
        rules = f"""
[alerts]
notify = [{{ kind = "webhook", url = "{hook.url}" }}]
[[alerts.budgets]]
name = "daily"
period = "day"
limit_usd = {partial / 0.9}
"""
        config = _config(tmp_path, account, warehouse_url, rules)
        engine = _sync(config, account, warehouse_url)
        now = datetime.combine(today, time(15), tzinfo=timezone.utc)
        first = _check(engine, config, account, now)
        assert [(f.kind, f.threshold) for f in first.findings if f.kind == "budget"] == [("budget", "0.8")]
        assert first.budget_active and first.sent == 1
        again = _check(engine, config, account, now + timedelta(minutes=5))
        assert again.fired == [] and again.sent == 0 and len(hook.bodies) == 1
        sent = hook.bodies[0]
        assert sent["kind"] == "budget" and sent["rule"] == "daily" and sent["period"] == today.isoformat()
        assert sent["threshold"] == 0.8 and abs(sent["value"] - partial) < 1e-6 and "80%" in sent["text"]

        # The same budget, a lower limit: 100% fires now, 80% is not sent again.
        config = _config(tmp_path, account, warehouse_url, rules.replace(f"{partial / 0.9}", f"{partial / 1.1}"))
        third = _check(engine, config, account, now + timedelta(minutes=10))
        assert len(third.fired) == 1 and len(hook.bodies) == 2 and hook.bodies[1]["threshold"] == 1.0

        # Next period: the day's alerts resolve; the new day's are new alerts.
        clock["today"] = today + timedelta(days=1)
        fourth = _check(engine, config, account, now + timedelta(days=1))
        resolved = query(warehouse_url, f"SELECT threshold FROM alerts WHERE period = '{today.isoformat()}' AND resolved_at IS NOT NULL ORDER BY threshold")
        assert resolved == [("0.8",), ("1",)]
        assert all(f.period == (today + timedelta(days=1)).isoformat() for f in fourth.findings if f.kind == "budget")
    sent_marks = query(warehouse_url, "SELECT state, count(*) FROM alert_notifications GROUP BY state")
    assert dict(sent_marks).get("sent", 0) == len(hook.bodies)


def test_forecast_crossing(tmp_path, account, clock, warehouse_url):
    today = clock["today"]
    recent = [day_total(account.dataset, today - timedelta(days=i)) for i in range(1, 8)]
    mean = sum(recent) / 7
    partial = day_total(account.dataset, today) / 2
    now = datetime.combine(today, time(12), tzinfo=timezone.utc)
    # Period "day" at noon: forecast = partial + mean x 0.5 day. The limit sits between the two.
    projected = partial + mean * 0.5
    limit = (partial + projected) / 2
    config = _config(tmp_path, account, warehouse_url, f"""
[[alerts.budgets]]
name = "daily forecast"
period = "day"
limit_usd = {limit}
thresholds = [1.0]
forecast = true
""")
    engine = _sync(config, account, warehouse_url)
    result = _check(engine, config, account, now)
    kinds = [(f.kind, f.threshold) for f in result.findings if f.rule == "daily forecast"]
    assert kinds == [("forecast", "1")]
    assert abs(result.findings[0].value - projected) < 1e-6


def test_cli_check_list_and_exit_status(tmp_path, account, clock, warehouse_url, run, monkeypatch):
    today = datetime.now(timezone.utc).date()
    clock["today"] = today
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", account.base_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", warehouse_url)
    write_config(tmp_path / "config.toml", """
[[alerts.budgets]]
name = "tiny"
period = "month"
limit_usd = 0.01
""")
    assert run("sync").exit_code == 0
    monkeypatch.setenv("OPENROUTER_ARCHIVE_ANALYTICS", "on")  # today's spend, hour by hour
    dry = run("alerts", "check", "--dry-run")
    assert dry.exit_code == 1 and "would be new" in dry.stdout
    assert query(warehouse_url, "SELECT count(*) FROM alerts") == [(0,)]
    result = run("alerts", "check")
    assert result.exit_code == 1 and result.stdout.count('budget "tiny"') == 2
    assert query(warehouse_url, "SELECT threshold FROM alerts WHERE kind = 'budget' ORDER BY threshold") == [("0.8",), ("1",)]
    listed = run("alerts", "list")
    assert listed.exit_code == 0 and listed.stdout.count('budget "tiny"') == 2
    status = run("status", "--check")
    assert "alerts" in status.stdout and status.exit_code == 1
    assert run("alerts", "list", "--all", "--json").exit_code == 0
