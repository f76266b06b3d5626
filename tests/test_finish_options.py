"""Issue 14, step 3: `report -o` files get the user's umask; --sort/--metric take the table's names."""

from __future__ import annotations

import json
import os
import stat

import pytest


@pytest.fixture
def archive(cli_env, run, warehouse_url):
    assert run("backfill").exit_code == 0
    return warehouse_url.removeprefix("sqlite:///")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "pdf"])
def test_output_files_get_the_umask_not_0600(run, archive, tmp_path, umask_022, fmt):
    target = tmp_path / f"out.{fmt}"
    assert run("report", "-g", "year", "-f", fmt, "-o", str(target)).exit_code == 0  # one group: one PDF page to draw
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_an_overwritten_output_keeps_its_mode(run, archive, tmp_path, umask_022):
    target = tmp_path / "out.csv"
    target.write_text("old")
    target.chmod(0o640)
    assert run("report", "-f", "csv", "-o", str(target)).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() != "old"


def test_sort_and_metric_accept_the_table_names(run, archive):
    by_spend = run("report", "-g", "model", "--sort", "spend", "-f", "json")
    assert by_spend.exit_code == 0, by_spend.stderr
    spends = [r["usage"] for r in json.loads(by_spend.stdout)]
    assert spends == sorted(spends, reverse=True)
    by_requests = json.loads(run("report", "-g", "model", "--sort", "requests", "--asc", "-f", "json").stdout)
    assert [r["requests"] for r in by_requests] == sorted(r["requests"] for r in by_requests)
    chart = run("report", "-g", "provider", "--chart", "--metric", "spend")
    assert chart.exit_code == 0 and "spend by provider" in chart.stdout
    tokens = run("report", "-g", "provider", "--chart", "--metric", "total_tok")
    assert tokens.exit_code == 0 and "total tok by provider" in tokens.stdout
    bad = run("report", "--sort", "vibes")
    assert bad.exit_code == 2 and "unknown sort 'vibes'" in bad.stderr and "spend" in bad.stderr


def test_help_lists_the_metric_choices(run):
    text = " ".join(run("report", "--help").stdout.split())
    assert "group, spend, byok_spend, requests" in text
    assert "[default: spend]" in text
