"""Terminal output: per-day progress, sync summaries, status and spend tables.

Formatting helpers are pure; the printers write to stdout (a progress bar on a terminal,
one line per day otherwise, so that cron mail and journald stay readable).
"""

from __future__ import annotations

import re

import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from etl.status import ArchiveStatus
    from etl.sync import DayOutcome, SyncReport


def usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def human_count(value: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:,.0f}"


def human_bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def describe_day(o: DayOutcome) -> str:
    if o.status == "archived":
        detail = f"{o.rows} rows" if o.rows else "no activity"
        retired = f", {o.retired} retired" if o.retired else ""
        return f"{o.day}  archived  {detail} ({o.inserted} new, {o.updated} changed, {o.unchanged} unchanged{retired})"
    label = {"not_served": "not served yet", "gone": "lost"}.get(o.status, o.status)
    return f"{o.day}  {label}  {o.error}"


def describe_report(r: SyncReport) -> str:
    planned = len(r.planned)
    if planned == 0:
        return f"{r.trigger}: nothing to fetch, the archive is up to date"
    text = (
        f"{r.trigger}: {r.archived} of {planned} day(s) archived in {r.requests} request(s), {r.seconds:.1f}s; "
        f"rows: {r.total('inserted')} new, {r.total('updated')} changed, {r.total('unchanged')} unchanged"
        + (f", {r.total('retired')} retired" if r.total("retired") else "")
    )
    if r.days("not_served"):
        text += f"; {len(r.days('not_served'))} day(s) not served by OpenRouter yet, left to fetch"
    if r.days("gone"):
        text += f"; {len(r.days('gone'))} day(s) LOST: OpenRouter no longer serves them"
    return text


class DayPrinter:
    """Reports each day as it is archived, and the Analytics API's series as they are fetched.

    On a terminal (stdout for /activity's days, as before; stderr for the analytics series,
    so that a `sync > file` on a terminal still shows them) a rich progress bar, one task
    per series counting its (subject, day) pairs; off a terminal, in cron and in logs, one
    line per day and none for the series (their summaries say it all). Thread-safe: the
    series report from their own threads.
    """

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.quiet = total, quiet
        self._progress: Any = None
        self._task: Any = None
        self._series: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.analytics_bar = not quiet and sys.stderr.isatty()

    def __enter__(self) -> DayPrinter:
        if not self.quiet and sys.stdout.isatty() and self.total > 1:
            from rich.progress import Progress

            self._progress = Progress(transient=True)
            self._progress.start()
            self._task = self._progress.add_task("archiving", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, outcome: DayOutcome) -> None:
        # By the bar only when it counts the days: the analytics series, fetched from the start
        # of the run, may have a bar of their own (on stderr) while the days print as lines.
        if self._task is not None:
            self._progress.advance(self._task)
            if outcome.status != "archived":
                self._progress.console.print(describe_day(outcome))
        elif not self.quiet or outcome.status not in ("archived", "not_served"):  # -q: only what went wrong
            click.echo(describe_day(outcome))

    # -- the Analytics API's series (etl.analytics.AnalyticsProgress) --

    def planned(self, series: str, days: int) -> None:
        if not self.analytics_bar or days <= 0:
            return
        with self._lock:
            if self._progress is None:  # no bar for /activity's days: one of our own, on stderr
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                                          TimeElapsedColumn(), console=Console(stderr=True), transient=True)
                self._progress.start()
            # Days of every subject: a key series of 20 keys over a year is 7,300.
            self._series[series] = self._progress.add_task(f"analytics {series}", total=days)

    def fetched(self, series: str, days: int) -> None:
        task = self._series.get(series)
        if task is not None:
            self._progress.advance(task, days)

    def loaded(self, series: str) -> None:
        task = self._series.get(series)
        if task is not None:
            total = self._progress.tasks[[t.id for t in self._progress.tasks].index(task)].total
            self._progress.update(task, completed=total, description=f"analytics {series}, archived")


def when(timestamp: Any) -> str:
    """A stored ISO timestamp to the second, for people (``status --json`` keeps it whole)."""
    return re.sub(r"\.\d+(?=Z$|[+-]\d\d:\d\d$|$)", "", str(timestamp))


