"""The monthly summaries (issue 13): a report from them equals the plain sum over the rows.

An archive with revisions is written through the project's own load path
(``warehouse.save_day`` and ``save_breakdown_day``, one transaction per day, days loaded
again with rows changed, added and retired), then random reports are asked both ways:
through the summaries (``fast``) and over the base rows alone. They must be the very same
numbers, and both within a cent of an independent ``math.fsum`` of the rows' floats.
Writes that bypass the load path (plain INSERT, UPDATE, DELETE) keep them exact too.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from etl import migrate, summaries, warehouse
from etl.db import open_engine
from etl.query import ReportSpec, grouped_rows, summary_span

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)
DAYS = [(date(2026, 1, 27) + timedelta(days=i)).isoformat() for i in range(75)]  # 2026-01-27 .. 2026-04-11
BOUNDS = sorted({*DAYS[::7], "2026-02-01", "2026-02-28", "2026-03-01", "2026-03-31", "2026-04-01", "2026-01-31"})
MODELS = ["openai/gpt-4.1", "anthropic/claude-4", "google/gemini-2.5:free"]
PROVIDERS = ["OpenAI", "Anthropic", "Google"]
KEYS = ["k" * 63 + "1", "k" * 63 + "2"]
GROUPS = ["month", "year", "model", "permaslug", "provider"]

amounts = st.one_of(
    st.floats(min_value=-2, max_value=40, allow_nan=False, allow_infinity=False),  # any precision
    st.floats(min_value=0, max_value=40).map(lambda x: round(x, 10)),  # OpenRouter's
    st.sampled_from([0.0, 0.1, 0.2, 0.3, 1e-11, 5e-11, 1.5e-10, 2.5e-10]),  # sums that float rounding likes to break
)


@st.composite
def day_rows(draw, day: str) -> list[dict]:
    endpoints = draw(st.lists(st.sampled_from(["e0", "e1", "e2", "e3", "e4"]), unique=True, max_size=4))
    rows = []
    for endpoint in endpoints:
        model = draw(st.sampled_from(MODELS))
        prompt = draw(st.integers(0, 10**6))
        rows.append({
            "date": day, "endpoint_id": endpoint, "model": model, "model_permaslug": model.split(":")[0] + "-2025",
            "provider_name": draw(st.sampled_from(PROVIDERS)), "usage": draw(amounts), "byok_usage_inference": draw(amounts),
            "requests": draw(st.integers(0, 1000)), "prompt_tokens": prompt, "completion_tokens": draw(st.integers(0, 10**6)),
            "reasoning_tokens": draw(st.integers(0, 1000)), "cached_tokens": draw(st.none() | st.integers(0, prompt)),
        })
    return rows


@st.composite
def loads(draw) -> list[tuple[str, list[dict], dict[str, list[dict]]]]:
    """Days loaded in order; a day drawn twice is loaded again: OpenRouter's revision of it."""
    out = []
    for day in draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=14)):
        out.append((day, draw(day_rows(day)), {k: draw(day_rows(day)) for k in KEYS if draw(st.booleans())}))
    return out


@st.composite
def specs(draw) -> ReportSpec:
    keyed = draw(st.booleans())
    group_by = tuple(draw(st.lists(st.sampled_from(GROUPS + (["key"] if keyed else [])), min_size=1, max_size=2, unique=True)))
    since, until = draw(st.none() | st.sampled_from(BOUNDS)), draw(st.none() | st.sampled_from(BOUNDS))
    if since and until and since > until:
        since, until = until, since
    models = tuple(draw(st.lists(st.sampled_from([*MODELS, "openai/*", "*:free"]), max_size=1)))
    providers = tuple(draw(st.lists(st.sampled_from(PROVIDERS), max_size=1)))
    keys = ("some key",) if keyed and "key" not in group_by else ()
    return ReportSpec(group_by, since, until, models, providers, keys=keys)


@pytest.fixture
def engine(warehouse_url):
    """One warehouse for every example of a test: each example empties it first."""
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def load(engine, plan) -> None:
    with engine.begin() as conn:  # the previous example's archive goes: the delete triggers run too
        for table in ("activity", "activity_by_key", "archived_days", "archived_breakdown_days", "activity_history", "activity_by_key_history"):
            conn.execute(text(f"DELETE FROM {table}"))
        assert conn.execute(text("SELECT count(*) FROM activity_monthly")).scalar() == 0
    for day, rows, by_key in plan:
        with engine.begin() as conn:
            warehouse.save_day(conn, day, rows, now=NOW)
            for key, key_rows in by_key.items():
                warehouse.save_breakdown_day(conn, "key", key, day, key_rows, now=NOW)


def key_of(row, spec):
    return tuple(row[g] for g in spec.group_by)


def fsum_oracle(conn, spec: ReportSpec, key_hashes) -> dict[tuple, tuple[float, int]]:
    """Per group: math.fsum of the rows' usage floats and the number of rows, computed here."""
    table = "activity_by_key" if spec.breakdown else "activity"
    rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
    label = {"month": lambda r: r["date"][:7], "year": lambda r: r["date"][:4], "model": lambda r: r["model"],
             "permaslug": lambda r: r["model_permaslug"], "provider": lambda r: r["provider_name"], "key": lambda r: r["api_key_hash"]}
    import fnmatch

    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if (spec.since and r["date"] < spec.since) or (spec.until and r["date"] > spec.until):
            continue
        if spec.models and not any(fnmatch.fnmatchcase(r["model"], p) for p in spec.models):
            continue
        if spec.providers and r["provider_name"] not in spec.providers:
            continue
        if key_hashes is not None and r["api_key_hash"] not in key_hashes:
            continue
        groups.setdefault(tuple(label[g](r) for g in spec.group_by), []).append(r["usage"])
    return {k: (math.fsum(v), len(v)) for k, v in groups.items()}


