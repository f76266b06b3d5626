"""Issue 13 (storage): raw answers are content-addressed, kept whole and byte-exact.

Identical answers are stored once, each fetch naming its body; a body is stored as pieces
(one day of a window answer each), each distinct piece once; the ``raw_response_bodies``
view gives every fetch's whole body as a gzip stream; migration 0007 moves the bodies of an
older archive without losing a byte, and its downgrade puts them back.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from conftest import KEY, query
from etl import migrate, rawstore, warehouse
from etl.client import Fetched, OpenRouterClient
from etl.db import open_engine
from etl.errors import WarehouseError
from etl.standin import Dataset, StandIn
from etl.sync import pending_days, run_sync

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=timezone.utc)
COUNTS = "SELECT (SELECT count(*) FROM raw_responses), (SELECT count(*) FROM raw_bodies), (SELECT count(*) FROM raw_chunks)"


def window_answer(days: list[str], per_day: int = 150) -> bytes:
    """A body shaped like GET /activity's: the items of each day together, newest first."""
    items = [
        {"date": d, "model": "m/x", "endpoint_id": f"ep-{d}-{i}", "provider_name": "P", "usage": i * 0.001, "requests": i}
        for d in days for i in range(per_day)
    ]
    return json.dumps({"data": items}, separators=(",", ":")).encode()


def fetched(body: bytes, when: datetime = NOW) -> Fetched:
    return Fetched("activity", {}, 200, "application/json", body, None, when)


@pytest.fixture
def engine(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


# -- the cut (pure) ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_pieces_are_the_body_exactly_whatever_the_bytes(body):
    pieces = rawstore.split(body)
    assert b"".join(pieces) == body
    assert pieces and all(pieces[1:])  # no empty piece (an empty body is one empty piece)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-02 00:00:00"]), max_size=400),
       st.sampled_from([",", ", ", ",\n  "]))
def test_answers_of_any_date_order_are_cut_into_the_exact_body(dates, sep):
    items = sep.join(json.dumps({"date": d, "endpoint_id": f"e{i}", "pad": "x" * 200}) for i, d in enumerate(dates))
    body = ('{"data": [' + items + "]}").encode()
    assert b"".join(rawstore.split(body)) == body


def test_a_day_is_the_same_piece_wherever_it_sits_in_the_window():
    days = [(date(2026, 11, 30) - timedelta(days=i)).isoformat() for i in range(31)]
    today, yesterday = window_answer(days[:30]), window_answer(days[1:31])
    new = {rawstore.digest(p) for p in rawstore.split(today)} - {rawstore.digest(p) for p in rawstore.split(yesterday)}
    assert len(new) == 1  # only the newest day
    (piece,) = [p for p in rawstore.split(today) if rawstore.digest(p) in new]
    assert json.loads(b"[" + piece + b"]")[0]["date"] == days[0]


def test_ungrouped_dates_and_small_bodies_stay_one_piece():
    mixed = window_answer(["2026-11-01"], 1)[:-2] + b"," + b",".join(
        json.dumps({"date": d, "pad": "y" * 300}).encode() for d in ["2026-11-02", "2026-11-03"] * 100
    ) + b"]}"
    assert rawstore.split(mixed) == [mixed]
    small = window_answer(["2026-11-01", "2026-11-02"], 3)
    assert rawstore.split(small) == [small]


# -- the store --------------------------------------------------------------------------------

@pytest.mark.both_backends
def test_a_body_round_trips_byte_exact_through_the_helper_and_the_view(engine, warehouse_url):
    days = [f"2026-11-{d:02d}" for d in range(30, 0, -1)]
    bodies = [window_answer(days), b"", b"\x00\xff not json \x1f\x8b", window_answer(days[:2], 3), "ünïcode ✓".encode()]
    with engine.begin() as conn:
        ids = [warehouse.store_raw(conn, fetched(b), None) for b in bodies]
    with engine.connect() as conn:
        assert [warehouse.read_raw(conn, i) for i in ids] == bodies
    rows = {r[0]: r[1:] for r in query(warehouse_url, "SELECT id, encoding, body, body_bytes, sha256 FROM raw_response_bodies")}
    for raw_id, body in zip(ids, bodies):
        encoding, stored, size, sha = rows[raw_id]
        assert (encoding, gzip.decompress(bytes(stored)), size, sha) == ("gzip", body, len(body), hashlib.sha256(body).hexdigest())
    # the window answer is cut into its days, and still compresses like one stream
    ((pieces, gz),) = query(warehouse_url, "SELECT b.chunk_count, length(v.body) FROM raw_responses r JOIN raw_bodies b ON b.id = r.raw_body_id "
                            f"JOIN raw_response_bodies v ON v.id = r.id WHERE r.id = {ids[0]}")
    assert pieces == 2 * len(days) + 1  # opening, 30 days, 29 separators, closing
    assert gz < len(bodies[0]) / 5


