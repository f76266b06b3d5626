"""Issue 14, step 5: empty statements, statements without columns, empty reports and PNGs
say there is nothing to show; `sql` output goes through etl/export.py's shared formats."""

from __future__ import annotations

import csv
import io
import json

import pytest


@pytest.fixture
def archive(cli_env, run, warehouse_url):
    assert run("backfill").exit_code == 0
    return warehouse_url.removeprefix("sqlite:///")


@pytest.fixture
def empty_archive(cli_env, run):
    assert run("db", "upgrade").exit_code == 0


@pytest.mark.parametrize("statement", ["", "   \n"])
def test_an_empty_statement_is_a_clear_error(run, archive, statement):
    result = run("sql", statement)
    assert result.exit_code == 2 and "the statement is empty" in result.stderr and result.stdout == ""


def test_a_statement_without_columns_says_so(run, archive):
    result = run("sql", "/* only a comment */")
    assert result.exit_code == 0 and "returned no columns: nothing to show" in result.stderr and result.stdout == ""


def test_report_on_an_empty_archive_says_nothing_to_show(run, empty_archive):
    result = run("report", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "nothing to show: the archive holds no activity yet" in result.stderr


def test_an_empty_png_is_not_written(run, archive, tmp_path):
    target = tmp_path / "chart.png"
    result = run("report", "--since", "2001-01-01", "--until", "2001-01-31", "-f", "png", "-o", str(target))
    assert result.exit_code == 0
    assert "nothing to show: no activity archived from 2001-01-01 to 2001-01-31" in result.stderr
    assert "no PNG written" in result.stderr and not target.exists()


def test_sql_formats_and_output_file(run, archive, tmp_path):
    statement = "SELECT provider_name, count(*) AS n, NULL AS empty_cell FROM activity GROUP BY 1 ORDER BY 1"
    as_json = json.loads(run("sql", statement, "-f", "json").stdout)
    as_csv = list(csv.DictReader(io.StringIO(run("sql", statement, "-f", "csv").stdout)))
    as_nd = [json.loads(line) for line in run("sql", statement, "-f", "ndjson").stdout.splitlines()]
    assert [r["provider_name"] for r in as_json] == [r["provider_name"] for r in as_csv] == [r["provider_name"] for r in as_nd]
    assert as_json[0]["empty_cell"] is None and as_csv[0]["empty_cell"] == ""
    target = tmp_path / "out.csv"
    assert run("sql", statement, "-f", "csv", "-o", str(target)).exit_code == 0
    assert target.read_text() == run("sql", statement, "-f", "csv").stdout
    table = run("sql", statement).stdout
    assert "NULL" in table and "provider_name" in table
