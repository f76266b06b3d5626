"""The reliability report's row for the Analytics API: a year recovered exactly, nothing lost."""

from __future__ import annotations

import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import reliability_report as rr  # noqa: E402


def test_a_year_of_history_is_recovered_with_no_row_lost(monkeypatch):
    monkeypatch.delenv("OPENROUTER_ARCHIVE_ANALYTICS")  # the CLI subprocesses inherit the environment
    row = rr.year_of_history_recovered()
    assert row.ok, row
    assert row.rows_lost == 0
    assert "365 of 365 days marked" in row.result
