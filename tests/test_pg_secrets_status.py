"""PostgreSQL: the password never shows; PGPASSWORD works; status has size, version, health."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


def test_the_password_never_appears_in_output_logs_or_errors(cli_env, run, pg_url, monkeypatch):
    password = make_url(pg_url).password
    assert password
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    results = [
        run("report"),  # before anything exists
        run("sql", "SELECT 1"),
        run("status"),
        run("-vv", "db", "upgrade"),
        run("-vv", "--log-format", "json", "backfill"),
        run("status", "--json"),
        run("status", "--check"),
        run("sql", "SELECT * FROM nowhere"),
        run("db", "copy", "--to", pg_url),
    ]
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", make_url(pg_url).set(port=1).render_as_string(hide_password=False))
    results += [run("sync"), run("status"), run("sql", "SELECT 1"), run("report")]  # the server cannot be reached
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", make_url(pg_url).set(password="wrong-" + password).render_as_string(hide_password=False))
    results += [run("sync"), run("sql", "SELECT 1")]
    everything = "".join(r.output for r in results)
    assert "migrated empty -> " in everything and "password authentication failed" in everything
    assert password not in everything
    assert all("Traceback" not in r.output for r in results)
    unreachable = results[-6]
    assert unreachable.exit_code == 1 and unreachable.stderr.count("\n") == 1, unreachable.output


@pytest.mark.slow
def test_the_password_can_come_from_pgpassword_or_pgpass(cli_env, pg_url, tmp_path):
    url = make_url(pg_url)
    bare = url.set(password=None).render_as_string(hide_password=False)
    env = {**cli_env, "OPENROUTER_ARCHIVE_DB": bare, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "etl", "sync"], env={**env, "PGPASSWORD": url.password}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pgpass = tmp_path / ".pgpass"
    pgpass.write_text(f"{url.host}:{url.port}:{url.database}:{url.username}:{url.password}\n")
    pgpass.chmod(0o600)
    done = subprocess.run([sys.executable, "-m", "etl", "status", "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert url.password not in done.stdout + done.stderr


def test_status_shows_size_version_and_amcheck(cli_env, run, pg_url, monkeypatch):
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("backfill").exit_code == 0
    without = run("status", "--check")
    assert without.exit_code == 0, without.output
    assert "server        PostgreSQL 1" in without.stdout and " MiB)" in without.stdout.splitlines()[0]
    assert "integrity     not checked: the amcheck extension is not installed" in without.stdout
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION amcheck")
    engine.dispose()
    checked = run("status", "--check")
    assert checked.exit_code == 0 and "integrity     ok (amcheck)" in checked.stdout, checked.output
    report = json.loads(run("status", "--json", "--check").stdout)
    assert report["warehouse_bytes"] > 1_000_000 and report["server_version"].startswith("1")
    assert report["integrity"] == [] and report["integrity_check"] == "amcheck"
