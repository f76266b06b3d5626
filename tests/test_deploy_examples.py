"""Issue 9 item 9: the documented cron set-up works the way cron runs it.

Each command line of ``scripts/deploy/crontab.example`` runs under ``env -i`` with only
what cron gives a job (``SHELL``, ``HOME``, ``LOGNAME``, ``PATH=/usr/bin:/bin``), through
``/bin/sh -c``, with the example's paths pointed at this installation and a temporary
environment file.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import KEY, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from reliability_report import EXAMPLE_BINARY, EXAMPLE_ENV_FILE, cron_commands, cron_set_up, run_like_cron  # noqa: E402


@pytest.fixture
def installed(tmp_path: Path, api) -> tuple[Path, Path, dict[str, str]]:
    binary = Path(sys.executable).parent / "openrouter-archive"
    if not binary.exists():
        pytest.skip(f"no console script at {binary}")
    db = tmp_path / "var" / "archive.db"
    env_file = tmp_path / "openrouter-archive.env"
    example = (REPO_ROOT / "scripts" / "deploy" / "openrouter-archive.env.example").read_text()
    # The example file, filled in the way its comments tell an administrator to.
    filled = example.replace("sk-or-v1-replace-me", KEY).replace(
        "# OPENROUTER_ARCHIVE_DB=sqlite:////var/lib/openrouter-archive/archive.db", f"OPENROUTER_ARCHIVE_DB=sqlite:///{db}"
    )
    assert filled != example
    env_file.write_text(filled + f"OPENROUTER_BASE_URL={api.base_url}\n")
    env_file.chmod(0o600)
    replacements = {EXAMPLE_BINARY: str(binary), EXAMPLE_ENV_FILE: str(env_file)}
    return db, tmp_path, replacements


def test_the_crontab_lines_sync_and_check_the_configured_warehouse(installed: tuple[Path, Path, dict[str, str]]) -> None:
    db, home, replacements = installed
    sync_line, health_line = cron_commands()
    for old, new in replacements.items():
        sync_line, health_line = sync_line.replace(old, new), health_line.replace(old, new)
    assert str(replacements[EXAMPLE_BINARY]) in sync_line and str(replacements[EXAMPLE_ENV_FILE]) in sync_line

    synced = run_like_cron(sync_line, home)
    assert synced.returncode == 0, synced.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM archived_days").fetchone()[0] == 30

    checked = run_like_cron(health_line, home)
    assert checked.returncode == 0 and checked.stdout == "" and checked.stderr == "", checked  # healthy: cron mails nothing

    # And it is the configured warehouse that was checked: an unhealthy one makes it speak.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM activity")
        conn.execute("DELETE FROM archived_days")
    alarmed = run_like_cron(health_line, home)
    assert "needs attention" in alarmed.stdout + alarmed.stderr
    assert not (home / ".local" / "share" / "openrouter-archive" / "archive.db").exists()  # the default was never used


def test_the_systemd_units_read_the_same_environment_file() -> None:
    deploy = REPO_ROOT / "scripts" / "deploy"
    for unit in ("openrouter-archive.service", "openrouter-archive-sync.service"):
        assert f"EnvironmentFile={EXAMPLE_ENV_FILE}" in (deploy / unit).read_text(), unit



def test_the_report_row_for_the_cron_set_up() -> None:
    row = cron_set_up()
    assert row.ok and row.rows_lost == 0, row
