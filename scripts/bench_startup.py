#!/usr/bin/env python3
"""Start-up cost of each quick command, next to the import floor, measured in one run.

Each command runs as a fresh process (``python -m etl ...``), as a user or cron starts it:
``--help``, ``status``, ``report`` (30 days by model, as a table) and a no-op ``sync``
(every day archived, ``refetch_days = 0``, the Analytics API off: no request to make)
against the bundled stand-in on loopback. Beside them run the floors: ``python -c pass``
(the interpreter alone), ``python -c "import etl.cli"`` (the CLI module and what it
imports at the top), and ``import etl.sync`` with and without httpx's own command-line
client, which the CLI keeps out (what that saves every sync). Runs are interleaved (floor, each command, floor, ... in turn, round
after round), so that a noisy machine slows every side alike; each row prints the median
wall time, the median CPU time (user + system of the child, from ``wait4``) and both as a
multiple of ``python -c pass``.

``--baseline-tree DIR`` also runs every command with another checkout's ``etl`` first on
``PYTHONPATH`` (e.g. ``git archive main etl migrations alembic.ini | tar -x -C DIR``),
interleaved with the project's runs, and prints the ratio project / baseline.

Usage: python scripts/bench_startup.py [--repeat 15] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "sk-or-v1-bench-" + "0" * 32


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process; it must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {stderr[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--baseline-tree", metavar="DIR", help="another checkout to run each command from too")
    args = parser.parse_args()

    from etl.standin import Dataset, StandIn
    from etl.window import utc_today

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, \
            StandIn(Dataset(anchor=utc_today()), management_key=KEY) as api:
        Path(tmp, "config.toml").write_text("[sync]\nrefetch_days = 0\n")
        env = {**os.environ, "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url,
               "OPENROUTER_ARCHIVE_DB": f"sqlite:///{tmp}/archive.db", "OPENROUTER_ARCHIVE_ANALYTICS": "off",
               "XDG_CONFIG_HOME": f"{tmp}/xdg-config", "XDG_DATA_HOME": f"{tmp}/xdg-data"}
        timed([py, "-m", "etl", "backfill"], env, tmp)  # the archive the commands read
        commands = {
            "--help": ["--help"],
            "status": ["status"],
            "report": ["report", "--last", "30d"],
            "sync (nothing to do)": ["sync"],
        }
        base_env = {**env, "PYTHONPATH": str(Path(args.baseline_tree).resolve())} if args.baseline_tree else None
        sides: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([py, "-c", "pass"], env),
            "python -c 'import etl.cli'": ([py, "-c", "import etl.cli"], env),
            # What the CLI's guard against httpx's own command-line client saves a sync (etl.cli).
            "sync's imports, httpx CLI kept out": ([py, "-c", "import sys; sys.modules['httpx._main'] = None; import etl.sync"], env),
            "sync's imports, httpx CLI loaded": ([py, "-c", "import etl.sync"], env),
        }
        if base_env is not None:
            sides["python -c 'import etl.cli' (baseline)"] = ([py, "-c", "import etl.cli"], base_env)
        for name, argv in commands.items():
            sides[name] = ([py, "-m", "etl", *argv], env)
            if base_env is not None:
                sides[f"{name} (baseline)"] = ([py, "-m", "etl", *argv], base_env)
        for argv, side_env in sides.values():  # warm the page cache and .pyc files once
            timed(argv, side_env, tmp)
        api.requests.clear()
        walls: dict[str, list[float]] = {name: [] for name in sides}
        cpus: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeat):
            for name, (argv, side_env) in sides.items():
                wall, cpu = timed(argv, side_env, tmp)
                walls[name].append(wall)
                cpus[name].append(cpu)
        syncs = [r for r in api.requests if r.path.endswith("/activity")]

    floor_wall = statistics.median(walls["python -c pass"])
    floor_cpu = statistics.median(cpus["python -c pass"])
    print(f"start-up, median of {args.repeat} interleaved runs each (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'':40} {'wall ms':>9} {'CPU ms':>9} {'wall ×pass':>11} {'CPU ×pass':>10}")
    for name in sides:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:40} {wall * 1000:9.1f} {cpu * 1000:9.1f} {wall / floor_wall:11.2f} {cpu / floor_cpu:10.2f}")
    if args.baseline_tree:
        print("\nproject / baseline (medians)")
        for name in [n for n in sides if f"{n} (baseline)" in sides]:
            base = f"{name} (baseline)"
            wall = statistics.median(walls[name]) / statistics.median(walls[base])
            cpu = statistics.median(cpus[name]) / statistics.median(cpus[base])
            print(f"{name:40} wall {wall:5.2f}×  CPU {cpu:5.2f}×")
    print(f"/activity requests made by the {args.repeat} no-op syncs: {len(syncs)} (a sync with nothing to do asks nothing)")


if __name__ == "__main__":
    main()
