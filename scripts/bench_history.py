#!/usr/bin/env python3
"""Requests and wall time of a first sync that recovers a year of history, against the minimum.

Runs ``openrouter-archive sync`` (the real CLI, in a subprocess, on an empty warehouse)
against the stand-in with 20 API keys, 10 apps and 5 members, every request delayed by
100 ms: once with the Analytics API off (``/activity`` only, the baseline), once with the
default series (account, provider), once with the key, app and member series on too.

The theoretical minimum, given the API's limits: every per-subject series needs at least
one request per subject (a filter by id is the only stable attribution), and every series
``ceil(rows / 10,000)`` requests; ``/keys`` pages come one after another; beyond 64
requests a minute the rate limit adds a minute per 64. Time: the baseline run (process
start and ``/activity``), the ``/keys`` pages in sequence, one round trip for all analytics
requests in parallel, plus the rate limit's waits. The stand-in generates its year of data
before the timings start (its own cost is not the archiver's), but it answers in the same
process as this script, on the same cores.

Usage: python scripts/bench_history.py [--keys 20] [--apps 10] [--members 5] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from etl.standin import Dataset, StandIn
from etl.standin.analytics import Analytics
from etl.window import utc_today

LIMIT = 10_000


def sync(api: StandIn, key: str, folder: Path, name: str, config: str, analytics: bool = True) -> tuple[float, Counter[str]]:
    (folder / f"{name}.toml").write_text(config)
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": key,
        "OPENROUTER_BASE_URL": api.base_url,
        "OPENROUTER_ARCHIVE_DB": f"sqlite:///{folder / f'{name}.db'}",
        "OPENROUTER_ARCHIVE_CONFIG": str(folder / f"{name}.toml"),
        "OPENROUTER_ARCHIVE_ANALYTICS": "on" if analytics else "off",
    }
    api.requests.clear()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "etl", "-q", "sync"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sync failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, Counter(r.path.split("/api/v1/", 1)[-1] for r in api.requests)


def rows(analytics: Analytics, dims: tuple[str, ...], days: int, **match: str) -> int:
    """Rows a series has over `days` days (from the generator: what the answers must hold)."""
    today = utc_today()
    groups = set()
    for n in range(1, days + 1):
        day = today - timedelta(days=n)
        for fact in analytics.facts(day):
            if all(fact.dims[k] == v for k, v in match.items()):
                groups.add((day, *(fact.dims[d] for d in dims)))
    return len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--page-size", type=int, default=10, help="keys per /keys page served by the stand-in")
    args = parser.parse_args()
    key = "sk-or-v1-bench-" + os.urandom(8).hex()
    dataset = Dataset(keys=args.keys, users=args.members, first_key_age_days=400)
    analytics = Analytics(dataset, apps=args.apps)
    members = json.dumps(dataset.user_ids)
    for n in range(1, 367):  # warm the stand-in's generator and its per-filter indexes
        day = utc_today() - timedelta(days=n)
        for name in ("api_key_id", "user"):
            analytics._indexed(day, name)
    everything = f'[sync]\nanalytics_series = ["account", "provider", "key", "app", "member"]\nmembers = {members}\n'
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp, StandIn(
        dataset, management_key=key, latency=args.latency, page_size=args.page_size, analytics=analytics
    ) as api:
        print(f"first sync, {args.keys} keys, {args.apps} apps, {args.members} members, {args.latency * 1000:.0f} ms per request:")
        base_seconds, base = sync(api, key, Path(tmp), "base", "", analytics=False)
        print(f"  {'/activity only (baseline)':<34} {sum(base.values()):>3} requests, {base_seconds:.2f}s wall")
        results = {}
        stored = 0
        for label, config in (("default series (account, provider)", ""), ("key, app and member series too", everything)):
            seconds, requests = sync(api, key, Path(tmp), label[:7], config)
            results[label] = (seconds, requests)
            with sqlite3.connect(Path(tmp) / f"{label[:7]}.db") as conn:
                stored = conn.execute("SELECT (SELECT count(*) FROM analytics_daily) + (SELECT count(*) FROM analytics_provider_daily)").fetchone()[0]
            detail = ", ".join(f"{n} {path}" for path, n in sorted(requests.items()))
            print(f"  {label:<34} {sum(requests.values()):>3} requests ({detail}), {seconds:.2f}s wall")
    # The minimum for the full run.
    need = {
        "account": math.ceil(rows(analytics, ("model", "variant"), 365) / LIMIT),
        "provider": math.ceil(rows(analytics, ("model", "provider"), 31) / LIMIT),
        "app": math.ceil(rows(analytics, ("app", "model"), 365) / LIMIT),
        "key": sum(max(1, math.ceil(rows(analytics, ("model",), 365, api_key_id=k.hash) / LIMIT)) for k in dataset.api_keys),
        "member": sum(max(1, math.ceil(rows(analytics, ("model",), 365, user=u) / LIMIT)) for u in dataset.user_ids),
    }
    pages = math.ceil(args.keys / args.page_size) + (1 if args.keys % args.page_size == 0 else 0)
    analytics_min = sum(need.values())
    minimum_requests = 1 + pages + analytics_min
    waits = 60.0 * max(0, math.ceil(analytics_min / 64) - 1)
    minimum_seconds = base_seconds + pages * args.latency + args.latency + waits
    seconds, requests = results["key, app and member series too"]
    made = sum(requests.values())
    print(f"  theoretical minimum (full run)     {minimum_requests:>3} requests (1 activity, {pages} keys, "
          + ", ".join(f"{n} {s}" for s, n in need.items()) + f"), {minimum_seconds:.2f}s wall")
    print(f"  ratio to the minimum               requests {made / minimum_requests:.2f}x, wall time {seconds / minimum_seconds:.2f}x (target 1.5x)")
    print(f"  rows stored by the full run        {stored:,} (the minimum above counts the network only, not writing them)")


if __name__ == "__main__":
    main()
