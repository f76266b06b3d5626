"""What a rule finds: one `Finding` per alert that holds now (pure data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# budget: actual spend crossed a threshold; forecast: projected spend will; anomaly: a day's
# spend far above its own baseline; new_spender: a model, key... spending from nothing.
KINDS = ("budget", "forecast", "anomaly", "new_spender")
BUDGET_KINDS = ("budget", "forecast")


@dataclass(frozen=True)
class Finding:
    kind: str
    rule: str  # the budget's name, or "anomaly"
    scope: str  # "key=production*" (budgets) or "key=Production" (anomalies); "*" for the account
    period: str  # "2026-11", "2026-W47", "2026-11-21"
    threshold: str  # "0.8" for budgets and forecasts; "" for anomalies
    value: float  # spend (or forecast) in USD
    limit: float | None  # the threshold in USD (budgets), None for anomalies
    baseline: float | None = None  # anomalies: the expected spend
    text: str = ""  # one line for people
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        """An alert fires once per (kind, rule, scope, period, threshold)."""
        return (self.kind, self.rule, self.scope, self.period, self.threshold)


def usd(amount: float) -> str:
    return f"${amount:,.2f}"
