#!/usr/bin/env python3
"""All-history reports against the ``sqlite3`` shell's plain GROUP BY over the same file.

1. A 1,000,000-row archive (``--days`` × ``--endpoints``, plus the same rows split among
   ``--keys`` API keys in ``activity_by_key``), built through the project's own load path
   (``warehouse.save_day`` / ``save_breakdown_day``, one transaction per day: the monthly
   summaries are kept by their triggers, as in production). See scripts/bench_archive.py.
2. For each all-history report (month×model, model, provider, key): the project's query
   layer (``etl.query.run_report``, in-process, as ``report`` calls it) and the plain
   GROUP BY through the ``sqlite3`` shell (a subprocess; Python's sqlite3 module when the
   shell is not installed; the script says which), interleaved run by run (A B A B …),
   medians of wall and CPU time, and the ratio (target ≤ 0.2×). The numbers are checked
   equal to the cent before anything is timed.
3. ``report --last 30d`` (model): this branch's query layer against the query it replaced
   (float sums, no summaries), both in-process, interleaved; and the shell's GROUP BY.

4. ``--load-cost``: what the summaries' triggers cost a load (``warehouse.save_day`` into a
   fresh warehouse with them and with them dropped, interleaved).

Usage: python scripts/bench_report.py [--days 500] [--endpoints 2000] [--keys 5] [--repeat 5] [--cache DIR] [--load-cost]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive import cached  # noqa: E402

from sqlalchemy import BigInteger, Float, cast, func, select  # noqa: E402

from etl.db import open_engine  # noqa: E402
from etl.query import ReportSpec, dimension, filters, run_report  # noqa: E402
from etl.schema import activity  # noqa: E402

END = date(2030, 12, 31)
METRICS_SQL = (
    "sum(usage), sum(byok_usage_inference), sum(requests), sum(prompt_tokens), sum(completion_tokens), "
    "sum(reasoning_tokens), sum(cached_tokens), sum(prompt_tokens + completion_tokens)"
)
REPORTS = {  # report group -> the plain GROUP BY a user would type
    "month,model": f"SELECT substr(date, 1, 7), model, {METRICS_SQL} FROM activity GROUP BY 1, 2",
    "model": f"SELECT model, {METRICS_SQL} FROM activity GROUP BY 1",
    "provider": f"SELECT provider_name, {METRICS_SQL} FROM activity GROUP BY 1",
    "key": f"SELECT api_key_hash, {METRICS_SQL} FROM activity_by_key GROUP BY 1",
}


class Shell:
    """The plain GROUP BY: the sqlite3 shell as a subprocess, or Python's sqlite3 without one."""

    def __init__(self, path: Path):
        self.path, self.binary = path, shutil.which("sqlite3")
        self.name = f"the sqlite3 shell ({self.binary})" if self.binary else "Python's sqlite3 module (no sqlite3 shell installed)"

    def rows(self, sql: str) -> list[tuple]:
        if self.binary:
            out = subprocess.run([self.binary, "-readonly", "-separator", "\t", str(self.path), sql], capture_output=True, text=True, check=True).stdout
            return [tuple(line.split("\t")) for line in out.splitlines()]
        with sqlite3.connect(self.path) as conn:
            return conn.execute(sql).fetchall()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn``: this process's CPU plus its children's (the shell)."""
    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def interleaved(a: Callable[[], object], b: Callable[[], object], repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Medians of (wall, CPU) for a and b, run A B A B … (B A on odd rounds)."""
    runs: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for i in range(repeat):
        order = [("a", a), ("b", b)] if i % 2 == 0 else [("b", b), ("a", a)]
        for name, fn in order:
            runs[name].append(timed(fn))

    def med(xs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs)

    return med(runs["a"]), med(runs["b"])


def check_equal(report, shell_rows: list[tuple], group_by: tuple[str, ...], names: dict[str, str]) -> None:
    """The report's groups and spend against the shell's, to the cent."""
    want = {tuple(names.get(v, v) for v in r[:len(group_by)]): float(r[len(group_by)]) for r in shell_rows}
    got = {tuple(r[g] for g in group_by): r["usage"] for r in report.rows}
    assert set(got) == set(want), (len(got), len(want))
    bad = [k for k in got if round(got[k], 2) != round(want[k], 2)]
    assert not bad, bad[:3]


