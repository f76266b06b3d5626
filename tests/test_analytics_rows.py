"""How a checked answer's rows become the rows the writing thread stores (pure).

``analytics._rows`` completes each parsed row in place with the key columns its series'
dimensions do not give, and takes the label dimension out; ``analytics._bound`` binds the
completed rows by position. Both replaced slower code on the writing thread (a year of
series is tens of thousands of rows); these tests hold them to what that code did:
``Positional.bind_many``, SQLAlchemy's own binding, is the reference.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from etl import analytics, warehouse
from etl.schema import ANALYTICS_AMOUNTS, ANALYTICS_COUNTS, PROVIDER_METRICS, analytics_daily, analytics_provider_daily

NOW = datetime(2026, 12, 2, 0, 30, 0, 123456, tzinfo=timezone.utc)
DAY = "2026-11-30"
KEY = "f" * 64


def metrics(n: int) -> dict[str, Any]:
    return {**{m: 0.25 * n for m in ANALYTICS_AMOUNTS}, "usage_cache": None, **{m: n for m in ANALYTICS_COUNTS}}


def test_a_per_subject_row_gets_its_series_subject_and_no_variant_and_loses_its_label():
    parsed = [{"date": DAY, analytics.LABEL: "ci key", "model": "openai/gpt-4.1", **metrics(1)},
              {"date": DAY, analytics.LABEL: "ci key (renamed)", "model": "anthropic/claude-4", **metrics(2)}]
    rows, labels = analytics._rows(analytics.SERIES["key"], KEY, parsed)
    assert rows is parsed  # completed in place, not copied
    assert [(r["series"], r["subject"], r["variant"], r["model"]) for r in rows] == [
        ("key", KEY, "", "openai/gpt-4.1"), ("key", KEY, "", "anthropic/claude-4")]
    assert all(analytics.LABEL not in r for r in rows)
    assert labels == {KEY: "ci key (renamed)"}  # the last label listed


def test_an_unlabelled_subject_keeps_no_label():
    rows, labels = analytics._rows(analytics.SERIES["member"], "user_1", [{"date": DAY, analytics.LABEL: "", "model": "m", **metrics(1)}])
    assert labels == {} and rows[0]["subject"] == "user_1"


def test_one_model_under_two_labels_of_one_subject_rejects_the_day():
    parsed = [{"date": DAY, analytics.LABEL: label, "model": "openai/gpt-4.1", **metrics(1)} for label in ("old name", "new name")]
    with pytest.raises(ValueError, match="'openai/gpt-4.1' is listed under two labels"):
        analytics._rows(analytics.SERIES["key"], KEY, parsed)


def test_the_dimensions_a_series_has_are_kept():
    account, _ = analytics._rows(analytics.SERIES["account"], analytics.WHOLE, [{"date": DAY, "model": "m", "variant": "free", **metrics(1)}])
    assert (account[0]["series"], account[0]["subject"], account[0]["variant"]) == ("account", "*", "free")
    apps, labels = analytics._rows(analytics.SERIES["app"], analytics.WHOLE, [
        {"date": DAY, "subject": "Cline", "model": "m", **metrics(1)}, {"date": DAY, "subject": "", "model": "m", **metrics(2)}])
    assert [(r["series"], r["subject"], r["variant"]) for r in apps] == [("app", "Cline", ""), ("app", "", "")]
    assert labels == {"Cline": "Cline"}


def test_provider_rows_are_left_as_parsed():
    row = {"date": DAY, "model": "m", "provider": "OpenAI", **dict.fromkeys(PROVIDER_METRICS, 1.0)}
    rows, labels = analytics._rows(analytics.SERIES["provider"], analytics.WHOLE, [dict(row)])
    assert rows == [row] and labels == {}


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("table", [analytics_daily, analytics_provider_daily], ids=lambda t: t.name)
def test_rows_are_bound_as_bind_many_binds_them(dialect, table):
    if table is analytics_daily:
        rows = [{"series": "key", "subject": KEY, "date": DAY, "model": f"m{n}", "variant": "", **metrics(n)} for n in range(3)]
    else:
        rows = [{"date": DAY, "model": f"m{n}", "provider": "OpenAI", **dict.fromkeys(PROVIDER_METRICS, 0.5 * n), "request_count": n}
                for n in range(3)]
        rows[0]["p99_latency"] = None
    stamp = {"first_archived_at": NOW, "updated_at": NOW}
    columns = tuple(c.name for c in table.columns if c.name in rows[0] or c.name in stamp)
    pk = tuple(c.name for c in table.primary_key.columns)
    compared = analytics.SERIES["key" if table is analytics_daily else "provider"].compared
    stmt = warehouse.upsert_statement(dialect, table, pk, (*compared, "updated_at"), columns)
    bound = analytics._bound(stmt, rows, stamp)
    assert bound == stmt.bind_many(rows, stamp)
    assert bound[0][-2:] == (("2026-12-02 00:30:00.123456",) * 2 if dialect.name == "sqlite" else (NOW, NOW))


def test_a_stamp_that_is_not_last_is_bound_the_general_way():
    stmt = warehouse.upsert_statement(sqlite.dialect(), analytics_daily, ("series", "date", "subject", "model", "variant"),
                                      ("updated_at",), tuple(c.name for c in analytics_daily.columns))
    rows = [{"series": "key", "subject": KEY, "model": "m", "variant": "", **metrics(1)}]
    stamp = {"date": DAY, "first_archived_at": NOW, "updated_at": NOW}  # the date is the third column
    assert analytics._bound(stmt, rows, stamp) == stmt.bind_many(rows, stamp)
    assert analytics._bound(stmt, rows, stamp)[0][2] == DAY
