"""Numbers on PostgreSQL: ints for counts, floats for money, equal to SQLite's to the cent.

PostgreSQL's sum(bigint) is numeric, which psycopg returns as Decimal: JSON refused it and
the charts choked on it. The same stand-in data is archived into both engines and every
report format, the views and status are compared.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from etl.query import METRICS, MONEY

GROUPS = ["month,model", "date", "provider", "week"]


@pytest.fixture
def both(cli_env, run, pg_url, tmp_path, monkeypatch):
    """The same account archived on SQLite and on PostgreSQL; switch(engine) points the CLI at one."""
    urls = {"sqlite": cli_env["OPENROUTER_ARCHIVE_DB"], "postgresql": pg_url}
    for url in urls.values():
        monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", url)
        assert run("backfill").exit_code == 0

    def switch(engine: str) -> str:
        monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", urls[engine])
        return urls[engine]

    return switch


def on(both, run, engine, *args):
    both(engine)
    result = run(*args)
    assert result.exit_code == 0, (engine, args, result.output)
    return result


def assert_same_numbers(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            if k in MONEY or k in ("spend_usd", "byok_spend_usd"):
                assert isinstance(x[k], float) and isinstance(y[k], float), k
                assert round(x[k], 2) == round(y[k], 2) and x[k] == pytest.approx(y[k], abs=1e-9)
            elif k in METRICS or k in ("requests", "total_tokens", "days_with_activity", "prompt_tokens"):
                assert type(x[k]) is int and type(y[k]) is int, (k, x[k], y[k])
                assert x[k] == y[k], k
            else:
                assert x[k] == y[k], k


def test_json_and_ndjson_agree_across_engines(both, run):
    for group_by in GROUPS:  # one pair of archives for all (a backfill each would be slow)
        for fmt in ("json", "ndjson"):
            out = {}
            for engine in ("sqlite", "postgresql"):
                text = on(both, run, engine, "report", "-g", group_by, "-f", fmt).stdout
                out[engine] = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
            assert_same_numbers(out["sqlite"], out["postgresql"])


def test_table_csv_and_chart_agree_across_engines(both, run):
    for args in (["-g", "provider"], ["-g", "month,model", "--top", "3"], ["-g", "date", "--chart", "--metric", "requests"],
                 ["-g", "model", "--chart", "--metric", "total_tokens"]):
        tables = [on(both, run, e, "report", *args).stdout for e in ("sqlite", "postgresql")]
        assert tables[0] == tables[1], args
    rows = [list(csv.DictReader(io.StringIO(on(both, run, e, "report", "-g", "month,model", "-f", "csv").stdout))) for e in ("sqlite", "postgresql")]
    for x, y in zip(*rows):
        for m in METRICS:
            if m in MONEY:
                assert round(float(x[m]), 2) == round(float(y[m]), 2)
            else:
                assert x[m] == y[m] and y[m].isdigit(), (m, y[m])  # "123", never "123.0" or a Decimal repr


@pytest.mark.slow
def test_pdf_and_png_with_count_metrics(cli_env, run, pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", pg_url)
    assert run("backfill").exit_code == 0
    pdf, png = tmp_path / "r.pdf", tmp_path / "c.png"
    result = run("report", "-g", "provider", "--top", "3", "-f", "pdf", "-o", str(pdf), "--metric", "requests")
    assert result.exit_code == 0, result.output
    result = run("report", "-g", "date", "-f", "png", "-o", str(png), "--metric", "total_tokens")
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")


def test_views_and_status_agree_across_engines(both, run):
    for view in ("daily_spend", "monthly_spend", "monthly_spend_by_model", "spend_by_provider"):
        order = {"daily_spend": "date", "monthly_spend": "month", "monthly_spend_by_model": "month, model", "spend_by_provider": "provider_name"}[view]
        out = [json.loads(on(both, run, e, "sql", f"SELECT * FROM {view} ORDER BY {order}", "-f", "json").stdout) for e in ("sqlite", "postgresql")]
        assert_same_numbers(*out)
    statuses = [json.loads(on(both, run, e, "status", "--json").stdout) for e in ("sqlite", "postgresql")]
    for key in ("days_archived", "empty_days", "rows", "first_day", "last_day", "pending", "lost", "history", "problems"):
        assert statuses[0][key] == statuses[1][key], key


def test_the_readme_sql_that_runs_on_both_engines(both, run, repo_root):
    readme = (repo_root / "README.md").read_text()
    section = readme.split("**SQL on both engines.**")[1].split("```sql")[1].split("```")[0]
    statements = {}
    label = None
    for line in section.splitlines():
        if line.startswith("--"):
            label = line
        elif line.strip():
            statements.setdefault(label, []).append(line.strip())
    both_engines = statements["-- both engines"]
    assert len(both_engines) == 2
    for statement in both_engines:
        out = [json.loads(on(both, run, e, "sql", statement, "-f", "json").stdout) for e in ("sqlite", "postgresql")]
        assert out[0] and [list(r.values()) for r in out[0]] == [list(r.values()) for r in out[1]], statement
    for engine, label in (("sqlite", "-- the last 90 days: SQLite"), ("postgresql", "-- the last 90 days: PostgreSQL (dates are YYYY-MM-DD text on both)")):
        assert json.loads(on(both, run, engine, "sql", statements[label][0], "-f", "json").stdout)