def old_query(spec: ReportSpec):  # the 30-day query as main ran it before the summaries: float sums
    t = activity
    dims = [dimension(name, t).label(name) for name in spec.group_by]
    money = [cast(func.coalesce(func.sum(t.c[m]), 0.0), Float).label(m) for m in ("usage", "byok_usage_inference")]
    counts = [cast(func.coalesce(func.sum(t.c[m]), 0), BigInteger).label(m)
              for m in ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")]
    total = cast(func.coalesce(func.sum(t.c.prompt_tokens + t.c.completion_tokens), 0), BigInteger).label("total_tokens")
    return select(*dims, *money, *counts, total).group_by(*dims).where(*filters(spec))


def load_cost(folder: Path, days: int, endpoints: int, repeat: int) -> None:
    """What the summaries' triggers cost a load: warehouse.save_day with them and with them dropped, interleaved."""
    from datetime import datetime, timezone

    from bench_archive import day_rows

    from etl import migrate, summaries, warehouse

    import random

    rng = random.Random(3)
    first = date(2030, 1, 1)
    data = [(d, day_rows(d, endpoints, rng)) for d in ((first + timedelta(days=i)).isoformat() for i in range(days))]
    now = datetime(2031, 1, 1, tzinfo=timezone.utc)

    def load(triggers: bool) -> Callable[[], object]:
        def run() -> None:
            path = folder / f"load-{triggers}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            engine = open_engine(f"sqlite:///{path}")
            migrate.upgrade(engine)
            if not triggers:
                with engine.begin() as conn:
                    for statement in summaries.drop_ddl("sqlite"):
                        conn.exec_driver_sql(statement)
            for day, rows in data:
                with engine.begin() as conn:
                    warehouse.save_day(conn, day, rows, now=now)
            engine.dispose()
        return run

    with_, without = interleaved(load(True), load(False), repeat)
    total = days * endpoints
    print(f"load {total:,} rows through warehouse.save_day: with the summaries' triggers {total / with_[0]:,.0f} rows/s "
          f"({fmt(with_)}), without {total / without[0]:,.0f} rows/s ({fmt(without)}): "
          f"the triggers cost {with_[1] / without[1] - 1:+.0%} CPU", flush=True)


def fmt(x: tuple[float, float]) -> str:
    return f"{x[0] * 1000:8.1f} ms wall {x[1] * 1000:8.1f} ms CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=None, help="keep the built archive here (default: a temporary folder)")
    parser.add_argument("--load-cost", action="store_true", help="only: what the triggers cost a load (100 days x --endpoints)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        if args.load_cost:
            load_cost(Path(tmp), 100, args.endpoints, max(3, args.repeat // 2))
            return
        path = cached(args.cache or Path(tmp), args.days, args.endpoints, args.keys, END)
        shell = Shell(path)
        print(f"archive {path.name}: {args.days * args.endpoints:,} rows in activity; baseline: {shell.name}; "
              f"interleaved, medians of {args.repeat}", flush=True)
        engine = open_engine(f"sqlite:///{path}", read_only=True)
        with engine.connect() as conn:
            from etl.query import key_names

            names = key_names(conn)
            for group, sql in REPORTS.items():
                spec = ReportSpec(tuple(group.split(",")), history=True)
                report = run_report(conn, spec)
                check_equal(report, shell.rows(sql), spec.group_by, names)
                project, base = interleaved(lambda: run_report(conn, spec), lambda: shell.rows(sql), args.repeat)  # noqa: B023
                print(f"report {group:<12} all history, {len(report.rows):>6} groups: project {fmt(project)} | "
                      f"plain GROUP BY {fmt(base)} | ratio {project[0] / base[0]:.3f}x wall, {project[1] / base[1]:.3f}x CPU (target <= 0.2x)",
                      flush=True)
            since, until = (END - timedelta(days=29)).isoformat(), END.isoformat()
            spec = ReportSpec(("model",), since, until, history=True)
            sql = f"SELECT model, {METRICS_SQL} FROM activity WHERE date >= '{since}' AND date <= '{until}' GROUP BY 1"
            import etl.query

            def old_grouped_rows(conn, spec, key_hashes=None, fast=True):  # type: ignore[no-untyped-def]
                return [dict(r) for r in conn.execute(old_query(spec)).mappings()]

            def run_before():  # run_report as before: the same code around the old query
                etl.query.grouped_rows, saved = old_grouped_rows, etl.query.grouped_rows
                try:
                    return run_report(conn, spec)
                finally:
                    etl.query.grouped_rows = saved

            assert {r["model"]: round(r["usage"], 6) for r in run_before().rows} == {r["model"]: round(r["usage"], 6) for r in run_report(conn, spec).rows}
            after, before = interleaved(lambda: run_report(conn, spec), run_before, args.repeat)
            shell_30 = statistics.median(timed(lambda: shell.rows(sql))[0] for _ in range(args.repeat))
            print(f"report --last 30d (model, {since}..{until}): this branch {fmt(after)} | the query it replaced {fmt(before)} | "
                  f"ratio {after[0] / before[0]:.2f}x wall, {after[1] / before[1]:.2f}x CPU; plain GROUP BY {shell_30 * 1000:.1f} ms wall")
        engine.dispose()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
