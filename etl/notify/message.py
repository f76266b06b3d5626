"""The alert as sent: a JSON document, a one-line text, an e-mail subject and body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def subject(alert: Mapping[str, Any]) -> str:
    kind = {"budget": "Budget alert", "forecast": "Budget forecast", "anomaly": "Spend anomaly", "new_spender": "New spender", "test": "Test"}
    return f"[openrouter-archive] {kind.get(str(alert.get('kind')), 'Alert')}: {alert.get('rule')} {alert.get('scope')} {alert.get('period')}".strip()


def body_text(alert: Mapping[str, Any]) -> str:
    lines = [str(alert.get("text", "")), ""]
    for name in ("kind", "rule", "scope", "period", "threshold", "value", "limit", "baseline", "first_fired_at"):
        value = alert.get(name)
        if value not in (None, ""):
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"
