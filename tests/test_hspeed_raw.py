"""Raw answers compressed in the fetch threads are stored exactly as compressed at write time."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from etl import migrate, rawstore, warehouse
from etl.db import open_engine
from etl.fetched import Fetched
from etl.schema import raw_bodies, raw_body_chunks, raw_chunks


def _answer(days: int) -> Fetched:
    rows = [{"date": f"2026-01-{1 + d:02d}", "model": f"m{i}", "usage": i * 0.25} for d in range(days) for i in range(400)]
    body = json.dumps({"data": rows}).encode()
    return Fetched("analytics/query", {"query": "{}"}, 200, "application/json", body, None, datetime(2026, 2, 1, tzinfo=timezone.utc))


@pytest.mark.both_backends
def test_precompressed_pieces_are_stored_as_store_body_would_store_them(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    plain, prepared = _answer(3), _answer(5)  # two days in common: their pieces are shared
    packed = rawstore.pack(prepared.body)
    assert len(packed.data) > 3  # cut into pieces, each compressed
    with engine.begin() as conn:
        first = warehouse.store_raw(conn, plain, None)
        second = warehouse.store_raw(conn, prepared, None, packed)
        # A pack of other bytes is not used for this body: the body is stored, not the pack.
        other = _answer(6)
        third = warehouse.store_raw(conn, other, None, rawstore.pack(_answer(4).body))
        alone = _answer(7)  # and the same of store_body called alone
        body_id = warehouse.store_body(conn, alone.body, None, rawstore.pack(_answer(4).body))
    with engine.connect() as conn:
        assert warehouse.read_raw(conn, first) == plain.body
        assert warehouse.read_raw(conn, second) == prepared.body
        assert warehouse.read_raw(conn, third) == other.body
        sha = conn.execute(select(raw_bodies.c.sha256).where(raw_bodies.c.id == body_id)).scalar_one()
        pieces = conn.execute(
            select(raw_chunks.c.data).join(raw_body_chunks, raw_body_chunks.c.chunk_id == raw_chunks.c.id)
            .where(raw_body_chunks.c.body_id == body_id).order_by(raw_body_chunks.c.seq)
        ).scalars()
        assert sha == rawstore.digest(alone.body) and rawstore.join(("gzip", bytes(p)) for p in pieces) == alone.body
        stored = {sha: bytes(data) for sha, data in conn.execute(select(raw_chunks.c.sha256, raw_chunks.c.data))}
    expected = {rawstore.digest(p): rawstore.compress(p) for b in (plain, prepared, other, alone) for p in rawstore.split(b.body)}
    assert stored == expected


def test_a_pack_is_what_store_body_would_compute():
    body = _answer(5).body
    packed = rawstore.pack(body)
    pieces = rawstore.split(body)
    assert packed.body is body and packed.sha256 == rawstore.digest(body)
    assert packed.keys == tuple(rawstore.digest(p) for p in pieces) and packed.sizes == tuple(len(p) for p in pieces)
    assert packed.data == {rawstore.digest(p): rawstore.compress(p) for p in pieces}
