#!/usr/bin/env python3
"""Disk used by a year of daily syncs, against the distinct data they fetched (issue 13).

Runs ``--days`` simulated daily syncs (``run_sync``, the path of ``openrouter-archive
sync``, with its default ``refetch_days = 2``) against the stand-in serving an account of
``--endpoints`` endpoints a day, its "today" moved one day before each sync. Every sync's
``/activity`` answer is then the whole 30-day window, 29 days of it the same as the day
before. Afterwards it prints:

- the warehouse's size on disk, split into the raw store (``raw_responses``,
  ``raw_bodies``, ``raw_body_chunks``, ``raw_chunks`` and their indexes, from SQLite's
  ``dbstat``) and everything else (the archived rows);
- the distinct data: the distinct answers, each compressed once (gzip 6, as the old layout
  stored them), and the distinct pieces the store keeps (compressed);
- the old layout's figure: every fetch's body compressed (gzip 6), summed;
- the ratios: raw store on disk / distinct compressed pieces (target ≤ 1.05), raw store /
  distinct compressed answers, whole warehouse / distinct compressed answers;
- per sync, the time to store the answer (``warehouse.store_raw``: hashing, cutting,
  compressing the new pieces, writing) against the old layout's work on the same body in
  the same sync (SHA-256 and gzip of the whole body at level 6, and at level 1), measured
  one after the other, sync by sync (A B A B …): medians, wall and CPU time.

With ``--migration N`` it measures the upgrade instead: N whole-window answers (one a
day) stored the old way (revision 0006: each fetch's body gzip-compressed in its row), then
``migrate.upgrade`` to head, the file size before and after (and after ``VACUUM``), and the
downgrade back.

Usage: python scripts/bench_storage.py [--days 365] [--endpoints 2000] [--keep DB] [--migration N]
(5 to 10 s a sync at 2,000 endpoints on the shared 2-core machine, 66 min for the default
year; ``--days 60`` for a quick look)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text

from etl import migrate, warehouse
from etl.client import OpenRouterClient
from etl.db import open_engine
from etl.standin import Dataset, StandIn
from etl.sync import pending_days, run_sync

KEY = "sk-or-v1-bench-storage-management"
RAW_TABLES = ("raw_responses", "raw_bodies", "raw_body_chunks", "raw_chunks")


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def clocks(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


class Recorder:
    """Wraps ``warehouse.store_raw``: times it, then the old layout's work on the same body."""

    def __init__(self) -> None:
        self.new: list[tuple[float, float]] = []
        self.old6: list[tuple[float, float]] = []
        self.old1: list[tuple[float, float]] = []
        self.big = 0  # answers of more than one day (the ones timed)
        self.fetches = 0
        self.old_bytes = 0  # every fetch's body, gzip 6: the old layout's raw_responses.body
        self.distinct: dict[str, int] = {}  # sha256 -> gzip 6 size
        self.raw_bytes = 0
        self._real = warehouse.store_raw

    def store_raw(self, conn: Any, fetched: Any, run_id: int | None) -> int:
        raw_id, wall, cpu = clocks(lambda: self._real(conn, fetched, run_id))
        body = fetched.body
        (sha, size6), wall6, cpu6 = clocks(lambda: (hashlib.sha256(body).hexdigest(), len(gzip.compress(body, 6, mtime=0))))
        _, wall1, cpu1 = clocks(lambda: (hashlib.sha256(body).hexdigest(), len(gzip.compress(body, 1, mtime=0))))
        self.fetches += 1
        self.raw_bytes += len(body)
        self.old_bytes += size6
        self.distinct.setdefault(sha, size6)
        if len(body) > 1_000_000:
            self.big += 1
            self.new.append((wall, cpu))
            self.old6.append((wall6, cpu6))
            self.old1.append((wall1, cpu1))
        return raw_id


