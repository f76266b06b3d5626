#!/usr/bin/env python3
"""Prove the archive keeps its history: crashes, fault storms and hostile input.

Runs the real CLI in subprocesses against the stand-in (in this process) and real SQLite
files, and prints a table: kills survived, faults injected and survived, hostile inputs
tried and how each ended, rows lost (must be 0). ``tests/test_reliability.py`` runs the
same functions and asserts on their results.

Usage: python scripts/reliability_report.py [--kills 20] [--rows-per-day 5000] [--storm-rounds 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from etl.standin import Dataset, Fault, StandIn
from etl.window import completed_window, utc_today

KEY = "sk-or-v1-reliability-" + "5a" * 12
ROW_SQL = (
    "SELECT date, endpoint_id, model, model_permaslug, provider_name, usage, byok_usage_inference, requests, "
    "prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens FROM activity"
)
FAST_RETRIES = "[openrouter]\nmax_attempts = {attempts}\nbackoff_initial = 0.02\nbackoff_max = 0.2\ntimeout_seconds = {timeout}\nmax_response_mb = {max_mb}\n"


# -- helpers ------------------------------------------------------------------------------


def expected_days(dataset: Dataset) -> dict[str, list[tuple[Any, ...]]]:
    """What the stand-in serves for each day of the window, as the warehouse must hold it.

    Read from the generator as plain JSON and normalised here, never through the code under
    test: a validation that swapped two columns must not move the expectation with it.
    """
    today = datetime.now(timezone.utc).date()
    days: dict[str, list[tuple[Any, ...]]] = {}
    for offset in range(30, 0, -1):
        day = today - timedelta(days=offset)
        items = json.loads(json.dumps(dataset.activity(day)))
        days[day.isoformat()] = sorted(_expected_row(item) for item in items)
    return days


def _expected_row(item: dict[str, Any]) -> tuple[Any, ...]:
    """One served item as an activity row, in ROW_SQL's column order."""
    cached = item.get("cached_tokens")
    return (
        item["date"][:10], item["endpoint_id"], item["model"], item["model_permaslug"], item["provider_name"],
        float(item["usage"]), float(item["byok_usage_inference"]), int(item["requests"]), int(item["prompt_tokens"]),
        int(item["completion_tokens"]), int(item["reasoning_tokens"]), None if cached is None else int(cached),
    )


