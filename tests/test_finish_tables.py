"""Issue 14, step 1: tables fit the terminal, rows add up to the total, exports carry exact amounts."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.export import cents_adding_up, parse_columns, resolve_metric
from etl.errors import BadArgument


@pytest.fixture
def archive(cli_env, run, warehouse_url):
    assert run("backfill").exit_code == 0
    return warehouse_url.removeprefix("sqlite:///")


def raw(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def money(cell: str) -> Decimal:
    return Decimal(cell.replace("$", "").replace(",", ""))


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=40))
def test_largest_remainder_cents_add_up_to_the_rounded_total(values):
    import math

    total = math.fsum(values)
    cents, total_cents = cents_adding_up(values, total)
    assert sum(cents) == total_cents
    assert f"{total_cents / 100:.2f}" == f"{total:.2f}"
    for c, v in zip(cents, values):
        assert abs(c - v * 100) < 1 + 1e-6  # each shown value is less than a cent off


def test_the_classic_thirds_add_up():
    assert cents_adding_up([1 / 3, 1 / 3, 1 / 3], 1.0) == ([34, 33, 33], 100)


def test_table_rows_add_up_to_the_total_row(run, archive, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    out = run("report", "-g", "date,model", "--columns", "spend,byok").stdout
    lines = [line for line in out.splitlines() if "│" in line]
    body = [line.split("│") for line in lines if not line.strip().startswith("total")]
    total = next(line.split("│") for line in lines if line.strip().startswith("total"))
    for col in (2, 3):
        assert sum(money(cells[col].strip()) for cells in body) == money(total[col].strip())
    (usage,), = raw(archive, "SELECT sum(usage) FROM activity")
    assert money(total[2].strip()) == Decimal(f"{usage:.2f}")


def test_an_80_column_terminal_drops_low_priority_columns_with_a_note(run, archive, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run("report", "-g", "provider")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    header = lines[0]
    assert "spend" in header and "BYOK spend" in header
    assert "note: left out to fit the terminal:" in result.stderr and "--columns" in result.stderr
    dropped = result.stderr.split("terminal:")[1].split("(")[0]
    assert "reasoning tok" in dropped and "spend" not in dropped.replace("BYOK", "")
    # spend in full: the totals row carries the exact cents
    (usage,), = raw(archive, "SELECT sum(usage) FROM activity")
    total = next(line for line in lines if line.strip().startswith("total"))
    assert f"${usage:,.2f}" in total and "…" not in total


def test_a_wide_terminal_shows_every_column_and_no_note(run, archive, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    result = run("report", "-g", "provider")
    assert "reasoning tok" in result.stdout and "note: left out" not in result.stderr


def test_columns_picks_the_columns_by_name_or_label(run, archive, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    header = run("report", "-g", "model", "--columns", "spend,requests,total_tokens").stdout.splitlines()[0]
    assert [h.strip() for h in header.split("┃")] == ["model", "spend", "requests", "total tok"]
    bad = run("report", "--columns", "vibes")
    assert bad.exit_code == 2 and "unknown column 'vibes'" in bad.stderr


def test_metric_names_resolve_from_labels():
    assert resolve_metric("spend") == "usage"
    assert resolve_metric("BYOK spend") == "byok_usage_inference"
    assert resolve_metric("prompt_tok") == "prompt_tokens"
    assert parse_columns("usage, requests ,usage") == ("usage", "requests")
    with pytest.raises(BadArgument):
        parse_columns(",")


def test_csv_and_json_carry_amounts_without_float_noise(run, archive):
    by_group = dict(raw(archive, "SELECT provider_name, sum(usage) FROM activity GROUP BY 1"))
    rows = json.loads(run("report", "-g", "provider", "-f", "json").stdout)
    text = run("report", "-g", "provider", "-f", "csv").stdout
    for row in rows:
        for metric in ("usage", "byok_usage_inference"):
            digits = repr(row[metric]).partition(".")[2]
            assert len(digits) <= 9, row
        assert row["usage"] == round(by_group[row["provider"]], 9)
    for row in csv.DictReader(io.StringIO(text)):
        assert len(row["usage"].partition(".")[2]) <= 9


@pytest.mark.slow
def test_reliability_check_shown_amounts_add_up():
    import sys

    from tests.conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from reliability_report import shown_amounts_add_up
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    row = shown_amounts_add_up()
    assert row.ok and row.rows_lost == 0, row
