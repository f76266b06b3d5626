"""Pure validation of analytics answers."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import InvalidResponseError, TruncatedAnswerError
from etl.validate_analytics import (
    AMOUNT, COUNT, MEASURE, CheckedAnswer, answer_decoder, bucket_day, count, held_days, parse_answer, runs, split_range,
)

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


# -- the compiled fast path (answer_decoder) against the row by row checks ------------------------

def both(doc, dims=DIMS, metrics=METRICS, **kw):
    """The outcome of parse_answer on ``doc`` sent as bytes, through answer_decoder and through plain json."""
    import json

    body = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc

    def outcome(document):
        try:
            parsed = parse_answer(document, dimensions=dims, metrics=metrics, first=FIRST, last=LAST, **kw)
        except (InvalidResponseError, TruncatedAnswerError) as exc:
            return type(exc).__name__, str(exc)
        # values with their types: 1 and 1.0 must not pass for each other
        return ({d: [{k: (type(v).__name__, repr(v)) for k, v in r.items()} for r in rows] for d, rows in parsed.days.items()},
                parsed.rejected, parsed.warnings)

    checked = answer_decoder(dims, metrics)(body)
    return outcome(checked), outcome(json.loads(body)), isinstance(checked, CheckedAnswer)


def test_the_fast_path_takes_the_usual_answer_and_gives_the_same_rows():
    usual = answer(row(request_count=12), row(model="x/y", request_count=3, credits_usage=0, variant=None), warnings=["w"])
    fast, slow, took = both(usual)
    assert took and fast == slow
    assert fast[0]["2026-01-05"][1]["credits_usage"] == ("float", "0.0")  # an integer cost is a float on both paths
    assert fast[0]["2026-01-05"][1]["variant"] == ("str", "''")  # the unset bucket


@pytest.mark.parametrize("bad", [{"request_count": "12"}, {"request_count": 3.0}, {"request_count": -1}, {"request_count": True},
                                 {"request_count": 2**63}, {"credits_usage": "0.5"}, {"p90_latency": -1.0}, {"model": 7},
                                 {"model": "m" * 1001}, {"date__day": 20260105}])
def test_what_the_fast_schema_refuses_goes_through_the_checks(bad):
    usual = {"request_count": 1}  # row()'s own count is a string, which alone would send every case to the checks
    assert both(answer(row(**usual), row(day="2026-01-06T00:00:00.000Z", **usual)))[2]
    fast, slow, took = both(answer(row(**{**usual, **bad}), row(day="2026-01-06T00:00:00.000Z", **usual)))
    assert not took and fast == slow


@pytest.mark.parametrize("body", [b"<html>busy</html>", b'{"data": {"data": [], "metadata": {"truncated": "no"}}}',
                                  b'{"data": {"data": [{"date__day": "2026-01-05T00:00:00.000Z"}], "metadata": {"truncated": true}}}',
                                  b'{"data": {"data": [], "metadata": {"truncated": false}, "warnings": "ab"}}',
                                  b'\xef\xbb\xbf{"data": {"data": [], "metadata": {"truncated": false}}}',
                                  b'{"data": {"data": [{"date__day": "2026-01-05T00:00:00.000Z", "model": "m", "variant": "v",'
                                  b' "credits_usage": NaN, "usage_web": null, "request_count": 1, "p90_latency": 1}], "metadata": {"truncated": false}}}'])
def test_odd_bodies_end_alike_on_both_paths(body):
    import json

    try:
        json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):  # not JSON: the client's retry, whichever decoder
            answer_decoder(DIMS, METRICS)(body)
        return
    fast, slow, _ = both(body)
    assert fast == slow


def test_a_document_checked_for_another_shape_is_refused_not_misread():
    checked = answer_decoder(DIMS, {"credits_usage": AMOUNT})(json_bytes(answer(row())))
    assert isinstance(checked, CheckedAnswer)
    with pytest.raises(TypeError, match="other dimensions or metrics"):  # its other fields are gone: not "missing" rows
        parse_answer(checked, dimensions=DIMS, metrics=METRICS, first=FIRST, last=LAST)


def json_bytes(doc):
    import json

    return json.dumps(doc).encode()


_values = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2, max_value=2**64), st.integers(min_value=-3, max_value=3),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1e3, max_value=1e6),
                    st.sampled_from(["12", "1.0", "-0.25", "x", "", "1e3", " 7 "]), st.just({"usd": 1}), st.just([1]))
_names = st.one_of(st.none(), st.sampled_from(["m", "x/y", "", "openai/gpt-4.1"]), st.integers(0, 3))
_days = st.sampled_from(["2026-01-05T00:00:00.000Z", "2026-01-06T00:00:00.000Z", "2025-12-31T00:00:00.000Z", "2026-01-07",
                         "2026-01-05T05:00:00.000Z", "bad"])


@st.composite
def _rows(draw):
    out = {"date__day": draw(_days)}
    for name in DIMS:
        if draw(st.integers(0, 9)):  # sometimes missing
            out[name] = draw(_names)
    for name, kind in METRICS.items():
        if draw(st.integers(0, 19)):
            usual = st.integers(0, 10**6) if kind == COUNT else st.floats(min_value=-1e3 if kind == AMOUNT else 0, max_value=1e6)
            out[name] = draw(st.one_of(usual, usual, usual, st.none(), _values))
    if draw(st.booleans()):
        out["extra"] = draw(_values)
    return out


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(_rows(), max_size=6), truncated=st.booleans(), merge=st.booleans())
def test_both_paths_agree_on_any_answer(rows, truncated, merge):
    import json

    body = json.dumps(answer(*rows, truncated=truncated)).encode()  # NaN and Infinity as JSON's extensions, as json sends them
    fast, slow, _ = both(body, merge_duplicates=merge)
    assert fast == slow


@st.composite
def _usual_rows(draw):
    """Rows the fast schema accepts: what a year of answers is made of."""
    out = {"date__day": draw(st.sampled_from(["2026-01-05T00:00:00.000Z", "2026-01-06T00:00:00.000Z", "2026-01-31T00:00:00.000Z",
                                              "2025-12-31T00:00:00.000Z", "2026-01-07"]))}
    for name in DIMS:
        if draw(st.integers(0, 9)):
            out[name] = draw(st.one_of(st.none(), st.sampled_from(["m", "x/y", "", "é/ü"])))
    for name, kind in METRICS.items():
        if kind == COUNT:
            out[name] = draw(st.integers(0, 2**63 - 1))
        else:
            low = None if kind == AMOUNT else 0
            out[name] = draw(st.one_of(st.none(), st.floats(min_value=low, allow_nan=False, allow_infinity=False),
                                       st.integers(min_value=0 if low == 0 else -(10**20), max_value=10**20)))
    return out


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(_usual_rows(), max_size=8), merge=st.booleans())
def test_both_paths_agree_on_usual_answers(rows, merge):
    import json

    fast, slow, took = both(json.dumps(answer(*rows)).encode(), merge_duplicates=merge)
    assert took and fast == slow


def test_a_truncated_answer_tells_its_days_in_either_form():
    doc = answer(*(row(day=f"2026-01-0{d}T00:00:00.000Z", request_count=1, model=m) for d, m in ((7, "a"), (5, "a"), (7, "b"))), truncated=True)
    checked = answer_decoder(DIMS, METRICS)(json_bytes(doc))
    assert isinstance(checked, CheckedAnswer)
    assert held_days(checked) == held_days(doc) == (2, date(2026, 1, 5))  # what the split is sized from
    assert held_days({"data": {"data": [{"date__day": "soon"}, 3]}}) == (0, None)  # no readable day


def test_merged_counts_beyond_the_column_reject_their_day():
    dims = {"app": "subject", "model": "model"}
    metrics = {"request_count": COUNT}
    twin = {"date__day": "2026-01-05T00:00:00.000Z", "app": "Internal tool", "model": "m", "request_count": 2**63 - 1}
    other = {**twin, "date__day": "2026-01-06T00:00:00.000Z"}
    for doc in (answer(twin, {**twin, "request_count": 1}, other), json_bytes(answer(twin, {**twin, "request_count": 1}, other))):
        document = answer_decoder(dims, metrics)(doc) if isinstance(doc, bytes) else doc
        parsed = parse_answer(document, dimensions=dims, metrics=metrics, first=FIRST, last=LAST, merge_duplicates=True)
        assert "request_count" in parsed.rejected["2026-01-05"] and list(parsed.days) == ["2026-01-06"]


def test_a_truncated_answer_counts_days_whatever_the_spelling_of_its_buckets():
    rows = [row(day=d, request_count=1, model=m) for d, m in (("2026-01-05T00:00:00.000Z", "a"), ("2026-01-05", "b"), (" 2026-01-07T00:00:00.000Z", "c"))]
    doc = answer(*rows, truncated=True)
    checked = answer_decoder(DIMS, METRICS)(json_bytes(doc))
    assert held_days(doc) == (2, date(2026, 1, 5))  # two days, however each bucket is written
    if isinstance(checked, CheckedAnswer):
        assert held_days(checked) == held_days(doc)
