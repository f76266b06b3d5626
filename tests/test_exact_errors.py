"""Issue 9 item 8: every database failure and bad setting is one clear line, never a traceback.

Real faults on real files: a corrupted page, a full disk (a tiny tmpfs, where the machine
lets us mount one), a read-only file, a warehouse locked by another process; and settings
that cannot work, refused before any request is sent.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KEY

FAST = "[openrouter]\nmax_attempts = 2\nmax_retry_seconds = 5\nbackoff_initial = 0.01\nbackoff_max = 0.02\n"


def cli(tmp_path: Path, api_url: str, db: str, *args: str, config: str = FAST) -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.toml").write_text(config)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "OPENROUTER_API_KEY": KEY,
        "OPENROUTER_BASE_URL": api_url, "OPENROUTER_ARCHIVE_DB": db, "OPENROUTER_ARCHIVE_CONFIG": str(tmp_path / "config.toml"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    return subprocess.run([sys.executable, "-m", "etl", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def assert_one_clean_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    for bad in ("Traceback", "[SQL:", "[parameters:", "unexpected", "sqlalchemy", "Background on this error"):
        assert bad not in result.stderr, result.stderr
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def archived(tmp_path: Path, api) -> Path:
    db = tmp_path / "archive.db"
    assert cli(tmp_path, api.base_url, f"sqlite:///{db}", "backfill", "--days", "5").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def _pages_of(db: Path, name: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,))]


def _scribble(db: Path, pages: list[int]) -> None:
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * page_size)
            handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))


@pytest.mark.parametrize("command", [("sync",), ("status",), ("report", "-g", "model"), ("credits",), ("backfill", "--days", "2")])
def test_a_corrupted_file_is_one_line_naming_the_warehouse(tmp_path: Path, api, archived: Path, command: tuple[str, ...]) -> None:
    _scribble(archived, [p for p in range(2, 12)])
    result = cli(tmp_path, api.base_url, f"sqlite:///{archived}", *command)
    assert_one_clean_line(result, str(archived), "damaged")


def test_status_check_finds_a_damaged_index(tmp_path: Path, api, archived: Path) -> None:
    pages = _pages_of(archived, "ix_activity_model_date")
    assert pages
    healthy = cli(tmp_path, api.base_url, f"sqlite:///{archived}", "status", "--check")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    _scribble(archived, pages)
    checked = cli(tmp_path, api.base_url, f"sqlite:///{archived}", "status", "--check")
    assert checked.returncode == 1
    assert "damaged" in checked.stdout and "quick_check" in checked.stdout
    assert "Traceback" not in checked.stderr


@pytest.fixture
def read_only(archived: Path) -> Iterator[Path]:
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(archived)], capture_output=True).returncode:
            pytest.skip("root, and no chattr to make the file read-only")
        try:
            yield archived
        finally:
            subprocess.run(["chattr", "-i", str(archived)], check=True)
    else:
        archived.chmod(0o444)
        yield archived


def test_a_read_only_warehouse_is_one_line(tmp_path: Path, api, read_only: Path) -> None:
    before = read_only.read_bytes()
    result = cli(tmp_path, api.base_url, f"sqlite:///{read_only}", "backfill", "--days", "2")
    assert_one_clean_line(result, str(read_only), "read-only")
    assert read_only.read_bytes() == before


def test_a_locked_warehouse_is_one_line(tmp_path: Path, api, archived: Path) -> None:
    holder = sqlite3.connect(archived, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        config = FAST + "[warehouse]\nbusy_timeout_seconds = 0.2\n"
        result = cli(tmp_path, api.base_url, f"sqlite:///{archived}", "credits", config=config)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_clean_line(result, str(archived), "locked")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the full-disk case needs one")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_keeps_what_was_committed(tmp_path: Path, tiny_disk: Path) -> None:
    from etl.standin import Dataset, StandIn

    db = tiny_disk / "archive.db"
    with StandIn(management_key=KEY, dataset=Dataset(endpoints_per_day=400)) as api:
        result = cli(tmp_path, api.base_url, f"sqlite:///{db}", "backfill")
    assert_one_clean_line(result, str(db), "full")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        unmarked = conn.execute("SELECT count(*) FROM activity WHERE date NOT IN (SELECT date FROM archived_days)").fetchone()[0]
        assert unmarked == 0


def test_the_daemon_logs_one_line_for_a_database_error(tmp_path: Path, api, archived: Path) -> None:
    _scribble(archived, [p for p in range(2, 12)])
    (tmp_path / "config.toml").write_text(FAST)
    env = {**os.environ, "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url,
           "OPENROUTER_ARCHIVE_DB": f"sqlite:///{archived}", "OPENROUTER_ARCHIVE_CONFIG": str(tmp_path / "config.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "etl", "run", "--interval-seconds", "0.2"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(20, proc.kill)
    timer.start()
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        timer.cancel()
    assert "Traceback" not in stderr and "[SQL:" not in stderr, stderr
    assert any("damaged" in line and str(archived) in line for line in stderr.splitlines()), stderr


# -- settings that cannot work, refused before any request ---------------------------------


@pytest.mark.parametrize(
    ("config", "db", "needle"),
    [
        ("[openrouter]\ntimeout_seconds = inf\n", None, "[openrouter] timeout_seconds"),
        ("[openrouter]\nmax_retry_seconds = nan\n", None, "[openrouter] max_retry_seconds"),
        ('[openrouter]\napi_key_env = ""\n', None, "[openrouter] api_key_env"),
        ("base_url=openrouter.ai/api/v1", None, "$OPENROUTER_BASE_URL: expected an http"),
        ("base_url=ftp://openrouter.ai/api/v1", None, "$OPENROUTER_BASE_URL: expected an http"),
        ("", "/var/lib/archive.db", "sqlite:////var/lib/archive.db"),
        ('[warehouse]\nurl = "archive.db"\n', "", "sqlite:///"),
        ("", "sqlite://", "in memory"),
        ("", "sqlite:///:memory:", "in memory"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_request(tmp_path: Path, api, config: str, db: str | None, needle: str) -> None:
    url = db if db is not None else f"sqlite:///{tmp_path / 'archive.db'}"
    base_url = api.base_url
    if config.startswith("base_url="):
        base_url, config = config.removeprefix("base_url="), ""
    result = cli(tmp_path, base_url, url, "sync", config=config)
    assert result.returncode == 2, result
    line = assert_one_clean_line(result, needle)
    assert KEY not in line
    assert [r for r in api.requests if r.path.startswith("/api/")] == []


def test_a_cron_expression_that_never_fires_is_a_configuration_error(tmp_path: Path, api) -> None:
    config = FAST + '[schedule]\nsync_cron = "30 0 31 2 *"\n'
    result = cli(tmp_path, api.base_url, f"sqlite:///{tmp_path / 'archive.db'}", "run", config=config)
    assert result.returncode == 2
    assert_one_clean_line(result, "sync_cron", "never")
    assert [r for r in api.requests if r.path.startswith("/api/")] == []


@pytest.mark.slow
def test_the_report_row_for_database_failures() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from reliability_report import database_failures

    row = database_failures()
    assert row.ok and row.rows_lost == 0, row
