"""Notifiers, the pluggable part of alerts: ``webhook``, ``email`` (SMTP) and ``command``.

Each takes the alert as a JSON-able mapping and either delivers it or raises
``NotifyError`` (``retryable`` or not). ``send`` retries a retryable failure with the
client's backoff (``etl.client.backoff_delay``: exponential, capped, jitter) within a
bounded number of attempts and seconds. Secrets (header values, SMTP passwords) come from
environment variables only, are registered for redaction, and never appear in a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from etl.alerts.config import AlertsConfig, CommandNotifier, EmailNotifier, NotifierConfig, WebhookNotifier
from etl.client import RetryPolicy, backoff_delay
from etl.errors import NotifyError as NotifyError  # re-exported: the notifiers raise it

log = logging.getLogger(__name__)


class Notifier(Protocol):
    name: str

    def describe(self) -> str: ...

    def send(self, alert: Mapping[str, Any]) -> None: ...


def build(config: NotifierConfig) -> Notifier:
    if isinstance(config, WebhookNotifier):
        from etl.notify.webhook import Webhook

        return Webhook(config)
    if isinstance(config, EmailNotifier):
        from etl.notify.smtp import Email

        return Email(config)
    if isinstance(config, CommandNotifier):
        from etl.notify.command import Command

        return Command(config)
    raise TypeError(f"unknown notifier {config!r}")


def policy(alerts: AlertsConfig) -> RetryPolicy:
    return RetryPolicy(alerts.retry_attempts, alerts.retry_max_seconds, alerts.retry_backoff_seconds, 2.0, max(alerts.retry_backoff_seconds, 30.0))


def send(notifier: Notifier, alert: Mapping[str, Any], retry: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> int:
    """Deliver, retrying; the number of attempts it took, or NotifyError after the last."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            notifier.send(alert)
            return attempt
        except NotifyError as exc:
            error = exc
        except Exception as exc:  # a bug or an unforeseen library error: reported, not a traceback
            error = NotifyError(f"{notifier.describe()}: unexpected {type(exc).__name__}: {exc}")
        wait = backoff_delay(attempt, retry)
        out_of_time = time.monotonic() - started + wait > retry.max_total_seconds
        if not error.retryable or (retry.max_attempts and attempt >= retry.max_attempts) or out_of_time:
            raise NotifyError(f"{error} (after {attempt} attempt(s))", retryable=error.retryable)
        log.info("%s: attempt %d failed (%s); retrying in %.1fs", notifier.describe(), attempt, error, wait,
                 extra={"event": "notify_retry", "notifier": notifier.name})
        sleep(wait)
