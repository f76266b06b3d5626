#!/usr/bin/env python3
"""Requests and wall time of a first sync that recovers a year of history, against the minimum.

Runs ``openrouter-archive sync`` (the real CLI, in a subprocess, each time on an empty
warehouse) against the stand-in with 20 API keys, 10 apps and 5 members, every request
delayed by 100 ms, run by run in rounds (A B C, A B C, ...): A with the Analytics API off
(``/activity`` only: the baseline), B with the default series (account, provider), C with
the key, app and member series on too. Medians of the rounds; CPU time (user + system of
the sync process) beside wall time, and the size of the warehouse each run leaves.

The theoretical minimum of run C, given the API's limits (printed with its figures):

  requests = 1 (/activity) + P (/keys pages, the empty last one included)
             + sum over series and subjects of max(1, ceil(rows / 10,000))
  wall     = baseline + (P + 1) x latency + 60 s x (ceil(Q / 64) - 1)

where Q is the analytics requests above: a per-subject series needs a request per subject
(a filter by id is the only stable attribution: 2 dimensions, the label being one), a series
of R rows needs ceil(R / 10,000) (the row limit), the /keys pages come one after another
(each says whether there is a next), the analytics requests can then all be in flight at
once (one more round trip) but no more than 64 a minute (each further 64 wait a minute).
The baseline is run A's median: process start, configuration, /activity and its 30 days
written. What the minimum leaves out, so that it is one: the time to validate and write the
rows (printed: rows stored and the sync's CPU time beyond the baseline's), the stand-in's
time to serve its answers (printed; it computes and encodes them before the timings start,
but sends them from this process, on the same cores). It also counts /activity before the
analytics requests; this archiver sends them side by side, so a stricter minimum, with the
two overlapped, is printed too (the baseline's /activity round trip taken off). A second line
puts the measured work back in: baseline + max(network, the sync's CPU beyond the
baseline's), what C would take if nothing waited that could overlap.

Usage: python scripts/bench_history.py [--rounds 3] [--keys 20] [--apps 10] [--members 5] [--latency 0.1] [--compare DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from etl.analytics import SERIES, query_body, series_range
from etl.standin import Dataset, StandIn
from etl.standin.analytics import Analytics
from etl.window import utc_today

LIMIT = 10_000
PER_MINUTE = 64


@dataclass
class Run:
    wall: float
    cpu: float
    requests: Counter[str]
    rows: int
    splits: int
    standin: float  # CPU seconds of this process meanwhile: the stand-in serving the sync
    size: int  # bytes of the warehouse the sync left, its WAL checkpointed into it


def sync(api: StandIn, key: str, folder: Path, name: str, config: str, analytics: bool, code: str | None = None) -> Run:
    db = folder / f"{name}.db"
    for stale in folder.glob(f"{name}.db*"):
        stale.unlink()
    (folder / f"{name}.toml").write_text(config)
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": key,
        "OPENROUTER_BASE_URL": api.base_url,
        "OPENROUTER_ARCHIVE_DB": f"sqlite:///{db}",
        "OPENROUTER_ARCHIVE_CONFIG": str(folder / f"{name}.toml"),
        "OPENROUTER_ARCHIVE_ANALYTICS": "on" if analytics else "off",
    }
    if code:  # another checkout's archiver (--compare), against the same stand-in
        env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
    api.requests.clear()
    api.analytics.forget_requests()  # each run is a first sync: no earlier run's requests count against its minute
    limited = api.analytics.rate_limited
    before, ours = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "etl", "-q", "sync"], env=env, capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - started
    after, mine = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    if done.returncode != 0:
        sys.exit(f"sync failed:\n{done.stdout}\n{done.stderr}")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT (SELECT count(*) FROM analytics_daily) + (SELECT count(*) FROM analytics_provider_daily)").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    splits = sum(int(n) for n in re.findall(r"\((\d+) truncated answer\(s\) split\)", done.stdout))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    requests = Counter(r.path.split("/api/v1/", 1)[-1] for r in api.requests)
    if api.analytics.rate_limited != limited:
        sys.exit(f"run {name} was answered 429 {api.analytics.rate_limited - limited} time(s): the archiver exceeded the rate limit")
    standin = (mine.ru_utime - ours.ru_utime) + (mine.ru_stime - ours.ru_stime)
    return Run(wall, cpu, requests, rows, splits, standin, size)


def rows(analytics: Analytics, dims: tuple[str, ...], days: int, **match: str) -> int:
    """Rows a series' answers hold over `days` days (from the generator: what the answers must hold)."""
    today = utc_today()
    groups = set()
    for n in range(1, days + 1):
        day = today - timedelta(days=n)
        for fact in analytics.facts(day):
            if all(fact.dims[k] == v for k, v in match.items()):
                groups.add((day, *(fact.dims[d] for d in dims)))
    return len(groups)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--page-size", type=int, default=10, help="keys per /keys page served by the stand-in")
    parser.add_argument("--compare", metavar="DIR", help="also run C with the archiver (the etl package) in DIR, e.g. an older checkout")
    args = parser.parse_args()
    key = "sk-or-v1-bench-" + os.urandom(8).hex()
    dataset = Dataset(keys=args.keys, users=args.members, first_key_age_days=400)
    analytics = Analytics(dataset, apps=args.apps)
    members = json.dumps(dataset.user_ids)
    # The stand-in computes and encodes its answers before the timings start (its cache, as
    # a server's): its own cost is not the archiver's, and it shares this machine's cores.
    today = utc_today()
    for name, subjects in (("account", [None]), ("provider", [None]), ("app", [None]), ("key", [k.hash for k in dataset.api_keys]),
                           ("member", list(dataset.user_ids))):
        first, last = series_range(today, SERIES[name].reach)
        for subject in subjects:
            analytics.encoded(query_body(SERIES[name], first, last, LIMIT, subject), today)
    everything = f'[sync]\nanalytics_series = ["account", "provider", "key", "app", "member"]\nmembers = {members}\n'
    kinds = (
        ("A", "/activity only (baseline)", "", False),
        ("B", "default series (account, provider)", "", True),
        ("C", "key, app and member series too", everything, True),
    )
    if args.compare:
        kinds += (("D", f"C with the archiver in {args.compare}", everything, True),)
    results: dict[str, list[Run]] = {k: [] for k, *_ in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp, StandIn(
        dataset, management_key=key, latency=args.latency, page_size=args.page_size, analytics=analytics
    ) as api:
        for _ in range(args.rounds):  # A B C, A B C, ...: the machine's load shifts alike for all
            for kind, _label, config, on in kinds:
                results[kind].append(sync(api, key, Path(tmp), kind, config, on, args.compare if kind == "D" else None))
    print(f"first sync, {args.keys} keys, {args.apps} apps, {args.members} members, {args.latency * 1000:.0f} ms per request, "
          f"medians of {args.rounds} round(s) ({' '.join(k for k, *_ in kinds)} interleaved):")
    for kind, label, _config, _on in kinds:
        runs = results[kind]
        wall, cpu = median([r.wall for r in runs]), median([r.cpu for r in runs])
        requests = runs[-1].requests
        detail = ", ".join(f"{n} {path}" for path, n in sorted(requests.items()))
        print(f"  {kind} {label:<36} {sum(requests.values()):>3} requests ({detail}), {wall:.2f}s wall, {cpu:.2f}s CPU, "
              f"warehouse {runs[-1].size / 1e6:.1f} MB")
    # The minimum of run C.
    need = {
        "account": max(1, math.ceil(rows(analytics, ("model", "variant"), 365) / LIMIT)),
        "provider": max(1, math.ceil(rows(analytics, ("model", "provider"), 31) / LIMIT)),
        "app": max(1, math.ceil(rows(analytics, ("app", "model"), 365) / LIMIT)),
        "key": sum(max(1, math.ceil(rows(analytics, ("model",), 365, api_key_id=k.hash) / LIMIT)) for k in dataset.api_keys),
        "member": sum(max(1, math.ceil(rows(analytics, ("model",), 365, user=u) / LIMIT)) for u in dataset.user_ids),
    }
    pages = args.keys // args.page_size + 1  # full pages, then the short (or empty) one that ends the list
    queries = sum(need.values())
    minimum_requests = 1 + pages + queries
    waits = 60.0 * max(0, math.ceil(queries / PER_MINUTE) - 1)
    base = median([r.wall for r in results["A"]])
    minimum_seconds = base + (pages + 1) * args.latency + waits
    full = results["C"]
    wall, cpu = median([r.wall for r in full]), median([r.cpu for r in full])
    made = sum(full[-1].requests.values())
    print(f"  theoretical minimum of C             {minimum_requests:>3} requests (1 activity, {pages} keys, "
          + ", ".join(f"{n} {s}" for s, n in need.items()) + f"), {minimum_seconds:.2f}s wall")
    print(f"    = 1 + P + Q requests, P = {pages} /keys pages, Q = {queries} = sum of max(1, ceil(rows / {LIMIT:,})) per series and subject;")
    print(f"      baseline {base:.2f}s + (P + 1) x {args.latency:g}s latency + 60s x (ceil(Q / {PER_MINUTE}) - 1) = {waits:.0f}s of rate-limit waits")
    print(f"  C against the minimum                requests {made / minimum_requests:.2f}x, wall time {wall / minimum_seconds:.2f}x (target 1.5x)")
    overlapped = minimum_seconds - args.latency  # /activity's round trip under the /keys pages and queries
    print(f"  stricter, /activity overlapped       {overlapped:.2f}s wall (the minimum less /activity's round trip, "
          f"{args.latency:g}s, as this archiver sends both at once): C at {wall / overlapped:.2f}x")
    extra_cpu = cpu - median([r.cpu for r in results["A"]])
    bound = base + max((pages + 1) * args.latency + waits, extra_cpu)
    print(f"  with the work it does                baseline + max(network above, CPU beyond the baseline) = {bound:.2f}s: "
          f"C at {wall / bound:.2f}x (1.00x: nothing waits that could overlap)")
    print(f"  C beyond the baseline                {wall - base:.2f}s wall, {extra_cpu:.2f}s CPU for "
          f"{full[-1].rows:,} rows validated and stored ({full[-1].splits} truncated answer(s) split), "
          f"the stand-in serving them {median([r.standin for r in full]):.2f}s CPU")


if __name__ == "__main__":
    main()
