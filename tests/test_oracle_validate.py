"""Validation's blind spots, checked against the input item rather than the parser's output.

Each test states the rule (README "Validation", api-notes) and compares what the parser
accepted, or what the warehouse stored, with the item as it was served.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest

from conftest import query
from etl import migrate, warehouse
from etl.db import open_engine
from etl.standin import Fault
from etl.validate import parse_activity
from oracle import ACTIVITY_SQL, BIGGEST_COUNT, COLUMNS, Invalid, assert_same_rows, expected_row, window

WINDOW = (date(2026, 8, 1), date(2026, 8, 30))
NOW = datetime(2026, 8, 31, 1, 0, tzinfo=timezone.utc)


def item(**overrides):
    # Every value distinct, so that a swap of any two columns shows.
    base = {
        "date": "2026-08-23", "model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025-04-14",
        "endpoint_id": "550e8400-e29b-41d4-a716-446655440000", "provider_name": "OpenAI",
        "usage": 0.015, "byok_usage_inference": 0.012, "requests": 5, "prompt_tokens": 50,
        "completion_tokens": 125, "reasoning_tokens": 25, "cached_tokens": 7,
    }
    return {**base, **overrides}


def accepted(raw, subject=None):
    parsed = parse_activity({"data": [raw]}, WINDOW, subject)
    return parsed.days.get(raw["date"][:10]), parsed.rejected.get(raw["date"][:10])


@pytest.fixture
def engine(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'v.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def stored(engine, tmp_path, rows):
    with engine.begin() as conn:
        warehouse.save_day(conn, rows[0]["date"], rows, now=NOW)
    with sqlite3.connect(tmp_path / "v.db") as conn:  # read back the plain way
        return conn.execute(ACTIVITY_SQL).fetchall()


# -- counts -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens"])
def test_a_count_of_exactly_2_to_the_63_is_rejected(field):
    rows, reason = accepted(item(**{field: 2**63}))
    assert rows is None
    assert field in reason and str(2**63) in reason


@pytest.mark.parametrize("value", [float(2**63), 1e19])
def test_a_float_count_beyond_sqlite_integer_is_rejected(value):
    rows, reason = accepted(item(prompt_tokens=value))
    assert rows is None and "prompt_tokens" in reason


def test_the_largest_sqlite_integer_is_stored_exactly(engine, tmp_path):
    raw = item(prompt_tokens=BIGGEST_COUNT, requests=float(2**62))
    rows, reason = accepted(raw)
    assert reason is None
    assert_same_rows(stored(engine, tmp_path, rows), [expected_row(raw)])


def test_counts_that_are_floats_are_stored_as_integers(engine, tmp_path):
    raw = item(requests=5.0, prompt_tokens=50.0, cached_tokens=0.0)
    rows, _ = accepted(raw)
    assert_same_rows(stored(engine, tmp_path, rows), [(*expected_row(raw)[:7], 5, 50, 125, 25, 0)])


@pytest.mark.parametrize("value", [5.5, -1, -0.5, True, False, "5", None])
def test_a_count_that_is_not_a_whole_number_is_rejected(value):
    rows, reason = accepted(item(requests=value))
    assert rows is None and "requests" in reason


# -- amounts ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["usage", "byok_usage_inference"])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_where_an_amount_belongs_is_rejected(field, value):
    rows, reason = accepted(item(**{field: value}))
    assert rows is None
    assert reason.endswith(f"{field}: must be a number, got {value!r}")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "0.1", None, [1]])
def test_an_amount_that_is_not_a_finite_number_is_rejected(value):
    rows, reason = accepted(item(byok_usage_inference=value))
    assert rows is None and "byok_usage_inference" in reason


def test_integer_amounts_are_stored_as_money(engine, tmp_path):
    raw = item(usage=3, byok_usage_inference=0)
    rows, _ = accepted(raw)
    assert_same_rows(stored(engine, tmp_path, rows), [expected_row(raw)])
    assert expected_row(raw)[5:7] == (3.0, 0.0)


# -- names and subjects -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "model_permaslug", "endpoint_id", "provider_name"])
def test_an_empty_name_is_rejected(field):
    rows, reason = accepted(item(**{field: ""}))
    assert rows is None and field in reason


@pytest.mark.parametrize("value", ["", None, 7, ["w"]])
def test_an_empty_or_missing_workspace_id_is_rejected(value):
    raw = item(workspace_id=value) if value is not None else item()
    rows, reason = accepted(raw, subject="workspace_id")
    assert rows is None
    assert reason == f"item 0: workspace_id: expected a non-empty string, got {value!r}"


def test_the_workspace_id_becomes_part_of_the_row():
    rows, _ = accepted(item(workspace_id="ws-1"), subject="workspace_id")
    assert rows == [{**dict(zip(COLUMNS, expected_row(item()))), "workspace_id": "ws-1"}]


def test_the_same_endpoint_in_two_workspaces_is_not_a_duplicate_but_twice_in_one_is():
    two = parse_activity({"data": [item(workspace_id="a"), item(workspace_id="b")]}, WINDOW, "workspace_id")
    assert [r["workspace_id"] for r in two.days["2026-08-23"]] == ["a", "b"]
    twice = parse_activity({"data": [item(workspace_id="a"), item(workspace_id="a", usage=1.0)]}, WINDOW, "workspace_id")
    assert "duplicate" in twice.rejected["2026-08-23"] and "2026-08-23" not in twice.days


# -- columns and dates ----------------------------------------------------------------------


def test_every_column_is_stored_under_its_own_name(engine, tmp_path):
    raw = item()
    rows, _ = accepted(raw)
    assert_same_rows(stored(engine, tmp_path, rows), [expected_row(raw)])


def test_a_missing_cached_tokens_is_null_not_zero(engine, tmp_path):
    raw = item()
    del raw["cached_tokens"]
    rows, _ = accepted(raw)
    assert_same_rows(stored(engine, tmp_path, rows), [expected_row(raw)])
    assert expected_row(raw)[-1] is None


@pytest.mark.parametrize("day", ["2026-08-01", "2026-08-30"])
def test_both_ends_of_the_window_are_accepted(day):
    parsed = parse_activity({"data": [item(date=day), item(date=day + " 00:00:00", endpoint_id="e2")]}, WINDOW)
    assert [r["endpoint_id"] for r in parsed.days[day]] == ["550e8400-e29b-41d4-a716-446655440000", "e2"]
    assert parsed.rejected == {}


@pytest.mark.parametrize("day", ["2026-07-31", "2026-08-31"])
def test_a_day_just_outside_the_window_is_rejected(day):
    parsed = parse_activity({"data": [item(date=day)]}, WINDOW)
    assert day in parsed.rejected and parsed.days == {}


@pytest.mark.parametrize("raw", ["2026-08-23 00:00:01", "2026-08-23 12:00:00", "2026-08-23T23:59:59Z"])
def test_a_date_with_a_time_of_day_is_refused(raw):
    from etl.errors import InvalidResponseError

    with pytest.raises(InvalidResponseError, match="no usable date"):
        parse_activity({"data": [item(date=raw)]}, WINDOW)


def test_the_oracle_agrees_with_the_documented_rules():
    # The oracle itself must be able to say no, or the property tests built on it prove nothing.
    with pytest.raises(Invalid):
        expected_row(item(usage=True))
    with pytest.raises(Invalid):
        expected_row(item(requests=2**63))
    with pytest.raises(Invalid):
        expected_row(item(date="2026-08-23 05:00:00"))
    live = expected_row(item(date="2026-08-23 00:00:00", requests=5.0))
    assert (live[0], live[7], type(live[7])) == ("2026-08-23", 5, int)


# -- end to end: a hostile value is never stored ------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("requests", 2**63), ("usage", True), ("byok_usage_inference", False), ("prompt_tokens", 2.5)],
    ids=["count-2**63", "usage-True", "byok-False", "fractional"],
)
def test_sync_never_stores_a_hostile_value(cli_env, run, api, warehouse_url, field, value):
    today = datetime.now(timezone.utc).date()
    first, yesterday = window(today)
    before = yesterday - timedelta(days=1)
    good = item(date=before.isoformat(), endpoint_id="ep-good")
    bad = item(date=yesterday.isoformat(), endpoint_id="ep-bad", **{field: value})
    api.inject(Fault("body", body=json.dumps({"data": [good, bad]}).encode(), path="/activity"))
    result = run("backfill", "--days", "2")
    assert result.exit_code == 1
    assert f"{yesterday}  rejected" in result.stdout and field in result.stdout
    assert query(warehouse_url, f"SELECT count(*) FROM archived_days WHERE date = '{yesterday}'") == [(0,)]
    assert_same_rows(query(warehouse_url, ACTIVITY_SQL), [expected_row(good)])
