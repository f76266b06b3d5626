"""``openrouter-archive alerts check | list | test`` (registered by etl.cli; imports stay lazy)."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.group("alerts")
def alerts_group() -> None:
    """Budgets and spend anomalies: check them, list alerts, test the notifiers."""


def _app() -> Any:
    return click.get_current_context().obj


@alerts_group.command("check")
@click.option("--dry-run", is_flag=True, help="Evaluate and print; store nothing, notify nothing.")
def check(dry_run: bool) -> None:
    """Evaluate every rule now (with today's partial spend), notify new alerts, print the active ones.

    Exits 1 when a budget alert (actual or forecast) is active or a notification could
    not be sent, 0 otherwise (anomalies alone do not change the exit status).
    """
    from etl.alerts.check import run_check

    app = _app()
    with app.writer_lock():
        engine = app.engine()
        client = None
        try:
            client = app.client()
        except Exception as exc:  # no key: the archive alone (today's spend unknown)
            click.echo(f"note: {exc}; today's partial spend is not counted", err=True)
        try:
            result = run_check(engine, client, app.config, dry_run=dry_run)
        finally:
            if client is not None:
                client.close()
            engine.dispose()
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        click.echo(f"dry run: {len(result.findings)} alert(s) hold, {len(result.fired)} would be new; nothing stored or sent")
        for finding in result.findings:
            click.echo(f"  {finding.kind:<12} {finding.text}")
    else:
        click.echo(f"{len(result.active)} active alert(s): {len(result.fired)} new, {len(result.resolved)} resolved; "
                   f"{result.sent} notification(s) sent, {len(result.failures)} failed")
        for alert in result.active:
            click.echo(f"  {alert.kind:<12} {alert.text}")
    for failure in result.failures:
        click.echo(f"Error: notification failed: {failure} (retried by the next check)", err=True)
    if result.budget_active or result.failures:
        sys.exit(1)


@alerts_group.command("list")
@click.option("--all", "everything", is_flag=True, help="Resolved alerts too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_alerts(everything: bool, as_json: bool) -> None:
    """Alerts from the warehouse: the active ones (or all), with their notification marks."""
    import json

    from etl.alerts import store
    from etl.cli import _readable_engine

    engine = _readable_engine(_app())
    with engine.connect() as conn:
        rows = store.listed(conn, everything=everything)
    engine.dispose()
    if as_json:
        click.echo(json.dumps([{**r.__dict__, "first_fired_at": r.first_fired_at.isoformat(), "last_seen_at": r.last_seen_at.isoformat(),
                                "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None} for r in rows], indent=2))
        return
    if not rows:
        click.echo("no active alerts" if not everything else "no alerts")
    for r in rows:
        state = f"resolved {r.resolved_at:%Y-%m-%d %H:%M}" if r.resolved_at else "active"
        marks = ", ".join(f"{n} {s}" for n, s in sorted(r.marks.items())) or "no notifier"
        click.echo(f"#{r.id} {r.kind:<12} {state:<22} fired {r.first_fired_at:%Y-%m-%d %H:%M}  {r.text}  [{marks}]")


@alerts_group.command("test")
def test_notifiers() -> None:
    """Send a test message to every notifier; exits 1 if any fails."""
    from datetime import datetime, timezone

    from etl import notify

    app = _app()
    notifiers = [notify.build(n) for n in app.config.alerts.notify]
    if not notifiers:
        click.echo("no notifiers configured ([alerts] notify)")
        return
    now = datetime.now(timezone.utc)
    document: dict[str, Any] = {"kind": "test", "rule": "test", "scope": "*", "period": now.date().isoformat(), "threshold": None, "value": 0.0,
                "limit": None, "baseline": None, "text": "openrouter-archive: test message, alerts reach this notifier",
                "first_fired_at": now.isoformat(timespec="seconds"), "details": {}}
    failed = 0
    for notifier in notifiers:
        try:
            notify.send(notifier, document, notify.policy(app.config.alerts))
            click.echo(f"ok      {notifier.describe()} ({notifier.name})")
        except notify.NotifyError as exc:
            failed += 1
            click.echo(f"FAILED  {notifier.describe()} ({notifier.name}): {exc}")
    if failed:
        sys.exit(1)
