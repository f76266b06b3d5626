"""Issue 9 item 7: no byte of the key reaches the warehouse, even when the API echoes it.

A real HTTP server on loopback answers with error bodies that repeat the request's
``Authorization`` header (some proxies and debugging gateways do); the key must not be
stored in ``sync_runs`` nor printed by ``status``, a process that never saw it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import KEY, query
from etl.logs import redact

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability_report as rr  # noqa: E402

FAST = "[openrouter]\nmax_attempts = 2\nmax_retry_seconds = 5\nbackoff_initial = 0.01\nbackoff_max = 0.02\n"


@pytest.mark.parametrize("status", [500, 400])
def test_an_echoed_key_is_never_stored_nor_shown(tmp_path: Path, status: int) -> None:
    db = tmp_path / "archive.db"
    with rr.echoing_api(status) as url:
        synced = rr.run_cli(tmp_path, url, db, "sync", config=FAST)
        shown = rr.run_cli(tmp_path, url, db, "status", key=None, config=FAST)  # a process that never had the key
    assert synced.returncode == 1
    assert KEY not in synced.stdout + synced.stderr
    assert "Bearer ***" in synced.stderr  # the message is still there, with the key masked

    stored = query(f"sqlite:///{db}", "SELECT error FROM sync_runs")
    assert stored and all(KEY not in (error or "") for (error,) in stored)
    assert "Authorization: Bearer ***" in stored[0][0]
    assert KEY not in shown.stdout + shown.stderr

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path  # the database file, its WAL, the lock


@pytest.mark.slow
def test_the_report_row_finds_no_leak() -> None:
    row = rr.key_echoed_by_the_api()
    assert row.ok and row.rows_lost == 0, row


def test_token_shapes_are_masked_even_when_not_registered() -> None:
    never_registered = "sk-or-v1-" + "ab12" * 16
    assert never_registered not in redact(f"echo: {never_registered}.")
    assert redact("Authorization: Bearer abc.DEF-123_xyz") == "Authorization: Bearer ***"
    assert redact("bearer eyJhbGciOi.J9") == "bearer ***"
    # A masked label as /keys gives it is not a secret and stays readable.
    assert redact("label sk-or-v1-0e6...1c96") == "label sk-or-v1-0e6...1c96"
