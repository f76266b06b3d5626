"""The pure rules: periods, the forecast, budget thresholds, median/MAD anomalies."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from etl.alerts import anomalies, budgets
from etl.alerts.config import Budget

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)  # a Saturday, noon


def test_periods_are_utc_day_iso_week_and_month():
    today = date(2026, 11, 21)
    assert budgets.period_bounds("day", today) == (today, date(2026, 11, 22), "2026-11-21")
    assert budgets.period_bounds("week", today) == (date(2026, 11, 16), date(2026, 11, 23), "2026-W47")
    assert budgets.period_bounds("month", today) == (date(2026, 11, 1), date(2026, 12, 1), "2026-11")
    assert budgets.period_bounds("month", date(2026, 12, 31))[1:] == (date(2027, 1, 1), "2026-12")


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)), st.none())
def test_a_day_lies_in_its_period(day, _):
    for period in ("day", "week", "month"):
        first, end, label = budgets.period_bounds(period, day)
        assert first <= day < end
        assert budgets.period_bounds(period, first) == (first, end, label)
        assert budgets.period_bounds(period, end - timedelta(days=1)) == (first, end, label)


def test_forecast_is_spend_plus_mean_of_seven_days_times_days_left():
    # Noon on the 21st of a 30-day month: 9.5 days left.
    end = date(2026, 12, 1)
    assert budgets.forecast(100.0, [10.0] * 7, NOW, end) == 100.0 + 10.0 * 9.5
    assert budgets.forecast(100.0, [1.0] * 3 + [10.0] * 7, NOW, end) == 100.0 + 10.0 * 9.5  # the last 7 only
    assert budgets.forecast(100.0, [4.0, 8.0, 12.0], NOW, end) == 100.0 + 8.0 * 9.5
    assert budgets.forecast(100.0, [10.0, 10.0], NOW, end) is None  # fewer than 3 days of data


@given(st.floats(0, 1e6), st.lists(st.floats(0, 1e4), min_size=3, max_size=10))
def test_forecast_never_below_spend_so_far(spent, recent):
    value = budgets.forecast(spent, recent, NOW, date(2026, 12, 1))
    assert value is not None and value >= spent


def test_thresholds_hold_at_or_over_their_fraction():
    budget = Budget("monthly", "month", 100.0, thresholds=(0.8, 1.0), forecast=True)
    assert budgets.evaluate(budget, 79.99, [], NOW) == []
    found = budgets.evaluate(budget, 80.0, [], NOW)
    assert [(f.kind, f.threshold, f.limit) for f in found] == [("budget", "0.8", 80.0)]
    assert found[0].period == "2026-11" and "80%" in found[0].text and "$80.00 of $100.00" in found[0].text
    found = budgets.evaluate(budget, 100.0, [], NOW)
    assert [f.threshold for f in found] == ["0.8", "1"]


def test_forecast_crossing_is_its_own_alert():
    budget = Budget("monthly", "month", 100.0, thresholds=(0.8, 1.0), forecast=True)
    # $50 so far + $6/day x 9.5 days = $107: both thresholds forecast, neither reached.
    found = budgets.evaluate(budget, 50.0, [6.0] * 7, NOW)
    assert [(f.kind, f.threshold) for f in found] == [("forecast", "0.8"), ("forecast", "1")]
    assert round(found[0].value, 6) == 107.0 and "forecast $107.00" in found[0].text
    assert budgets.evaluate(Budget("m", "month", 100.0, forecast=False), 50.0, [6.0] * 7, NOW) == []


def _series(values, end=date(2026, 11, 20)):
    return {end - timedelta(days=i): v for i, v in enumerate(reversed(values))}


def test_a_spike_is_found_with_its_baseline():
    day = date(2026, 11, 21)
    history = _series([10.0 + (i % 3) for i in range(28)])
    series = {"k1": {**history, day: 60.0}}
    found = anomalies.detect("key", series, day, [*history, day], min_usd=5, sensitivity=4, labels={"k1": "Production"})
    assert len(found) == 1
    f = found[0]
    assert (f.kind, f.scope, f.period, f.value) == ("anomaly", "key=Production", "2026-11-21", 60.0)
    assert 10.0 <= f.baseline <= 12.0 and "Production" in f.text and "baseline $1" in f.text


def test_no_alert_below_the_floor_however_unusual():
    day = date(2026, 11, 21)
    history = _series([0.01] * 28)
    found = anomalies.detect("model", {"m": {**history, day: 4.99}}, day, [*history, day], min_usd=5, sensitivity=4)
    assert found == []


def test_a_new_spender_above_the_floor():
    day = date(2026, 11, 21)
    held = [day - timedelta(days=i) for i in range(0, 29)]
    found = anomalies.detect("model", {"new/model": {day: 12.0}, "tiny/model": {day: 1.0}}, day, held, min_usd=5, sensitivity=4)
    assert [(f.kind, f.scope) for f in found] == [("new_spender", "model=new/model")]
    # A new archive (fewer than 7 days held before) calls nothing new.
    assert anomalies.detect("model", {"new/model": {day: 12.0}}, day, held[:5], min_usd=5, sensitivity=4) == []


def test_weekday_profile_with_four_weeks():
    day = date(2026, 11, 21)  # Saturday
    history = {d: (2.0 if d.weekday() >= 5 else 20.0) for d in (day - timedelta(days=i) for i in range(1, 29))}
    base = anomalies.baseline(history, day)
    assert base is not None and base.method == "weekday" and base.expected == 2.0
    # $20 on a Saturday is ordinary on a weekday but ten times a Saturday: an anomaly.
    found = anomalies.detect("model", {"m": {**history, day: 20.0}}, day, [*history, day], min_usd=5, sensitivity=4)
    assert [f.kind for f in found] == ["anomaly"]
    # With two weeks only, the flat median (20) is the baseline: no anomaly.
    short = {d: v for d, v in history.items() if d >= day - timedelta(days=14)}
    assert anomalies.baseline(short, day).method == "flat"
    assert anomalies.detect("model", {"m": {**short, day: 20.0}}, day, [*short, day], min_usd=5, sensitivity=4) == []


@settings(max_examples=60)
@given(st.lists(st.floats(0, 1000), min_size=28, max_size=28), st.floats(0, 10_000))
def test_no_anomaly_within_the_floor_of_the_baseline(values, extra):
    day = date(2026, 11, 21)
    history = _series(values)
    base = anomalies.baseline(history, day)
    assert base is not None
    value = base.expected + min(extra, 4.99)
    found = anomalies.detect("model", {"m": {**history, day: value}}, day, [*history, day], min_usd=5, sensitivity=0.1)
    assert [f for f in found if f.kind == "anomaly"] == []
