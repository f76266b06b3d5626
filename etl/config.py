"""Typed configuration: a TOML file, environment overrides, built-in defaults.

Lookup order for the file: ``--config PATH``, ``$OPENROUTER_ARCHIVE_CONFIG``,
``./config.toml``, ``<user config dir>/openrouter-archive/config.toml``; with none of them
the defaults below apply. ``OPENROUTER_BASE_URL`` and ``OPENROUTER_ARCHIVE_DB`` override
the file. The management key is read from the environment variable named by
``openrouter.api_key_env`` or from a ``.env`` file in the working directory, never from
the TOML file, so that a config file can be shared or committed safely.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etl.errors import ConfigError

APP_NAME = "openrouter-archive"
CONFIG_ENV = "OPENROUTER_ARCHIVE_CONFIG"
BASE_URL_ENV = "OPENROUTER_BASE_URL"
DB_ENV = "OPENROUTER_ARCHIVE_DB"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenRouterConfig(_Section):
    base_url: str = "https://openrouter.ai/api/v1"
    api_key_env: str = Field(default="OPENROUTER_API_KEY", min_length=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=100)
    max_retry_seconds: float = Field(default=300.0, ge=0)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_multiplier: float = Field(default=1.5, ge=1)
    backoff_max: float = Field(default=60.0, ge=0)
    max_response_mb: int = Field(default=128, ge=1)


class WarehouseConfig(_Section):
    url: str = ""


class SyncConfig(_Section):
    refetch_days: int = Field(default=2, ge=0, le=30)
    lock_timeout_seconds: float = Field(default=120.0, ge=0)


class ScheduleConfig(_Section):
    sync_cron: str = "30 0 * * *"
    credits_cron: str = ""
    retry_delay_seconds: float = Field(default=900.0, ge=0)
    max_retries: int = Field(default=4, ge=0)


class HealthConfig(_Section):
    stale_after_days: int = Field(default=1, ge=0)
    window_margin_days: int = Field(default=7, ge=0, le=30)


class Config(_Section):
    openrouter: OpenRouterConfig = OpenRouterConfig()
    warehouse: WarehouseConfig = WarehouseConfig()
    sync: SyncConfig = SyncConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    health: HealthConfig = HealthConfig()
    # Where the settings came from, for `status`; not a setting itself.
    source: str = Field(default="built-in defaults", exclude=True)

    @property
    def warehouse_url(self) -> str:
        return self.warehouse.url or default_warehouse_url()


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


def parse_config(data: Mapping[str, object], source: str) -> Config:
    """Validate a parsed TOML document; errors name the file, the key and the problem."""
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        key = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else loc[0] if loc else "?"
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{source}: {key}: {msg}") from None


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
    config = parse_config(data, source)
    return apply_env_overrides(config, env)


def apply_env_overrides(config: Config, env: Mapping[str, str]) -> Config:
    updates: dict[str, BaseModel] = {}
    if env.get(BASE_URL_ENV):
        updates["openrouter"] = config.openrouter.model_copy(update={"base_url": env[BASE_URL_ENV]})
    if env.get(DB_ENV):
        updates["warehouse"] = config.warehouse.model_copy(update={"url": env[DB_ENV]})
    return config.model_copy(update=updates) if updates else config


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
