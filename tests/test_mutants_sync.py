"""Mutation audit (module ``sync``): ``plan_requests``' rule, one day alone, two or more the window."""

from __future__ import annotations

from datetime import date

from etl.context import Request, plan_requests

WINDOW = (date(2026, 10, 23), date(2026, 11, 21))


def test_one_day_is_asked_alone_and_two_days_take_the_whole_window():
    one = date(2026, 11, 20)
    assert plan_requests([], WINDOW) == []
    assert plan_requests([one], WINDOW) == [Request(one, (one, one))]
    assert plan_requests([one, date(2026, 11, 21)], WINDOW) == [Request(None, WINDOW)]
    assert plan_requests([date(2026, 11, d) for d in (1, 5, 9)], WINDOW) == [Request(None, WINDOW)]
