"""Issue 14, step 2: the PDF's first page has the groups' table, titles name the grouping,
days without activity are zero bars, a flat zero series has a zero-based axis."""

from __future__ import annotations

import re
import sqlite3

import pytest

from etl.charts import _bars, _summary_figure, chart_plan, chart_title, table_cells
from etl.db import open_engine
from etl.export import fill_periods
from etl.query import ReportSpec, run_report


@pytest.fixture
def archive(cli_env, run, warehouse_url):
    assert run("backfill").exit_code == 0
    return warehouse_url.removeprefix("sqlite:///")


def raw(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_titles_name_the_real_grouping():
    from etl.query import Report

    month_model = Report(ReportSpec(("month", "model")))
    assert chart_plan(month_model, "2026-01-01", "2026-01-31") == ("month", "model")
    assert chart_title("usage", *chart_plan(month_model, "2026-01-01", "2026-01-31")) == "spend per month by model"
    by_model = Report(ReportSpec(("model",)))
    assert chart_title("usage", *chart_plan(by_model, "2026-01-01", "2026-01-31")) == "spend per day by model"
    assert chart_title("requests", *chart_plan(by_model, "2025-01-01", "2026-01-31")) == "requests per month by model"


def test_periods_without_activity_are_filled():
    assert fill_periods("date", ["2026-01-30", "2026-02-02"]) == ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]
    assert fill_periods("month", ["2026-03"], "2026-01-15", "2026-04-30") == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert fill_periods("week", ["2025-W52", "2026-W02"]) == ["2025-W52", "2026-W01", "2026-W02"]
    assert fill_periods("year", ["2024", "2026"]) == ["2024", "2025", "2026"]


def test_a_flat_zero_series_has_a_zero_based_axis():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    _bars(ax, ["2026-01-01", "2026-01-02"], {"requests": [0.0, 0.0]}, "requests")
    assert ax.get_ylim() == (0.0, 1.0)
    ax = Figure().add_subplot()
    _bars(ax, ["a", "b"], {"spend": [2.0, 5.0]}, "usage")
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 5.0


def test_page_tables_add_up_and_fold_the_rest():
    rows = [{"model": f"m{i}", "usage": 1 / 3, "byok_usage_inference": 0.0, "requests": 1, "total_tokens": 10} for i in range(15)]
    totals = {"usage": 5.0, "byok_usage_inference": 0.0, "requests": 15, "total_tokens": 150}
    header, body = table_cells(rows, ["model"], totals, limit=12)
    assert header == ["model", "spend", "BYOK spend", "requests", "total tok"]
    assert len(body) == 14 and body[12][0] == "… 3 more" and body[-1][0] == "total"
    cents = sum(round(float(r[1].strip("$")) * 100) for r in body[:-1])
    assert cents == 500 and body[-1][1] == "$5.00"


def test_page_one_holds_the_table_of_groups(archive, warehouse_url):
    engine = open_engine(warehouse_url, read_only=True)
    with engine.connect() as conn:
        report = run_report(conn, ReportSpec(("provider",)))
        fig = _summary_figure(conn, report, "usage")
    engine.dispose()
    tables = [t for ax in fig.axes for t in ax.tables]
    assert len(tables) == 1
    texts = [c.get_text().get_text() for c in tables[0].get_celld().values()]
    providers = {p for (p,) in raw(archive, "SELECT DISTINCT provider_name FROM activity")}
    assert len(providers & set(texts)) == min(12, len(providers))
    assert len(providers) <= 12 or f"… {len(providers) - 12} more" in texts
    assert "BYOK spend" in texts and "total" in texts
    (usage,), = raw(archive, "SELECT sum(usage) FROM activity")
    assert f"${usage:,.2f}" in texts


def test_the_terminal_chart_shows_a_day_without_activity_as_zero(run, archive):
    days = [d for (d,) in raw(archive, "SELECT DISTINCT date FROM activity ORDER BY 1")]
    first, gap, last = days[0], days[1], days[2]
    with sqlite3.connect(archive) as conn:
        conn.execute("DELETE FROM activity WHERE date = ?", (gap,))
    out = run("report", "-g", "date", "--since", first, "--until", last, "--chart").stdout
    chart = out[out.index("spend by date"):]
    assert re.search(rf"^{gap}\s+\$0\.00$", chart, re.M), chart


def test_pdf_pages_per_group_keep_their_table(run, archive, tmp_path):
    target = tmp_path / "r.pdf"
    result = run("report", "-g", "month,model", "-f", "pdf", "-o", str(target))
    assert result.exit_code == 0, result.stderr
    months = raw(archive, "SELECT count(DISTINCT substr(date, 1, 7)) FROM activity")[0][0]
    assert len(re.findall(rb"/Type\s*/Page[^s]", target.read_bytes())) == 1 + months
