"""Pure validation of analytics answers."""

from __future__ import annotations

from datetime import date

import pytest

from etl.errors import InvalidResponseError, TruncatedAnswerError
from etl.validate_analytics import AMOUNT, COUNT, MEASURE, bucket_day, count, parse_answer, runs, split_range

DIMS = {"model": "model", "variant": "variant"}
METRICS = {"credits_usage": AMOUNT, "usage_web": AMOUNT, "request_count": COUNT, "p90_latency": MEASURE}
FIRST, LAST = date(2026, 1, 1), date(2026, 1, 31)


def answer(*rows, truncated=False, warnings=None):
    body = {"data": list(rows), "metadata": {"query_time_ms": 1, "row_count": len(rows), "truncated": truncated}}
    if warnings is not None:
        body["warnings"] = warnings
    return {"data": body}


def row(day="2026-01-05T00:00:00.000Z", **over):
    base = {"date__day": day, "model": "openai/gpt-4.1", "variant": "standard", "credits_usage": 0.5, "usage_web": None,
            "request_count": "12", "p90_latency": 812.5}
    return {**base, **over}


def parse(doc):
    return parse_answer(doc, dimensions=DIMS, metrics=METRICS, first=FIRST, last=LAST)


def test_rows_become_typed_values():
    parsed = parse(answer(row(), row(model="x/y", request_count=3.0, credits_usage="-0.25"), warnings=["w"]))
    assert parsed.days == {"2026-01-05": [
        {"date": "2026-01-05", "model": "openai/gpt-4.1", "variant": "standard", "credits_usage": 0.5, "usage_web": None, "request_count": 12, "p90_latency": 812.5},
        {"date": "2026-01-05", "model": "x/y", "variant": "standard", "credits_usage": -0.25, "usage_web": None, "request_count": 3, "p90_latency": 812.5},
    ]}
    assert parsed.warnings == ["w"] and parsed.rejected == {}


def test_truncated_answer_is_refused():
    with pytest.raises(TruncatedAnswerError):
        parse(answer(row(), truncated=True))


@pytest.mark.parametrize("bad", [{"request_count": "12.5"}, {"request_count": "lots"}, {"request_count": -1}, {"request_count": True},
                                 {"credits_usage": float("nan")}, {"p90_latency": -3.0}, {"model": ["a"]}, {"credits_usage": {"usd": 1}},
                                 {"credits_usage": 10**400}, {"p90_latency": 10**400}, {"request_count": 1e300}])
def test_a_bad_row_rejects_its_day_only(bad):
    parsed = parse(answer(row(**bad), row(day="2026-01-06T00:00:00.000Z")))
    assert list(parsed.rejected) == ["2026-01-05"] and list(parsed.days) == ["2026-01-06"]


def test_duplicates_and_days_outside_the_range_are_rejected():
    parsed = parse(answer(row(), row(), row(day="2025-12-31T00:00:00.000Z")))
    assert "duplicate" in parsed.rejected["2026-01-05"] and "outside" in parsed.rejected["2025-12-31"]
    assert parsed.days == {}


@pytest.mark.parametrize("doc", [[], {"data": []}, {"data": {"data": {}}}, {"data": {"data": []}}, {"data": {"data": [1], "metadata": {"truncated": False}}}])
def test_wrong_shapes_are_errors(doc):
    with pytest.raises(InvalidResponseError):
        parse(doc)


def test_bucket_and_count_parsing():
    assert bucket_day("2025-01-01T00:00:00.000Z") == "2025-01-01"
    with pytest.raises(ValueError):
        bucket_day("2025-01-01T05:00:00.000Z")
    assert count("1500") == 1500 and count(7.0) == 7


def test_ranges_split_and_runs():
    assert split_range(date(2026, 1, 1), date(2026, 1, 10), 3) == [
        (date(2026, 1, 1), date(2026, 1, 4)), (date(2026, 1, 5), date(2026, 1, 7)), (date(2026, 1, 8), date(2026, 1, 10))]
    assert runs([date(2026, 1, 3), date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 9)]) == [
        (date(2026, 1, 1), date(2026, 1, 3)), (date(2026, 1, 9), date(2026, 1, 9))]


def test_rows_with_the_same_label_are_added_up_when_asked():
    dims = {"app": "subject", "model": "model"}
    metrics = {"credits_usage": AMOUNT, "usage_web": AMOUNT, "request_count": COUNT}
    twin = {"date__day": "2026-01-05T00:00:00.000Z", "app": "Internal tool", "model": "m", "credits_usage": 0.5, "usage_web": None, "request_count": 2}
    parsed = parse_answer(answer(twin, {**twin, "credits_usage": 0.25, "request_count": "3"}), dimensions=dims, metrics=metrics,
                          first=FIRST, last=LAST, merge_duplicates=True)
    assert parsed.days["2026-01-05"] == [{"date": "2026-01-05", "subject": "Internal tool", "model": "m", "credits_usage": 0.75, "usage_web": None, "request_count": 5}]
    assert "duplicate" in parse_answer(answer(twin, twin), dimensions=dims, metrics=metrics, first=FIRST, last=LAST).rejected["2026-01-05"]
