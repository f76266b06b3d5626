"""Mutation audit (scripts/mutation_report.py, module ``summaries``): the month edges of the
reports' fast path and the money units, where a wrong number would ship silently.

``summary_span`` decides which whole months come from the summary tables and which days at
the edges from the base rows: a day off at a month boundary would count a day twice or not
at all. Amounts are summed as whole units of 1e-10 USD, each row's amount *rounded* (not
truncated) to a unit, and reported rounded to 1e-9 USD.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from etl import migrate, summaries, warehouse
from etl.db import open_engine
from etl.query import ReportSpec, grouped_rows, summary_span

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(("since", "until", "want"), [
    ("2026-01-01", "2026-03-31", ("2026-01", "2026-03", [])),
    # Partial months at both edges: the 2nd..31st of January and the 1st..30th of March from the rows.
    ("2026-01-02", "2026-03-30", ("2026-02", "2026-02", [("2026-01-02", "2026-01-31"), ("2026-03-01", "2026-03-30")])),
    # February of a common year ends on the 28th: the 27th is not its end.
    ("2026-01-01", "2026-02-27", ("2026-01", "2026-01", [("2026-02-01", "2026-02-27")])),
    ("2026-01-01", "2026-02-28", ("2026-01", "2026-02", [])),
    ("2024-02-02", "2024-04-30", ("2024-03", "2024-04", [("2024-02-02", "2024-02-29")])),  # leap year
    ("2026-12-02", None, ("2027-01", None, [("2026-12-02", "2026-12-31")])),  # across a year
    (None, "2026-03-30", (None, "2026-02", [("2026-03-01", "2026-03-30")])),
])
def test_summary_span_takes_whole_months_only_and_every_edge_day(since, until, want):
    assert summary_span(ReportSpec(("model",), since, until)) == want


def test_a_range_inside_one_month_does_not_use_the_summaries():
    assert summary_span(ReportSpec(("model",), "2026-03-02", "2026-03-30")) is None


def test_usd_rounds_units_to_the_nanodollar():
    assert summaries.usd(12_345_678_990) == 1.234567899  # to 1e-8 it would be 1.23456790
    assert summaries.usd(12_345_678_996) == 1.2345679
    assert summaries.usd(-12_345_678_990) == -1.234567899


def _row(day: str, endpoint: str, usage: float) -> dict:
    return {"date": day, "endpoint_id": endpoint, "model": "m/x", "model_permaslug": "m/x-1", "provider_name": "P",
            "usage": usage, "byok_usage_inference": usage, "requests": 1, "prompt_tokens": 1, "completion_tokens": 1,
            "reasoning_tokens": 0, "cached_tokens": None}


@pytest.fixture
def engine(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.both_backends
@pytest.mark.parametrize("fast", [True, False])
def test_each_rows_amount_is_rounded_to_a_unit_not_truncated(engine, fast):
    # 0.12345678987 USD is 1234567898.7 units: rounded 1234567899. Ten such rows sum to
    # 1.234567899 USD; truncated each would give 1.234567898.
    with engine.begin() as conn:
        for d in range(1, 11):
            warehouse.save_day(conn, f"2026-03-{d:02d}", [_row(f"2026-03-{d:02d}", "e", 0.12345678987)], now=NOW)
    spec = ReportSpec(("month",), "2026-03-01", "2026-03-31")
    with engine.connect() as conn:
        assert summary_span(spec) == ("2026-03", "2026-03", [])
        (row,) = grouped_rows(conn, spec, fast=fast)
        plain = conn.execute(text("SELECT sum(usage) FROM activity")).scalar()
        if fast:
            units = conn.execute(text("SELECT usage_units FROM activity_monthly")).scalar()
            assert int(units) == 10 * 1_234_567_899  # what the triggers keep
    assert row["usage"] == row["byok_usage_inference"] == 1.234567899
    assert abs(row["usage"] - float(plain)) < 1e-9
