"""Webhook: an HTTP POST of the alert as JSON (``format = "slack"``: ``{"text": ...}``).

Headers come from environment variables (``headers_env``); a variable that is not set is
an error (not retried), never an empty header. 408, 429, 5xx and network errors are
retried; other statuses are final. Messages name the host only, never the path (a Slack
webhook URL carries its token there) nor header values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from etl.alerts.config import WebhookNotifier
from etl.logs import register_secret
from etl.notify import NotifyError


class Webhook:
    def __init__(self, config: WebhookNotifier):
        self.config, self.name = config, config.name
        parts = urlsplit(config.url)
        self._where = f"webhook {parts.scheme}://{parts.netloc}"
        register_secret(parts.path if len(parts.path) > 8 else None)

    def describe(self) -> str:
        return self._where

    def document(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        if self.config.format == "slack":
            return {"text": str(alert.get("text", ""))}
        return dict(alert)

    def send(self, alert: Mapping[str, Any]) -> None:
        headers = {}
        for header, variable in self.config.headers_env:
            value = os.environ.get(variable)
            if not value:
                raise NotifyError(f"{self._where}: header {header}: environment variable ${variable} is not set", retryable=False)
            register_secret(value)
            headers[header] = value
        try:
            response = httpx.post(self.config.url, json=self.document(alert), headers=headers, timeout=self.config.timeout_seconds)
        except httpx.HTTPError as exc:
            raise NotifyError(f"{self._where}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            retryable = response.status_code in (408, 429) or response.status_code >= 500
            raise NotifyError(f"{self._where}: HTTP {response.status_code}", retryable=retryable)
