"""One check: today's partial spend, every rule evaluated, the alerts table reconciled,
new alerts sent (``openrouter-archive alerts check`` and the daemon's alerts job).

The caller holds the writer lock. ``dry_run`` runs the same code in a transaction that is
rolled back, and sends nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine

from etl.alerts import anomalies, budgets, store
from etl.alerts.findings import BUDGET_KINDS, Finding
from etl.alerts.spend import DIMENSIONS, Today, credits_today, daily_spend, hourly_rows, in_scope, scope_dimension
from etl.config import Config
from etl.errors import ArchiveError
from etl.query_history import model_map

log = logging.getLogger("etl.alerts")

ANOMALY_METRIC = "total_usage"


@dataclass
class CheckResult:
    findings: list[Finding]
    fired: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    active: list[store.Listed] = field(default_factory=list)
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: int = 0

    @property
    def budget_active(self) -> bool:
        return any(f.kind in BUDGET_KINDS for f in self.findings)


def gather_today(engine: Engine, client: Any, config: Config, now: datetime) -> Today:
    """Today's spend by the Analytics API (hourly), per dimension the budgets need."""
    today = Today()
    needed = sorted({scope_dimension(b.scope) for b in config.alerts.budgets})
    if not needed or client is None:
        return today
    if not config.sync.analytics_series:
        today.notes.append("today: the Analytics API is off ([sync] analytics_series); using the credit balance")
        return today
    with engine.connect() as conn:
        models = model_map(conn)
    for dimension in needed:
        try:
            today.rows[f"{dimension}:total_usage"] = hourly_rows(client, dimension, "total_usage", now, models)
            today.rows[f"{dimension}:usage"] = hourly_rows(client, dimension, "usage", now, models)
        except ArchiveError as exc:
            today.notes.append(f"today's spend by {dimension}: the Analytics API is unavailable ({exc})")
            today.rows[f"{dimension}:total_usage"] = today.rows[f"{dimension}:usage"] = None
    return today


def evaluate(conn: Any, config: Config, now: datetime, today: Today) -> list[Finding]:
    findings: list[Finding] = []
    yesterday = now.date() - timedelta(days=1)
    for budget in config.alerts.budgets:
        dimension = scope_dimension(budget.scope)
        first, _end, _label = budgets.period_bounds(budget.period, now.date())
        since = min(first, yesterday - timedelta(days=budgets.FORECAST_DAYS - 1))
        spend = daily_spend(conn, dimension, budget.metric, since, yesterday)
        rows = [r for r in spend.rows if in_scope(r, budget.scope)]
        spent = sum(r.amount for r in rows if r.day >= first)
        today_rows = today.rows.get(f"{dimension}:{budget.metric}")
        source = "none"
        if today_rows is not None:
            spent += sum(r.amount for r in today_rows if in_scope(r, budget.scope))
            source = "analytics (hourly)"
        elif dimension == "account" and today.credits_delta is not None:
            spent += today.credits_delta
            source = today.source("account")
        recent_days = [yesterday - timedelta(days=i) for i in range(budgets.FORECAST_DAYS - 1, -1, -1)]
        per_day = {d: 0.0 for d in recent_days if d in spend.held}
        for r in rows:
            if r.day in per_day:
                per_day[r.day] += r.amount
        findings += budgets.evaluate(budget, spent, [per_day[d] for d in sorted(per_day)], now, today_source=source)
    for dimension in DIMENSIONS:
        spend = daily_spend(conn, dimension, ANOMALY_METRIC, yesterday - timedelta(days=anomalies.WINDOW_DAYS), yesterday)
        if not spend.held:
            continue
        series: dict[str, dict[date, float]] = {}
        labels: dict[str, str] = {}
        for r in spend.rows:
            per = series.setdefault(r.subject, {})
            per[r.day] = per.get(r.day, 0.0) + r.amount
            labels[r.subject] = r.label
        findings += anomalies.detect(
            dimension, series, yesterday, spend.held, min_usd=config.alerts.anomaly_min_usd, sensitivity=config.alerts.sensitivity, labels=labels
        )
    return findings


def run_check(
    engine: Engine, client: Any, config: Config, *, now: datetime | None = None, dry_run: bool = False,
    notifiers: list[Any] | None = None, sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    from etl import notify

    now = now or datetime.now(timezone.utc)
    built = notifiers if notifiers is not None else [notify.build(n) for n in config.alerts.notify]
    names = [n.name for n in built]
    today = gather_today(engine, client, config, now)
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            interrupted = store.mark_interrupted(conn)
            needs_credits = any(scope_dimension(b.scope) == "account" and today.rows.get(f"account:{b.metric}") is None for b in config.alerts.budgets)
            if needs_credits and client is not None:
                try:
                    today.credits_delta, today.credits_since = credits_today(conn, client, now)
                except ArchiveError as exc:
                    today.notes.append(f"today's spend: the credit balance is unavailable too ({exc}); today counts as $0")
            findings = evaluate(conn, config, now, today)
            changes = store.reconcile(conn, findings, names, now)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    result = CheckResult(findings, changes.fired, changes.resolved, notes=today.notes, interrupted=interrupted)
    if interrupted:
        log.warning("%d notification(s) were interrupted while sending by an earlier check: delivery unknown, not repeated",
                    interrupted, extra={"event": "notify_interrupted"})
    for finding in changes.fired_findings:
        log.warning("alert fired: %s", finding.text, extra={"event": "alert_fired", "kind": finding.kind, "rule": finding.rule})
    if not dry_run:
        deliver(engine, built, config, result, sleep)
        with engine.connect() as conn:
            result.active = store.listed(conn)
    return result


def deliver(engine: Engine, built: list[Any], config: Config, result: CheckResult, sleep: Callable[[float], None]) -> None:
    from etl import notify

    by_name = {n.name: n for n in built}
    with engine.connect() as conn:
        todo = store.due(conn, by_name)
    policy = notify.policy(config.alerts)
    for alert_id, name, document in todo:
        notifier = by_name[name]
        store.claim(engine, alert_id, name, datetime.now(timezone.utc))
        try:
            attempts = notify.send(notifier, document, policy, sleep)
        except notify.NotifyError as exc:
            store.record(engine, alert_id, name, datetime.now(timezone.utc), str(exc))
            result.failures.append(f"{notifier.describe()}: {exc}")
            log.error("notification failed: %s (retried by the next check)", exc,
                      extra={"event": "notify_failed", "notifier": name, "alert_id": alert_id})
            continue
        store.record(engine, alert_id, name, datetime.now(timezone.utc), None)
        result.sent += 1
        log.info("notified %s: %s (%d attempt(s))", notifier.describe(), document["text"], attempts,
                 extra={"event": "notified", "notifier": name, "alert_id": alert_id})
