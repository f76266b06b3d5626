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
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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
        for name, body, expected_end in hostile_cases(yesterday, other_day, today.isoformat(), (first - timedelta(days=3)).isoformat()):
            db = folder / f"hostile-{len(outcomes)}.db"
            with StandIn(management_key=KEY) as api:
                # Archive the window first, so that the hostile sync plans exactly two days.
                warm = cli(folder, db, api, "-q", "backfill", config=config)
                warm.communicate(timeout=120)
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


# -- issue 15: the archive equals the JSON that was served, column by column ---------------


def _served_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Per day, the rows of the newest raw /activity response, read with gzip and json alone."""
    import gzip

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (body,) = conn.execute("SELECT body FROM raw_responses WHERE endpoint = 'activity' ORDER BY id DESC LIMIT 1").fetchone()
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
