from datetime import datetime, timezone

import pytest
from sqlalchemy import select, text

from etl import migrate, warehouse
from etl.client import Fetched
from etl.db import open_engine
from etl.schema import activity, activity_history, archived_days, metadata

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)


def row(endpoint="e1", **overrides):
    base = {
        "date": "2026-11-01",
        "endpoint_id": endpoint,
        "model": "openai/gpt-4.1",
        "model_permaslug": "openai/gpt-4.1-2025-04-14",
        "provider_name": "OpenAI",
        "usage": 0.25,
        "byok_usage_inference": 0.0,
        "requests": 3,
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "reasoning_tokens": 0,
        "cached_tokens": None,
    }
    return {**base, **overrides}


pytestmark = pytest.mark.both_backends


@pytest.fixture
def engine(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def table_content(engine):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(activity).order_by(activity.c.date, activity.c.endpoint_id))]


@pytest.mark.sqlite_only
def test_sqlite_pragmas(engine):
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_migrations_and_schema_module_agree(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_head_constant_matches_the_migration_scripts():
    assert migrate.scripts_head() == migrate.HEAD_REVISION


def test_downgrade_to_base_and_up_again(engine):
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert migrate.upgrade(engine) == (None, migrate.head_revision())


def test_diff_rows_classifies_new_changed_unchanged_and_vanished():
    existing = {("a",): ("m", "p", "P", 1.0, 0.0, 1, 1, 1, 0, None), ("b",): ("m", "p", "P", 1.0, 0.0, 1, 1, 1, 0, None), ("gone",): ("m",) * 10}
    incoming = [
        {"endpoint_id": "a", "model": "m", "model_permaslug": "p", "provider_name": "P", "usage": 1.0, "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": None},
        {"endpoint_id": "b", "model": "m", "model_permaslug": "p", "provider_name": "P", "usage": 1.5, "byok_usage_inference": 0.0, "requests": 2, "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": None},
        {"endpoint_id": "c", "model": "m", "model_permaslug": "p", "provider_name": "P", "usage": 1.0, "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": None},
    ]
    diff = warehouse.diff_rows(existing, incoming)
    assert [r["endpoint_id"] for r in diff.inserted] == ["c"]
    assert [r["endpoint_id"] for r in diff.updated] == ["b"]
    assert diff.unchanged == 1
    assert diff.vanished == [("gone",)]


def test_saving_a_day_twice_changes_nothing(engine):
    rows = [row("e1"), row("e2", usage=1.5)]
    with engine.begin() as conn:
        first = warehouse.save_day(conn, "2026-11-01", rows, now=NOW)
    before = table_content(engine)
    with engine.begin() as conn:
        second = warehouse.save_day(conn, "2026-11-01", rows, now=LATER)
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 2)
    assert table_content(engine) == before  # not even updated_at moved


def test_revised_row_is_updated_in_place_and_vanished_rows_are_retired_to_history(engine):
    with engine.begin() as conn:
        warehouse.save_day(conn, "2026-11-01", [row("e1"), row("e2")], now=NOW)
    with engine.begin() as conn:
        result = warehouse.save_day(conn, "2026-11-01", [row("e1", requests=9, usage=0.75)], now=LATER)
    assert (result.inserted, result.updated, result.unchanged, result.retired) == (0, 1, 0, 1)
    with engine.connect() as conn:
        e1 = conn.execute(select(activity).where(activity.c.endpoint_id == "e1")).mappings().one()
        assert e1["requests"] == 9 and e1["usage"] == 0.75
        assert e1["first_archived_at"] == NOW and e1["updated_at"] == LATER
        assert conn.execute(select(activity.c.endpoint_id).where(activity.c.endpoint_id == "e2")).first() is None
        history = conn.execute(select(activity_history.c.endpoint_id, activity_history.c.reason, activity_history.c.requests).order_by(activity_history.c.endpoint_id)).all()
        assert [tuple(h) for h in history] == [("e1", "revised", 3), ("e2", "retired", 3)]


def test_empty_day_is_marked_archived(engine):
    with engine.begin() as conn:
        warehouse.save_day(conn, "2026-11-02", [], now=NOW)
    with engine.connect() as conn:
        assert conn.execute(select(archived_days.c.row_count).where(archived_days.c.date == "2026-11-02")).scalar() == 0


@pytest.mark.sqlite_only  # a SQLite trigger plays the failure
def test_failed_transaction_leaves_no_partial_day(engine, api):
    # The product's transaction, not SQLAlchemy's: a sync writes each day's rows and its
    # archived mark together, so when the mark of the second day fails (a real SQLite
    # error), that day's rows are not left behind and the first day stays whole.
    from datetime import timedelta

    from etl.client import OpenRouterClient
    from etl.sync import run_sync
    from etl.window import utc_today

    days = [utc_today() - timedelta(days=k) for k in (3, 2, 1)]
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TRIGGER boom BEFORE INSERT ON archived_days WHEN NEW.date = '{days[1]}' "
                          "BEGIN SELECT RAISE(ABORT, 'crash after the rows, before the mark'); END"))
    with OpenRouterClient(api.base_url, api.management_key) as client:
        report = run_sync(engine, client, days, trigger="test")
    assert report.error == f"warehouse {engine.url.database}: crash after the rows, before the mark"
    with engine.connect() as conn:
        marked = conn.execute(select(archived_days.c.date)).scalars().all()
        stored = conn.execute(select(activity.c.date)).scalars().all()
    assert marked == [days[0].isoformat()]
    assert set(stored) <= {days[0].isoformat()}  # nothing of the failed day, nor of the day after it
    assert len(stored) == len(api.dataset.activity(days[0]))  # and the first day whole


def test_raw_response_round_trips_compressed(engine):
    body = b'{"data": [' + b'{"x": 1},' * 1000 + b'{"x": 2}]}'
    fetched = Fetched("activity", {"date": "2026-11-01"}, 200, "application/json", body, None, NOW)
    with engine.begin() as conn:
        raw_id = warehouse.store_raw(conn, fetched, None)
    with engine.connect() as conn:
        assert warehouse.read_raw(conn, raw_id) == body
        stored = conn.execute(text("SELECT length(body), body_bytes FROM raw_response_bodies")).one()
        assert stored[0] < stored[1] / 5