@pytest.mark.slow
@pytest.mark.both_backends
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=loads(), asked=st.lists(specs(), min_size=1, max_size=6))
def test_fast_path_equals_the_plain_sum_to_the_cent(engine, plan, asked):
    load(engine, plan)
    with engine.connect() as conn:
        assert summaries.verify(conn, "0000-00", "9999-99") == []
        for spec in asked:
            key_hashes = [KEYS[0]] if spec.keys else None
            fast = sorted(grouped_rows(conn, spec, key_hashes), key=lambda r: str(key_of(r, spec)))
            plain = sorted(grouped_rows(conn, spec, key_hashes, fast=False), key=lambda r: str(key_of(r, spec)))
            assert fast == plain, (spec, summary_span(spec))  # the very same numbers, not just close ones
            oracle = fsum_oracle(conn, spec, key_hashes)
            assert {key_of(r, spec) for r in fast} == set(oracle)
            for row in fast:
                want, n = oracle[key_of(row, spec)]
                assert abs(row["usage"] - want) <= n * 5e-11 + 1e-9 < 0.005, (spec, row, want)


@pytest.mark.parametrize(("since", "until", "whole", "edges"), [
    (None, None, (None, None), []),
    ("2026-02-01", "2026-03-31", ("2026-02", "2026-03"), []),
    ("2026-01-27", "2026-04-11", ("2026-02", "2026-03"), [("2026-01-27", "2026-01-31"), ("2026-04-01", "2026-04-11")]),
    ("2026-02-10", None, ("2026-03", None), [("2026-02-10", "2026-02-28")]),
    (None, "2026-02-27", (None, "2026-01"), [("2026-02-01", "2026-02-27")]),
    ("2024-02-01", "2024-02-29", ("2024-02", "2024-02"), []),  # a leap month, whole
])
def test_whole_months_and_edge_days_of_a_range(since, until, whole, edges):
    assert summary_span(ReportSpec(("model",), since, until)) == (*whole, edges)


@pytest.mark.parametrize(("since", "until", "group_by"), [
    ("2026-02-02", "2026-02-27", ("model",)),  # inside one month: nothing whole
    ("2026-02-15", "2026-03-14", ("month",)),  # two partial months
    (None, None, ("date",)), (None, None, ("week", "model")), (None, None, ("endpoint",)),  # groups a month cannot give
])
def test_the_base_rows_answer_what_the_summaries_cannot(since, until, group_by):
    assert summary_span(ReportSpec(group_by, since, until)) is None


ROW = ("INSERT INTO activity (date, endpoint_id, model, model_permaslug, provider_name, usage, byok_usage_inference, requests, "
       "prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, first_archived_at, updated_at) "
       "VALUES (:d, :e, :m, 'p', 'P', :u, 0, 1, 2, 3, 0, NULL, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")


@pytest.mark.both_backends
def test_writes_that_bypass_the_load_path_keep_the_summaries_exact(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    spec = ReportSpec(("month", "model"))
    with engine.begin() as conn:
        for d, e, m, u in [("2026-01-03", "e1", "a", 0.1), ("2026-01-04", "e1", "a", 0.2), ("2026-02-01", "e2", "b", 0.3), ("2026-02-02", "e2", "b", 1e-11)]:
            conn.execute(text(ROW), {"d": d, "e": e, "m": m, "u": u})
    steps = [
        "UPDATE activity SET usage = usage * 3, model = 'c' WHERE date = '2026-01-04'",
        "UPDATE activity SET date = '2026-03-04' WHERE date = '2026-01-03'",  # to another month
        "DELETE FROM activity WHERE date = '2026-02-01'",
        "UPDATE activity SET requests = requests + 1",
        "DELETE FROM activity",
    ]
    with engine.connect() as conn:
        assert grouped_rows(conn, spec) == grouped_rows(conn, spec, fast=False) != []
    for step in steps:
        with engine.begin() as conn:
            conn.execute(text(step))
        with engine.connect() as conn:
            assert summaries.verify(conn, "0000-00", "9999-99") == [], step
            fast = sorted(grouped_rows(conn, spec), key=str)
            assert fast == sorted(grouped_rows(conn, spec, fast=False), key=str), step
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM activity_monthly")).scalar() == 0  # emptied groups leave no row
    engine.dispose()


@pytest.mark.both_backends
def test_a_rolled_back_write_leaves_the_summaries_as_they_were(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(ROW), {"d": "2026-01-03", "e": "e1", "m": "a", "u": 1.0})
    before = _summary(engine)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text(ROW), {"d": "2026-01-05", "e": "e1", "m": "a", "u": 2.0})
        raise RuntimeError("the day's transaction fails half-way")
    assert _summary(engine) == before
    engine.dispose()


def _summary(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM activity_monthly ORDER BY 1, 2")).all()


def test_money_units_turn_back_into_usd_rounded_to_a_billionth():
    assert summaries.usd(0) == 0.0
    assert summaries.usd(10**10) == 1.0
    assert summaries.usd(3 * 10**9) == 0.3  # 0.1 + 0.2 as floats is 0.30000000000000004
    assert summaries.usd(-15) == -0.000000002  # half a billionth, to the even
    assert summaries.usd(123456789012345678901) == 12345678901.234567890
