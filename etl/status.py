"""What the archive holds, what it misses, and what is already lost for good."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from etl.db import sqlite_path
from etl.migrate import current_revision, ensure_known
from etl.schema import BREAKDOWN_TABLES, activity, archived_breakdown_days, archived_days, credits_snapshots, sync_runs
from etl.config import HealthConfig
from etl.window import WINDOW_DAYS, completed_window, days_between


@dataclass(frozen=True)
class Gaps:
    pending: list[str]  # missing days still inside the API window: the next sync fetches them
    lost: list[str]  # missing days older than the window: OpenRouter no longer has them


def find_gaps(archived: Iterable[str], today: date) -> Gaps:
    """Days missing between the first archived day and yesterday, split by recoverability."""
    have = set(archived)
    if not have:
        return Gaps([], [])
    window_first, yesterday = completed_window(today)
    first = date.fromisoformat(min(have))
    missing = [d for d in days_between(first, yesterday) if d.isoformat() not in have]
    return Gaps(
        pending=[d.isoformat() for d in missing if d >= window_first],
        lost=[d.isoformat() for d in missing if d < window_first],
    )


def as_ranges(days: Iterable[str]) -> list[str]:
    """Collapse sorted ISO dates into 'first..last' ranges for display."""
    ranges: list[list[date]] = []
    for d in sorted(date.fromisoformat(x) for x in days):
        if ranges and d - ranges[-1][1] == timedelta(days=1):
            ranges[-1][1] = d
        else:
            ranges.append([d, d])
    return [a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in ranges]


def assess_health(
    last_day: str | None, pending: Iterable[str], today: date, stale_after_days: int, window_margin_days: int
) -> list[str]:
    """Problems a monitoring system should hear about; empty when the archive is healthy."""
    window_first, yesterday = completed_window(today)
    problems = []
    if last_day is None:
        problems.append("the archive holds no day yet: run `openrouter-archive sync`")
    else:
        behind = (yesterday - date.fromisoformat(last_day)).days
        if behind > stale_after_days:
            problems.append(f"stale: the newest archived day, {last_day}, is {behind} day(s) behind yesterday")
    deadline = window_first + timedelta(days=window_margin_days)
    at_risk = sorted(d for d in pending if date.fromisoformat(d) < deadline)
    if at_risk:
        first_loss = date.fromisoformat(at_risk[0]) + timedelta(days=WINDOW_DAYS + 1)
        problems.append(
            f"{len(at_risk)} day(s) not archived leave the API window within {window_margin_days} day(s), "
            f"the first on {first_loss.isoformat()}: {', '.join(as_ranges(at_risk))}"
        )
    return problems


CHECKED_METRICS = ("usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens")
MONEY_TOLERANCE = 1e-6  # USD; per-key amounts are rounded before OpenRouter adds them up


def compare_sums(account: dict[str, dict[str, Any]], split: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per day and metric, where the breakdown's sum differs from the account total."""
    mismatches = []
    for day in sorted(set(account) & set(split)):
        for metric in CHECKED_METRICS:
            total, parts = account[day][metric] or 0, split[day][metric] or 0
            off = abs(total - parts) > MONEY_TOLERANCE if metric in ("usage", "byok_usage_inference") else total != parts
            if off:
                mismatches.append({"date": day, "metric": metric, "account": total, "breakdown_sum": parts, "difference": parts - total})
    return mismatches


