"""Status and health at their boundaries, against dates and sums worked out here.

The window rule (README): a day is served from the day after it ends for 30 days; day D is
last fetchable on D+30 and gone on D+31. The health rules: stale when the newest day is
more than ``stale_after_days`` behind yesterday; at risk when a missing day leaves the
window within ``window_margin_days``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import create_engine, text

from conftest import query
from etl.standin import Fault
from etl.status import assess_health, compare_sums
from oracle import window

TODAY = date(2026, 11, 22)
YESTERDAY = TODAY - timedelta(days=1)


def served(day: date, today: date) -> bool:
    first, last = window(today)
    return first <= day <= last


def lost_on(day: date, today: date) -> date:
    """The first date on which ``day`` is no longer served, found by walking the calendar."""
    moment = today
    while served(day, moment) or moment <= day:
        moment += timedelta(days=1)
    return moment


def health(last_day, pending=(), stale=1, margin=7, today=TODAY):
    return assess_health(last_day, list(pending), today, stale, margin)


# -- stale --------------------------------------------------------------------------------


@pytest.mark.parametrize(("behind", "stale"), [(0, False), (1, False), (2, True), (5, True)])
def test_one_day_behind_is_fresh_two_is_stale(behind, stale):
    last = YESTERDAY - timedelta(days=behind)
    problems = health(last.isoformat())
    assert bool(problems) is stale
    if stale:
        assert problems == [f"stale: the newest archived day, {last}, is {behind} day(s) behind yesterday"]


@pytest.mark.parametrize(("setting", "behind", "stale"), [(0, 0, False), (0, 1, True), (3, 3, False), (3, 4, True)])
def test_the_stale_boundary_follows_the_setting(setting, behind, stale):
    assert bool(health((YESTERDAY - timedelta(days=behind)).isoformat(), stale=setting)) is stale


def test_stale_boundary_end_to_end(cli_env, run):
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
    with time_machine.travel(start + timedelta(days=1), tick=True):
        one_behind = run("status", "--check")
    with time_machine.travel(start + timedelta(days=2), tick=True):
        two_behind = run("status", "--check", "--json")
    assert one_behind.exit_code == 0, one_behind.stdout
    assert two_behind.exit_code == 1
    (problem,) = json.loads(two_behind.stdout)["problems"]
    assert problem.startswith("stale:") and "2 day(s) behind" in problem


# -- days about to leave the window ---------------------------------------------------------


def test_the_first_loss_date_is_the_day_after_the_last_day_it_is_served():
    first, _ = window(TODAY)
    pending = [first + timedelta(days=3), first + timedelta(days=1), first + timedelta(days=2)]
    (problem,) = health(YESTERDAY.isoformat(), [d.isoformat() for d in pending])
    oldest = min(pending)
    assert lost_on(oldest, TODAY) == oldest + timedelta(days=31)
    assert f"the first on {lost_on(oldest, TODAY).isoformat()}" in problem
    assert problem.startswith("3 day(s) not archived leave the API window within 7 day(s)")
    assert problem.endswith(f"{pending[1]}..{pending[0]}")


@pytest.mark.parametrize("margin", [1, 7, 12])
def test_the_at_risk_boundary(margin):
    first, _ = window(TODAY)
    # A day is at risk when it leaves the window within `margin` days.
    days = [first + timedelta(days=k) for k in range(30)]
    at_risk = [d for d in days if (lost_on(d, TODAY) - TODAY).days <= margin]
    assert len(at_risk) == margin  # leaving in 1, 2, ... margin days
    for d in days:
        problems = health(YESTERDAY.isoformat(), [d.isoformat()], margin=margin)
        assert bool(problems) is (d in at_risk), d


def test_the_at_risk_boundary_end_to_end(cli_env, run):
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
        first_missing = datetime.now(timezone.utc).date()  # archived up to yesterday; today is the first gap
    for days_later in (23, 24, 25):
        with time_machine.travel(start + timedelta(days=days_later), tick=True):
            result = run("status", "--check", "--json")
            today = datetime.now(timezone.utc).date()
        risky = [p for p in json.loads(result.stdout)["problems"] if "leave the API window" in p]
        pending = [first_missing + timedelta(days=k) for k in range(days_later)]
        want = [d for d in pending if (lost_on(d, today) - today).days <= 7]
        assert len(want) == days_later - 23  # 23 days on, the oldest gap still has 8 days to go
        if not want:
            assert risky == []
            continue
        (problem,) = risky
        assert problem.startswith(f"{len(want)} day(s) not archived leave the API window within 7 day(s), the first on {lost_on(want[0], today)}")


# -- per-key sums ---------------------------------------------------------------------------


def sums(**overrides):
    base = {"usage": 1.25, "byok_usage_inference": 0.5, "requests": 10, "prompt_tokens": 100, "completion_tokens": 50, "reasoning_tokens": 5}
    return {**base, **overrides}


@pytest.mark.parametrize("metric", ["usage", "byok_usage_inference"])
def test_a_per_key_money_difference_of_one_cent_is_shown(metric):
    account = {"2026-11-20": sums()}
    split = {"2026-11-20": sums(**{metric: sums()[metric] + 0.01})}
    (mismatch,) = compare_sums(account, split)
    assert (mismatch["date"], mismatch["metric"]) == ("2026-11-20", metric)
    assert mismatch["difference"] == pytest.approx(0.01)


def test_float_rounding_is_not_a_difference():
    account = {"d": sums(usage=0.1 + 0.2)}
    assert compare_sums(account, {"d": sums(usage=0.3)}) == []


@pytest.mark.parametrize("metric", ["requests", "prompt_tokens", "completion_tokens", "reasoning_tokens"])
def test_a_count_difference_of_one_is_shown(metric):
    (mismatch,) = compare_sums({"d": sums()}, {"d": sums(**{metric: sums()[metric] - 1})})
    assert mismatch["metric"] == metric and mismatch["difference"] == -1


@pytest.fixture
def with_key_breakdown(cli_env, tmp_path):
    (tmp_path / "config.toml").write_text('[openrouter]\nbackoff_initial = 0.01\n[sync]\nbreakdowns = ["key", "workspace"]\n')


@pytest.mark.parametrize(("table", "breakdown"), [("activity_by_key", "key"), ("activity_by_workspace", "workspace")])
def test_a_cent_missing_from_one_key_or_workspace_shows_in_status(run, warehouse_url, with_key_breakdown, table, breakdown):
    assert run("backfill").exit_code == 0
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        day = conn.execute(text(f"SELECT min(date) FROM {table}")).scalar()
        conn.execute(text(f"UPDATE {table} SET usage = usage - 0.01 WHERE rowid = (SELECT min(rowid) FROM {table} WHERE date = '{day}')"))
    engine.dispose()
    status = json.loads(run("status", "--json").stdout)
    (mismatch,) = status["breakdowns"][breakdown]["mismatches"]
    assert (mismatch["date"], mismatch["metric"]) == (day, "usage")
    assert mismatch["difference"] == pytest.approx(-0.01)
    other = "workspace" if breakdown == "key" else "key"
    assert status["breakdowns"][other]["mismatches"] == []


# -- what the archive holds -----------------------------------------------------------------


def test_counts_first_last_and_empty_days_match_the_stand_in(cli_env, run, api):
    assert run("backfill").exit_code == 0
    status = json.loads(run("status", "--json").stdout)
    today = datetime.now(timezone.utc).date()
    first, last = window(today)
    days = [first + timedelta(days=k) for k in range(30)]
    empty = [d for d in days if not api.dataset.activity(d)]
    assert 1 <= len(empty) < 30
    assert status["empty_days"] == len(empty)
    assert status["days_archived"] == 30
    assert status["rows"] == sum(len(api.dataset.activity(d)) for d in days)
    assert (status["first_day"], status["last_day"]) == (first.isoformat(), last.isoformat())
    assert (status["window_first"], status["window_last"]) == (first.isoformat(), last.isoformat())
    assert f"{len(empty)} day(s) without activity" in run("status").stdout


def test_a_partial_run_is_not_the_last_success(cli_env, run, api, warehouse_url):
    assert run("backfill").exit_code == 0
    api.inject(Fault("malformed"))
    assert run("backfill").exit_code == 1
    runs = query(warehouse_url, "SELECT id, outcome, finished_at FROM sync_runs ORDER BY id")
    assert [r[1] for r in runs] == ["ok", "partial"]
    status = json.loads(run("status", "--json").stdout)
    assert status["last_run"]["id"] == runs[1][0] and status["last_run"]["outcome"] == "partial"
    ok_finished = datetime.fromisoformat(runs[0][2]).replace(tzinfo=timezone.utc)
    assert datetime.fromisoformat(status["last_success_at"]) == ok_finished


def test_a_failed_first_run_means_no_success_yet(cli_env, run, api):
    api.inject(*[Fault("503")] * 5)
    assert run("sync").exit_code == 1
    status = json.loads(run("status", "--json").stdout)
    assert status["last_success_at"] is None and status["last_run"]["outcome"] == "failed"
    assert "last success  never" in run("status").stdout


def test_the_first_day_of_the_window_missing_is_pending_the_day_before_is_lost(cli_env, run, warehouse_url):
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
    engine = create_engine(warehouse_url)
    with time_machine.travel(start + timedelta(days=10), tick=True):
        today = datetime.now(timezone.utc).date()
        first, _ = window(today)
        with engine.begin() as conn:
            for d in (first - timedelta(days=1), first):
                conn.execute(text(f"DELETE FROM archived_days WHERE date = '{d}'"))
        status = json.loads(run("status", "--json").stdout)
    engine.dispose()
    assert status["lost"] == [(first - timedelta(days=1)).isoformat()]
    assert status["pending"][0] == first.isoformat()


def test_only_days_without_rows_count_as_empty(tmp_path):
    from etl import migrate, warehouse
    from etl.db import open_engine
    from etl.status import read_status

    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    migrate.upgrade(engine)
    now = datetime(2026, 11, 22, 1, tzinfo=timezone.utc)
    one = {"date": "", "endpoint_id": "e", "model": "m", "model_permaslug": "m", "provider_name": "P", "usage": 1.0,
           "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": None}
    for day, rows in (("2026-11-18", 0), ("2026-11-19", 1), ("2026-11-20", 2), ("2026-11-21", 0)):
        with engine.begin() as conn:
            warehouse.save_day(conn, day, [{**one, "date": day, "endpoint_id": f"e{i}"} for i in range(rows)], now=now)
    status = read_status(engine, TODAY)
    engine.dispose()
    assert (status.days_archived, status.empty_days, status.rows) == (4, 2, 3)
    assert (status.first_day, status.last_day) == ("2026-11-18", "2026-11-21")