def table_sizes(db: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
    return sizes


def migration(answers: int, endpoints: int) -> None:
    import sqlite3

    import httpx

    start = date(2027, 1, 1)
    clock = {"today": start}
    folder = tempfile.TemporaryDirectory(prefix="bench-storage-")
    db = Path(folder.name) / "old.db"
    engine = open_engine(f"sqlite:///{db}")
    migrate.upgrade(engine, "0006")
    insert = text(
        "INSERT INTO raw_responses (fetched_at, endpoint, params, status, content_type, encoding, body, body_bytes, sha256) "
        "VALUES ('2027-01-01 00:30:00.000000', 'activity', '{}', 200, 'application/json', 'gzip', :b, :n, :s)"
    )
    dataset = Dataset(endpoints_per_day=endpoints, anchor=start)
    with StandIn(dataset, management_key=KEY, today=lambda: clock["today"]) as server, httpx.Client(timeout=300) as http:
        for i in range(answers):
            clock["today"] = start + timedelta(days=i)
            body = http.get(f"{server.base_url}/activity", headers={"Authorization": f"Bearer {KEY}"}).content
            with engine.begin() as conn:
                conn.execute(insert, {"b": gzip.compress(body, 6, mtime=0), "n": len(body), "s": hashlib.sha256(body).hexdigest()})
    engine.dispose()
    before = db.stat().st_size
    engine = open_engine(f"sqlite:///{db}")
    _, wall, cpu = clocks(lambda: migrate.upgrade(engine))
    engine.dispose()
    after = db.stat().st_size
    with sqlite3.connect(db) as conn:
        conn.execute("VACUUM")
    vacuumed = db.stat().st_size
    engine = open_engine(f"sqlite:///{db}")
    _, down_wall, down_cpu = clocks(lambda: migrate.downgrade(engine, "0006"))
    engine.dispose()
    print(f"bench_storage --migration: {answers} old-layout whole-window answers ({endpoints:,} endpoints a day), {mib(before)}")
    print(f"  upgrade to {migrate.HEAD_REVISION}: {wall:.1f} s wall, {cpu:.1f} s CPU; file {mib(after)}, after VACUUM {mib(vacuumed)}")
    print(f"  downgrade to 0006: {down_wall:.1f} s wall, {down_cpu:.1f} s CPU")
    folder.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365, help="daily syncs to simulate")
    parser.add_argument("--endpoints", type=int, default=2000, help="endpoints a day in the stand-in's account")
    parser.add_argument("--keep", type=Path, help="write the warehouse here (default: a temporary folder)")
    parser.add_argument("--migration", type=int, metavar="N", help="measure the upgrade of N old-layout answers instead")
    args = parser.parse_args()
    if args.migration:
        migration(args.migration, args.endpoints)
        return 0

    start = date(2027, 1, 1)
    clock = {"today": start}
    dataset = Dataset(endpoints_per_day=args.endpoints, anchor=start)
    folder = tempfile.TemporaryDirectory(prefix="bench-storage-")
    db = args.keep or Path(folder.name) / "archive.db"
    if db.exists():
        sys.exit(f"{db} exists: give a new path")
    engine = open_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    recorder = Recorder()
    warehouse.store_raw = recorder.store_raw  # type: ignore[assignment]  # the sync's own call, timed
    began = time.perf_counter()
    failed = 0
    with StandIn(dataset, management_key=KEY, today=lambda: clock["today"]) as server, \
            OpenRouterClient(server.base_url, KEY, timeout=300) as client:
        for i in range(args.days):
            today = start + timedelta(days=i)
            clock["today"] = today
            at = datetime(today.year, today.month, today.day, 0, 30, tzinfo=timezone.utc)
            report = run_sync(engine, client, pending_days(engine, today, 2), trigger="sync", now=lambda at=at: at)
            failed += not report.ok
            # The stand-in's day cache: days that left the window are never asked for again.
            dataset._cache = {k: v for k, v in dataset._cache.items() if k[0] >= today - timedelta(days=31)}  # noqa: SLF001
            if (i + 1) % 30 == 0 or i + 1 == args.days:
                print(f"  {i + 1:>4} syncs, {time.perf_counter() - began:,.0f} s", file=sys.stderr, flush=True)
    warehouse.store_raw = recorder._real  # type: ignore[assignment]
    with engine.connect() as conn:
        archived = conn.execute(text("SELECT count(*) FROM archived_days")).scalar_one()
        rows = conn.execute(text("SELECT count(*) FROM activity")).scalar_one()
        bodies, pieces, payload, piece_bytes = conn.execute(text(
            "SELECT (SELECT count(*) FROM raw_bodies), count(*), sum(length(data)), sum(data_bytes) FROM raw_chunks"
        )).one()
        links = conn.execute(text("SELECT count(*) FROM raw_body_chunks")).scalar_one()
    engine.dispose()
    sizes = table_sizes(db)
    file_bytes = db.stat().st_size
    raw_store = sum(sizes.get(t, 0) for t in RAW_TABLES)
    rest = sum(sizes.values()) - raw_store
    distinct_answers = sum(recorder.distinct.values())

    print(f"bench_storage: {args.days} daily syncs, {args.endpoints:,} endpoints a day, refetch_days = 2 "
          f"({time.perf_counter() - began:,.0f} s; {failed} sync(s) not ok)")
    print(f"  archive            {archived:,} days, {rows:,} rows")
    print(f"  fetches            {recorder.fetches:,} ({recorder.big:,} whole-window answers), {mib(recorder.raw_bytes)} uncompressed")
    print(f"  distinct answers   {len(recorder.distinct):,} (raw_bodies: {bodies:,}), gzip 6 each: {mib(distinct_answers)}")
    print(f"  distinct pieces    {pieces:,} ({mib(piece_bytes or 0)} uncompressed), compressed: {mib(payload or 0)}; {links:,} piece references")
    print(f"  old layout         every fetch's body, gzip 6: {mib(recorder.old_bytes)}")
    print(f"  warehouse          {mib(file_bytes)} on disk: raw store {mib(raw_store)} "
          f"({', '.join(f'{t} {mib(sizes.get(t, 0))}' for t in RAW_TABLES)}), archived rows and the rest {mib(rest)}")
    print(f"  raw store / distinct pieces compressed:   {raw_store / max(payload or 1, 1):.3f}  (target ≤ 1.05)")
    print(f"  raw store / distinct answers (gzip 6):    {raw_store / max(distinct_answers, 1):.3f}")
    print(f"  warehouse / distinct answers (gzip 6):    {file_bytes / max(distinct_answers, 1):.3f}")
    print(f"  old layout / raw store:                   {recorder.old_bytes / max(raw_store, 1):.1f}x")
    if recorder.new:
        def med(samples: list[tuple[float, float]], k: int) -> float:
            return statistics.median(s[k] for s in samples) * 1000

        print(f"  store one whole-window answer, median of {len(recorder.new)} (wall / CPU):")
        print(f"    store_raw (hash, cut, compress new pieces, write): {med(recorder.new, 0):6.0f} ms / {med(recorder.new, 1):6.0f} ms")
        print(f"    old layout's work: sha256 + gzip 6 of the body:    {med(recorder.old6, 0):6.0f} ms / {med(recorder.old6, 1):6.0f} ms"
              f"   ratio {med(recorder.new, 1) / med(recorder.old6, 1):.2f} (CPU)")
        print(f"    the same with gzip 1:                              {med(recorder.old1, 0):6.0f} ms / {med(recorder.old1, 1):6.0f} ms")
    folder.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
