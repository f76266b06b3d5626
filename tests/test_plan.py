from datetime import date, timedelta

from etl.status import as_ranges, find_gaps
from etl.sync import plan_backfill, plan_requests, plan_sync
from etl.window import completed_window

TODAY = date(2026, 11, 22)


def test_window_is_the_30_completed_days_before_today():
    assert completed_window(TODAY) == (date(2026, 10, 23), date(2026, 11, 21))


def test_first_sync_fetches_the_whole_window_in_one_request():
    days = plan_sync(TODAY, [], refetch_days=2)
    assert len(days) == 30
    assert plan_requests(days, completed_window(TODAY)) == [(None, (date(2026, 10, 23), date(2026, 11, 21)))]


def test_daily_sync_fetches_new_day_plus_refetch_days():
    have = [d.isoformat() for d in plan_backfill(TODAY - timedelta(days=1))]  # archived up to the day before yesterday
    days = plan_sync(TODAY, have, refetch_days=2)
    assert days == [date(2026, 11, 20), date(2026, 11, 21)]


def test_single_missing_day_is_asked_for_by_date():
    have = [d.isoformat() for d in plan_backfill(TODAY) if d != date(2026, 11, 1)]
    days = plan_sync(TODAY, have, refetch_days=0)
    assert plan_requests(days, completed_window(TODAY)) == [(date(2026, 11, 1), (date(2026, 11, 1), date(2026, 11, 1)))]


def test_nothing_to_do_means_no_request():
    have = [d.isoformat() for d in plan_backfill(TODAY)]
    assert plan_sync(TODAY, have, refetch_days=0) == []
    assert plan_requests([], completed_window(TODAY)) == []


def test_daily_sync_request_covers_the_whole_api_window():
    days = [date(2026, 11, 20), date(2026, 11, 21)]
    assert plan_requests(days, completed_window(TODAY)) == [(None, completed_window(TODAY))]


def test_backfill_last_n_days():
    assert plan_backfill(TODAY, 3) == [date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)]


def test_gaps_split_into_recoverable_and_lost():
    gaps = find_gaps(["2026-09-01", "2026-09-03", "2026-10-24", "2026-11-21"], TODAY)
    assert gaps.lost[0] == "2026-09-02"
    assert "2026-10-22" in gaps.lost and "2026-10-23" not in gaps.lost
    assert gaps.pending[0] == "2026-10-23" and "2026-10-24" not in gaps.pending
    assert as_ranges(["2026-01-01", "2026-01-02", "2026-01-04"]) == ["2026-01-01..2026-01-02", "2026-01-04"]


def test_no_gaps_in_an_empty_archive():
    gaps = find_gaps([], TODAY)
    assert gaps.pending == [] and gaps.lost == []
