"""A day at the window's edge, when OpenRouter's clock and ours disagree about the UTC date.

A day absent from a whole-window answer may be archived as "no activity" only when the
API has shown that the day is inside its window; otherwise it stays "to fetch" (not served
yet) or, when the API no longer serves it, is reported lost. Real stand-in (its clock a
day ahead of or behind ours), real CLI, real SQLite files.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine

from conftest import FAST_CONFIG, INFERENCE_KEY, KEY, query
from etl.edges import Moment, WindowEvidence
from etl.standin import Dataset, StandIn
from etl.validate import parse_activity
from etl.window import completed_window, utc_today

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability_report as rr  # noqa: E402


def empty_on(day: date, every: int = 9, **kwargs) -> Dataset:
    """A dataset whose days without activity fall on ``day`` and every ``every`` days from it."""
    return Dataset(seed=(-day.toordinal()) % every, empty_day_every=every, **kwargs)


@pytest.fixture
def dataset(request):
    """Activity every day, unless a test passes a factory of (first, yesterday) to a dataset."""
    factory = getattr(request, "param", None)
    return factory(*window()) if factory else Dataset(empty_day_every=0)


@pytest.fixture
def api(dataset):
    with StandIn(dataset, management_key=KEY, inference_key=INFERENCE_KEY) as server:
        yield server


@pytest.fixture
def config(cli_env, tmp_path):
    def write(extra: str = "", refetch_days: int = 0) -> None:
        (tmp_path / "config.toml").write_text(FAST_CONFIG + f"[sync]\nrefetch_days = {refetch_days}\n" + extra)

    write()
    return write


def window() -> tuple[date, date]:
    return completed_window(utc_today())


def marks(url: str) -> dict[str, int]:
    return dict(query(url, "SELECT date, row_count FROM archived_days"))


def day_rows(url: str, day: date) -> list[tuple]:
    return query(url, f"SELECT endpoint_id, usage, requests, prompt_tokens FROM activity WHERE date = '{day}' ORDER BY endpoint_id")


def served_rows(dataset: Dataset, day: date, **filters: str) -> list[tuple]:
    parsed = parse_activity({"data": dataset.activity(day, **filters)}, (day, day))
    rows = parsed.days.get(day.isoformat(), [])
    return sorted((r["endpoint_id"], r["usage"], r["requests"], r["prompt_tokens"]) for r in rows)


def activity_requests(api: StandIn) -> list[dict[str, str]]:
    return [r.params for r in api.requests if r.path.endswith("/activity")]


def status(run) -> dict:
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the API's clock a day behind ours: yesterday is not served yet ---------------------------


def test_server_behind_yesterday_stays_to_fetch_and_the_next_sync_archives_it_exactly(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    api.clock_offset_days = -1
    result = run("backfill")
    assert result.exit_code == 0, result.output  # nothing lost: the day is fetched later
    assert yesterday.isoformat() not in marks(warehouse_url)  # not "no activity"
    assert len(marks(warehouse_url)) == 29
    assert f"{yesterday}  not served yet" in result.stdout
    assert "Error" not in result.output
    state = status(run)
    assert state["pending"] == [yesterday.isoformat()] and state["lost"] == []

    api.clock_offset_days = 0  # OpenRouter's clock catches up; refetch_days = 0
    api.requests.clear()
    again = run("sync")
    assert again.exit_code == 0, again.output
    assert activity_requests(api) == [{"date": yesterday.isoformat()}]
    assert day_rows(warehouse_url, yesterday) == served_rows(dataset, yesterday) != []
    assert marks(warehouse_url)[yesterday.isoformat()] == len(served_rows(dataset, yesterday))
    assert status(run)["pending"] == []


def test_a_single_day_the_api_does_not_serve_yet_is_a_day_outcome_not_an_error(run, api, config, warehouse_url):
    first, yesterday = window()
    assert run("backfill").exit_code == 0
    before = day_rows(warehouse_url, yesterday)
    config(refetch_days=1)
    api.clock_offset_days = -1
    result = run("sync")  # plans yesterday alone: `date=` answers 400
    assert result.exit_code == 0, result.output
    assert f"{yesterday}  not served yet" in result.stdout
    assert "Error" not in result.output and "Traceback" not in result.output
    assert day_rows(warehouse_url, yesterday) == before  # what was archived stays as it was
    assert query(warehouse_url, "SELECT outcome FROM sync_runs ORDER BY id DESC LIMIT 1") == [("ok",)]


# -- the API's clock a day ahead of ours: our first window day is gone -----------------------


def test_server_ahead_first_day_is_reported_lost_not_archived_as_empty(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    api.clock_offset_days = 1
    result = run("backfill")
    assert result.exit_code == 1  # a day we asked for can no longer be fetched: somebody must hear of it
    assert f"{first}  lost" in result.stdout
    assert "Traceback" not in result.output
    assert first.isoformat() not in marks(warehouse_url)
    assert len(marks(warehouse_url)) == 29
    for day in (first + timedelta(days=1), yesterday):
        assert day_rows(warehouse_url, day) == served_rows(dataset, day)
    state = status(run)
    assert state["lost"] == [first.isoformat()] and state["pending"] == []
    text = run("status").stdout
    assert f"lost          1 day(s): {first}" in text
    check = run("status", "--check")
    assert check.exit_code == 1
    assert "no longer serves" in check.stdout


def test_server_ahead_today_is_left_alone_and_archived_exactly_the_next_day(run, api, dataset, config, warehouse_url):
    start = datetime.now(timezone.utc).replace(hour=12)
    today = start.date()
    api.clock_offset_days = 1
    with time_machine.travel(start, tick=True):
        result = run("backfill")
    assert today.isoformat() not in marks(warehouse_url)  # complete by OpenRouter's clock, not by ours
    assert "ignored" not in result.stderr
    with time_machine.travel(start + timedelta(days=1), tick=True):
        assert run("sync").exit_code == 0
        state = status(run)
    assert day_rows(warehouse_url, today) == served_rows(dataset, today) != []
    assert state["lost"] == [(today - timedelta(days=30)).isoformat()]  # only the day that was gone at the start


# -- proofs: an empty day inside the window is still archived as empty -------------------------


INTERIOR = 15  # days after the first day of the window


def interior_empty(first: date, yesterday: date) -> Dataset:
    return empty_on(first + timedelta(days=INTERIOR))


@pytest.mark.parametrize("dataset", [interior_empty], indirect=True)
def test_bracketed_empty_day_is_archived_empty_with_no_extra_request(run, api, dataset, config, warehouse_url):
    day = window()[0] + timedelta(days=INTERIOR)
    assert dataset.is_empty_day(day)
    result = run("backfill")
    assert result.exit_code == 0, result.output
    assert activity_requests(api) == [{}]  # the one request for the whole window
    assert marks(warehouse_url)[day.isoformat()] == 0
    assert len(marks(warehouse_url)) == 30


@pytest.mark.parametrize("dataset", [interior_empty], indirect=True)
def test_under_skew_only_the_edge_day_costs_a_request(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    api.clock_offset_days = -1
    result = run("backfill")
    assert result.exit_code == 0, result.output
    assert activity_requests(api) == [{}, {"date": yesterday.isoformat()}]
    empties = {d for d, n in marks(warehouse_url).items() if n == 0}
    assert (first + timedelta(days=INTERIOR)).isoformat() in empties
    assert empties == {d.isoformat() for d in (first + timedelta(days=i) for i in range(29)) if dataset.is_empty_day(d)}


@pytest.mark.parametrize("dataset", [lambda first, _: empty_on(first), lambda _, yesterday: empty_on(yesterday)],
                         ids=["first-day-empty", "yesterday-empty"], indirect=True)
def test_an_empty_day_at_the_edge_is_confirmed_by_a_date_request(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    day = first if dataset.is_empty_day(first) else yesterday
    assert dataset.is_empty_day(day)
    result = run("backfill")
    assert result.exit_code == 0, result.output
    assert activity_requests(api) == [{}, {"date": day.isoformat()}]
    assert marks(warehouse_url)[day.isoformat()] == 0
    assert len(marks(warehouse_url)) == 30


@pytest.mark.parametrize("dataset", [lambda *_: Dataset(empty_day_every=1)], ids=["no-activity-at-all"], indirect=True)
def test_a_window_without_any_activity_is_proven_in_two_requests_not_thirty(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    result = run("backfill")
    assert result.exit_code == 0, result.output
    assert activity_requests(api) == [{}, {"date": first.isoformat()}, {"date": yesterday.isoformat()}]
    assert set(marks(warehouse_url).values()) == {0} and len(marks(warehouse_url)) == 30


# -- breakdowns under skew ----------------------------------------------------------------


FOUR_KEYS = pytest.mark.parametrize("dataset", [lambda *_: Dataset(keys=4, empty_day_every=0)], ids=["4-keys"], indirect=True)


def key_rows(url: str, key_hash: str, day: date) -> list[tuple]:
    return query(
        url,
        f"SELECT endpoint_id, usage, requests, prompt_tokens FROM activity_by_key WHERE api_key_hash = '{key_hash}' "
        f"AND date = '{day}' ORDER BY endpoint_id",
    )


def key_marks(url: str) -> dict[tuple[str, str], int]:
    rows = query(url, "SELECT subject, date, row_count FROM archived_breakdown_days WHERE breakdown = 'key'")
    return {(s, d): n for s, d, n in rows}


@FOUR_KEYS
def test_breakdown_keys_server_behind_yesterday_is_not_marked_empty_for_any_key(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    config('breakdowns = ["key", "workspace"]\n')
    api.clock_offset_days = -1
    result = run("backfill")
    assert result.exit_code == 0, result.output
    keys = [k.hash for k in dataset.api_keys]
    marked = key_marks(warehouse_url)
    assert not any(d == yesterday.isoformat() for _, d in marked)
    assert query(warehouse_url, f"SELECT count(*) FROM archived_breakdown_days WHERE date = '{yesterday}'") == [(0,)]
    assert len(marked) == 29 * len(keys)
    # no confirming request per key: one whole-window request each, plus the account's
    per_key = [p for p in activity_requests(api) if "api_key_hash" in p]
    assert len(per_key) == len(keys) and all("date" not in p for p in per_key)

    api.clock_offset_days = 0
    again = run("sync")
    assert again.exit_code == 0, again.output
    for key in keys:
        assert key_rows(warehouse_url, key, yesterday) == served_rows(dataset, yesterday, api_key_hash=key)
        assert key_marks(warehouse_url)[(key, yesterday.isoformat())] == len(served_rows(dataset, yesterday, api_key_hash=key))


@FOUR_KEYS
def test_breakdown_keys_server_ahead_first_day_is_not_marked_empty_and_the_rest_is_exact(run, api, dataset, config, warehouse_url):
    first, yesterday = window()
    config('breakdowns = ["key"]\n')
    api.clock_offset_days = 1
    result = run("backfill")
    assert result.exit_code == 1
    marked = key_marks(warehouse_url)
    assert not any(d == first.isoformat() for _, d in marked)
    keys = [k.hash for k in dataset.api_keys]
    assert len(marked) == 29 * len(keys)  # every other key-day archived...
    for key in keys:
        for day in (first + timedelta(days=1), yesterday):
            assert key_rows(warehouse_url, key, day) == served_rows(dataset, day, api_key_hash=key)  # ...exactly
    extra = [p for p in activity_requests(api) if "api_key_hash" not in p and p]
    assert len(extra) <= 2  # the window is proven once for every key, not once per key


@pytest.mark.parametrize("dataset", [lambda *_: Dataset(keys=2, empty_day_every=0)], ids=["2-keys"], indirect=True)
def test_a_failed_proof_request_costs_only_the_days_it_would_have_proven(api, dataset, warehouse_url):
    from etl import migrate
    from etl.client import OpenRouterClient
    from etl.config import parse_config
    from etl.db import open_engine
    from etl.standin import Fault
    from etl.sync import plan_backfill, run_sync

    first, yesterday = window()
    config = parse_config({"openrouter": {"base_url": api.base_url, "max_attempts": 2, "backoff_initial": 0.01},
                           "sync": {"breakdowns": ["key"], "concurrency": 1}}, "test")
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    client = OpenRouterClient.from_config(config.openrouter, KEY)
    real = client.activity

    def activity(date=None, **filters):  # the account-level proof of the first day, after the keys' answers, fails
        if date == first.isoformat() and not filters:
            api.inject(Fault("503"), Fault("503"))
        return real(date, **filters)

    client.activity = activity  # type: ignore[method-assign]
    without = [k.hash for k in dataset.api_keys if not dataset.activity(first, api_key_hash=k.hash)]
    # A key created mid-window, listed (so answered) last, has nothing on the first day: no
    # answer after its own shows that day still served, so one account-level request must.
    assert without == [dataset.api_keys[-1].hash]
    report = run_sync(engine, client, plan_backfill(utc_today()), trigger="test", settings=config.sync)
    (keys,) = report.breakdowns
    assert not keys.ok and any("inside the API's window" in e and "503" in e for e in keys.errors)
    marked = key_marks(warehouse_url)
    assert not any((h, first.isoformat()) in marked for h in without)  # unproven: not "no activity"
    assert len(marked) == 30 * len(dataset.api_keys) - len(without)  # everything else is written
    client.activity = real  # type: ignore[method-assign]
    again = run_sync(engine, client, [], trigger="test", settings=config.sync,
                     subject_plan=lambda have: [d for d in plan_backfill(utc_today()) if d.isoformat() not in have])
    assert again.ok and len(key_marks(warehouse_url)) == 30 * len(dataset.api_keys)
    client.close()
    engine.dispose()


# -- the stand-in's clock ----------------------------------------------------------------


def test_standin_clock_offset_moves_the_window_and_the_date_rule(api):
    import httpx

    first, yesterday = window()
    root = api.base_url.removesuffix("/api/v1")
    auth = {"Authorization": f"Bearer {KEY}"}

    def day_status(day: date) -> int:
        return httpx.get(f"{api.base_url}/activity", params={"date": day.isoformat()}, headers=auth).status_code

    moved = httpx.post(f"{root}/_standin/clock", json={"offset_days": 1})
    assert moved.json() == {"offset_days": 1, "today": (utc_today() + timedelta(days=1)).isoformat()}
    assert day_status(utc_today()) == 200 and day_status(first) == 400
    whole = httpx.get(f"{api.base_url}/activity", headers=auth).json()["data"]
    assert max(item["date"][:10] for item in whole) == utc_today().isoformat()
    assert httpx.post(f"{root}/_standin/clock", json={"offset_days": -1}).status_code == 200
    assert day_status(yesterday) == 400 and day_status(first - timedelta(days=1)) == 200
    assert httpx.post(f"{root}/_standin/clock", json={"offset_days": "soon"}).status_code == 400
    assert api.clock_offset_days == -1


# -- the evidence rules, pure --------------------------------------------------------------


D = date(2026, 11, 21)


def days(*offsets: int) -> list[date]:
    return [D + timedelta(days=o) for o in offsets]


def test_a_day_between_two_listed_days_of_the_same_answer_is_inside_the_window():
    evidence = WindowEvidence()
    answer = Moment(0.0, 1.0)
    own = set(days(-29, -1))
    assert evidence.held(D - timedelta(days=10), answer, own)
    assert not evidence.held(D, answer, own)  # newer than anything listed: maybe not served yet
    assert not evidence.held(D - timedelta(days=30), answer, own)  # older: maybe gone


def test_an_earlier_answer_proves_the_new_end_and_only_a_later_one_the_old_end():
    evidence = WindowEvidence()
    evidence.saw(days(-29, -1), Moment(0.0, 1.0))  # the account's answer
    key_answer = Moment(2.0, 3.0)
    assert evidence.held(D - timedelta(days=1), key_answer, set())  # the window never moves back
    assert evidence.held(D - timedelta(days=28), key_answer, set())  # at most one midnight since
    # The account's oldest day may have left the window in between (a sync across midnight):
    assert not evidence.held(D - timedelta(days=29), key_answer, set())
    evidence.saw(days(-29), Moment(4.0, 5.0))  # still served afterwards: so it was in between
    assert evidence.held(D - timedelta(days=29), key_answer, set())


def test_a_refused_day_is_classified_by_what_the_api_did_serve():
    evidence = WindowEvidence()
    evidence.saw(days(-29, -2), Moment(0.0, 1.0))
    window = (D - timedelta(days=29), D)
    assert evidence.edge(D, window) == "new"
    assert evidence.edge(D - timedelta(days=30), window) == "old"
    assert WindowEvidence().edge(D, window) == "new" and WindowEvidence().edge(window[0], window) == "old"


def test_status_reads_lost_days_from_the_runs_and_warns_only_inside_our_window():
    from etl.status import assess_health, refused_days

    details = [None, "not json", '{"key": {"days_gone": 1}}', '{"window": {"gone": ["2026-10-23"], "not_served": []}}',
               '{"window": {"gone": ["2026-09-01", 7]}}']
    assert refused_days(details) == {"2026-10-23", "2026-09-01"}
    today = date(2026, 11, 22)  # our window: 2026-10-23 .. 2026-11-21
    problems = assess_health("2026-11-21", [], today, 2, 3, ["2026-09-01", "2026-10-23"])
    assert len(problems) == 1 and "2026-10-23" in problems[0] and "2026-09-01" not in problems[0]
    assert assess_health("2026-11-21", [], today + timedelta(days=1), 2, 3, ["2026-09-01", "2026-10-23"]) == []


# -- the reliability report's row ---------------------------------------------------------


@pytest.mark.slow
def test_reliability_row_clock_ahead_and_behind():
    row = rr.clock_skew_at_window_edge()
    assert row.ok, row
    assert row.rows_lost == 0
    assert "wrongly marked empty: 0" in row.result
