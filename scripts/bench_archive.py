"""A synthetic archive built through the project's own load path, for the report and status benchmarks.

``warehouse.save_day`` and ``warehouse.save_breakdown_day``, one transaction per day as a
sync writes them, so the summaries' triggers run exactly as they do in production. The
key breakdown splits each day's rows among ``keys`` API keys (every account row belongs
to one key), so ``activity_by_key`` holds as many rows as ``activity``. A built archive is
kept under ``--cache`` (by its parameters) so that a second run skips the build.
"""

from __future__ import annotations

import random
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from etl import migrate, warehouse
from etl.db import open_engine

NOW = datetime(2031, 1, 1, tzinfo=timezone.utc)


def key_hash(i: int) -> str:
    return f"{i:064x}"


def day_rows(day: str, n_endpoints: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n_endpoints):
        requests = rng.randint(1, 500)
        model = f"vendor{i % 40}/model-{i % 300}"
        rows.append({
            "date": day, "endpoint_id": f"ep-{i:05d}", "model": model, "model_permaslug": model + "-2025",
            "provider_name": f"Provider {i % 25}", "usage": round(rng.random() * 3, 10), "byok_usage_inference": 0.0,
            "requests": requests, "prompt_tokens": requests * 900, "completion_tokens": requests * 300,
            "reasoning_tokens": 0, "cached_tokens": None,
        })
    return rows


def build(path: Path, n_days: int, n_endpoints: int, keys: int, end: date, *, quiet: bool = False) -> float:
    """Load ``n_days`` days ending on ``end`` into a fresh warehouse at ``path``; returns the load's seconds."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    engine = open_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    if keys:
        with engine.begin() as conn:
            warehouse.save_keys(conn, [{"hash": key_hash(k), "name": f"key {k}", "label": f"sk-or-v1-{k:03d}...", "disabled": False}
                                       for k in range(keys)], NOW)
    rng = random.Random(7)
    started = time.perf_counter()
    first = end - timedelta(days=n_days - 1)
    for d in range(n_days):
        day = (first + timedelta(days=d)).isoformat()
        rows = day_rows(day, n_endpoints, rng)
        with engine.begin() as conn:
            warehouse.save_day(conn, day, rows, now=NOW)
            for k in range(keys):
                mine = [{**r, "api_key_hash": key_hash(k)} for i, r in enumerate(rows) if i % keys == k]
                warehouse.save_breakdown_day(conn, "key", key_hash(k), day, mine, now=NOW)
        if not quiet and d and d % 200 == 0:
            print(f"  {d}/{n_days} days loaded ({time.perf_counter() - started:.0f} s)", flush=True)
    elapsed = time.perf_counter() - started
    engine.dispose()  # no ANALYZE: a real archive has none either
    return elapsed


def cached(folder: Path, n_days: int, n_endpoints: int, keys: int, end: date) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"archive-{n_days}d-{n_endpoints}e-{keys}k-{end.isoformat()}-r{migrate.head_revision()}.db"
    if not path.exists():
        total = n_days * n_endpoints
        print(f"building {path.name}: {total:,} account rows and {total if keys else 0:,} per-key rows through warehouse.save_day ...", flush=True)
        tmp = path.with_name(path.name + ".part")
        seconds = build(tmp, n_days, n_endpoints, keys, end)
        print(f"  loaded in {seconds:.1f} s: {total * (2 if keys else 1) / seconds:,.0f} rows/s, summaries kept by the triggers", flush=True)
        tmp.rename(path)
    return path
