"""Issue 13: a sync validates and loads only the days it planned. A plan of two or more
days costs one whole-window request; its other days are neither checked nor loaded, and
the raw answer is still kept whole.

Real CLI, real stand-in, real SQLite. ``validate_day`` is wrapped by a spy that records
which days it was given and then runs the real check unchanged.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from conftest import query
from etl import validate
from etl.standin import Fault
from etl.validate import parse_activity
from oracle import ACTIVITY_SQL, window

CONFIG = "[openrouter]\nmax_attempts = 2\nbackoff_initial = 0.01\nbackoff_max = 0.02\ntimeout_seconds = 5\n"


def today() -> date:
    return datetime.now(timezone.utc).date()


def days_of(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


@pytest.fixture
def checked(monkeypatch):
    """The days handed to the real per-day validation, in order."""
    seen: list[str] = []
    real = validate.validate_day

    def spy(day, items, subject=None):
        seen.append(day)
        return real(day, items, subject)

    monkeypatch.setattr(validate, "validate_day", spy)
    return seen


@pytest.fixture
def archived(run, api, cli_env, tmp_path):
    """The whole window archived; refetch_days = 2, so the next sync plans the two newest days."""
    (tmp_path / "config.toml").write_text(CONFIG)
    assert run("backfill").exit_code == 0


def window_answer(api, break_day: date | None = None) -> bytes:
    """The stand-in's whole-window answer, with one malformed row on ``break_day``."""
    first, last = window(today())
    items = [item for day in days_of(first, last) for item in api.dataset.activity(day)]
    if break_day is not None:
        target = next(i for i, item in enumerate(items) if item["date"].startswith(break_day.isoformat()))
        items[target] = {**items[target], "usage": "lots"}
    return json.dumps({"data": items}).encode()


def busy_days(api, days: list[date]) -> list[date]:
    return [d for d in days if api.dataset.activity(d)]


def raw_body_of(url: str, day: date) -> bytes:
    """The raw answer a day was last loaded from, through the warehouse's own reader."""
    from etl import warehouse
    from etl.db import open_engine

    ((raw_id,),) = query(url, f"SELECT raw_response_id FROM archived_days WHERE date = '{day.isoformat()}'")
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return warehouse.read_raw(conn, raw_id)
    finally:
        engine.dispose()


def test_a_sync_of_two_days_checks_those_two_of_a_30_day_answer(run, api, warehouse_url, archived, checked):
    first, last = window(today())
    planned = [last - timedelta(days=1), last]
    unplanned = busy_days(api, days_of(first, last - timedelta(days=2)))
    body = window_answer(api, break_day=unplanned[0])
    before = query(warehouse_url, ACTIVITY_SQL)
    api.requests.clear()
    api.inject(Fault("body", path="/activity", body=body))
    result = run("sync")
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(set(checked)) == [d.isoformat() for d in busy_days(api, planned)]  # not the 28 others
    assert "lots" not in result.stderr  # the malformed unplanned day was never looked at
    assert query(warehouse_url, ACTIVITY_SQL) == before  # the same rows: the answer matches the archive
    assert raw_body_of(warehouse_url, last) == body  # the raw answer is kept whole
    assert query(warehouse_url, "SELECT days_requested, days_fetched, requests FROM sync_runs ORDER BY id DESC LIMIT 1") == [(2, 2, 1)]


def test_a_malformed_row_on_a_planned_day_still_rejects_that_day(run, api, warehouse_url, archived, checked):
    first, last = window(today())
    planned = busy_days(api, [last - timedelta(days=1), last])
    assert planned, "the stand-in's newest two days should hold activity"
    bad = planned[0]
    before = query(warehouse_url, ACTIVITY_SQL)
    api.inject(Fault("body", path="/activity", body=window_answer(api, break_day=bad)))
    result = run("sync")
    assert result.exit_code == 1
    assert bad.isoformat() in result.output + result.stderr and "usage" in result.output + result.stderr
    assert query(warehouse_url, ACTIVITY_SQL) == before  # the rejected day keeps its archived rows
    outcome, error = query(warehouse_url, "SELECT outcome, error FROM sync_runs ORDER BY id DESC LIMIT 1")[0]
    assert outcome == "partial" and bad.isoformat() in error


def test_each_breakdown_subject_checks_only_its_planned_days(run, api, warehouse_url, cli_env, tmp_path, checked):
    (tmp_path / "config.toml").write_text(CONFIG + '[sync]\nbreakdowns = ["key", "workspace"]\n')
    assert run("backfill").exit_code == 0
    checked.clear()
    first, last = window(today())
    planned = {d.isoformat() for d in (last - timedelta(days=1), last)}
    assert run("sync").exit_code == 0
    keys = query(warehouse_url, "SELECT count(*) FROM api_keys")[0][0]
    assert set(checked) <= planned and len(checked) <= len(planned) * (1 + keys + 1)  # the account, each key, the workspaces
    # What the breakdowns hold is exactly what a full check would give for those days.
    for breakdown, table in (("key", "activity_by_key"), ("workspace", "activity_by_workspace")):
        rows = query(warehouse_url, f"SELECT count(*) FROM {table} WHERE date IN ({', '.join(repr(d) for d in planned)})")[0][0]
        filters = [{"api_key_hash": k.hash} for k in api.dataset.api_keys] if breakdown == "key" else [{"group_by": "workspace"}]
        expected = sum(len(api.dataset.activity(date.fromisoformat(d), **f)) for d in planned for f in filters)
        assert rows == expected, breakdown


# -- the pure part -------------------------------------------------------------------------


def item(day: str, endpoint: str, **overrides):
    base = {"date": day, "model": "m", "model_permaslug": "m-1", "endpoint_id": endpoint, "provider_name": "P",
            "usage": 0.5, "byok_usage_inference": 0.0, "requests": 2, "prompt_tokens": 10, "completion_tokens": 5,
            "reasoning_tokens": 0}
    return {**base, **overrides}


WINDOW = (date(2026, 10, 1), date(2026, 10, 30))


def test_parse_activity_checks_the_planned_days_and_counts_the_others():
    document = {"data": [item("2026-10-01", "a", usage="lots"), item("2026-10-01", "b"), item("2026-10-02", "a"),
                         item("2026-10-03", "a", requests=-1), item("2026-10-31", "a")]}
    full = parse_activity(document, WINDOW)
    some = parse_activity(document, WINDOW, planned={"2026-10-02", "2026-10-03", "2026-10-04"})
    assert some.days == {"2026-10-02": full.days["2026-10-02"]}  # the same rows as a full check
    assert some.rejected == {"2026-10-03": full.rejected["2026-10-03"], "2026-10-31": full.rejected["2026-10-31"]}
    assert some.unchecked == {"2026-10-01": 2}  # malformed, but not planned: not looked at
    assert "2026-10-01" in full.rejected
    assert some.listed() == full.listed() == ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-31"]


def test_without_a_plan_every_day_is_checked():
    document = {"data": [item("2026-10-01", "a"), item("2026-10-02", "a", usage=float("nan"))]}
    parsed = parse_activity(document, WINDOW)
    assert set(parsed.days) == {"2026-10-01"} and set(parsed.rejected) == {"2026-10-02"} and parsed.unchecked == {}


def test_an_answer_that_cannot_be_split_by_day_fails_whatever_the_plan():
    from etl.errors import InvalidResponseError

    with pytest.raises(InvalidResponseError):
        parse_activity({"data": [item("2026-10-02", "a"), {"date": "soon"}]}, WINDOW, planned={"2026-10-02"})
