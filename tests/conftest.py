from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def query(url: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the warehouse at ``url``, read the plain way, apart from the code under test."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path, monkeypatch):
    """No test reads the developer's config, data dir, .env or key."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "OPENROUTER_ARCHIVE_DB", "OPENROUTER_ARCHIVE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    # The Analytics API (on by default) is off here, so that tests of /activity count only
    # /activity's requests and faults; tests/test_analytics_*.py turn it on.
    monkeypatch.setenv("OPENROUTER_ARCHIVE_ANALYTICS", "off")


KEY = "sk-or-v1-test-management-5f2c0c4b9e1d4a7f8b3e6d2a1c0f9e8d"
INFERENCE_KEY = "sk-or-v1-test-inference-0a1b2c3d4e5f60718293a4b5c6d7e8f9"

# Retries fast enough for tests, still several attempts deep.
FAST_CONFIG = """
[openrouter]
timeout_seconds = 2.0
max_attempts = 5
max_retry_seconds = 30
backoff_initial = 0.01
backoff_max = 0.05
"""


@pytest.fixture
def api():
    from etl.standin import StandIn

    with StandIn(management_key=KEY, inference_key=INFERENCE_KEY) as server:
        yield server


@pytest.fixture
def warehouse_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'archive.db'}"


@pytest.fixture
def cli_env(api, warehouse_url, tmp_path, monkeypatch):
    """The environment a user would set: key, base URL, warehouse, a config file."""
    (tmp_path / "config.toml").write_text(FAST_CONFIG)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", api.base_url)
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", warehouse_url)
    return {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url, "OPENROUTER_ARCHIVE_DB": warehouse_url}


@pytest.fixture
def run():
    """Invoke the real CLI in-process; returns click's Result (stdout and stderr apart)."""
    from click.testing import CliRunner

    from etl.cli import cli

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke
