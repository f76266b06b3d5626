from datetime import date

import pytest

from etl.errors import InvalidResponseError
from etl.validate import normalize_date, parse_activity

WINDOW = (date(2026, 8, 1), date(2026, 8, 30))


def item(**overrides):
    base = {
        "date": "2026-08-23",
        "model": "openai/gpt-4.1",
        "model_permaslug": "openai/gpt-4.1-2025-04-14",
        "endpoint_id": "550e8400-e29b-41d4-a716-446655440000",
        "provider_name": "OpenAI",
        "usage": 0.015,
        "byok_usage_inference": 0.012,
        "requests": 5,
        "prompt_tokens": 50,
        "completion_tokens": 125,
        "reasoning_tokens": 25,
    }
    return {**base, **overrides}


@pytest.mark.parametrize("raw", ["2026-08-23", "2026-08-23 00:00:00", "2026-08-23T00:00:00Z"])
def test_both_date_formats_store_the_calendar_date(raw):
    assert normalize_date(raw) == "2026-08-23"


@pytest.mark.parametrize("raw", ["2026-08-23 05:00:00", "23/08/2026", "2026-02-30", 20260823, None])
def test_dates_that_are_not_a_calendar_day_are_refused(raw):
    with pytest.raises(ValueError):
        normalize_date(raw)


def test_float_counts_and_live_dates_are_accepted():
    parsed = parse_activity({"data": [item(date="2026-08-23 00:00:00", requests=5.0, prompt_tokens=50.0)]}, WINDOW)
    assert parsed.rejected == {}
    row = parsed.days["2026-08-23"][0]
    assert row["requests"] == 5 and isinstance(row["requests"], int)
    assert row["date"] == "2026-08-23"


def test_reasoning_above_completion_is_fine_and_extra_fields_are_tolerated():
    parsed = parse_activity({"data": [item(reasoning_tokens=900, completion_tokens=10, cached_tokens=7, shiny_new_field="x")]}, WINDOW)
    row = parsed.days["2026-08-23"][0]
    assert row["reasoning_tokens"] == 900
    assert row["cached_tokens"] == 7
    assert "shiny_new_field" not in row  # kept in the raw archive, not as a column


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("requests", 5.5, "requests"),
        ("requests", -1, "requests"),
        ("requests", True, "requests"),
        ("requests", "5", "requests"),
        ("prompt_tokens", None, "prompt_tokens"),
        ("prompt_tokens", {"n": 1}, "prompt_tokens"),
        ("prompt_tokens", 2**64, "prompt_tokens"),
        ("usage", float("nan"), "usage"),
        ("usage", float("inf"), "usage"),
        ("usage", "0.1", "usage"),
        pytest.param("usage", 10**400, "usage", id="usage-too-large-for-a-double"),  # float() raises OverflowError, not ValueError
        ("requests", 1e300, "requests"),
        ("model", 42, "model"),
        ("model", "", "model"),
    ],
)
def test_a_malformed_item_rejects_its_day_only(field, value, needle):
    good_other_day = item(date="2026-08-22")
    parsed = parse_activity({"data": [item(**{field: value}), good_other_day]}, WINDOW)
    assert "2026-08-23" not in parsed.days
    assert needle in parsed.rejected["2026-08-23"]
    assert parsed.days["2026-08-22"]


def test_missing_field_is_named():
    bad = item()
    del bad["provider_name"]
    parsed = parse_activity({"data": [bad]}, WINDOW)
    assert parsed.rejected["2026-08-23"].endswith("provider_name: missing")


def test_duplicate_endpoint_on_a_day_rejects_the_day():
    parsed = parse_activity({"data": [item(), item(usage=1.0)]}, WINDOW)
    assert "duplicate" in parsed.rejected["2026-08-23"]
    assert parsed.days == {}


def test_day_outside_the_requested_window_is_rejected():
    parsed = parse_activity({"data": [item(date="2026-09-05"), item()]}, WINDOW)
    assert "outside the requested window" in parsed.rejected["2026-09-05"]
    assert list(parsed.days) == ["2026-08-23"]


@pytest.mark.parametrize("document", [[], {"rows": []}, {"data": {}}, {"data": [1]}, {"data": [item(date=None)]}, None])
def test_a_response_that_cannot_be_split_by_day_is_rejected_whole(document):
    with pytest.raises(InvalidResponseError):
        parse_activity(document, WINDOW)


def test_empty_response_is_no_activity():
    assert parse_activity({"data": []}, WINDOW).days == {}
