#!/usr/bin/env python3
"""`status` on a 30-day archive against the same on a 5-year one, both with the key breakdown.

Both archives are built through the project's own load path (scripts/bench_archive.py),
``--endpoints`` rows a day in ``activity`` and as many in ``activity_by_key``, the last day
yesterday (so the window is whole). ``etl.status.read_status`` runs in-process on each,
interleaved run by run (30 d, 5 y, 5 y, 30 d, …); medians of wall and CPU time and the ratio
(target ≤ 1.2×). For reference, the breakdown check as it ran before (every archived day,
not the window's) on the 5-year archive.

Usage: python scripts/bench_status.py [--endpoints 500] [--keys 5] [--years 5] [--repeat 7] [--cache DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive import cached  # noqa: E402

from etl.db import open_engine  # noqa: E402
from etl.status import check_breakdowns, read_status  # noqa: E402

TODAY = date(2031, 1, 1)


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        folder = args.cache or Path(tmp)
        yesterday = TODAY - timedelta(days=1)
        long_days = 365 * args.years
        paths = {"30 days": cached(folder, 30, args.endpoints, args.keys, yesterday),
                 f"{args.years} years": cached(folder, long_days, args.endpoints, args.keys, yesterday)}
        engines = {name: open_engine(f"sqlite:///{p}", read_only=True) for name, p in paths.items()}
        for name, engine in engines.items():
            status = read_status(engine, TODAY)
            assert status.healthy, status.problems
            assert status.breakdowns["key"]["mismatches"] == [] and status.summaries["mismatches"] == []
            print(f"{name}: {status.days_archived} days, {status.rows:,} rows (+ as many per key); "
                  f"breakdown days checked {status.breakdowns['key']['days_checked']}, summaries {status.summaries['months']}")
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
        for i in range(args.repeat):
            for name in (list(engines) if i % 2 == 0 else list(reversed(engines))):
                runs[name].append(timed(lambda: read_status(engines[name], TODAY)))  # noqa: B023
        med = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for name, rs in runs.items()}
        short, long = med["30 days"], med[f"{args.years} years"]
        for name, (wall, cpu) in med.items():
            print(f"status, {name:<8}: {wall * 1000:7.1f} ms wall, {cpu * 1000:7.1f} ms CPU (median of {args.repeat})")
        print(f"ratio {args.years} years / 30 days: {long[0] / short[0]:.2f}x wall, {long[1] / short[1]:.2f}x CPU (target <= 1.2x)")
        with engines[f"{args.years} years"].connect() as conn:
            old = statistics.median(timed(lambda: check_breakdowns(conn))[0] for _ in range(3))  # noqa: B023
        print(f"for reference: the breakdown check over every archived day, as status ran it before, alone took {old * 1000:.0f} ms "
              f"on the {args.years}-year archive (median of 3)")
        for engine in engines.values():
            engine.dispose()


if __name__ == "__main__":
    main()
