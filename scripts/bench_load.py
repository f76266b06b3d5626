#!/usr/bin/env python3
"""Load-path and end-to-end timings, each against a baseline measured in the same run.

1. Load (issue 13): N days × M endpoints of synthetic activity through the project's own
   load path (``warehouse.save_day``, one transaction per day, as a sync does) into a fresh
   warehouse, against the same rows through raw driver ``executemany`` upserts into an
   identical schema (same migrations, same pragmas) with the same per-day transaction and
   ``archived_days`` mark. Then a re-sync of every day unchanged on each side's warehouse:
   the project compares and writes only the day marks; the raw side upserts every row
   again (and, for reference, with ``WHERE (cols) IS NOT (excluded.cols)``, which writes
   nothing). For reference, a third side loads the same rows raw into the same schema with
   the summary and month-count triggers dropped: what keeping those derived tables costs a
   first load (the project always keeps them). Then the ``month,model`` report over all
   history: the project's query layer against the plain ``GROUP BY`` through the driver.
   Sides run interleaved, A B C, C B A, ..., and each figure is a median, wall time and
   this process's CPU time.
   Targets on SQLite: first load ≥ 0.9× raw ``sqlite3``; re-sync ≥ 3× faster than raw upserts.
   ``--url postgresql+psycopg://…`` adds the same figures on PostgreSQL against raw psycopg
   ``executemany`` (a fresh database per run, created and dropped through that URL; CPU
   there is the client's alone, the server's runs in another process).
2. ``openrouter-archive sync`` with nothing new, as a subprocess (process start included),
   against the stand-in; baseline: ``python -c pass``. Target < 1 s.
3. A 30-day ``backfill`` against the stand-in at 100 ms latency per request. Target < 2 s.

Usage: python scripts/bench_load.py [--days 100] [--endpoints 2000] [--repeat 5]
       [--url postgresql+psycopg://USER@HOST/DB] [--skip-cli] [--skip-load]
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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from etl import migrate, warehouse
from etl.db import open_engine
from etl.query import ReportSpec, run_report

COLUMNS = (
    "date", "endpoint_id", "model", "model_permaslug", "provider_name", "usage", "byok_usage_inference",
    "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens",
)
METRICS_SQL = (
    "sum(usage), sum(byok_usage_inference), sum(requests), sum(prompt_tokens), sum(completion_tokens), "
    "sum(reasoning_tokens), sum(cached_tokens), sum(prompt_tokens + completion_tokens)"
)
MONTH_MODEL_SQL = f"SELECT substr(date, 1, 7), model, {METRICS_SQL} FROM activity GROUP BY substr(date, 1, 7), model"

Days = list[tuple[str, list[dict[str, Any]]]]
Tuples = list[tuple[str, list[tuple[Any, ...]]]]


def synthetic_days(n_days: int, n_endpoints: int) -> Days:
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


def as_tuples(days: Days) -> Tuples:
    return [(day, [tuple(r[c] for c in COLUMNS) for r in rows]) for day, rows in days]


# -- the raw baselines: the driver alone, the same statements a hand-written loader would send --


def upsert_sql(placeholder: str, where: str | None = None) -> str:
    """The raw upsert; ``where``: ``IS NOT`` (SQLite) or ``IS DISTINCT FROM`` (PostgreSQL) to skip unchanged rows."""
    values = ", ".join([placeholder] * (len(COLUMNS) + 2))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:]) + ", updated_at = excluded.updated_at"
    sql = (f"INSERT INTO activity ({', '.join(COLUMNS)}, first_archived_at, updated_at) VALUES ({values}) "
           f"ON CONFLICT (date, endpoint_id) DO UPDATE SET {updates}")
    if where:
        sql += f" WHERE ({', '.join(f'activity.{c}' for c in COLUMNS[2:])}) {where} ({', '.join(f'excluded.{c}' for c in COLUMNS[2:])})"
    return sql


def mark_sql(placeholder: str) -> str:
    return (f"INSERT INTO archived_days (date, row_count, first_archived_at, last_fetched_at) VALUES ({', '.join([placeholder] * 4)}) "
            "ON CONFLICT (date) DO UPDATE SET row_count = excluded.row_count, last_fetched_at = excluded.last_fetched_at")


def raw_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def load_raw(path: Path, days: Tuples, where: str | None = None) -> float:
    """Raw ``sqlite3`` upserts of ``days`` into the warehouse at ``path``; wall seconds."""
    conn = raw_sqlite(path)
    started = time.perf_counter()
    _raw_days(conn, days, "?", where, lambda: conn.execute("BEGIN"), lambda: conn.execute("COMMIT"))
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def _raw_days(cur: Any, days: Tuples, placeholder: str, where: str | None, begin: Callable[[], Any], commit: Callable[[], Any]) -> None:
    # The SQLite text the project stores for a UTC timestamp (UTCDateTime), computed once.
    now: Any = datetime.now(timezone.utc)
    if placeholder == "?":
        now = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    sql, mark = upsert_sql(placeholder, where), mark_sql(placeholder)
    for day, rows in days:
        begin()
        cur.executemany(sql, [(*r, now, now) for r in rows])
        cur.execute(mark, (day, len(rows), now, now))
        commit()


def load_raw_pg(url: str, days: Tuples, where: str | None = None) -> None:
    import psycopg

    with psycopg.connect(_libpq(url)) as conn:  # a transaction per day, as on SQLite
        with conn.cursor() as cur:
            _raw_days(cur, days, "%s", where, lambda: None, conn.commit)


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- the project's side ---------------------------------------------------------------------


def fresh_warehouse(folder: Path, name: str) -> Path:
    path = folder / name
    engine = open_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def load_project(url_or_path: str | Path, days: Days) -> float:
    """``days`` through ``warehouse.save_day``, a transaction per day; wall seconds."""
    engine = open_engine(url_or_path if isinstance(url_or_path, str) else f"sqlite:///{url_or_path}")
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for day, rows in days:
        with engine.begin() as conn:
            warehouse.save_day(conn, day, rows, now=now)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def report_project(url: str) -> int:
    engine = open_engine(url)
    with engine.connect() as conn:
        rows = len(run_report(conn, ReportSpec(("month", "model"))).rows)
    engine.dispose()
    return rows


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Figures:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, fn: Callable[[], Any]) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result

    @property
    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def alternate(i: int, pair: list[Any]) -> list[Any]:
    """A B, then B A: neither side always runs first, on the warmer or the busier machine."""
    return pair if i % 2 == 0 else pair[::-1]


@dataclass
class Backend:
    """One warehouse engine: fresh warehouses for each side, the raw loader and report."""

    label: str  # printed; never the URL (it may hold a password)
    baseline: str
    fresh: Callable[[str], Any]  # contextmanager: (project URL, raw target) of a fresh warehouse
    raw_load: Callable[[Any, Tuples, str | None], Any]
    raw_report: Callable[[Any], int]
    where: str  # the row-value "differs" operator
    drop_triggers: Callable[[Any], None]  # the summary and month-count triggers off the raw target


def trigger_free_ddl(dialect: str) -> list[str]:
    """What takes the derived tables' triggers off a migrated warehouse (the trigger-free baseline)."""
    from etl import counts, summaries

    return summaries.drop_ddl(dialect) + counts.drop_ddl(dialect)


