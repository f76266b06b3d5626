from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.pool import NullPool

REPO_ROOT = Path(__file__).resolve().parent.parent


def query(url: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the warehouse at ``url``, read the plain way, apart from the code under test."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, poolclass=NullPool)
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
    # Hundreds of tests start `python -m etl`. Where the environment forbids writing
    # bytecode (some containers set PYTHONDONTWRITEBYTECODE), each of them would compile
    # the package from source again (about 0.15 s of CPU apiece on a fresh clone).
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)


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


# -- the warehouse: SQLite, and PostgreSQL for tests marked both_backends ----------------

PG_ENV = "OPENROUTER_ARCHIVE_TEST_PG"
PG_HOWTO = (
    f"PostgreSQL tests need a server: `eval \"$(scripts/ci_postgres.sh start)\"` (after "
    f"`sudo scripts/ci_postgres.sh install`) sets ${PG_ENV}, or set it to "
    "postgresql+psycopg://USER:PASSWORD@127.0.0.1:5432/postgres of a role that may CREATE DATABASE; "
    "and `pip install -e '.[test,postgresql]'`"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_generate_tests(metafunc):
    marked = metafunc.definition.get_closest_marker("both_backends") and not metafunc.definition.get_closest_marker("sqlite_only")
    if "warehouse_backend" in metafunc.fixturenames and marked:
        metafunc.parametrize("warehouse_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the test PostgreSQL server; skips without one (fails in CI: never skip there)."""
    url = os.environ.get(PG_ENV)
    problem = None
    if not url:
        problem = f"${PG_ENV} is not set"
    else:
        try:
            import psycopg  # noqa: F401

            query(url, "SELECT 1")
        except ImportError:
            problem = "psycopg is not installed"
        except Exception as exc:  # the server is down or the URL is wrong
            problem = f"cannot connect to ${PG_ENV}: {type(exc).__name__}"
    if problem:
        if _in_ci() or url:
            pytest.fail(f"{problem}; CI must run the PostgreSQL tests. {PG_HOWTO}")
        pytest.skip(f"{problem}. {PG_HOWTO}")
    return url


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def warehouse_backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def warehouse_url(warehouse_backend, tmp_path, request) -> str:
    if warehouse_backend == "postgresql":
        return request.getfixturevalue("pg_url")
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
