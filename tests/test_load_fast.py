"""The fast load path writes exactly what the SQLAlchemy executemany path wrote.

Issue 13 (load target): ``warehouse.save_rows`` sends one statement, compiled once, with
positional tuples to the driver in the caller's transaction, instead of SQLAlchemy's
per-row parameter processing. These tests keep the old path as the reference (its code,
verbatim but for one bug fixed, below) and replay the same sequences of loads (new days,
revisions, days that shrink, NULL and 0 components, unchanged re-syncs, timestamps in
other zones) through both, on SQLite and on PostgreSQL, comparing every table as the database stores it (raw values,
read without the project's types) and every inserted/updated/unchanged/retired count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Table, bindparam, literal, select

from etl import analytics, migrate, warehouse
from etl.db import open_engine, upsert
from etl.schema import (
    ANALYTICS_AMOUNTS,
    ANALYTICS_COUNTS,
    HISTORY_TABLES,
    activity,
    activity_by_key,
    activity_by_workspace,
    analytics_daily,
)

pytestmark = pytest.mark.both_backends

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc)
CEST = timezone(timedelta(hours=2))


# -- the reference: the load path before issue 13, verbatim but for one fix ---------------------


def reference_diff_rows(existing, incoming, key, compared):
    inserted, updated, seen, unchanged = [], [], set(), 0
    for row in incoming:
        ident = tuple(row[k] for k in key)
        seen.add(ident)
        old = existing.get(ident)
        if old is None:
            inserted.append(dict(row))
        elif tuple(old) != tuple(row[c] for c in compared):
            updated.append(dict(row))
        else:
            unchanged += 1
    vanished = sorted(set(existing) - seen)
    return warehouse.RowDiff(inserted, updated, unchanged, vanished)


def reference_save_rows(
    conn: Connection, table: Table, day: str, rows: Sequence[Mapping[str, Any]], *, now: datetime,
    scope: Mapping[str, str | tuple[str, ...]] | None = None, key: Sequence[str] = ("endpoint_id",),
    run_id: int | None = None, raw_response_id: int | None = None, compared: Sequence[str] = warehouse._COMPARED,
) -> warehouse.DayWrite:
    scope = scope or {}
    # The one change: a tuple scope's values bound one by one (the old expanding IN made the
    # retire delete, an executemany, fail; test_a_series_day_that_loses_two_models_retires_both).
    where = [
        table.c.date == day,
        *(table.c[c].in_([literal(x, table.c[c].type) for x in v]) if isinstance(v, tuple) else table.c[c] == v for c, v in scope.items()),
    ]
    fixed = {c: v for c, v in scope.items() if not isinstance(v, tuple)}
    existing = {
        tuple(r[: len(key)]): r[len(key) :]
        for r in conn.execute(select(*(table.c[k] for k in key), *(table.c[c] for c in compared)).where(*where))
    }
    diff = reference_diff_rows(existing, rows, key, compared)
    revised = [tuple(r[k] for k in key) for r in diff.updated]
    if revised or diff.vanished:
        reference_supersede(conn, table, where, key, revised, diff.vanished, now, run_id, raw_response_id)
    changed = diff.inserted + diff.updated
    if changed:
        pk = [c.name for c in table.primary_key.columns]
        stmt = upsert(conn.engine, table, pk, (*compared, "updated_at"))
        conn.execute(stmt, [{**r, **fixed, "date": day, "first_archived_at": now, "updated_at": now} for r in changed])
    return warehouse.DayWrite(day, len(rows), len(diff.inserted), len(diff.updated), diff.unchanged, len(diff.vanished))


def reference_supersede(conn, table, where, key, revised, retired, now, run_id, raw_response_id):
    reasons = {**dict.fromkeys(revised, "revised"), **dict.fromkeys(retired, "retired")}
    old = [r for r in conn.execute(select(table).where(*where)).mappings() if tuple(r[k] for k in key) in reasons]
    stamp = {"superseded_at": now, "superseded_by_run": run_id, "superseded_by_raw_response_id": raw_response_id}
    conn.execute(HISTORY_TABLES[table.name].insert(), [{**r, **stamp, "reason": reasons[tuple(r[k] for k in key)]} for r in old])
    if retired:
        match = [table.c[k] == bindparam(f"key_{k}") for k in key]
        conn.execute(table.delete().where(*where, *match), [{f"key_{k}": v for k, v in zip(key, ident)} for ident in retired])


# -- loads to replay -------------------------------------------------------------------------

ENDPOINTS = ("ep-a", "ep-b", "ep-c", "ep-d")
KEYS = ("k" * 64, "j" * 64)
WORKSPACES = ("ws-1", "ws-2")
MODELS = ("openai/gpt-4.1", "anthropic/claude-4")
DAYS = ("2026-11-01", "2026-11-02")
# A few values per column, so that random sequences revisit rows unchanged as often as revised.
AMOUNT = st.sampled_from([0.0, 0.25, 1.5, 1e-9])
COMPONENT = st.sampled_from([None, 0.0, 0.125])  # NULL (does not apply) is not 0
COUNT = st.sampled_from([0, 3, 2**40])
MOMENT = st.sampled_from([
    NOW, NOW + timedelta(hours=1, microseconds=250), datetime(2026, 11, 22, 4, 0, 0, 999999, tzinfo=CEST),
    datetime(2026, 11, 23, 0, 0, tzinfo=CEST),
])


@st.composite
def activity_row(draw, endpoint: str, day: str) -> dict[str, Any]:
    return {
        "date": day, "endpoint_id": endpoint, "model": draw(st.sampled_from(MODELS)), "model_permaslug": "openai/gpt-4.1-2025-04-14",
        "provider_name": draw(st.sampled_from(["OpenAI", "Azure"])), "usage": draw(AMOUNT), "byok_usage_inference": draw(AMOUNT),
        "requests": draw(COUNT), "prompt_tokens": draw(COUNT), "completion_tokens": 40, "reasoning_tokens": draw(COUNT),
        "cached_tokens": draw(st.sampled_from([None, 0, 5])),
    }


def some(items: Sequence[str]):
    return st.lists(st.sampled_from(items), unique=True, max_size=len(items)).map(sorted)


@st.composite
def load(draw) -> tuple[Any, ...]:
    """One day's answer for one of the tables the load path writes."""
    kind = draw(st.sampled_from(["activity", "key", "workspace", "account", "key-series"]))
    day, now = draw(st.sampled_from(DAYS)), draw(MOMENT)
    if kind == "activity":
        return kind, day, now, None, [draw(activity_row(e, day)) for e in draw(some(ENDPOINTS))]
    if kind == "key":
        return kind, day, now, draw(st.sampled_from(KEYS)), [draw(activity_row(e, day)) for e in draw(some(ENDPOINTS))]
    if kind == "workspace":
        pairs = draw(st.lists(st.tuples(st.sampled_from(WORKSPACES), st.sampled_from(ENDPOINTS)), unique=True, max_size=5))
        return kind, day, now, "*", [{**draw(activity_row(e, day)), "workspace_id": w} for w, e in sorted(pairs)]
    subjects = ("*",) if kind == "account" else tuple(draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=1)))
    answers = []
    for subject in subjects:
        rows = [
            {"series": "account" if kind == "account" else "key", "subject": subject, "date": day, "model": m, "variant": "",
             **{a: draw(COMPONENT) for a in ANALYTICS_AMOUNTS}, **{c: draw(COUNT) for c in ANALYTICS_COUNTS}}
            for m in draw(some(MODELS))
        ]
        answers.append((subject, rows, None))
    return kind, day, now, subjects, answers


