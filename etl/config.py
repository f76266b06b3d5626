"""Typed configuration: a TOML file, environment overrides, built-in defaults.

Lookup order for the file: ``--config PATH``, ``$OPENROUTER_ARCHIVE_CONFIG``,
``./config.toml``, ``<user config dir>/openrouter-archive/config.toml``; with none of them
the defaults below apply. ``OPENROUTER_BASE_URL`` and ``OPENROUTER_ARCHIVE_DB`` override
the file. The management key is read from the environment variable named by
``openrouter.api_key_env`` or from a ``.env`` file in the working directory, never from
the TOML file, so that a config file can be shared or committed safely.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from etl.alerts.config import AlertConfigError, AlertsConfig, parse_alerts
from etl.errors import ConfigError

APP_NAME = "openrouter-archive"
CONFIG_ENV = "OPENROUTER_ARCHIVE_CONFIG"
BASE_URL_ENV = "OPENROUTER_BASE_URL"
DB_ENV = "OPENROUTER_ARCHIVE_DB"
# "off" (or 0/false/no) turns the Analytics API off whatever [sync] analytics_series says.
ANALYTICS_ENV = "OPENROUTER_ARCHIVE_ANALYTICS"


def _setting(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


# Plain frozen dataclasses, checked by parse_config(): every command reads the config, and
# a validation library would add its import time to each of them.
@dataclass(frozen=True)
class OpenRouterConfig:
    base_url: str = "https://openrouter.ai/api/v1"
    api_key_env: str = field(default="OPENROUTER_API_KEY", metadata={"required": True})
    # Total time of one attempt: connect, headers and body.
    timeout_seconds: float = _setting(30.0, gt=0)
    # 0: no count limit; retries end when max_retry_seconds is spent.
    max_attempts: int = _setting(0, ge=0, le=1000)
    max_retry_seconds: float = _setting(600.0, ge=0)
    backoff_initial: float = _setting(0.5, ge=0)
    backoff_multiplier: float = _setting(1.5, ge=1)
    backoff_max: float = _setting(60.0, ge=0)
    max_response_mb: int = _setting(128, ge=1)


@dataclass(frozen=True)
class WarehouseConfig:
    url: str = ""
    busy_timeout_seconds: float = _setting(30.0, ge=0)


BREAKDOWNS = ("key", "workspace", "member")
ANALYTICS_SERIES = ("account", "provider", "key", "app", "member", "workspace")


@dataclass(frozen=True)
class SyncConfig:
    refetch_days: int = _setting(2, ge=0, le=30)
    lock_timeout_seconds: float = _setting(120.0, ge=0)
    # Each breakdown costs requests: "key" one per API key, "workspace" one, "member" one
    # per id in `members`.
    breakdowns: tuple[str, ...] = field(default=(), metadata={"choices": BREAKDOWNS})
    members: tuple[str, ...] = ()
    concurrency: int = _setting(4, ge=1, le=32)
    pacing_seconds: float = _setting(0.0, ge=0)
    # The Analytics API (about 365 days of history): "account" (model x variant) and
    # "provider" (31 days, latency) by default; "key", "app", "member" (uses `members`),
    # "workspace" cost one request per subject. [] turns it off.
    analytics_series: tuple[str, ...] = field(default=("account", "provider"), metadata={"choices": ANALYTICS_SERIES})
    analytics_requests_per_minute: int = _setting(64, ge=1, le=10_000)
    analytics_concurrency: int = _setting(16, ge=1, le=64)
    analytics_row_limit: int = _setting(10_000, ge=1, le=10_000)


@dataclass(frozen=True)
class ScheduleConfig:
    sync_cron: str = "30 0 * * *"
    credits_cron: str = ""
    retry_delay_seconds: float = _setting(900.0, ge=0)
    max_retries: int = _setting(4, ge=0)
    # When `run` checks budgets and anomalies (also after every sync); empty means after syncs only.
    alerts_cron: str = "0 * * * *"


@dataclass(frozen=True)
class HealthConfig:
    stale_after_days: int = _setting(1, ge=0)
    window_margin_days: int = _setting(7, ge=0, le=30)


@dataclass(frozen=True)
class Config:
    openrouter: OpenRouterConfig = OpenRouterConfig()
    warehouse: WarehouseConfig = WarehouseConfig()
    sync: SyncConfig = SyncConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    health: HealthConfig = HealthConfig()
    alerts: AlertsConfig = AlertsConfig()
    # Where the settings came from, for messages; not a setting itself.
    source: str = field(default="built-in defaults", compare=False)

    @property
    def warehouse_url(self) -> str:
        return self.warehouse.url or default_warehouse_url()


_SECTIONS = {"openrouter": OpenRouterConfig, "warehouse": WarehouseConfig, "sync": SyncConfig, "schedule": ScheduleConfig, "health": HealthConfig}


def _check_value(value: object, kind: type, meta: Mapping[str, Any]) -> Any:
    """The value converted to ``kind``, or ValueError saying what is expected."""
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        choices = meta.get("choices")
        for v in value:
            if choices and v not in choices:
                raise ValueError(f"unknown value {v!r}; choose from: {', '.join(choices)}")
        return tuple(dict.fromkeys(value))
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        if meta.get("required") and not value.strip():
            raise ValueError("must not be empty")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}")
    number = kind(value)
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    if meta.get("gt") is not None and not number > meta["gt"]:
        raise ValueError(f"must be greater than {meta['gt']:g}, got {value!r}")
    if meta.get("ge") is not None and not number >= meta["ge"]:
        raise ValueError(f"must be at least {meta['ge']:g}, got {value!r}")
    if meta.get("le") is not None and not number <= meta["le"]:
        raise ValueError(f"must be at most {meta['le']:g}, got {value!r}")
    return number


def _section(cls: type, data: object, name: str, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: [{name}]: expected a table of settings")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in data.items():
        spec = known.get(key)
        if spec is None:
            raise ConfigError(f"{source}: [{name}] {key}: unknown setting")
        type_name = spec.type if isinstance(spec.type, str) else spec.type.__name__
        kind = tuple if type_name.startswith("tuple") else {"str": str, "int": int, "float": float}[type_name]
        try:
            values[key] = _check_value(value, kind, spec.metadata)
        except ValueError as exc:
            raise ConfigError(f"{source}: [{name}] {key}: {exc}") from None
    return cls(**values)


def parse_config(data: Mapping[str, object], source: str) -> Config:
    """Check a parsed TOML document; errors name the file, the key and the problem."""
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name == "alerts":  # arrays of tables and lists of tables: parsed by etl.alerts.config
            try:
                sections[name] = parse_alerts(value)
            except AlertConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
            continue
        cls = _SECTIONS.get(name)
        if cls is None:
            raise ConfigError(f"{source}: [{name}]: unknown section")
        sections[name] = _section(cls, value, name, source)
    return Config(**sections, source=source)


def default_warehouse_url() -> str:
    path = Path(platformdirs.user_data_dir(APP_NAME)) / "archive.db"
    return f"sqlite:///{path}"


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read, or None for built-in defaults.

    An explicitly named file must exist; the conventional locations are optional.
    """
    named = explicit or env.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    for candidate in (Path.cwd() / "config.toml", Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    data: dict[str, object] = {}
    source = "built-in defaults"
    if file is not None:
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    config = apply_env_overrides(parse_config(data, source), env)
    check_urls(config, env)
    return config


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def check_urls(config: Config, env: Mapping[str, str]) -> None:
    """Refuse URLs that cannot work, before any request or file is touched."""
    base = config.openrouter.base_url
    where = f"${BASE_URL_ENV}" if env.get(BASE_URL_ENV) else f"{config.source}: [openrouter] base_url"
    if not re.match(r"^https?://[^/]", base):
        raise ConfigError(f"{where}: expected an http:// or https:// URL, got {base!r}")
    url = config.warehouse_url
    where = f"${DB_ENV}" if env.get(DB_ENV) else f"{config.source}: [warehouse] url"
    if not _URL_SCHEME.match(url):
        absolute = Path(url).expanduser().resolve()
        raise ConfigError(f"{where}: {url!r} is a path, not a URL; for a SQLite file write sqlite:///{absolute}")
    from etl.db import sqlite_in_memory  # SQLAlchemy's URL parser: the commands that check URLs use it anyway

    if sqlite_in_memory(url):
        raise ConfigError(f"{where}: {url!r} is a database in memory, which keeps nothing; give a file, e.g. sqlite:////abs/path/archive.db")


def apply_env_overrides(config: Config, env: Mapping[str, str]) -> Config:
    if env.get(BASE_URL_ENV):
        config = replace(config, openrouter=replace(config.openrouter, base_url=env[BASE_URL_ENV]))
    if env.get(DB_ENV):
        config = replace(config, warehouse=replace(config.warehouse, url=env[DB_ENV]))
    if env.get(ANALYTICS_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        config = replace(config, sync=replace(config.sync, analytics_series=()))
    return config


def read_api_key(config: Config, env: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> str | None:
    """The management key from the environment, else from ./.env; None when neither has it."""
    env = os.environ if env is None else env
    name = config.openrouter.api_key_env
    key = env.get(name, "").strip()
    if key:
        return key
    dotenv_path = dotenv_path or Path.cwd() / ".env"
    if dotenv_path.is_file():
        from dotenv import dotenv_values

        value = dotenv_values(dotenv_path).get(name)
        if value and value.strip():
            return value.strip()
    return None
