"""``[alerts]``, ``[[alerts.budgets]]`` and the ``notify`` list, checked into frozen dataclasses.

Secrets never come from the file: a webhook's headers name environment variables
(``headers_env = { Authorization = "ALERT_WEBHOOK_AUTH" }``) and so does an SMTP password
(``password_env``); they are read when a message is sent. Every error names the rule or
notifier (``[[alerts.budgets]] "team monthly": period: ...``) and is a ConfigError (exit 2).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PERIODS = ("day", "week", "month")
METRICS = ("total_usage", "usage")
SCOPE_FIELDS = ("model", "key", "member", "workspace", "app")
NOTIFIER_KINDS = ("webhook", "email", "command")


class AlertConfigError(ValueError):
    """Raised by the parsers here; etl.config turns it into a ConfigError with the file name."""


@dataclass(frozen=True)
class Budget:
    name: str
    period: str
    limit_usd: float
    metric: str = "total_usage"
    thresholds: tuple[float, ...] = (0.8, 1.0)
    forecast: bool = False
    scope: tuple[tuple[str, str], ...] = ()  # (field, glob), in SCOPE_FIELDS order

    @property
    def scope_text(self) -> str:
        """The scope as stored and shown: ``key=production*,model=openai/*``; ``*`` for the account."""
        return ",".join(f"{k}={v}" for k, v in self.scope) or "*"


@dataclass(frozen=True)
class WebhookNotifier:
    url: str
    format: str = "json"  # json | slack
    headers_env: tuple[tuple[str, str], ...] = ()  # (header, environment variable)
    timeout_seconds: float = 10.0
    name: str = ""
    kind: str = "webhook"


@dataclass(frozen=True)
class EmailNotifier:
    host: str
    to: tuple[str, ...]
    sender: str
    port: int = 587
    starttls: bool = True
    tls: bool = False
    user: str = ""
    password_env: str = ""
    timeout_seconds: float = 10.0
    name: str = ""
    kind: str = "email"


@dataclass(frozen=True)
class CommandNotifier:
    run: tuple[str, ...]
    timeout_seconds: float = 30.0
    name: str = ""
    kind: str = "command"


NotifierConfig = WebhookNotifier | EmailNotifier | CommandNotifier


@dataclass(frozen=True)
class AlertsConfig:
    budgets: tuple[Budget, ...] = ()
    # Anomalies: the excess over the baseline must reach this many dollars (cents never alert)...
    anomaly_min_usd: float = 5.0
    # ...and this robust z-score (median/MAD); lower finds more.
    sensitivity: float = 6.0
    notify: tuple[NotifierConfig, ...] = ()
    # Each notification: attempts within one check, backoff (seconds, doubling), time budget.
    retry_attempts: int = 3
    retry_backoff_seconds: float = 1.0
    retry_max_seconds: float = 30.0


def _number(value: object, where: str, *, ge: float | None = None, gt: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AlertConfigError(f"{where}: expected a number, got {value!r}")
    if ge is not None and value < ge:
        raise AlertConfigError(f"{where}: must be at least {ge:g}, got {value!r}")
    if gt is not None and value <= gt:
        raise AlertConfigError(f"{where}: must be greater than {gt:g}, got {value!r}")
    return float(value)


def _text(value: object, where: str, *, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise AlertConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def check_glob(pattern: str) -> None:
    """A glob fnmatch reads as meant: not empty, every ``[`` closed."""
    if not pattern.strip():
        raise ValueError("empty pattern")
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] in "!^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                raise ValueError(f"unclosed '[' in {pattern!r}")
            i = close
        i += 1


def parse_budget(data: object, index: int) -> Budget:
    name = data.get("name") if isinstance(data, Mapping) else None
    rule = f"[[alerts.budgets]] {name!r}" if isinstance(name, str) and name.strip() else f"[[alerts.budgets]] #{index + 1}"
    if not isinstance(data, Mapping):
        raise AlertConfigError(f"{rule}: expected a table")
    known = {"name", "period", "limit_usd", "metric", "thresholds", "forecast", "scope"}
    for key in data:
        if key not in known:
            raise AlertConfigError(f"{rule}: {key}: unknown setting")
    for key in ("name", "period", "limit_usd"):
        if key not in data:
            raise AlertConfigError(f"{rule}: {key}: required")
    name = _text(data["name"], f"{rule}: name")
    period = data["period"]
    if period not in PERIODS:
        raise AlertConfigError(f"{rule}: period: unknown period {period!r}; choose from: {', '.join(PERIODS)}")
    limit = _number(data["limit_usd"], f"{rule}: limit_usd", gt=0)
    metric = data.get("metric", "total_usage")
    if metric not in METRICS:
        raise AlertConfigError(f"{rule}: metric: unknown metric {metric!r}; choose from: {', '.join(METRICS)}")
    thresholds = data.get("thresholds", [0.8, 1.0])
    if not isinstance(thresholds, list) or not thresholds:
        raise AlertConfigError(f"{rule}: thresholds: expected a list of fractions of the limit, e.g. [0.8, 1.0]")
    fractions = tuple(sorted({_number(t, f"{rule}: thresholds", gt=0) for t in thresholds}))
    forecast = data.get("forecast", False)
    if not isinstance(forecast, bool):
        raise AlertConfigError(f"{rule}: forecast: expected true or false, got {forecast!r}")
    scope_data = data.get("scope", {})
    if not isinstance(scope_data, Mapping):
        raise AlertConfigError(f"{rule}: scope: expected a table such as {{ key = \"production*\" }}")
    for field_name, pattern in scope_data.items():
        if field_name not in SCOPE_FIELDS:
            raise AlertConfigError(f"{rule}: scope: unknown scope field {field_name!r}; choose from: {', '.join(SCOPE_FIELDS)}")
        if not isinstance(pattern, str):
            raise AlertConfigError(f"{rule}: scope {field_name}: expected a glob string, got {pattern!r}")
        try:
            check_glob(pattern)
        except ValueError as exc:
            raise AlertConfigError(f"{rule}: scope {field_name}: bad glob: {exc}") from None
    subjects = [f for f in scope_data if f != "model"]
    if len(subjects) > 1:
        raise AlertConfigError(
            f"{rule}: scope: at most one of key, member, workspace, app (with model or not): the archive has no table "
            f"that splits spend by {' and '.join(subjects)} together"
        )
    scope = tuple((f, scope_data[f]) for f in SCOPE_FIELDS if f in scope_data)
    return Budget(name, period, limit, metric, fractions, forecast, scope)


def _notifier_name(kind: str, target: str) -> str:
    # A stable identity for sent marks that survives reordering the list and never shows
    # the target itself (a Slack webhook URL is a credential of sorts).
    return f"{kind}-{hashlib.sha256(target.encode()).hexdigest()[:10]}"


def parse_notifier(data: object, index: int) -> NotifierConfig:
    where = f"[alerts] notify #{index + 1}"
    if not isinstance(data, Mapping):
        raise AlertConfigError(f"{where}: expected a table such as {{ kind = \"webhook\", url = \"...\" }}")
    kind = data.get("kind")
    if kind not in NOTIFIER_KINDS:
        raise AlertConfigError(f"{where}: kind: unknown kind {kind!r}; choose from: {', '.join(NOTIFIER_KINDS)}")
    where = f"{where} ({kind})"
    allowed = {
        "webhook": {"url", "format", "headers_env", "headers", "timeout_seconds", "name"},
        "email": {"host", "port", "starttls", "tls", "user", "password_env", "password", "from", "to", "timeout_seconds", "name"},
        "command": {"run", "timeout_seconds", "name"},
    }[kind] | {"kind"}
    for key in data:
        if key not in allowed:
            raise AlertConfigError(f"{where}: {key}: unknown setting")
    if "headers" in data or "password" in data:
        secret = "headers" if "headers" in data else "password"
        raise AlertConfigError(f"{where}: {secret}: secrets are never read from the config file; use {secret}_env (the name of an environment variable)")
    timeout = _number(data.get("timeout_seconds", 30.0 if kind == "command" else 10.0), f"{where}: timeout_seconds", gt=0)
    label = data.get("name")
    if label is not None:
        _text(label, f"{where}: name")
    if kind == "webhook":
        url = _text(data.get("url"), f"{where}: url")
        if not url.startswith(("http://", "https://")):
            raise AlertConfigError(f"{where}: url: expected an http:// or https:// URL")
        fmt = data.get("format", "json")
        if fmt not in ("json", "slack"):
            raise AlertConfigError(f"{where}: format: expected \"json\" or \"slack\", got {fmt!r}")
        headers = data.get("headers_env", {})
        if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in headers.items()):
            raise AlertConfigError(f"{where}: headers_env: expected a table of header = \"ENVIRONMENT_VARIABLE\"")
        return WebhookNotifier(url, fmt, tuple(sorted(headers.items())), timeout, label or _notifier_name(kind, url))
    if kind == "email":
        host = _text(data.get("host"), f"{where}: host")
        sender = _text(data.get("from"), f"{where}: from")
        to = data.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
            raise AlertConfigError(f"{where}: to: expected a list of e-mail addresses")
        port = data.get("port", 587)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise AlertConfigError(f"{where}: port: expected a port number, got {port!r}")
        starttls, tls = data.get("starttls", not data.get("tls", False)), data.get("tls", False)
        if not isinstance(starttls, bool) or not isinstance(tls, bool) or (starttls and tls):
            raise AlertConfigError(f"{where}: starttls / tls: true or false, and not both")
        user = data.get("user", "")
        password_env = data.get("password_env", "")
        if not isinstance(user, str) or not isinstance(password_env, str):
            raise AlertConfigError(f"{where}: user / password_env: expected strings")
        if password_env and not user:
            raise AlertConfigError(f"{where}: password_env needs user")
        target = f"{host}:{port}:{','.join(sorted(to))}"
        return EmailNotifier(host, tuple(to), sender, port, starttls, tls, user, password_env, timeout, label or _notifier_name(kind, target))
    run = data.get("run")
    if isinstance(run, str):
        run = [run]
    if not isinstance(run, list) or not run or not all(isinstance(a, str) and a for a in run):
        raise AlertConfigError(f"{where}: run: expected a command as a list, e.g. [\"/usr/local/bin/page-oncall\", \"--team\", \"ops\"]")
    return CommandNotifier(tuple(run), timeout, label or _notifier_name(kind, "\0".join(run)))


def parse_alerts(data: object) -> AlertsConfig:
    """The ``[alerts]`` table (with its ``budgets`` array of tables), or AlertConfigError."""
    if not isinstance(data, Mapping):
        raise AlertConfigError("[alerts]: expected a table of settings")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "budgets":
            if not isinstance(value, list):
                raise AlertConfigError("[alerts] budgets: expected [[alerts.budgets]] tables")
            budgets = tuple(parse_budget(b, i) for i, b in enumerate(value))
            names = [b.name for b in budgets]
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate is not None:
                raise AlertConfigError(f"[[alerts.budgets]] {duplicate!r}: two budgets have this name; alerts are kept per name")
            values[key] = budgets
        elif key == "notify":
            if not isinstance(value, list):
                raise AlertConfigError("[alerts] notify: expected a list of notifiers")
            notifiers = tuple(parse_notifier(n, i) for i, n in enumerate(value))
            seen = [n.name for n in notifiers]
            duplicate = next((n for n in seen if seen.count(n) > 1), None)
            if duplicate is not None:
                raise AlertConfigError(f"[alerts] notify: two notifiers are the same ({duplicate}); give them distinct names")
            values[key] = notifiers
        elif key in ("anomaly_min_usd", "sensitivity", "retry_backoff_seconds", "retry_max_seconds"):
            values[key] = _number(value, f"[alerts] {key}", ge=0, gt=0 if key == "sensitivity" else None)
        elif key == "retry_attempts":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 20:
                raise AlertConfigError(f"[alerts] retry_attempts: expected a whole number from 1 to 20, got {value!r}")
            values[key] = value
        else:
            raise AlertConfigError(f"[alerts] {key}: unknown setting")
    return AlertsConfig(**values)
