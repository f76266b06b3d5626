#!/usr/bin/env python3
"""Soak the daemon: run its scheduled sync job hundreds of times on a fast trigger.

The real ``Daemon`` (APScheduler, client, warehouse, lock) runs in this process on an
interval trigger against the stand-in, which runs in a separate process so that its own
bookkeeping does not count. Resident memory (VmRSS) and open file descriptors are read
after a warm-up (the baseline) and at the end; the target is a growth of a few MB at most
and no descriptor leak.

Usage: python scripts/soak_daemon.py [--runs 500] [--interval 0.02]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from etl import migrate
from etl.client import OpenRouterClient
from etl.config import parse_config
from etl.daemon import Daemon
from etl.db import open_engine
from etl.standin import DEMO_MANAGEMENT_KEY


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def start_standin() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "etl.standin", "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    return proc, first.rsplit(" ", 1)[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    standin, base_url = start_standin()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'soak.db'}"
        config = parse_config({"openrouter": {"base_url": base_url}, "warehouse": {"url": url}}, "soak")
        engine = open_engine(url)
        migrate.upgrade(engine)
        stop = threading.Event()
        client = OpenRouterClient.from_config(config.openrouter, DEMO_MANAGEMENT_KEY, stop=stop)
        daemon = Daemon.build(config, engine, client, stop, scheduler=BackgroundScheduler(), sync_trigger=IntervalTrigger(seconds=args.interval))

        done = threading.Event()
        samples: dict[str, tuple[float, int]] = {}
        outcomes = {"ok": 0, "failed": 0}

        def on_report(report) -> None:  # type: ignore[no-untyped-def]
            outcomes["ok" if report.ok else "failed"] += 1
            n = sum(outcomes.values())
            if n == args.warmup:
                samples["start"] = (rss_mib(), open_fds())
            if n >= args.warmup + args.runs:
                samples.setdefault("end", (rss_mib(), open_fds()))
                done.set()

        daemon.on_report = on_report
        started = time.monotonic()
        daemon.scheduler.start()
        try:
            if not done.wait(timeout=max(600.0, args.runs * 2.0)):
                sys.exit(f"soak did not finish: {outcomes}")
        finally:
            stop.set()
            daemon.scheduler.shutdown(wait=True)
            client.close()
            engine.dispose()
            standin.terminate()
            standin.wait(timeout=10)
        elapsed = time.monotonic() - started

    (rss0, fd0), (rss1, fd1) = samples["start"], samples["end"]
    print(f"soak: {args.runs} scheduled syncs after {args.warmup} warm-up runs in {elapsed:.1f}s "
          f"({outcomes['ok']} ok, {outcomes['failed']} failed)")
    print(f"resident memory: {rss0:.1f} MiB after warm-up -> {rss1:.1f} MiB at the end ({rss1 - rss0:+.1f} MiB; target: a few MB at most)")
    print(f"open descriptors: {fd0} after warm-up -> {fd1} at the end ({fd1 - fd0:+d}; target: no growth)")


if __name__ == "__main__":
    main()
