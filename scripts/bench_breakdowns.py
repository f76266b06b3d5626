#!/usr/bin/env python3
"""Requests and wall time of a 30-day backfill with the key breakdown, 20 keys, 100 ms latency.

Runs ``openrouter-archive backfill`` (the real CLI, in a subprocess) against the stand-in
with 20 API keys, every request delayed by 100 ms, and ``[sync] breakdowns = ["key"]``;
the same backfill without breakdowns is the baseline, and the key breakdown runs once
sequentially (concurrency 1) and once with the default concurrency (4).

Usage: python scripts/bench_breakdowns.py [--keys 20] [--latency 0.1] [--page-size 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from etl.standin import Dataset, StandIn


def backfill(api: StandIn, key: str, folder: Path, name: str, config: str) -> tuple[float, Counter[str]]:
    (folder / f"{name}.toml").write_text(config)
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": key,
        "OPENROUTER_BASE_URL": api.base_url,
        "OPENROUTER_ARCHIVE_DB": f"sqlite:///{folder / f'{name}.db'}",
        "OPENROUTER_ARCHIVE_CONFIG": str(folder / f"{name}.toml"),
    }
    api.requests.clear()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "etl", "-q", "backfill"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"backfill failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, Counter(r.path.rsplit("/", 1)[-1] for r in api.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--page-size", type=int, default=10, help="keys per /keys page served by the stand-in")
    args = parser.parse_args()
    key = "sk-or-v1-bench-" + os.urandom(8).hex()
    runs = [
        ("account only (baseline)", ""),
        ("key breakdown, concurrency 1", '[sync]\nbreakdowns = ["key"]\nconcurrency = 1\n'),
        ("key breakdown, concurrency 4", '[sync]\nbreakdowns = ["key"]\nconcurrency = 4\n'),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-breakdowns-") as tmp, StandIn(
        Dataset(keys=args.keys), management_key=key, latency=args.latency, page_size=args.page_size
    ) as api:
        print(f"30-day backfill, {args.keys} keys, {args.latency * 1000:.0f} ms per request, /keys pages of {args.page_size}:")
        for i, (label, config) in enumerate(runs):
            seconds, requests = backfill(api, key, Path(tmp), f"run{i}", config)
            detail = ", ".join(f"{n} /{path}" for path, n in sorted(requests.items()))
            print(f"  {label:<30} {sum(requests.values()):>3} requests ({detail}), {seconds:.2f}s wall")


if __name__ == "__main__":
    main()