def sqlite_backend(folder: Path) -> Backend:
    @contextmanager
    def fresh(name: str) -> Iterator[tuple[str, Path]]:
        path = fresh_warehouse(folder, f"{name}.db")
        try:
            yield f"sqlite:///{path}", path
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)

    def report(path: Path) -> int:
        conn = sqlite3.connect(path)
        rows = len(conn.execute(MONTH_MODEL_SQL).fetchall())
        conn.close()
        return rows

    def drop_triggers(path: Path) -> None:
        conn = sqlite3.connect(path)
        for statement in trigger_free_ddl("sqlite"):
            conn.execute(statement)
        conn.commit()
        conn.close()

    return Backend("SQLite", "raw sqlite3", fresh, load_raw, report, "IS NOT", drop_triggers)


def postgres_backend(admin_url: str) -> Backend:
    import psycopg
    from sqlalchemy.engine import make_url

    @contextmanager
    def fresh(name: str) -> Iterator[tuple[str, str]]:
        database = f"bench_load_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
        engine = open_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        try:
            yield url, url
        finally:
            with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    def report(url: str) -> int:
        with psycopg.connect(_libpq(url)) as conn:
            return len(conn.execute(MONTH_MODEL_SQL).fetchall())

    def drop_triggers(url: str) -> None:
        with psycopg.connect(_libpq(url)) as conn:
            for statement in trigger_free_ddl("postgresql"):
                conn.execute(statement)

    with psycopg.connect(_libpq(admin_url)) as conn:
        version = conn.info.server_version
    label = f"PostgreSQL {version // 10000}.{version % 10000}"
    return Backend(label, "raw psycopg", fresh, load_raw_pg, report, "IS DISTINCT FROM", drop_triggers)


