#!/usr/bin/env python3
"""Report timings against hand-written SQL through ``sqlite3``, measured in the same run.

1. A 1,000,000-row archive (500 days × 2,000 endpoints). For one year of it, the
   ``month,model`` and ``provider`` reports through the project's query layer
   (``etl.query.run_report``) and the equivalent hand-written SQL through ``sqlite3``.
   Prints both medians and the ratio (target: the project within 1.5× of raw SQL).
2. ``openrouter-archive report`` on a 30-day archive, wall time from process start
   (target < 0.5 s); baselines: ``python -c pass`` and importing SQLAlchemy and click.

Usage: python scripts/bench_report.py [--days 500] [--endpoints 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import compileall
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import COLUMNS, fresh_warehouse, load_raw, synthetic_days  # noqa: E402

import etl  # noqa: E402
from etl.db import open_engine  # noqa: E402
from etl.query import ReportSpec, run_report  # noqa: E402

METRICS_SQL = (
    "sum(usage), sum(byok_usage_inference), sum(requests), sum(prompt_tokens), sum(completion_tokens), "
    "sum(reasoning_tokens), sum(cached_tokens), sum(prompt_tokens + completion_tokens)"
)
RAW = {
    "month,model": f"SELECT substr(date, 1, 7), model, {METRICS_SQL} FROM activity "
    "WHERE date >= ? AND date <= ? GROUP BY substr(date, 1, 7), model",
    "provider": f"SELECT provider_name, {METRICS_SQL} FROM activity WHERE date >= ? AND date <= ? GROUP BY provider_name",
}


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_queries(path: Path, since: str, until: str, repeat: int) -> None:
    engine = open_engine(f"sqlite:///{path}")
    raw = sqlite3.connect(path)
    for name, sql in RAW.items():
        spec = ReportSpec(tuple(name.split(",")), since, until)
        with engine.connect() as conn:
            rows = run_report(conn, spec).rows
            project = median_time(lambda: run_report(conn, spec), repeat)  # noqa: B023 (called at once)
        expected = raw.execute(sql, (since, until)).fetchall()
        assert len(rows) == len(expected), (len(rows), len(expected))
        baseline = median_time(lambda: raw.execute(sql, (since, until)).fetchall(), repeat)  # noqa: B023 (called at once)
        print(f"report {name:<12} one year ({since}..{until}), {len(rows)} rows: project {project * 1000:7.1f} ms, "
              f"raw sqlite3 {baseline * 1000:7.1f} ms, ratio {project / baseline:.2f}x (target <= 1.5x), medians of {repeat}")
    raw.close()
    engine.dispose()


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr.decode()}")
    return time.perf_counter() - started


def bench_cli(folder: Path, runs: int) -> None:
    path = fresh_warehouse(folder, "month.db")
    days = synthetic_days(30, 60)
    load_raw(path, [(day, [tuple(r[c] for c in COLUMNS) for r in rows]) for day, rows in days])
    env = {**os.environ, "OPENROUTER_ARCHIVE_DB": f"sqlite:///{path}"}
    cli = [sys.executable, "-m", "etl"]
    start = statistics.median(timed([sys.executable, "-c", "pass"], env) for _ in range(runs))
    floor = statistics.median(timed([sys.executable, "-c", "import sqlalchemy, click"], env) for _ in range(runs))
    table = statistics.median(timed([*cli, "report"], env) for _ in range(runs))
    by_day = statistics.median(timed([*cli, "report", "-g", "date,provider", "-f", "csv"], env) for _ in range(runs))
    print(f"cli: `report` on a 30-day archive {table:.2f}s, `report -g date,provider -f csv` {by_day:.2f}s (target < 0.5 s); "
          f"baselines: python start-up {start:.2f}s, importing SQLAlchemy and click alone {floor:.2f}s; medians of {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    # Byte-compile the package as pip does for a regular install (an editable install under
    # PYTHONDONTWRITEBYTECODE would otherwise recompile it at every process start).
    compileall.compile_dir(Path(etl.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        folder = Path(tmp)
        bench_cli(folder, args.repeat)
        print(f"building a {args.days * args.endpoints:,}-row archive ...", flush=True)
        path = fresh_warehouse(folder, "big.db")
        days = synthetic_days(args.days, args.endpoints)
        load_raw(path, [(day, [tuple(r[c] for c in COLUMNS) for r in rows]) for day, rows in days])
        last = days[-1][0]
        first_of_year = f"{int(last[:4]) - 1}{last[4:]}"
        bench_queries(path, first_of_year, last, args.repeat)


if __name__ == "__main__":
    main()