def apply(conn: Connection, step: tuple[Any, ...]) -> list[tuple[int, int, int, int, int]]:
    kind, day, now, subject, rows = step
    if kind == "activity":
        written = [warehouse.save_day(conn, day, rows, now=now)]
    elif kind in ("key", "workspace"):
        written = [warehouse.save_breakdown_day(conn, kind, subject, day, rows, now=now)]
    else:
        series = analytics.SERIES["account" if kind == "account" else "key"]
        written = [analytics.save_series_day(conn, series, rows, day, now=now, run_id=None)]
    return [(w.rows, w.inserted, w.updated, w.unchanged, w.retired) for w in written]


TABLES = (activity, activity_by_key, activity_by_workspace, analytics_daily)
MARKS = ("archived_days", "archived_breakdown_days", "archived_analytics_days")


def stored(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the loads write, as the database holds it (no project types on the way out).

    History rows without their ids (PostgreSQL's sequences do not roll back with the
    transaction), sorted: the versions one load supersedes are read in the table's scan
    order, which on PostgreSQL depends on where earlier, rolled-back rows left free space.
    """
    out = {}
    for table in TABLES:
        pk = ", ".join(c.name for c in table.primary_key.columns)
        out[table.name] = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY {pk}")]
        history = HISTORY_TABLES[table.name].name
        out[history] = sorted((tuple(r)[1:] for r in conn.exec_driver_sql(f"SELECT * FROM {history}")), key=_sortable)
    for name in MARKS:
        out[name] = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {name} ORDER BY 1, 2" + (", 3" if name != "archived_days" else ""))]
    return out


def _sortable(row: tuple[Any, ...]) -> list[tuple[bool, Any]]:
    return [(v is None, 0 if v is None else v) for v in row]


def replay(engine, steps: Iterable[tuple[Any, ...]], save_rows) -> tuple[list[Any], dict[str, list[tuple[Any, ...]]]]:
    """Run ``steps`` through ``save_rows`` in one transaction, read everything back, roll it all back."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(warehouse, "save_rows", save_rows)
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                counts = [apply(conn, step) for step in steps]
                return counts, stored(conn)
            finally:
                trans.rollback()


@pytest.fixture
def engine(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


FAST = warehouse.save_rows


def read(engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def assert_same(engine, steps) -> dict[str, list[tuple[Any, ...]]]:
    fast_counts, fast = replay(engine, steps, FAST)
    old_counts, old = replay(engine, steps, reference_save_rows)
    assert fast_counts == old_counts
    for name in old:
        assert fast[name] == old[name], name
    return fast


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(load(), min_size=1, max_size=8))
def test_random_sequences_of_loads_store_what_the_old_path_stored(engine, steps):
    # Each example rolls its transactions back, so the function-scoped warehouse stays empty.
    assert_same(engine, steps)


def rows_for(day: str, *endpoints: str, **overrides: Any) -> list[dict[str, Any]]:
    base = {"model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025-04-14", "provider_name": "OpenAI", "usage": 0.25,
            "byok_usage_inference": 0.0, "requests": 3, "prompt_tokens": 100, "completion_tokens": 40, "reasoning_tokens": 0,
            "cached_tokens": None}
    return [{"date": day, "endpoint_id": e, **base, **overrides} for e in endpoints]


def test_revisions_that_shrink_a_day_and_null_components(engine):
    day = DAYS[0]

    def series(**amounts: Any) -> tuple[str, list[dict[str, Any]], None]:
        row = {"series": "account", "subject": "*", "date": day, "model": MODELS[0], "variant": "",
               **dict.fromkeys(ANALYTICS_AMOUNTS, None), **dict.fromkeys(ANALYTICS_COUNTS, 1), **amounts}
        return "*", [row], None

    steps = [
        ("activity", day, NOW, None, rows_for(day, *ENDPOINTS)),
        ("activity", day, NOW + timedelta(hours=1), None, rows_for(day, "ep-a", "ep-b", usage=0.5)),  # shrinks, revises
        ("activity", day, NOW + timedelta(hours=2), None, []),  # the day emptied
        ("workspace", day, NOW, "*", [{**r, "workspace_id": w} for w in WORKSPACES for r in rows_for(day, "ep-a", "ep-b")]),
        ("workspace", day, NOW + timedelta(hours=1), "*", [{**r, "workspace_id": "ws-2"} for r in rows_for(day, "ep-b")]),
        ("account", day, NOW, ("*",), [series(usage_cache=None)]),
        ("account", day, NOW + timedelta(hours=1), ("*",), [series(usage_cache=0.0)]),  # NULL -> 0 is a revision
        ("account", day, NOW + timedelta(hours=2), ("*",), [series(usage_cache=None)]),  # and back
    ]
    fast = assert_same(engine, steps)
    assert fast["activity"] == []
    assert sorted((h[1], h[-1]) for h in fast["activity_history"]) == [
        ("ep-a", "retired"), ("ep-a", "revised"), ("ep-b", "retired"), ("ep-b", "revised"), ("ep-c", "retired"), ("ep-d", "retired"),
    ]
    assert [h[-1] for h in fast["activity_by_workspace_history"]] == ["retired", "retired", "retired"]
    usage_cache = [c.name for c in analytics_daily.columns].index("usage_cache")
    assert sorted(repr(h[usage_cache]) for h in fast["analytics_daily_history"]) == ["0.0", "None"]
    assert [r[usage_cache] for r in fast["analytics_daily"]] == [None]


def test_an_unchanged_resync_writes_nothing(engine, warehouse_backend):
    day = DAYS[1]
    rows = rows_for(day, *ENDPOINTS)
    with engine.begin() as conn:
        assert warehouse.save_day(conn, day, rows, now=NOW).inserted == 4
    # What proves nothing was written: SQLite counts every row changed on the connection;
    # PostgreSQL gives an updated row a new version (xmin), even with the same values.
    version = "xmin::text" if warehouse_backend == "postgresql" else "rowid"
    before = read(engine, f"SELECT {version}, * FROM activity ORDER BY endpoint_id")
    with engine.begin() as conn:
        changes = "SELECT total_changes()" if warehouse_backend == "sqlite" else "SELECT 0"
        start = conn.exec_driver_sql(changes).scalar()
        again = warehouse.save_rows(conn, activity, day, rows, now=NOW + timedelta(days=1))
        assert conn.exec_driver_sql(changes).scalar() == start
    after = read(engine, f"SELECT {version}, * FROM activity ORDER BY endpoint_id")
    assert (again.inserted, again.updated, again.unchanged, again.retired) == (0, 0, 4, 0)
    assert after == before
    assert read(engine, "SELECT count(*) FROM activity_history") == [(0,)]


@pytest.mark.sqlite_only
def test_timestamps_are_stored_as_the_utc_text_sqlalchemy_wrote(engine):
    day = DAYS[0]
    moments = [datetime(2026, 11, 22, 2, 0, tzinfo=CEST), datetime(2026, 11, 22, 0, 30, 0, 5, tzinfo=timezone.utc)]
    for n, moment in enumerate(moments):
        with engine.begin() as conn:
            warehouse.save_rows(conn, activity, day, rows_for(day, "ep-a", requests=n), now=moment)
    assert read(engine, "SELECT first_archived_at, updated_at FROM activity") == [("2026-11-22 00:00:00.000000", "2026-11-22 00:30:00.000005")]
    assert read(engine, "SELECT updated_at, superseded_at FROM activity_history") == [("2026-11-22 00:00:00.000000", "2026-11-22 00:30:00.000005")]


def test_a_naive_timestamp_is_refused_and_nothing_is_written(engine):
    day = DAYS[0]
    with pytest.raises(Exception, match="naive datetime"):
        with engine.begin() as conn:
            warehouse.save_rows(conn, activity, day, rows_for(day, "ep-a"), now=datetime(2026, 11, 22, 1, 0))
    assert read(engine, "SELECT count(*) FROM activity") == [(0,)]



def test_a_series_day_that_loses_two_models_retires_both(engine):
    # The subjects of a series day are a tuple scope (an IN list); moving two vanished rows
    # to history used to send that IN list's expanding parameter to an executemany, which
    # SQLAlchemy refuses: the whole day's transaction failed.
    day = DAYS[0]
    account = analytics.SERIES["account"]

    def answer(*models: str) -> list[tuple[str, list[dict[str, Any]], None]]:
        rows = [{"series": "account", "subject": "*", "date": day, "model": m, "variant": "",
                 **dict.fromkeys(ANALYTICS_AMOUNTS, 0.5), **dict.fromkeys(ANALYTICS_COUNTS, 1)} for m in models]
        return [("*", rows, None)]

    with engine.begin() as conn:
        analytics.save_series_day(conn, account, answer(*MODELS), day, now=NOW, run_id=None)
    with engine.begin() as conn:
        written = analytics.save_series_day(conn, account, answer(), day, now=NOW + timedelta(hours=1), run_id=None)
    assert (written.inserted, written.updated, written.unchanged, written.retired) == (0, 0, 0, 2)
    assert read(engine, "SELECT count(*) FROM analytics_daily") == [(0,)]
    assert read(engine, "SELECT model, reason FROM analytics_daily_history ORDER BY model") == [(m, "retired") for m in sorted(MODELS)]
