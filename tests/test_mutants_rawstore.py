"""Mutation audit (module ``rawstore``): a body is reassembled from its pieces in its own order.

A body that shares pieces with an older one lists a new piece (a higher chunk id) before
the shared ones: only the per-body sequence, not the chunk ids, puts them back in order.
"""

from __future__ import annotations

import pytest

from etl import migrate, rawstore, warehouse
from etl.db import open_engine
from tests.test_storage_raw import fetched, window_answer


@pytest.fixture
def engine(warehouse_url):
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.both_backends
def test_a_new_day_before_shared_days_reads_back_byte_exact(engine):
    older = window_answer(["2026-11-20", "2026-11-19"])
    newer = window_answer(["2026-11-21", "2026-11-20", "2026-11-19"])  # the new day first, as /activity lists them
    assert len(rawstore.split(newer)) > 3
    with engine.begin() as conn:
        first = warehouse.store_raw(conn, fetched(older), None)
        second = warehouse.store_raw(conn, fetched(newer), None)
    with engine.connect() as conn:
        assert warehouse.read_raw(conn, first) == older
        assert warehouse.read_raw(conn, second) == newer