def check_breakdowns(conn: Connection) -> dict[str, dict[str, Any]]:
    """For the key and workspace breakdowns: per day archived both ways, sums vs account totals.

    A difference means the split misses something (a key deleted before it was listed,
    late data fetched for one and not the other) and is worth a look.
    """
    def sums(table: Any, days: Any) -> dict[str, dict[str, Any]]:
        query = select(table.c.date, *(func.sum(table.c[m]).label(m) for m in CHECKED_METRICS)).where(table.c.date.in_(days)).group_by(table.c.date)
        return {r["date"]: dict(r) for r in conn.execute(query).mappings()}

    results = {}
    for breakdown in ("key", "workspace"):
        marked = (
            select(archived_breakdown_days.c.date)
            .where(archived_breakdown_days.c.breakdown == breakdown)
            .where(archived_breakdown_days.c.date.in_(select(archived_days.c.date)))
            .distinct()
        )
        days = [d for (d,) in conn.execute(marked)]
        if not days:
            continue
        split = sums(BREAKDOWN_TABLES[breakdown], days)
        account = sums(activity, days)
        empty = dict.fromkeys(CHECKED_METRICS, 0)
        account = {d: account.get(d, empty) for d in days}
        split = {d: split.get(d, empty) for d in days}
        results[breakdown] = {"days_checked": len(days), "mismatches": compare_sums(account, split)}
    return results


@dataclass
class ArchiveStatus:
    warehouse: str
    warehouse_bytes: int | None
    schema_revision: str | None
    window_first: str
    window_last: str
    days_archived: int = 0
    empty_days: int = 0
    rows: int = 0
    first_day: str | None = None
    last_day: str | None = None
    pending: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    last_run: dict[str, Any] | None = None
    last_success_at: str | None = None
    credits: dict[str, Any] | None = None
    breakdowns: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _writer_active(engine: Engine) -> bool:
    from etl.lock import writer_active

    return writer_active(engine.url.render_as_string(hide_password=False))


def read_status(engine: Engine, today: date, health: HealthConfig | None = None) -> ArchiveStatus:
    status = _read(engine, today)
    health = health or HealthConfig()
    status.problems = assess_health(status.last_day, status.pending, today, health.stale_after_days, health.window_margin_days)
    return status


def _read(engine: Engine, today: date) -> ArchiveStatus:
    window_first, window_last = completed_window(today)
    path = sqlite_path(engine)
    size = None
    if path is not None and path.exists():
        size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    status = ArchiveStatus(
        warehouse=engine.url.render_as_string(hide_password=True),
        warehouse_bytes=size,
        schema_revision=current_revision(engine) if path is None or path.exists() else None,
        window_first=window_first.isoformat(),
        window_last=window_last.isoformat(),
    )
    if status.schema_revision is None:
        return status
    ensure_known(status.schema_revision)
    with engine.connect() as conn:
        days = list(conn.execute(select(archived_days.c.date, archived_days.c.row_count)))
        status.days_archived = len(days)
        status.empty_days = sum(1 for _, n in days if n == 0)
        status.rows = conn.execute(select(func.count()).select_from(activity)).scalar_one()
        if days:
            status.first_day = min(d for d, _ in days)
            status.last_day = max(d for d, _ in days)
        gaps = find_gaps((d for d, _ in days), today)
        status.pending, status.lost = gaps.pending, gaps.lost
        last = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc()).limit(1)).mappings().first()
        if last:
            status.last_run = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in last.items()}
            if last["outcome"] == "running" and not _writer_active(engine):
                # No writer holds the lock, so that run's process is gone; the next writer
                # records it the same way (warehouse.start_run). A reader writes nothing.
                from etl.warehouse import ABANDONED

                status.last_run.update(outcome="interrupted", error=ABANDONED)
        success = conn.execute(select(func.max(sync_runs.c.finished_at)).where(sync_runs.c.outcome == "ok")).scalar()
        status.last_success_at = success.isoformat() if success else None
        if status.schema_revision >= "0003":
            status.breakdowns = check_breakdowns(conn)
        snap = conn.execute(select(credits_snapshots).order_by(credits_snapshots.c.id.desc()).limit(1)).mappings().first()
        if snap:
            status.credits = {
                "fetched_at": snap["fetched_at"].isoformat(),
                "total_credits": snap["total_credits"],
                "total_usage": snap["total_usage"],
            }
    return status