def cli(folder: Path, db: Path, api: StandIn, *args: str, config: str = "", prefix: list[str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    (folder / "config.toml").write_text(config)
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": KEY,
        "OPENROUTER_BASE_URL": api.base_url,
        "OPENROUTER_ARCHIVE_DB": f"sqlite:///{db}",
        "OPENROUTER_ARCHIVE_CONFIG": str(folder / "config.toml"),
        "PYTHONUNBUFFERED": "1",  # a killed process's last lines are not lost in a buffer
    }
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([*(prefix or []), sys.executable, "-m", "etl", *args], env=env, cwd=folder, text=True, **streams)


@dataclass
class ArchiveCheck:
    integrity: str
    archived_days: int
    incomplete_days: list[str]  # archived, but not equal to what the API served
    unmarked_days: list[str]  # rows without an archived-day mark: a half-written day

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.incomplete_days and not self.unmarked_days


def check_archive(db: Path, expected: dict[str, list[tuple[Any, ...]]]) -> ArchiveCheck:
    if not db.exists():
        return ArchiveCheck("ok", 0, [], [])
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "archived_days" not in tables:
            return ArchiveCheck(integrity, 0, [], [])
        marked = {d for (d,) in conn.execute("SELECT date FROM archived_days")}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for row in conn.execute(ROW_SQL):
            rows.setdefault(row[0], []).append(row)
    incomplete = [d for d in sorted(marked) if sorted(rows.get(d, [])) != expected.get(d)]
    unmarked = sorted(set(rows) - marked)
    return ArchiveCheck(integrity, len(marked), incomplete, unmarked)


def rows_lost(db: Path, expected: dict[str, list[tuple[Any, ...]]]) -> int:
    """Rows the API served that the warehouse does not hold exactly."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        have = set(conn.execute(ROW_SQL).fetchall())
    return sum(1 for day_rows in expected.values() for row in day_rows if row not in have)


# -- crash safety -------------------------------------------------------------------------


@dataclass
class ProcessLog:
    """One CLI run of a crash trial, kept whole so that a failure can be diagnosed."""

    warehouse: str
    args: str
    returncode: int | None
    killed_after: float | None  # seconds, when it was SIGKILLed
    stdout: str
    stderr: str

    def __str__(self) -> str:
        how = f"SIGKILL after {self.killed_after:.2f}s" if self.killed_after is not None else f"exit {self.returncode}"
        out = "\n".join(f"    | {line}" for line in (self.stdout + self.stderr).rstrip().splitlines()[-40:])
        return f"  {self.warehouse}: {self.args}: {how}" + (f"\n{out}" if out else "")


@dataclass
class CrashResult:
    attempts: int = 0
    kills: int = 0
    finished_before_kill: int = 0
    checks_failed: list[str] = field(default_factory=list)
    recoveries: int = 0
    recoveries_failed: list[str] = field(default_factory=list)
    rows_lost: int = 0
    rows_per_day: int = 0
    full_run_seconds: float = 0.0
    logs: list[ProcessLog] = field(default_factory=list)

    def explain(self) -> str:
        """Every failure, then the output of every process run on the warehouses concerned."""
        bad = {line.split(":")[0] for line in self.checks_failed + self.recoveries_failed}
        lines = [*self.checks_failed, *self.recoveries_failed]
        lines += [str(log) for log in self.logs if log.warehouse in bad]
        return "\n".join(lines) or "no failure"


def _run_logged(result: CrashResult, folder: Path, db: Path, api: StandIn, *args: str, kill_after: float | None = None) -> ProcessLog:
    proc = cli(folder, db, api, *args)
    killed = None
    try:
        proc.wait(timeout=kill_after if kill_after is not None else 600)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            proc.kill()
            raise
        proc.send_signal(signal.SIGKILL)
        killed = kill_after
    out, err = proc.communicate()
    log = ProcessLog(db.name, " ".join(args), proc.returncode, killed, out, err)
    result.logs.append(log)
    return log


def crash_trials(kills: int = 20, rows_per_day: int = 5000, seed: int = 7, fresh_every: int = 5) -> CrashResult:
    """SIGKILL `backfill` at random moments; after each kill the archive must be intact.

    Every process's output is kept (``CrashResult.logs``); ``explain()`` shows the output of
    the runs on any warehouse that failed a check or was not recovered by the next sync.
    """
    rng = random.Random(seed)
    result = CrashResult(rows_per_day=rows_per_day)
    dataset = Dataset(endpoints_per_day=rows_per_day, empty_day_every=9)
    expected = expected_days(dataset)
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp, StandIn(dataset, management_key=KEY, date_style="mixed") as api:
        folder = Path(tmp)
        started = time.monotonic()
        calibration = _run_logged(result, folder, folder / "calibration.db", api, "-q", "backfill")
        result.full_run_seconds = time.monotonic() - started
        if calibration.returncode != 0:
            raise RuntimeError(f"calibration backfill failed:\n{calibration}")
        warehouses: list[Path] = []
        while result.kills < kills and result.attempts < kills * 3:
            if result.attempts % fresh_every == 0:
                warehouses.append(folder / f"archive-{len(warehouses)}.db")
            db = warehouses[-1]
            result.attempts += 1
            log = _run_logged(result, folder, db, api, "backfill", kill_after=rng.uniform(0.3, result.full_run_seconds))
            if log.killed_after is None:
                result.finished_before_kill += 1
            else:
                result.kills += 1
            check = check_archive(db, expected)
            if not check.ok:
                result.checks_failed.append(f"{db.name}: after attempt {result.attempts}: {check}")
        for db in warehouses:
            log = _run_logged(result, folder, db, api, "-v", "sync")
            check = check_archive(db, expected)
            if log.returncode == 0 and check.ok:
                result.recoveries += 1
            else:
                result.recoveries_failed.append(f"{db.name}: the recovery sync exited {log.returncode}; {check}")
            result.rows_lost += rows_lost(db, expected)
    return result


# -- fault storm --------------------------------------------------------------------------


@dataclass
class StormResult:
    rounds: int = 0
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    complete_rounds: int = 0
    rows_lost: int = 0
    outage_exit: int | None = None
    outage_message: str = ""
    outage_half_written: bool = False
    outage_recovered: bool = False
    failures: list[str] = field(default_factory=list)  # each failed run with its whole output


def fault_storm(rounds: int = 10, rate: float = 0.3) -> StormResult:
    """30% of requests fail at random; every sync must still end complete and exact."""
    result = StormResult(rounds=rounds)
    config = FAST_RETRIES.format(attempts=10, timeout=2, max_mb=128) + '[sync]\nbreakdowns = ["key", "workspace"]\n'
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        folder = Path(tmp)
        for n in range(rounds):
            dataset = Dataset(seed=100 + n)
            with StandIn(dataset, management_key=KEY, fault_rate=rate, fault_seed=n) as api:
                db = folder / f"storm-{n}.db"
                proc = cli(folder, db, api, "-q", "backfill", config=config)
                out, err = proc.communicate(timeout=600)
                result.requests += len(api.requests)
                for record in api.requests:
                    if record.fault:
                        result.faults[record.fault] = result.faults.get(record.fault, 0) + 1
                expected = expected_days(dataset)
                check = check_archive(db, expected)
                if proc.returncode == 0 and check.ok:
                    result.complete_rounds += 1
                else:
                    result.failures.append(f"round {n}: exit {proc.returncode}; {check}\n{out}{err}")
                result.rows_lost += rows_lost(db, expected)
        dataset = Dataset(seed=99)
        with StandIn(dataset, management_key=KEY, fault_rate=1.0, fault_kinds=["503", "reset", "502"]) as api:
            db = folder / "outage.db"
            proc = cli(folder, db, api, "sync", config=FAST_RETRIES.format(attempts=3, timeout=2, max_mb=128))
            _, err = proc.communicate(timeout=600)
            result.outage_exit = proc.returncode
            result.outage_message = err.strip().splitlines()[-1] if err.strip() else ""
            check = check_archive(db, expected_days(dataset))
            result.outage_half_written = check.archived_days > 0 or bool(check.unmarked_days)
            api.set_fault_rate(0.0)
            again = cli(folder, db, api, "-q", "sync")
            out, err = again.communicate(timeout=600)
            result.outage_recovered = again.returncode == 0 and check_archive(db, expected_days(dataset)).archived_days == 30
            if not result.outage_recovered:
                result.failures.append(f"after the outage: exit {again.returncode}\n{out}{err}")
    return result


# -- hostile input ------------------------------------------------------------------------


@dataclass
class HostileOutcome:
    name: str
    ended: str  # "loaded exactly", "rejected", or "FAILED: ..."
    detail: str = ""
    max_rss_mb: float = 0.0


def _item(day: str, endpoint: str = "ep-1", **overrides: Any) -> dict[str, Any]:
    base = {
        "date": day, "model": "openai/gpt-4.1", "model_permaslug": "openai/gpt-4.1-2025-04-14", "endpoint_id": endpoint,
        "provider_name": "OpenAI", "usage": 0.25, "byok_usage_inference": 0.0, "requests": 3, "prompt_tokens": 100,
        "completion_tokens": 40, "reasoning_tokens": 0,
    }
    return {**base, **overrides}


def hostile_cases(yesterday: str, other_day: str, today: str, outside: str) -> list[tuple[str, bytes, str]]:
    """(name, body, expected end) — each body mixes a good day with the hostile part."""
    good = _item(other_day, "ep-good")

    def doc(*items: Any) -> bytes:
        return json.dumps({"data": [good, *items]}).encode()

    def raw_doc(bad_item_json: str) -> bytes:
        return b'{"data": [' + json.dumps(good).encode() + b", " + bad_item_json.encode() + b"]}"

    hostile_item = json.dumps(_item(yesterday))
    return [
        ("count as a string", doc(_item(yesterday, requests="5")), "rejected"),
        ("null usage", doc(_item(yesterday, usage=None)), "rejected"),
        ("NaN usage", raw_doc(hostile_item.replace('"usage": 0.25', '"usage": NaN')), "rejected"),
        ("Infinity usage", raw_doc(hostile_item.replace('"usage": 0.25', '"usage": Infinity')), "rejected"),
        ("huge number (1e400)", raw_doc(hostile_item.replace('"prompt_tokens": 100', '"prompt_tokens": 1e400')), "rejected"),
        ("count beyond 64 bits", doc(_item(yesterday, prompt_tokens=2**70)), "rejected"),
        ("negative count", doc(_item(yesterday, requests=-1)), "rejected"),
        ("fractional count", doc(_item(yesterday, requests=2.5)), "rejected"),
        ("object where a number belongs", doc(_item(yesterday, usage={"usd": 1})), "rejected"),
        ("list where a string belongs", doc(_item(yesterday, model=["a"])), "rejected"),
        ("missing field", doc({k: v for k, v in _item(yesterday).items() if k != "provider_name"}), "rejected"),
        ("duplicate (date, endpoint_id)", doc(_item(yesterday), _item(yesterday, usage=9.0)), "rejected"),
        ("row dated today", doc(_item(today)), "loaded exactly"),  # today is ignored; the planned days load
        ("row outside the window", doc(_item(outside)), "loaded exactly"),
        ("float counts and live dates", doc(_item(yesterday + " 00:00:00", requests=3.0)), "loaded exactly"),
        ("extra fields and reasoning > completion", doc(_item(yesterday, reasoning_tokens=999, cached_tokens=5, future={"x": 1})), "loaded exactly"),
        ("non-UTF-8 bytes", b'{"data": [{"date": "' + yesterday.encode() + b'", "model": "\xff\xfe"}]}', "rejected"),
        ("not JSON at all", b"<html><body>maintenance</body></html>", "rejected"),
        ("JSON of the wrong shape (a list)", b"[1, 2, 3]", "rejected"),
        ("JSON of the wrong shape (data is an object)", b'{"data": {"rows": []}}', "rejected"),
        ("item that is not an object", b'{"data": [42]}', "rejected"),
        ("truncated JSON", doc(_item(yesterday))[:-7], "rejected"),
        ("200 MB body", b'{"data": [' + b" " * (200 * 1024 * 1024) + b"]}", "rejected"),
    ]


def hostile_inputs() -> list[HostileOutcome]:
    """Serve each hostile body (for every attempt) and check how the sync ended."""
    today = utc_today()
    first, last = completed_window(today)
    yesterday, other_day = last.isoformat(), (last - timedelta(days=1)).isoformat()
    outcomes = []
    config = FAST_RETRIES.format(attempts=2, timeout=10, max_mb=64) + "[sync]\nrefetch_days = 2\n"
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        folder = Path(tmp)
        # Archive the window once (the stand-in's account is the same in every instance), so
        # that each hostile sync, on its own copy, plans exactly two days.
        warm_db = folder / "warm.db"
        with StandIn(management_key=KEY) as api:
            cli(folder, warm_db, api, "-q", "backfill", config=config).communicate(timeout=120)
        for name, body, expected_end in hostile_cases(yesterday, other_day, today.isoformat(), (first - timedelta(days=3)).isoformat()):
            db = folder / f"hostile-{len(outcomes)}.db"
            for suffix in ("", "-wal"):
                if Path(str(warm_db) + suffix).exists():
                    shutil.copyfile(str(warm_db) + suffix, str(db) + suffix)
            with StandIn(management_key=KEY) as api:
                before = check_archive(db, expected_days(api.dataset))
                api.inject(*[Fault("body", body=body, path="/activity")] * 2)
                code, out, err, rss = run_measured(folder, db, api, "sync", config=config)
            outcomes.append(_judge(name, expected_end, code, out + err, db, before, rss))
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(str(db) + suffix).unlink(missing_ok=True)
    return outcomes


def run_measured(folder: Path, db: Path, api: StandIn, *args: str, config: str = "") -> tuple[int, str, str, float]:
    """Run the CLI; (exit code, stdout, stderr, peak resident memory of that process in MiB).

    GNU time measures the exec'd process alone: this process's own rusage would count the
    memory a forked child shares with it before exec (here, the 200 MB body).
    """
    measure = folder / "maxrss"
    prefix = ["/usr/bin/time", "-f", "%M", "-o", str(measure)] if Path("/usr/bin/time").exists() else []
    proc = cli(folder, db, api, *args, config=config, prefix=prefix)
    out, err = proc.communicate(timeout=300)
    rss = int(measure.read_text().split()[-1]) / 1024 if prefix and measure.exists() else float("nan")
    return proc.returncode, out, err, rss


def _judge(name: str, expected_end: str, code: int, output: str, db: Path, before: ArchiveCheck, rss: float) -> HostileOutcome:
    if "Traceback" in output:
        return HostileOutcome(name, "FAILED: traceback", output.strip().splitlines()[-1], rss)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        unmarked = conn.execute("SELECT count(*) FROM activity WHERE date NOT IN (SELECT date FROM archived_days)").fetchone()[0]
        marked = conn.execute("SELECT count(*) FROM archived_days").fetchone()[0]
    if integrity != "ok" or unmarked or marked < before.archived_days:
        return HostileOutcome(name, "FAILED: archive damaged", f"integrity {integrity}, unmarked rows {unmarked}", rss)
    message = next((line for line in output.splitlines() if " rejected " in line or line.startswith("Error:")), "")
    if expected_end == "rejected":
        if code == 0:
            return HostileOutcome(name, "FAILED: accepted", "", rss)
        return HostileOutcome(name, "rejected", message.strip()[:110], rss)
    if code != 0:
        return HostileOutcome(name, "FAILED: refused valid input", message.strip()[:110], rss)
    return HostileOutcome(name, "loaded exactly", "", rss)


# -- exactness checks (one per way the archive could lose or misstate history) -------------


@dataclass
class CheckRow:
    """One row of the exactness table: what was tried, how it ended, rows lost."""

    check: str
    tried: str
    result: str
    rows_lost: int = 0
    ok: bool = True


EXACTNESS_CHECKS: list[Any] = []


def exactness_check(function: Any) -> Any:
    """Register a check (a function returning a CheckRow) for the report and the tests."""
    EXACTNESS_CHECKS.append(function)
    return function


# Checks are defined below, one section per item, each registered with @exactness_check.


# -- issue 9 item 7: a key echoed by the API is never stored ------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with an error whose message repeats the Authorization header."""

    status = 500

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        auth = self.headers.get("Authorization", "")
        message = f"upstream rejected request; headers: Authorization: {auth}"
        body = json.dumps({"error": {"code": self.status, "message": message}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@contextmanager
def echoing_api(status: int = 500) -> Iterator[str]:
    """A real HTTP server on loopback that echoes the key in its error bodies; yields its base URL."""
    handler = type("Handler", (_EchoHandler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    finally:
        server.shutdown()
        server.server_close()


def run_cli(folder: Path, base_url: str, db: Path, *args: str, key: str | None = KEY, config: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess with a minimal environment (the key only when given)."""
    (folder / "config.toml").write_text(config)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "OPENROUTER_BASE_URL": base_url,
           "OPENROUTER_ARCHIVE_DB": f"sqlite:///{db}", "OPENROUTER_ARCHIVE_CONFIG": str(folder / "config.toml")}
    if key:
        env["OPENROUTER_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "etl", *args], env=env, cwd=folder, capture_output=True, text=True, timeout=300)


@exactness_check
def key_echoed_by_the_api() -> CheckRow:
    config = FAST_RETRIES.format(attempts=2, timeout=5, max_mb=64)
    leaks = []
    tried = 0
    with tempfile.TemporaryDirectory() as tmp:
        for status in (400, 500):
            folder = Path(tmp) / str(status)
            folder.mkdir()
            db = folder / "archive.db"
            with echoing_api(status) as url:
                outputs = [run_cli(folder, url, db, "sync", config=config), run_cli(folder, url, db, "status", key=None, config=config)]
            tried += 1
            leaks += [f"{status}: output" for o in outputs if KEY in o.stdout + o.stderr]
            leaks += [f"{status}: {p.name}" for p in folder.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    return CheckRow(
        "API error bodies that echo the key (400 and 500)",
        f"{tried} syncs and status runs against a server echoing `Authorization`; every file searched, WAL included",
        f"key found in: {', '.join(leaks)}" if leaks else "key found nowhere (stored and shown as `Bearer ***`)",
        ok=not leaks,
    )


# -- issue 9 item 8: database failures are one clean line ---------------------------------

DB_FAILURE_COMMANDS = (("sync",), ("backfill", "--days", "2"), ("status",), ("report", "-g", "model"), ("credits",))


def _clean_failure(result: subprocess.CompletedProcess[str], needle: str) -> bool:
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    noisy = any(bad in result.stderr for bad in ("Traceback", "[SQL:", "unexpected"))
    return result.returncode != 0 and len(errors) == 1 and needle in errors[0] and not noisy


@exactness_check
def database_failures() -> CheckRow:
    config = FAST_RETRIES.format(attempts=2, timeout=5, max_mb=64)
    clean = tried = lost = 0
    with tempfile.TemporaryDirectory() as tmp, StandIn(management_key=KEY) as api:
        for fault in ("locked", "damaged"):
            folder = Path(tmp) / fault
            folder.mkdir()
            db = folder / "archive.db"
            run_cli(folder, api.base_url, db, "backfill", "--days", "5", config=config)
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                before = conn.execute(ROW_SQL).fetchall()
            holder = None
            if fault == "locked":
                holder = sqlite3.connect(db, isolation_level=None)
                holder.execute("BEGIN EXCLUSIVE")
            else:
                with db.open("r+b") as handle:
                    handle.seek(4096)
                    handle.write(b"\xde\xad" * 20000)
            try:
                for command in DB_FAILURE_COMMANDS:
                    if fault == "locked" and command[0] in ("status", "report"):
                        continue  # readers wait for a writer's lock; here nothing writes
                    result = run_cli(folder, api.base_url, db, *command, config=config + "[warehouse]\nbusy_timeout_seconds = 0.2\n")
                    tried += 1
                    clean += _clean_failure(result, fault)
            finally:
                if holder is not None:
                    holder.execute("ROLLBACK")
                    holder.close()
            if fault == "locked":
                with sqlite3.connect(db) as conn:
                    lost += len(set(before) - set(conn.execute(ROW_SQL).fetchall()))
    return CheckRow(
        "database failures (a warehouse locked by another process; a damaged file)",
        f"{tried} commands (sync, backfill, status, report, credits) on each fault",
        f"{clean} of {tried} ended with one line naming the warehouse and the cause, no traceback, no SQL",
        rows_lost=lost,
        ok=clean == tried and lost == 0,
    )


# -- issue 9 item 9: the documented cron set-up works as cron runs it ---------------------

CRONTAB = Path(__file__).resolve().parent / "deploy" / "crontab.example"
EXAMPLE_BINARY = "/opt/openrouter-archive/.venv/bin/openrouter-archive"
EXAMPLE_ENV_FILE = "/etc/openrouter-archive.env"


def cron_commands() -> list[str]:
    """The command part of every schedule line of the example crontab."""
    lines = [line for line in CRONTAB.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [line.split(None, 5)[5] for line in lines if "=" not in line.split()[0]]


def run_like_cron(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``command`` through /bin/sh with nothing but what cron gives a job."""
    env = ["env", "-i", "SHELL=/bin/sh", f"HOME={home}", "LOGNAME=archive", "PATH=/usr/bin:/bin"]
    return subprocess.run([*env, "/bin/sh", "-c", command], cwd=home, capture_output=True, text=True, timeout=300)


@exactness_check
def cron_set_up() -> CheckRow:
    binary = Path(sys.executable).parent / "openrouter-archive"
    with tempfile.TemporaryDirectory() as tmp, StandIn(management_key=KEY) as api:
        home = Path(tmp)
        db = home / "archive.db"
        env_file = home / "archive.env"
        env_file.write_text(f"OPENROUTER_API_KEY={KEY}\nOPENROUTER_ARCHIVE_DB=sqlite:///{db}\nOPENROUTER_BASE_URL={api.base_url}\n")
        lines = [c.replace(EXAMPLE_BINARY, str(binary)).replace(EXAMPLE_ENV_FILE, str(env_file)) for c in cron_commands()]
        results = [run_like_cron(line, home) for line in lines]
        days = sqlite3.connect(db).execute("SELECT count(*) FROM archived_days").fetchone()[0] if db.exists() else 0
    ok = all(r.returncode == 0 for r in results) and days == 30 and results[-1].stdout == ""
    return CheckRow(
        "the example crontab, run under `env -i` as cron runs it",
        f"{len(lines)} lines (sync, health check) with the example's environment file",
        f"exit codes {[r.returncode for r in results]}; {days} of 30 days archived; health check silent on a healthy archive",
        rows_lost=30 - days,
        ok=ok,
    )


# -- issue 9 item 2: a day at the window's edge, OpenRouter's clock a day off ours ----------


def _empty_marks(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {d for (d,) in conn.execute("SELECT date FROM archived_days WHERE row_count = 0")}


def _marks(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {d for (d,) in conn.execute("SELECT date FROM archived_days")}


def _skew_behind(folder: Path, dataset: Dataset, config: str) -> dict[str, Any]:
    """A day behind: yesterday is not served yet; once the API catches up, the next sync gets it."""
    yesterday = completed_window(utc_today())[1].isoformat()
    db = folder / "behind.db"
    with StandIn(dataset, management_key=KEY, clock_offset_days=-1) as api:
        backfill = cli(folder, db, api, "-q", "backfill", config=config)
        backfill.communicate(timeout=120)
        marked_early = yesterday in _marks(db)  # marked while the API did not serve it: wrong
        wrong = {d for d in _empty_marks(db) if dataset.activity(date.fromisoformat(d))} | ({yesterday} if marked_early else set())
        api.clock_offset_days = 0
        sync = cli(folder, db, api, "-q", "sync", config=config)
        sync.communicate(timeout=120)
        expected = expected_days(dataset)
    return {"exits": (backfill.returncode, sync.returncode), "left": not marked_early, "wrong": wrong,
            "complete": check_archive(db, expected).ok and _marks(db) >= set(expected), "rows_lost": rows_lost(db, expected),
            "empty": (len(_empty_marks(db) & {d for d, rows in expected.items() if not rows}), sum(not r for r in expected.values()))}


def _skew_ahead(folder: Path, dataset: Dataset, config: str) -> dict[str, Any]:
    """A day ahead: our first window day is gone; it must be reported lost, not archived as empty."""
    first = completed_window(utc_today())[0].isoformat()
    db = folder / "ahead.db"
    with StandIn(dataset, management_key=KEY, clock_offset_days=1) as api:
        backfill = cli(folder, db, api, "-q", "backfill", config=config)
        backfill.communicate(timeout=120)
        status = cli(folder, db, api, "status", "--json", "--check", config=config)
        out, _ = status.communicate(timeout=120)
    served = {d: rows for d, rows in expected_days(dataset).items() if d != first}
    wrong = {d for d in _empty_marks(db) if dataset.activity(date.fromisoformat(d))} | ({first} & _marks(db))
    return {"exits": (backfill.returncode, status.returncode), "reported": json.loads(out)["lost"] == [first], "wrong": wrong,
            "complete": _marks(db) >= set(served), "rows_lost": rows_lost(db, served)}


@exactness_check
def clock_skew_at_window_edge() -> CheckRow:
    """OpenRouter's clock a day behind and a day ahead of ours (real CLI, refetch_days = 0)."""
    config = FAST_RETRIES.format(attempts=2, timeout=10, max_mb=64) + "[sync]\nrefetch_days = 0\n"
    with tempfile.TemporaryDirectory(prefix="skew-") as tmp:
        folders = [Path(tmp) / name for name in ("behind", "ahead")]
        for folder in folders:
            folder.mkdir()
        with ThreadPoolExecutor(2) as pool:  # two independent archives: run side by side
            behind_job = pool.submit(_skew_behind, folders[0], Dataset(seed=11), config)
            ahead_job = pool.submit(_skew_ahead, folders[1], Dataset(seed=11), config)
            behind, ahead = behind_job.result(), ahead_job.result()
    wrong = len(behind["wrong"]) + len(ahead["wrong"])
    ok = (
        wrong == 0 and behind["left"] and behind["exits"] == (0, 0) and behind["complete"]
        and ahead["reported"] and ahead["exits"] == (1, 1) and ahead["complete"]
    )
    empty_ok, empty_all = behind["empty"]
    return CheckRow(
        check="clock skew at the window's edge (issue 9 item 2)",
        tried="OpenRouter's clock a day behind ours (backfill, then sync once it catches up) and a day ahead (backfill, status)",
        result=(
            f"days wrongly marked empty: {wrong}; behind: yesterday left to fetch: {'yes' if behind['left'] else 'NO'}, "
            f"archived exactly by the next sync: {'yes' if behind['complete'] else 'NO'} (exits {behind['exits'][0]}, {behind['exits'][1]}), "
            f"days without activity archived as such: {empty_ok} of {empty_all}; "
            f"ahead: first day reported lost: {'yes' if ahead['reported'] else 'NO'} (backfill exit {ahead['exits'][0]}, "
            f"status --check exit {ahead['exits'][1]}), every served day archived: {'yes' if ahead['complete'] else 'NO'}"
        ),
        rows_lost=behind["rows_lost"] + ahead["rows_lost"],
        ok=ok,
    )


# -- issue 9 item 3: revised days counted twice ----------------------------------------------


@exactness_check
def check_revised_days_not_double_counted() -> CheckRow:
    """A day that shrinks and a day whose endpoint id changes, then refetched.

    Reported spend must equal the API's latest answer, no row may be counted twice, and
    every row the API stopped listing must be kept, unchanged, in the history table. (The
    breakdown tables follow the same code; tests/test_exact_revisions.py covers them.)
    """
    dataset = Dataset(seed=11)
    config = FAST_RETRIES.format(attempts=3, timeout=10, max_mb=128)
    first, last = completed_window(utc_today())
    recent = [last - timedelta(days=n) for n in range(5)]
    shrink, renamed = [d for d in recent if len(dataset.activity(d)) >= 3][:2]
    dropped = [(shrink, i["endpoint_id"]) for i in dataset.activity(shrink)[:2]] + [(renamed, dataset.activity(renamed)[0]["endpoint_id"])]
    before = expected_days(dataset)
    gone = [r for day, endpoint in dropped for r in before[day.isoformat()] if r[1] == endpoint]
    with tempfile.TemporaryDirectory(prefix="revised-") as tmp, StandIn(dataset, management_key=KEY) as api:
        folder, db = Path(tmp), Path(tmp) / "archive.db"
        for args in (("backfill",), ("backfill", "--days", "5")):
            proc = cli(folder, db, api, "-q", *args, config=config)
            _, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                return CheckRow("revised days counted twice", " ".join(args), f"FAILED: {err.strip()[-200:]}", ok=False)
            if args == ("backfill",):  # OpenRouter's answers change: a day shrinks, an endpoint id changes
                for day, endpoint in dropped[:2]:
                    dataset.amend(day, endpoint, drop=True)
                dataset.amend(*dropped[2], endpoint_id="ep-renamed")
        report = cli(folder, db, api, "report", "-g", "date", "--since", first.isoformat(), "--until", last.isoformat(), "-f", "json")
        out, _ = report.communicate(timeout=120)
        reported = {r["date"]: r["usage"] for r in json.loads(out)} if report.returncode == 0 else {}
        expected = expected_days(dataset)
        check = check_archive(db, expected)  # every day's current rows are exactly the latest answer
        lost = rows_lost(db, expected)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            kept = set(conn.execute(ROW_SQL.replace("FROM activity", "FROM activity_history WHERE reason = 'retired'")).fetchall())
    lost += sum(1 for row in gone if row not in kept)  # a retired row must survive, unchanged
    spend = {d: math.fsum(r[5] for r in rows) for d, rows in expected.items() if rows}
    wrong = [d for d in spend if abs(reported.get(d, 0.0) - spend[d]) > 1e-6] + [d for d in reported if d not in spend]
    return CheckRow(
        check="revised day: it shrinks, or an endpoint id changes",
        tried=f"backfill; OpenRouter then drops 2 rows of {shrink} and renames an endpoint of {renamed}; backfill --days 5",
        result=(
            f"reported spend equals the API on {len(spend) - len(wrong)} of {len(spend)} day(s); days not exactly the API's "
            f"latest answer: {len(check.incomplete_days)}; {len(kept)} of {len(gone)} rows no longer listed retired and kept in history"
        ),
        rows_lost=lost,
        ok=not wrong and check.ok and lost == 0 and len(gone) == 3 and kept == set(gone),
    )


# -- issue 9 items 4 and 5: slow answers and fault streaks --------------------------------

# Nine failures in a row, each of a different kind, then a good answer. The timeout is
# 0.5 s and the stand-in trickles the real 30-day answer at 5 bytes a second: without a total
# deadline per attempt the first one alone would take hours.
STREAK = (
    Fault("trickle", interval=0.2, path="/activity"),
    Fault("trickle_headers", interval=0.2, path="/activity"),
    Fault("429", retry_after=0.2, path="/activity"),
    Fault("502", path="/activity"),
    Fault("reset", path="/activity"),
    Fault("not_json", path="/activity"),
    Fault("truncate", path="/activity"),
    Fault("slow", delay=3.0, path="/activity"),
    Fault("503", path="/activity"),
)
STREAK_TIMEOUT = 0.5


@exactness_check
def slow_answers_and_fault_streaks() -> CheckRow:
    """A sync meets trickled answers and a streak of different faults; with the default
    retry budget (no attempt limit) it must still archive the whole window exactly."""
    config = f"[openrouter]\ntimeout_seconds = {STREAK_TIMEOUT:g}\nbackoff_initial = 0.02\nbackoff_max = 0.2\n"
    dataset = Dataset(seed=17)
    expected = expected_days(dataset)
    with tempfile.TemporaryDirectory(prefix="streak-") as tmp, StandIn(dataset, management_key=KEY) as api:
        folder, db = Path(tmp), Path(tmp) / "streak.db"
        api.inject(*STREAK)
        started = time.monotonic()
        proc = cli(folder, db, api, "-q", "sync", config=config)
        _, err = proc.communicate(timeout=600)
        seconds = time.monotonic() - started
        log = [r for r in api.requests if r.path.endswith("/activity")]
        # How long each trickled attempt lasted: until the next request arrived.
        trickled = [log[i + 1].at - log[i].at for i in range(len(log) - 1) if log[i].fault in ("trickle", "trickle_headers")]
        check = check_archive(db, expected)
        lost = rows_lost(db, expected) if db.exists() else sum(len(rows) for rows in expected.values())
    served = [r.fault for r in log] == [f.kind for f in STREAK] + [None]
    ok = proc.returncode == 0 and served and check.ok and check.archived_days == 30 and lost == 0
    ok = ok and len(trickled) == 2 and max(trickled) < STREAK_TIMEOUT + 2.0
    result = (
        f"exit {proc.returncode}; {check.archived_days}/30 days archived on attempt {len(log)} in {seconds:.1f}s; "
        f"trickled attempts cut after {', '.join(f'{t:.1f}s' for t in trickled) or '-'}"
    )
    if proc.returncode != 0:
        result += f"; `{err.strip().splitlines()[-1][:90] if err.strip() else ''}`"
    tried = (
        f"trickled body, trickled headers (timeout_seconds = {STREAK_TIMEOUT:g}), then 429 with Retry-After, 502 page, reset, "
        "HTML 200, truncated body, slow past the timeout, 503, in a row, default retry budget"
    )
    return CheckRow(check="slow answers and a streak of 9 faults (issue 9 items 4, 5)", tried=tried, result=result, rows_lost=lost, ok=ok)


# -- issue 9 items 1, 6 and 10: shared helpers ----------------------------------------

SERVED_COLUMNS = (
    "endpoint_id", "model", "model_permaslug", "provider_name", "usage", "byok_usage_inference", "requests",
    "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens",
)


def served_activity(dataset: Dataset) -> dict[str, set[tuple[Any, ...]]]:
    """Per day of the window, the rows the stand-in serves, read from its Dataset through JSON.

    Deliberately not through etl.validate: the oracle must not share code with the loader.
    """
    first, last = completed_window(utc_today())
    served: dict[str, set[tuple[Any, ...]]] = {}
    day = first
    while day <= last:
        items = json.loads(json.dumps(dataset.activity(day)))
        served[day.isoformat()] = {tuple(item.get(c) for c in SERVED_COLUMNS) for item in items}
        day += timedelta(days=1)
    return served


def archive_mismatch(db: Path, served: dict[str, set[tuple[Any, ...]]]) -> tuple[list[str], int]:
    """(what differs from what the API served, rows of it the warehouse does not hold exactly)."""
    if not db.exists():
        return ["no warehouse file"], sum(len(rows) for rows in served.values())
    held: dict[str, set[tuple[Any, ...]]] = {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            marked = {d for (d,) in conn.execute("SELECT date FROM archived_days")}
            for row in conn.execute(f"SELECT date, {', '.join(SERVED_COLUMNS)} FROM activity"):
                held.setdefault(row[0], set()).add(tuple(row[1:]))
    except sqlite3.Error as exc:
        return [f"unreadable warehouse: {exc}"], sum(len(rows) for rows in served.values())
    problems = [] if integrity == "ok" else [f"integrity: {integrity}"]
    problems += [f"{d}: not archived" for d in sorted(set(served) - marked)]
    problems += [f"{d}: rows differ" for d in sorted(served) if d in marked and held.get(d, set()) != served[d]]
    problems += [f"{d}: rows without a day mark" for d in sorted(set(held) - marked)]
    lost = sum(1 for d, rows in served.items() for r in rows if r not in held.get(d, set()))
    return problems, lost


def tables_of(db: Path) -> set[str]:
    """Table names of a SQLite file, read without creating or locking anything; empty on any error."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
    except sqlite3.Error:
        return set()
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


def count_of(db: Path, sql: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def wait_until(condition: Any, timeout: float = 60.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


# -- issue 9 item 1: interrupted first run ----------------------------------------------

# Where a first sync is interrupted: (name, condition on the new warehouse file, delay after it).
# "the first table" is the middle of the migration on code that commits DDL statement by
# statement; with atomic migrations it is the commit, so the signal lands early in the sync.
FIRST_RUN_POINTS: list[tuple[str, str, float]] = [
    ("as the file appears", "file", 0.0),
    ("0.1 s after the file appears", "file", 0.1),
    ("5 ms after the first table", "table", 0.005),
    ("20 ms after the first table", "table", 0.02),
    ("after the first archived day", "day", 0.0),
]


@dataclass
class FirstRunTrials:
    tried: int = 0
    arrived_mid_run: int = 0  # the signal reached a running sync (not one already finished)
    failures: list[str] = field(default_factory=list)
    rows_lost: int = 0


def first_run_interrupts(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL),
    points: list[tuple[str, str, float]] | None = None,
) -> FirstRunTrials:
    """Interrupt the first `sync` of new warehouses; the next sync must succeed, exactly.

    One thread per signal, each with its own warehouses, to keep the wall time down: the
    trials only assert on outcomes, so timing noise changes where signals land, not results.
    """
    points = FIRST_RUN_POINTS if points is None else points
    result = FirstRunTrials()
    dataset = Dataset(endpoints_per_day=60)
    served = served_activity(dataset)
    reached = {
        "file": lambda db: db.exists(),
        "table": lambda db: bool(tables_of(db)),
        "day": lambda db: count_of(db, "SELECT count(*) FROM archived_days") > 0,
    }
    guard = threading.Lock()

    def trials(sig: signal.Signals, folder: Path, api: StandIn) -> None:
        for n, (name, condition, delay) in enumerate(points):
            db = folder / f"first-{sig.name}-{n}.db"
            proc = cli(folder, db, api, "-q", "sync")
            wait_until(lambda: proc.poll() is not None or reached[condition](db), timeout=60, interval=0.001)  # noqa: B023 (called at once)
            if delay:
                time.sleep(delay)
            arrived = proc.poll() is None
            if arrived:
                proc.send_signal(sig)
            proc.communicate(timeout=60)
            again = cli(folder, db, api, "-q", "sync")
            _, err = again.communicate(timeout=120)
            problems, lost = archive_mismatch(db, served)
            if again.returncode != 0:
                problems.insert(0, f"next sync exited {again.returncode}: {err.strip()[-200:]}")
            with guard:
                result.tried += 1
                result.arrived_mid_run += arrived
                result.rows_lost += lost
                if problems:
                    result.failures.append(f"{sig.name} {name}: {'; '.join(problems[:3])}")

    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp, StandIn(dataset, management_key=KEY, latency=0.1) as api:
        workers = []
        for sig in signals:
            folder = Path(tmp) / sig.name
            folder.mkdir()
            workers.append(threading.Thread(target=trials, args=(sig, folder, api), name=f"trials-{sig.name}"))
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return result


@exactness_check
def interrupted_first_run() -> CheckRow:
    trials = first_run_interrupts()
    return CheckRow(
        check="interrupted first `sync` (SIGINT, SIGTERM, SIGKILL; migration included)",
        tried=f"{trials.tried} new warehouses interrupted at {len(FIRST_RUN_POINTS)} points "
              f"({trials.arrived_mid_run} signals reached a running sync)",
        result=f"next sync exit 0 with an exact archive: {trials.tried - len(trials.failures)} of {trials.tried}"
               + (f" (first failure: {trials.failures[0][:80]})" if trials.failures else ""),
        rows_lost=trials.rows_lost,
        ok=not trials.failures and trials.rows_lost == 0,
    )


# -- issue 9 item 6: replaced warehouse --------------------------------------------------


@dataclass
class ReplacedWarehouse:
    removed_logged: bool = False
    removed_refilled: bool = False  # after `rm`, a new file at the path holds the whole window
    replaced_logged: bool = False
    replaced_written: bool = False  # after `mv` over it, the daemon's runs land in the new file
    exit_code: int | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rows_lost: int = 0

    @property
    def ok(self) -> bool:
        # Every way a removal or replacement can land is logged: between jobs (the next open
        # compares the file's identity), during a sync ("changed during the sync"), during
        # another job (the next open), or between the comparison and SQLite's open (the open
        # checks again: tests/test_exact_daemon_file.py makes it land there).
        steps = (self.removed_logged, self.removed_refilled, self.replaced_logged, self.replaced_written)
        return all(steps) and self.exit_code == 0 and not self.problems and self.rows_lost == 0


def replaced_under_daemon() -> ReplacedWarehouse:
    """`rm`, then `mv` over, the warehouse file while `run` syncs every 0.2 s."""
    result = ReplacedWarehouse()
    dataset = Dataset()
    served = served_activity(dataset)
    archived = "SELECT count(*) FROM archived_days"
    with tempfile.TemporaryDirectory(prefix="replaced-") as tmp, StandIn(dataset, management_key=KEY) as api:
        folder = Path(tmp)
        db, other = folder / "archive.db", folder / "other.db"
        # The replacement: an archive made by a one-off sync, which holds no daemon run.
        cli(folder, other, api, "-q", "sync").communicate(timeout=120)
        daemon = cli(folder, db, api, "run", "--interval-seconds", "0.2")
        lines: list[str] = []

        def read_log() -> None:
            assert daemon.stderr is not None
            for line in daemon.stderr:
                lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        try:
            if not wait_until(lambda: count_of(db, archived) == len(served)):
                result.problems.append("the daemon never archived the window")
                return result
            db.unlink()  # the -wal and -shm files stay, as after a careless `rm archive.db`
            # As for the replacement below: between two runs the next one says "was removed";
            # a removal during a run makes that run say the file "changed during the sync".
            removed = ("was removed", "changed during the sync")
            result.removed_logged = wait_until(lambda: any(word in line for line in lines for word in removed))
            # Only after that line: the file at the path is then the daemon's new one.
            result.removed_refilled = result.removed_logged and wait_until(lambda: count_of(db, archived) == len(served))
            os.replace(other, db)
            # Between two runs the next one says "was replaced"; during a run that run says the
            # file "changed during the sync" and syncs again into the new file. Both are right.
            replaced = ("was replaced", "changed during the sync")
            result.replaced_logged = wait_until(lambda: any(word in line for line in lines for word in replaced))
            result.replaced_written = wait_until(
                lambda: count_of(db, "SELECT count(*) FROM sync_runs WHERE trigger = 'daemon' AND outcome = 'ok'") > 0
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                result.exit_code = daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
            reader.join(timeout=10)
        result.warnings = [line for line in lines if line.startswith("WARNING")]
        problems, result.rows_lost = archive_mismatch(db, served)
        result.problems += problems
    return result


@exactness_check
def replaced_warehouse() -> CheckRow:
    outcome = replaced_under_daemon()
    steps = [
        f"rm: {'logged' if outcome.removed_logged else 'NOT logged'}, "
        f"{'new file filled' if outcome.removed_refilled else 'new file NOT filled'}",
        f"mv over: {'logged' if outcome.replaced_logged else 'NOT logged'}, "
        f"{'next sync wrote there' if outcome.replaced_written else 'next sync did NOT write there'}",
        f"exit {outcome.exit_code} on SIGTERM",
    ]
    return CheckRow(
        check="warehouse file removed, then replaced, under a running daemon",
        tried="`rm archive.db`, then `mv other.db archive.db` while `run` syncs every 0.2 s",
        result="; ".join(steps) + (f"; {outcome.problems[0]}" if outcome.problems else ""),
        rows_lost=outcome.rows_lost,
        ok=outcome.ok,
    )


# -- issue 9 item 10: demo refusal --------------------------------------------------------


def file_digest(db: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        part = Path(str(db) + suffix)
        digest.update(part.read_bytes() if part.exists() else b"-")
    return digest.hexdigest()


@dataclass
class DemoRefusal:
    exit_code: int | None = None
    stderr: str = ""
    untouched: bool = False
    demo_reused: bool = False  # `demo --db` twice on its own warehouse still works
    rows_lost: int = 0


def demo_on_real_archive() -> DemoRefusal:
    result = DemoRefusal()
    dataset = Dataset()
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp, StandIn(dataset, management_key=KEY) as api:
        folder = Path(tmp)
        db = folder / "archive.db"
        cli(folder, db, api, "-q", "sync").communicate(timeout=120)
        before = file_digest(db)
        proc = cli(folder, db, api, "demo", "--db", str(db))
        _, err = proc.communicate(timeout=120)
        result.exit_code, result.stderr = proc.returncode, err.strip()
        result.untouched = file_digest(db) == before
        _, result.rows_lost = archive_mismatch(db, served_activity(dataset))
        own = folder / "demo.db"
        codes = [cli(folder, own, api, "-q", "demo", "--db", str(own)).wait(timeout=120) for _ in range(2)]
        result.demo_reused = codes == [0, 0]
    return result


@exactness_check
def demo_refusal() -> CheckRow:
    outcome = demo_on_real_archive()
    one_line = len(outcome.stderr.splitlines()) == 1 and "Traceback" not in outcome.stderr
    return CheckRow(
        check="`demo --db` pointed at a real archive",
        tried="`demo --db archive.db` on an archive made by `sync`; then `demo --db` twice on a demo warehouse",
        result=f"exit {outcome.exit_code}, `{outcome.stderr[:90]}`; archive {'untouched' if outcome.untouched else 'CHANGED'}; "
               f"demo warehouse reused: {'yes' if outcome.demo_reused else 'no'}",
        rows_lost=outcome.rows_lost,
        ok=outcome.exit_code == 2 and one_line and outcome.untouched and outcome.demo_reused and outcome.rows_lost == 0,
    )


# -- issue 10: a year of history from the Analytics API ------------------------------------


def expected_analytics(analytics: Any, first: Any, last: Any) -> dict[tuple[str, str, str], tuple[float, float, int, int]]:
    """(date, model, variant) -> (credits_usage, byok_usage, request_count, tokens_prompt), from the generator's facts."""
    out: dict[tuple[str, str, str], list[Any]] = {}
    day = first
    while day <= last:
        for fact in analytics.facts(day):
            row = out.setdefault((day.isoformat(), fact.dims["model"], fact.dims["variant"]), [0.0, 0.0, 0, 0])
            for i, name in enumerate(("credits_usage", "byok_usage", "request_count", "tokens_prompt")):
                row[i] += fact.values[name]
        day += timedelta(days=1)
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


@exactness_check
def year_of_history_recovered() -> CheckRow:
    """A first sync on an empty warehouse recovers the Analytics API's whole year, split where truncated.

    The row limit is lowered (`analytics_row_limit`) so that the year cannot come in one
    answer: truncated answers must be split and never stored. Every (day, model, variant)
    value must equal what the stand-in generates; every day of the year must be marked.
    """
    today = utc_today()
    dataset = Dataset(seed=5, endpoints_per_day=6, first_key_age_days=400, anchor=today)
    config = FAST_RETRIES.format(attempts=3, timeout=10, max_mb=128) + "[sync]\nanalytics_row_limit = 1000\n"
    first, last = today - timedelta(days=365), today - timedelta(days=1)
    with tempfile.TemporaryDirectory(prefix="history-") as tmp, StandIn(dataset, management_key=KEY) as api:
        folder, db = Path(tmp), Path(tmp) / "archive.db"
        proc = cli(folder, db, api, "sync", config=config)
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            return CheckRow("a year of history on day one", "first sync", f"FAILED: {err.strip()[-200:]}", ok=False)
        status = cli(folder, db, api, "status", "--check", config=config)
        status_out, _ = status.communicate(timeout=120)
        expected = expected_analytics(api.analytics, first, last)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            stored = {
                tuple(r[:3]): tuple(r[3:])
                for r in conn.execute("SELECT date, model, variant, credits_usage, byok_usage, request_count, tokens_prompt "
                                      "FROM analytics_daily WHERE series = 'account'")
            }
            marked = {d for (d,) in conn.execute("SELECT date FROM archived_analytics_days WHERE series = 'account'")}
            answers = conn.execute("SELECT count(*) FROM raw_responses WHERE endpoint = 'analytics/query'").fetchone()[0]
    lost = sum(1 for k, v in expected.items() if k not in stored or any(abs(a - b) > 1e-9 for a, b in zip(v, stored[k])))
    extra = len(set(stored) - set(expected))
    split = next((line for line in out.splitlines() if line.startswith("analytics account")), "")
    minimum = -(-len(expected) // 1000)
    return CheckRow(
        check="a year of history on day one (Analytics API)",
        tried=f"first sync on an empty warehouse, {len(expected):,} (day, model, variant) rows over 365 days, at most 1,000 rows an answer",
        result=(
            f"`{split.split(';')[0]}`; {len(marked)} of 365 days marked; {len(expected) - lost:,} of {len(expected):,} values equal the "
            f"stand-in's, {extra} extra; {answers} answer(s) stored for a minimum of {minimum} (+1 for the provider series); "
            f"status --check exit {status.returncode} ({'reconciled' if 'agree per day and model' in status_out else 'NOT reconciled'})"
        ),
        rows_lost=lost,
        ok=lost == 0 and extra == 0 and len(marked) == 365 and status.returncode == 0 and answers <= 1.5 * minimum + 2,
    )


# -- issue 11: a team warehouse on PostgreSQL ----------------------------------------------


PG_ENV = "OPENROUTER_ARCHIVE_TEST_PG"  # an admin URL of a server that may CREATE DATABASE (scripts/ci_postgres.sh)
PG_ATTACKS = (
    "COMMIT; DELETE FROM activity",
    "DO $$ BEGIN DELETE FROM activity; END $$",
    "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "WITH d AS (DELETE FROM activity RETURNING 1) SELECT count(*) FROM d",
)


def _day_sums(url: str) -> dict[str, tuple[Any, ...]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT date, count(*), CAST(sum(requests) AS bigint), CAST(sum(prompt_tokens) AS bigint), sum(usage), sum(byok_usage_inference) "
                "FROM activity GROUP BY date"
            ))
            return {r[0]: (r[1], r[2], r[3], round(r[4], 6), round(r[5], 6)) for r in rows}
    finally:
        engine.dispose()


@exactness_check
def postgresql_warehouse() -> CheckRow:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    name = "copying an archive to PostgreSQL, writing and reading it there (issue 11)"
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        return CheckRow(name, "nothing", f"not run: no PostgreSQL server (scripts/ci_postgres.sh start sets ${PG_ENV})", ok=False)
    database = f"reliability_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    pg = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    password = make_url(admin_url).password or "\0"
    try:
        with tempfile.TemporaryDirectory() as tmp, StandIn(management_key=KEY) as api:
            folder = Path(tmp)
            marker = folder / "ran-a-shell-command"
            db = folder / "archive.db"
            config = FAST_RETRIES.format(attempts=3, timeout=5, max_mb=64) + '[sync]\nbreakdowns = ["key"]\n'
            outputs = [run_cli(folder, api.base_url, db, "backfill", config=config)]
            outputs.append(run_cli(folder, api.base_url, db, "db", "copy", "--to", pg, config=config))
            sqlite_sums = _day_sums(f"sqlite:///{db}")
            env_pg = {"OPENROUTER_ARCHIVE_DB": pg}

            def on_pg(*args: str) -> subprocess.CompletedProcess[str]:
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "OPENROUTER_BASE_URL": api.base_url,
                       "OPENROUTER_API_KEY": KEY, "OPENROUTER_ARCHIVE_CONFIG": str(folder / "config.toml"), **env_pg}
                return subprocess.run([sys.executable, "-m", "etl", *args], env=env, cwd=folder, capture_output=True, text=True, timeout=300)

            outputs.append(on_pg("sync"))
            reports = [json.loads(run_cli(folder, api.base_url, db, "report", "-g", "month,key", "-f", "json", config=config).stdout or "[]"),
                       json.loads(on_pg("report", "-g", "month,key", "-f", "json").stdout or "[]")]
            before = _day_sums(pg)
            refused = 0
            for attack in PG_ATTACKS:
                result = on_pg("sql", attack.format(marker=marker))
                outputs.append(result)
                refused += result.returncode == 1 and ("refused" in result.stderr or "one statement" in result.stderr)
            after = _day_sums(pg)
            lost = sum(1 for day, sums in sqlite_sums.items() if before.get(day) != sums) + sum(1 for d in before if after.get(d) != before[d])
            rows_lost = sum(sums[0] for day, sums in sqlite_sums.items() if before.get(day) != sums)
            same_reports = [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in reports[0]] == [
                {k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in reports[1]]
            leaked = any(password in o.stdout + o.stderr for o in outputs)
            codes = [o.returncode for o in outputs[:3]]
            ok = codes == [0, 0, 0] and same_reports and refused == len(PG_ATTACKS) and not marker.exists() and not lost and not leaked
            return CheckRow(
                name,
                f"backfill with the key breakdown into SQLite, `db copy --to` PostgreSQL, `sync` there, a month×key report on "
                f"both, then {len(PG_ATTACKS)} ways to write through `sql` (COMMIT;…, DO, COPY TO PROGRAM as a superuser, "
                "pg_terminate_backend, a data-modifying CTE)",
                f"exits {codes}; days that differ from SQLite: {lost}; reports equal: {'yes' if same_reports else 'no'}; "
                f"writes refused: {refused} of {len(PG_ATTACKS)}; shell command ran: {'yes' if marker.exists() else 'no'}; "
                f"password shown: {'yes' if leaked else 'no'}; rows lost: {rows_lost}",
                rows_lost=rows_lost,
                ok=ok,
            )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.dispose()


# -- issue 14: what a user reads adds up: table rows, totals and exports agree with SQL -----


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """These environment variables for the processes started inside (restored after)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@exactness_check
def shown_amounts_add_up() -> CheckRow:
    """Every number `report` shows agrees with a plain SQL sum over the archive.

    After a backfill (Analytics off, so that only /activity's rows count), per model: the
    table's rounded rows add up to its total row, the total equals SQL's sum to the cent,
    and every JSON and CSV amount equals SQL's per-group sum rounded to 1e-9 USD (no float
    noise). A table on an 80-column terminal keeps spend and BYOK spend.
    """
    dataset = Dataset(seed=14, endpoints_per_day=12, anchor=utc_today())
    config = FAST_RETRIES.format(attempts=3, timeout=10, max_mb=128)
    with tempfile.TemporaryDirectory(prefix="adds-up-") as tmp, StandIn(dataset, management_key=KEY) as api:
        folder, db = Path(tmp), Path(tmp) / "archive.db"
        with _environment(OPENROUTER_ARCHIVE_ANALYTICS="off", COLUMNS="250"):
            backfill = cli(folder, db, api, "backfill", config=config)
            _, err = backfill.communicate(timeout=300)
            if backfill.returncode != 0:
                return CheckRow("shown amounts add up", "backfill", f"FAILED: {err.strip()[-200:]}", ok=False)
            outputs = {}
            for fmt, extra in (("json", ()), ("csv", ()), ("table", ("--columns", "spend,byok,requests"))):
                proc = cli(folder, db, api, "report", "-g", "date,model", "-f", fmt, *extra, config=config)
                outputs[fmt] = proc.communicate(timeout=120)[0]
        with _environment(OPENROUTER_ARCHIVE_ANALYTICS="off", COLUMNS="80"):
            narrow_out, _ = cli(folder, db, api, "report", "-g", "model", config=config).communicate(timeout=120)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            sums = {(d, m): (u, b, r) for d, m, u, b, r in conn.execute(
                "SELECT date, model, sum(usage), sum(byok_usage_inference), sum(requests) FROM activity GROUP BY 1, 2")}
            (total_usage,) = conn.execute("SELECT sum(usage) FROM activity").fetchone()
    import csv as csv_module
    import io
    from decimal import Decimal

    rows = json.loads(outputs["json"])
    csv_rows = list(csv_module.DictReader(io.StringIO(outputs["csv"])))
    wrong = sum(1 for r in rows if (r["date"], r["model"]) not in sums
                or r["usage"] != round(sums[(r["date"], r["model"])][0], 9)
                or r["byok_usage_inference"] != round(sums[(r["date"], r["model"])][1], 9)
                or r["requests"] != sums[(r["date"], r["model"])][2])
    wrong += sum(1 for r in csv_rows if float(r["usage"]) != round(sums[(r["date"], r["model"])][0], 9))
    missing = len(set(sums) - {(r["date"], r["model"]) for r in rows})
    lines = [line.split("│") for line in outputs["table"].splitlines() if "│" in line]
    body = [cells for cells in lines if cells[0].strip() != "total"]
    total = next((cells for cells in lines if cells[0].strip() == "total"), None)

    def money(cell: str) -> Decimal:
        return Decimal(cell.strip().replace("$", "").replace(",", ""))

    adds_up = total is not None and all(sum(money(c[col]) for c in body) == money(total[col]) for col in (2, 3))
    total_ok = total is not None and money(total[2]) == Decimal(f"{total_usage:.2f}")
    narrow_ok = all(len(line) <= 80 for line in narrow_out.splitlines()) and "BYOK spend" in narrow_out.splitlines()[0]
    return CheckRow(
        check="shown amounts add up (table, CSV, JSON vs SQL)",
        tried=f"backfill, then report -g date,model as JSON, CSV and a table: {len(sums):,} (day, model) groups; a table on 80 columns",
        result=(f"{len(rows) - wrong if wrong < len(rows) else 0:,} of {len(sums):,} JSON groups equal SQL's sums (1e-9 USD), "
                f"{missing} missing, {wrong} wrong; table rows add up to the total row: {'yes' if adds_up else 'NO'}; "
                f"total equals SQL to the cent: {'yes' if total_ok else 'NO'}; 80 columns with spend and BYOK: {'yes' if narrow_ok else 'NO'}"),
        rows_lost=missing + wrong,
        ok=missing == 0 and wrong == 0 and adds_up and total_ok and narrow_ok,
    )


# -- issue 15: the archive equals the JSON that was served, column by column ---------------


def _served_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Per day, the rows of the newest raw /activity response, read with gzip and json alone."""
    import gzip

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (body,) = conn.execute("SELECT body FROM raw_response_bodies WHERE endpoint = 'activity' ORDER BY id DESC LIMIT 1").fetchone()
    days: dict[str, list[tuple[Any, ...]]] = {}
    for item in json.loads(gzip.decompress(body))["data"]:
        row = _expected_row(item)
        days.setdefault(row[0], []).append(row)
    return {day: sorted(rows) for day, rows in days.items()}


@exactness_check
def archive_equals_served_json() -> CheckRow:
    """Backfill, revise yesterday, sync: every column of every row equals the newest raw response."""
    dataset = Dataset(seed=15)
    config = FAST_RETRIES.format(attempts=3, timeout=10, max_mb=128)
    with tempfile.TemporaryDirectory(prefix="oracle-") as tmp, StandIn(dataset, management_key=KEY, date_style="mixed", float_counts="mixed") as api:
        folder, db = Path(tmp), Path(tmp) / "oracle.db"
        codes = []
        for args in (("-q", "backfill"), ("-q", "sync")):
            proc = cli(folder, db, api, *args, config=config)
            proc.communicate(timeout=300)
            codes.append(proc.returncode)
            yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
            for day in (yesterday, yesterday - timedelta(days=1)):
                dataset.revise(day)  # late data for the days the sync refetches
        served = _served_rows(db)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            stored: dict[str, list[tuple[Any, ...]]] = {}
            for row in conn.execute(ROW_SQL):
                stored.setdefault(row[0], []).append(row)
            marked = {d for (d,) in conn.execute("SELECT date FROM archived_days")}
    have = {row for rows in stored.values() for row in rows}
    want = [row for rows in served.values() for row in rows]
    lost = sum(1 for row in want if row not in have)
    extra = sum(len(rows) for rows in stored.values()) - len(want)
    columns = len(ROW_SQL.split(" FROM ")[0].split(","))
    ok = codes == [0, 0] and lost == 0 and extra == 0 and len(marked) == 30 and set(stored) <= marked
    return CheckRow(
        check="archive equals the served JSON, column by column",
        tried="backfill then sync of a revised window (mixed date styles, float counts), compared with the newest raw response read with json alone",
        result=f"exits {codes}; {len(want)} rows x {columns} columns served, {len(want) - lost} held exactly, {max(extra, 0)} extra",
        rows_lost=lost,
        ok=ok,
    )


# -- the report ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rows-per-day", type=int, default=5000)
    parser.add_argument("--storm-rounds", type=int, default=10)
    args = parser.parse_args()

    crash = crash_trials(args.kills, args.rows_per_day)
    storm = fault_storm(args.storm_rounds)
    hostile = hostile_inputs()

    print("| check | result |")
    print("| --- | --- |")
    print(f"| SIGKILL during `backfill` (30 days × {crash.rows_per_day:,} rows; a full run takes {crash.full_run_seconds:.1f}s) | "
          f"{crash.kills} kills in {crash.attempts} attempts ({crash.finished_before_kill} finished first); "
          f"integrity or completeness failures after a kill: {len(crash.checks_failed)}; next sync completed the archive: "
          f"{crash.recoveries} of {math.ceil(crash.attempts / 5)} warehouses |")
    faults = ", ".join(f"{n} × {k}" for k, n in sorted(storm.faults.items()))
    print(f"| fault storm, 30% of requests ({storm.rounds} backfills with key and workspace breakdowns) | "
          f"{sum(storm.faults.values())} faults in {storm.requests} requests ({faults}); "
          f"{storm.complete_rounds} of {storm.rounds} backfills complete and exact |")
    print(f"| total outage | exit {storm.outage_exit}, `{storm.outage_message[:90]}`; half-written: "
          f"{'yes' if storm.outage_half_written else 'no'}; next sync caught up: {'yes' if storm.outage_recovered else 'no'} |")
    for outcome in hostile:
        detail = f": {outcome.detail}" if outcome.detail else ""
        print(f"| hostile input: {outcome.name} | {outcome.ended}{detail} |")
    print(f"| peak memory of a sync process (200 MB body included) | {max(o.max_rss_mb for o in hostile):.0f} MiB |")
    checks = [check() for check in EXACTNESS_CHECKS]
    for row in checks:
        print(f"| {row.check} | {row.tried}; {row.result}; rows lost: {row.rows_lost}{'' if row.ok else ' **FAILED**'} |")
    print(f"| **rows lost** | **{crash.rows_lost + storm.rows_lost + sum(r.rows_lost for r in checks)}** |")


if __name__ == "__main__":
    main()
