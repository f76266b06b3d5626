#!/usr/bin/env python3
"""Load-path and end-to-end timings, each against a baseline measured in the same run.

1. Load rate: N days × M endpoints of synthetic activity through the project's own load
   path (``warehouse.save_day``, one transaction per day, as a sync does) into a fresh
   warehouse, and the same rows through raw ``sqlite3`` ``executemany`` upserts into an
   identical schema with the same pragmas. Prints both rates and their ratio (target ≥ 0.5).
2. ``openrouter-archive sync`` with nothing new, as a subprocess (process start included),
   against the stand-in; baseline: ``python -c pass``. Target < 1 s.
3. A 30-day ``backfill`` against the stand-in at 100 ms latency per request. Target < 2 s.

Usage: python scripts/bench_load.py [--days 500] [--endpoints 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from etl import migrate, warehouse
from etl.db import open_engine

COLUMNS = (
    "date", "endpoint_id", "model", "model_permaslug", "provider_name", "usage", "byok_usage_inference",
    "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens",
)


def synthetic_days(n_days: int, n_endpoints: int) -> list[tuple[str, list[dict]]]:
    rng = random.Random(7)
    start = date(2025, 1, 1)
    endpoints = [(f"ep-{i:05d}", f"vendor{i % 40}/model-{i % 300}", f"Provider {i % 25}") for i in range(n_endpoints)]
    days = []
    for d in range(n_days):
        day = (start + timedelta(days=d)).isoformat()
        rows = []
        for endpoint, model, provider in endpoints:
            requests = rng.randint(1, 500)
            rows.append({
                "date": day, "endpoint_id": endpoint, "model": model, "model_permaslug": model + "-2025",
                "provider_name": provider, "usage": round(rng.random() * 3, 6), "byok_usage_inference": 0.0,
                "requests": requests, "prompt_tokens": requests * 900, "completion_tokens": requests * 300,
                "reasoning_tokens": 0, "cached_tokens": None,
            })
        days.append((day, rows))
    return days


def fresh_warehouse(folder: Path, name: str) -> Path:
    path = folder / name
    engine = open_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def load_project(path: Path, days: list[tuple[str, list[dict]]]) -> float:
    engine = open_engine(f"sqlite:///{path}")
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for day, rows in days:
        with engine.begin() as conn:
            warehouse.save_day(conn, day, rows, now=now)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def load_raw(path: Path, days: list[tuple[str, list[tuple]]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:]) + ", updated_at = excluded.updated_at"
    sql = (
        f"INSERT INTO activity ({', '.join(COLUMNS)}, first_archived_at, updated_at) "
        f"VALUES ({', '.join('?' * (len(COLUMNS) + 2))}) ON CONFLICT (date, endpoint_id) DO UPDATE SET {updates}"
    )
    mark = (
        "INSERT INTO archived_days (date, row_count, first_archived_at, last_fetched_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (date) DO UPDATE SET row_count = excluded.row_count, last_fetched_at = excluded.last_fetched_at"
    )
    started = time.perf_counter()
    for day, rows in days:
        conn.execute("BEGIN")
        conn.executemany(sql, [(*r, now, now) for r in rows])
        conn.execute(mark, (day, len(rows), now, now))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def bench_load(args: argparse.Namespace, folder: Path) -> None:
    print(f"generating {args.days} days x {args.endpoints} endpoints = {args.days * args.endpoints:,} rows ...", flush=True)
    days = synthetic_days(args.days, args.endpoints)
    tuples = [(day, [tuple(r[c] for c in COLUMNS) for r in rows]) for day, rows in days]
    total = args.days * args.endpoints
    project, raw = [], []
    for i in range(args.repeat):
        # Alternate the order so that neither side always runs on a warmer machine.
        order = [("project", load_project, days), ("raw", load_raw, tuples)]
        for name, fn, data in order if i % 2 == 0 else reversed(order):
            path = fresh_warehouse(folder, f"{name}-{i}.db")
            seconds = fn(path, data)
            (project if name == "project" else raw).append(seconds)
            print(f"  run {i + 1}: {name:<7} {seconds:6.2f}s  {total / seconds:>10,.0f} rows/s", flush=True)
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
    p, r = statistics.median(project), statistics.median(raw)
    print(f"load: project {total / p:,.0f} rows/s, raw sqlite3 {total / r:,.0f} rows/s, "
          f"ratio {r / p:.2f}x of raw (target >= 0.50), medians of {args.repeat}")


# What any process using the required stack pays before doing anything.
IMPORT_FLOOR = "import sqlalchemy, httpx, pydantic, click"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    return elapsed


def bench_cli(folder: Path, runs: int) -> None:
    from etl.standin import StandIn

    key = "sk-or-v1-bench-" + os.urandom(8).hex()
    cli = [sys.executable, "-m", "etl"]
    for latency, label in ((0.0, "no latency"), (0.1, "100 ms latency")):
        with StandIn(management_key=key, latency=latency) as api:
            env = {**os.environ, "OPENROUTER_API_KEY": key, "OPENROUTER_BASE_URL": api.base_url}
            baseline = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(runs))
            floor = statistics.median(timed([sys.executable, "-c", IMPORT_FLOOR], env) for _ in range(runs))
            backfills, syncs = [], []
            for i in range(runs):
                env["OPENROUTER_ARCHIVE_DB"] = f"sqlite:///{folder / f'cli-{latency}-{i}.db'}"
                backfills.append(timed([*cli, "-q", "backfill"], env))
                syncs.append(timed([*cli, "-q", "sync"], env))
            b, s = statistics.median(backfills), statistics.median(syncs)
            print(f"cli ({label}): 30-day backfill {b:.2f}s (target < 2 s), sync with nothing new {s:.2f}s "
                  f"(target < 1 s); baselines: python start-up {baseline:.2f}s, importing the required "
                  f"libraries alone {floor:.2f}s; medians of {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        if not args.skip_load:
            bench_load(args, Path(tmp))
        bench_cli(Path(tmp), args.cli_runs)


if __name__ == "__main__":
    main()