def bench_backend(backend: Backend, days: Days, tuples: Tuples, repeat: int) -> None:
    total = sum(len(rows) for _, rows in days)
    load = {"project": Figures(), "raw": Figures(), "raw-no-triggers": Figures()}
    resync = {"project": Figures(), "raw": Figures(), "raw-where": Figures()}
    report = {"project": Figures(), "raw": Figures()}
    print(f"{backend.label}: {len(days)} days x {len(days[0][1])} endpoints = {total:,} rows, {repeat} runs per side", flush=True)
    for i in range(repeat):
        for side in alternate(i, ["project", "raw", "raw-no-triggers"]):
            with backend.fresh(f"{side}-{i}") as (url, target):
                if side == "raw-no-triggers":  # the first load alone: what the derived tables cost
                    backend.drop_triggers(target)
                    load[side].add(lambda: backend.raw_load(target, tuples, None))  # noqa: B023
                    print(f"  run {i + 1} {side:<15}  load {load[side].wall[-1]:6.2f}s wall {load[side].cpu[-1]:6.2f}s cpu", flush=True)
                    continue
                if side == "project":
                    load[side].add(lambda: load_project(url, days))  # noqa: B023 (called at once)
                    resync[side].add(lambda: load_project(url, days))  # noqa: B023
                    rows = report[side].add(lambda: report_project(url))  # noqa: B023
                else:
                    load[side].add(lambda: backend.raw_load(target, tuples, None))  # noqa: B023
                    resync[side].add(lambda: backend.raw_load(target, tuples, None))  # noqa: B023
                    resync["raw-where"].add(lambda: backend.raw_load(target, tuples, backend.where))  # noqa: B023
                    rows = report[side].add(lambda: backend.raw_report(target))  # noqa: B023
            print(f"  run {i + 1} {side:<15}  load {load[side].wall[-1]:6.2f}s wall {load[side].cpu[-1]:6.2f}s cpu   "
                  f"re-sync {resync[side].wall[-1]:6.2f}s wall {resync[side].cpu[-1]:6.2f}s cpu   "
                  f"report {report[side].wall[-1] * 1000:7.1f} ms ({rows} rows)", flush=True)

    def line(what: str, figures: dict[str, Figures], target: str, rate: bool = False, other: str = "raw") -> None:
        (pw, pc), (rw, rc) = figures["project"].median, figures[other].median
        shown = (lambda s: f"{total / s:,.0f} rows/s ({s:.2f} s)") if rate else (lambda s: f"{s * 1000:,.1f} ms" if s < 1 else f"{s:.2f} s")
        qualifier = {"raw": "", "raw-where": " with WHERE … " + backend.where, "raw-no-triggers": " with the summary and count triggers dropped"}[other]
        print(f"  {what}: project {shown(pw)}, {backend.baseline}{qualifier} "
              f"{shown(rw)}: {rw / pw:.2f}x wall, {rc / pc:.2f}x CPU (project {pc:.2f} s, baseline {rc:.2f} s CPU); {target}")

    print(f"{backend.label}, medians of {repeat} (ratio = baseline time / project time; > 1: the project is faster):")
    line("first load", load, "target >= 0.9x", rate=True)
    line("first load", load, "reference: the price of the derived tables (the project keeps its triggers)", rate=True, other="raw-no-triggers")
    line("re-sync, every day unchanged", resync, "target >= 3x")
    line("re-sync, every day unchanged", resync, "reference only", other="raw-where")
    line("month,model report, all history", report, "reference only")


# -- the CLI ----------------------------------------------------------------------------------

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
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url", help="also PostgreSQL: postgresql+psycopg://… of a role that may CREATE DATABASE (never printed)")
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        if not args.skip_load:
            print(f"generating {args.days} days x {args.endpoints} endpoints ...", flush=True)
            days = synthetic_days(args.days, args.endpoints)
            tuples = as_tuples(days)
            backends = [sqlite_backend(Path(tmp))]
            if args.url:
                backends.append(postgres_backend(args.url))
            for backend in backends:
                bench_backend(backend, days, tuples, args.repeat)
        if not args.skip_cli:
            bench_cli(Path(tmp), args.cli_runs)


if __name__ == "__main__":
    main()