@pytest.mark.both_backends
def test_identical_bodies_are_stored_once_and_each_fetch_names_it(engine, warehouse_url):
    body = window_answer([f"2026-11-{d:02d}" for d in range(30, 0, -1)])
    with engine.begin() as conn:
        first = warehouse.store_raw(conn, fetched(body), None)
    with engine.begin() as conn:
        second = warehouse.store_raw(conn, fetched(body, NOW + timedelta(days=1)), None)
    assert query(warehouse_url, COUNTS) == [(2, 1, 3 + 30)]  # opening, separator, closing, 30 days
    assert query(warehouse_url, f"SELECT count(DISTINCT raw_body_id) FROM raw_responses WHERE id IN ({first}, {second})") == [(1,)]
    with engine.connect() as conn:
        assert warehouse.read_raw(conn, first) == warehouse.read_raw(conn, second) == body


@pytest.mark.both_backends
def test_a_damaged_piece_is_reported_not_returned(engine, warehouse_url):
    body = window_answer(["2026-11-02", "2026-11-01"])
    with engine.begin() as conn:
        raw_id = warehouse.store_raw(conn, fetched(body), None)
        other = rawstore.compress(body.replace(b"2026-11-01", b"2026-10-01"))
        conn.execute(text("UPDATE raw_chunks SET data = :d WHERE data_bytes = (SELECT max(data_bytes) FROM raw_chunks)"), {"d": other})
    with engine.connect() as conn, pytest.raises(WarehouseError, match="does not match its SHA-256"):
        warehouse.read_raw(conn, raw_id)


# -- syncs against the stand-in -----------------------------------------------------------------


def _sync(engine, server, today: date) -> None:
    at = datetime.combine(today, time(0, 30), timezone.utc)
    with OpenRouterClient(server.base_url, KEY) as client:
        report = run_sync(engine, client, pending_days(engine, today, 2), trigger="sync", now=lambda: at)
    assert report.ok, report


@pytest.mark.both_backends
def test_two_syncs_of_the_same_answer_store_it_once(engine, warehouse_url):
    day = date(2026, 11, 22)
    with StandIn(Dataset(endpoints_per_day=60, anchor=day, empty_day_every=0), management_key=KEY, today=lambda: day) as server:
        _sync(engine, server, day)
        before = query(warehouse_url, COUNTS)
        _sync(engine, server, day)
    ((fetches, bodies, chunks),) = query(warehouse_url, COUNTS)
    assert (fetches, bodies, chunks) == (2, 1, before[0][2])
    assert query(warehouse_url, "SELECT count(DISTINCT sha256), count(DISTINCT raw_body_id) FROM raw_responses") == [(1, 1)]


@pytest.mark.both_backends
def test_different_answers_are_stored_twice_sharing_their_unchanged_days(engine, warehouse_url):
    day = date(2026, 11, 22)
    clock = {"today": day}
    dataset = Dataset(endpoints_per_day=60, anchor=day, empty_day_every=0)
    with StandIn(dataset, management_key=KEY, today=lambda: clock["today"]) as server:
        _sync(engine, server, day)
        ((_, _, chunks),) = query(warehouse_url, COUNTS)
        dataset.revise(day - timedelta(days=1))  # yesterday's numbers move: a different answer
        _sync(engine, server, day)
        assert query(warehouse_url, COUNTS) == [(2, 2, chunks + 1)]  # one day's piece more, not another 30 days
        clock["today"] = day + timedelta(days=1)  # the next day: the window moves by one day
        _sync(engine, server, day + timedelta(days=1))
    assert query(warehouse_url, COUNTS) == [(3, 3, chunks + 2)]
    bodies = query(warehouse_url, "SELECT id, body, sha256 FROM raw_response_bodies ORDER BY id")
    assert len({sha for _, _, sha in bodies}) == 3
    for raw_id, body, sha in bodies:
        content = gzip.decompress(bytes(body))
        assert hashlib.sha256(content).hexdigest() == sha and len(json.loads(content)["data"]) > 0
        with engine.connect() as conn:
            assert warehouse.read_raw(conn, raw_id) == content


# -- migration 0007 ---------------------------------------------------------------------------


