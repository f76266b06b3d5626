"""The Analytics API's progress bar: on a terminal's stderr only, never in cron mail or logs.

The real CLI against the stand-in over loopback: in-process with click's runner (no
terminal), and in a subprocess whose stderr is a pseudo-terminal (``pty``), as a user at a
terminal runs it with stdout piped or redirected.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading

import pytest

from conftest import FAST_CONFIG, KEY
from etl.render import DayPrinter
from etl.standin import Dataset, StandIn
from etl.window import utc_today

ESCAPE = re.compile(r"\x1b\[")


@pytest.fixture
def server():
    dataset = Dataset(anchor=utc_today(), keys=2, endpoints_per_day=3, first_key_age_days=400)
    with StandIn(dataset, management_key=KEY, latency=0.05) as s:
        yield s


def _environment(server, tmp_path) -> dict[str, str]:
    (tmp_path / "config.toml").write_text(FAST_CONFIG + '[sync]\nanalytics_series = ["account", "provider", "key"]\n')
    return {
        **os.environ,
        "OPENROUTER_API_KEY": KEY,
        "OPENROUTER_BASE_URL": server.base_url,
        "OPENROUTER_ARCHIVE_DB": f"sqlite:///{tmp_path / 'archive.db'}",
        "OPENROUTER_ARCHIVE_CONFIG": str(tmp_path / "config.toml"),
        "OPENROUTER_ARCHIVE_ANALYTICS": "on",
        "TERM": "xterm-256color",
        "COLUMNS": "100",
    }


def test_no_bar_off_a_terminal(server, tmp_path, monkeypatch, run):
    for name, value in _environment(server, tmp_path).items():
        monkeypatch.setenv(name, value)
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert "analytics account: 365 day(s) archived" in result.stdout
    assert not ESCAPE.search(result.stdout) and not ESCAPE.search(result.stderr)
    assert "━" not in result.output  # rich's bar


def test_the_printer_asks_stderr_and_quiet():
    # Under pytest, stderr is captured (not a terminal): no bar, and the calls are no-ops.
    printer = DayPrinter(30)
    assert printer.analytics_bar is sys.stderr.isatty()
    with printer:
        printer.planned("account", 365)
        printer.fetched("account", 365)
        printer.loaded("account")
    assert DayPrinter(30, quiet=True).analytics_bar is False


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its end
            return
        if not chunk:
            return
        into.append(chunk)


def test_a_bar_on_a_terminal_shows_the_series_and_days(server, tmp_path):
    parent, child = pty.openpty()
    received: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(parent, received), daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "etl", "sync"], env=_environment(server, tmp_path), cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child, timeout=300,
        )
    finally:
        os.close(child)
        reader.join(timeout=10)
        os.close(parent)
    terminal = b"".join(received).decode(errors="replace")
    out = done.stdout.decode()
    assert done.returncode == 0, out + terminal
    # The bar: one task per series, counting (subject, day) pairs: 365 days, 31, 2 keys x 365.
    for series, days in (("account", 365), ("provider", 31), ("key", 730)):
        assert re.search(rf"analytics {series}\b.*?{days}", terminal, re.S), (series, terminal[-2000:])
    assert "━" in terminal
    # stdout (piped) keeps the plain lines, with no terminal codes.
    assert "analytics key: 2 subject(s), 730 day(s) archived" in out
    assert not ESCAPE.search(out)
    # ... and a line per /activity day, although the series (fetched from the start of the
    # run) have had their bar on stderr since before the first day was written.
    assert len(re.findall(r"^\d{4}-\d\d-\d\d  archived ", out, re.M)) == 30, out