def status_lines(s: ArchiveStatus) -> list[str]:
    lines = [f"warehouse     {s.warehouse} ({human_bytes(s.warehouse_bytes)})"]
    if s.server_version:
        lines.append(f"server        PostgreSQL {s.server_version}")
    if s.integrity:
        return lines + [f"health        WARNING: {p}" for p in s.problems]
    if s.schema_revision is None:
        return lines + ["archive       empty: not created yet (run `openrouter-archive sync`)"] + [f"health        WARNING: {p}" for p in s.problems]
    lines.append(f"schema        revision {s.schema_revision}")
    if s.days_archived:
        lines.append(
            f"archived      {s.days_archived} day(s), {s.first_day} .. {s.last_day}, {s.rows:,} rows, {s.empty_days} day(s) without activity"
        )
    else:
        lines.append("archived      no days yet")
    lines += history_lines(s.history)
    lines.append(f"API window    {s.window_first} .. {s.window_last}")
    lines.append(f"to fetch      {_days(s.pending)}")
    lines.append(f"lost          {_days(s.lost)}" + ("  (gone for good: OpenRouter no longer has them)" if s.lost else ""))
    if s.last_run:
        r = s.last_run
        lines.append(
            f"last run      #{r['id']} {r['trigger']} {r['outcome']} at {when(r['finished_at'] or r['started_at'])}: "
            f"{r['days_fetched']}/{r['days_requested']} days, {r['rows_inserted']} new, {r['rows_updated']} changed"
            + (f"; error: {r['error']}" if r["error"] else "")
        )
    lines.append(f"last success  {when(s.last_success_at) if s.last_success_at else 'never'}")
    for name, check in s.breakdowns.items():
        bad = check["mismatches"]
        if not bad:
            lines.append(f"{'per ' + name:<14}{check['days_checked']} day(s) checked: the per-{name} sums equal the account totals")
            continue
        days = sorted({m["date"] for m in bad})
        lines.append(f"{'per ' + name:<14}{check['days_checked']} day(s) checked: {len(days)} day(s) differ from the account totals:")
        for m in bad[:8]:
            lines.append(f"              {m['date']} {m['metric']}: account {m['account']}, per-{name} sum {m['breakdown_sum']} ({m['difference']:+})")
        if len(bad) > 8:
            lines.append(f"              … {len(bad) - 8} more (status --json lists them all)")
    if s.summaries:
        first, last = s.summaries["months"]
        bad = s.summaries["mismatches"]
        months = first if first == last else f"{first} .. {last}"
        lines.append(f"{'summaries':<14}{months}: " + (f"{len(bad)} summary row(s) differ from the base rows" if bad else "equal to the base rows"))
    from etl.status_analytics import lines as analytics_lines

    lines += analytics_lines(s.analytics, s.reconciliation)
    if s.integrity is not None:
        lines.append(f"integrity     ok ({s.integrity_check or 'quick_check'})")
    elif s.integrity_check:
        lines.append(f"integrity     {s.integrity_check}")
    if s.problems:
        lines += [f"health        WARNING: {p}" for p in s.problems]
    else:
        lines.append("health        ok")
    if s.credits:
        c = s.credits
        lines.append(f"credits       {usd(c['total_credits'] - c['total_usage'])} remaining (as of {when(c['fetched_at'])})")
    return lines


def history_lines(history: dict[str, dict[str, Any]]) -> list[str]:
    """Superseded versions per table: the account-level line always, breakdowns when any."""
    lines = []
    for name, h in history.items():
        if name != "activity" and not (h["retired"] or h["revised"]):
            continue
        label = "history" if name == "activity" else f"history/{name}"
        if not (h["retired"] or h["revised"]):
            lines.append(f"{label:<14}none: every row is as OpenRouter first listed it")
            continue
        retired = f"{h['retired']:,} row(s) retired (no longer listed by OpenRouter)"
        if h["last_retired_at"]:
            retired += f", the last at {when(h['last_retired_at'])}"
        lines.append(f"{label:<14}{retired}; {h['revised']:,} earlier version(s) of revised rows")
    return lines


def _days(days: Sequence[str]) -> str:
    from etl.status import as_ranges

    if not days:
        return "none"
    ranges = as_ranges(days)
    shown = ", ".join(ranges[:6]) + (f", … ({len(ranges) - 6} more ranges)" if len(ranges) > 6 else "")
    return f"{len(days)} day(s): {shown}"


class CopyProgress:
    """A progress bar of rows copied on a terminal; nothing off one (the summary says it all)."""

    def __init__(self, quiet: bool = False) -> None:
        self._progress: Any = None
        self._task: Any = None
        self.enabled = sys.stdout.isatty() and not quiet

    def __enter__(self) -> CopyProgress:
        return self

    def start(self, total: int) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self._progress.start()
        self._task = self._progress.add_task("copying", total=total)

    def advance(self, table: str, rows: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=rows, description=f"copying {table}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