def _old_row(conn, body: bytes | None, *, stored: bytes | None = None, encoding: str = "gzip", sha: str | None = None) -> int:
    """A fetch as revision 0006 stored it: the compressed body in its own row."""
    blob = stored if stored is not None else gzip.compress(body or b"", compresslevel=6, mtime=0)
    size = len(body) if body is not None else 0
    conn.execute(
        text("INSERT INTO raw_responses (fetched_at, endpoint, params, status, content_type, encoding, body, body_bytes, sha256) "
             "VALUES ('2026-11-21 00:30:00.000000', 'activity', '{}', 200, 'application/json', :e, :b, :n, :s)"),
        {"e": encoding, "b": blob, "n": size, "s": sha or hashlib.sha256(body or b"").hexdigest()},
    )
    return int(conn.execute(text("SELECT max(id) FROM raw_responses")).scalar_one())


@pytest.mark.both_backends
def test_migration_moves_every_body_deduplicated_and_the_downgrade_puts_them_back(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine, "0006")
    days = [(date(2026, 11, 30) - timedelta(days=i)).isoformat() for i in range(32)]
    bodies = [window_answer(days[0:30]), window_answer(days[0:30]), window_answer(days[1:31]), window_answer(days[2:32]),
              b'{"data":[]}', b"", json.dumps({"data": {"total_credits": 12.5}}).encode()]
    damaged = b"\x1f\x8b\x08\x00 not really gzip"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sync_runs (id, started_at, trigger, outcome, days_requested, days_fetched, requests, rows_inserted, rows_updated, rows_unchanged) "
                          "VALUES (1, '2026-11-21 00:30:00.000000', 'sync', 'ok', 0, 0, 1, 0, 0, 0)"))
        ids = [_old_row(conn, b) for b in bodies]
        plain_id = _old_row(conn, b"stored without compression", stored=b"stored without compression", encoding="identity")
        damaged_id = _old_row(conn, None, stored=damaged, sha="0" * 64)
        conn.execute(text(f"INSERT INTO archived_days VALUES ('{days[1]}', 150, '2026-11-21 00:30:00', '2026-11-21 00:30:00', 1, {ids[0]})"))
    before = query(warehouse_url, "SELECT id, run_id, fetched_at, endpoint, params, status, content_type, encoding, body, body_bytes, sha256 FROM raw_responses ORDER BY id")

    migrate.upgrade(engine, "0007")
    assert migrate.current_revision(engine) == "0007"
    with engine.connect() as conn:
        assert [warehouse.read_raw(conn, i) for i in ids] == bodies
        assert warehouse.read_raw(conn, plain_id) == b"stored without compression"
    ((fetches, distinct, chunks),) = query(warehouse_url, COUNTS)
    assert (fetches, distinct) == (9, 8)  # the two identical window answers are one body
    assert chunks == 3 + 32 + 3 + 1 + 1  # the answers' openings/separator/closings and 32 days; 3 small bodies; plain; damaged
    view = {r[0]: gzip.decompress(bytes(r[1])) for r in query(warehouse_url, "SELECT id, body FROM raw_response_bodies") if r[0] in ids}
    assert [view[i] for i in ids] == bodies
    assert query(warehouse_url, "SELECT raw_response_id FROM archived_days") == [(ids[0],)]

    migrate.downgrade(engine, "0006")
    after = query(warehouse_url, "SELECT id, run_id, fetched_at, endpoint, params, status, content_type, encoding, body, body_bytes, sha256 FROM raw_responses ORDER BY id")
    assert [r[:7] + r[9:] for r in after] == [r[:7] + r[9:] for r in before]
    for old, new in zip(before, after):
        if old[0] == damaged_id:
            assert (new[7], bytes(new[8])) == ("gzip", damaged)  # kept exactly as it was stored
        else:  # the same content (an uncompressed body comes back compressed)
            content = bytes(old[8]) if old[7] == "identity" else gzip.decompress(bytes(old[8]))
            assert new[7] == "gzip" and gzip.decompress(bytes(new[8])) == content
    tables = {r[0] for r in query(warehouse_url, "SELECT table_name FROM information_schema.tables" if "postgresql" in warehouse_url
                                  else "SELECT name FROM sqlite_master")}
    assert not tables & {"raw_bodies", "raw_chunks", "raw_body_chunks", "raw_response_bodies"}

    migrate.upgrade(engine)  # and up again: the same content
    with engine.connect() as conn:
        assert [warehouse.read_raw(conn, i) for i in ids] == bodies
    assert query(warehouse_url, COUNTS) == [(fetches, distinct, chunks)]
    engine.dispose()
