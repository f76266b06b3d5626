"""What the archive holds, what it misses, and what is already lost for good.

Also how much history was superseded (rows retired because OpenRouter stopped listing
them, earlier versions of revised rows), and any archived day whose current rows differ in
number from OpenRouter's latest answer for it: an archive made by a version that counted
revised days twice, which the history migration could not repair.

Lost days are the missing days older than our window, and also the days a sync asked for
that OpenRouter no longer served (its clock ahead of ours: ``sync_runs.details`` records
them under ``window.gone``), even when by our clock they are still inside the window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, Float, Table, and_, cast, func, null, or_, select
from sqlalchemy.exc import SQLAlchemyError

from etl.db import describe_failure, sqlite_path, storage_facts, structure_check
from etl.migrate import current_revision, ensure_known
from etl.schema import (
    BREAKDOWN_SUBJECTS,
    BREAKDOWN_TABLES,
    HISTORY_TABLES,
    SUMMARY_TABLES,
    activity,
    archived_breakdown_days,
    archived_days,
    credits_snapshots,
    month_counts,
    sync_runs,
)
from etl.config import HealthConfig
from etl.status_analytics import coverage as analytics_coverage
from etl.status_analytics import problems as analytics_problems
from etl.status_analytics import reconcile
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


def refused_days(details: Iterable[str | None]) -> set[str]:
    """Days the API no longer served when a sync asked for them, from runs' ``details`` JSON."""
    gone: set[str] = set()
    for text in details:
        try:
            document = json.loads(text or "{}")
        except ValueError:
            continue
        window = document.get("window") if isinstance(document, dict) else None
        days = window.get("gone") if isinstance(window, dict) else None
        gone.update(d for d in days or [] if isinstance(d, str))
    return gone


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
    last_day: str | None, pending: Iterable[str], today: date, stale_after_days: int, window_margin_days: int,
    lost: Iterable[str] = (),
) -> list[str]:
    """Problems a monitoring system should hear about; empty when the archive is healthy.

    A lost day is news while it is still inside our window: OpenRouter's clock is ahead of
    ours and the day was never archived. Once older than the window it is ordinary history
    (``lost`` in the status), and no longer a warning.
    """
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
    early = sorted(d for d in lost if d >= window_first.isoformat())
    if early:
        problems.append(
            f"{len(early)} day(s) inside our window that OpenRouter no longer serves (its clock is ahead of ours?) "
            f"were never archived and are lost: {', '.join(as_ranges(early))}"
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


def check_breakdowns(conn: Connection, first: str | None = None) -> dict[str, dict[str, Any]]:
    """For the key and workspace breakdowns: per day archived both ways (from ``first`` on,
    the API window for ``status``), sums vs account totals.

    A difference means the split misses something (a key deleted before it was listed,
    late data fetched for one and not the other) and is worth a look while the day can
    still be fetched again; older days were checked while they were in the window, and
    checking them at every status would make it as slow as the archive is long.
    """
    def sums(table: Any, days: Any) -> dict[str, dict[str, Any]]:
        # Cast: PostgreSQL's sum(bigint) is numeric, a Decimal that JSON refuses.
        sums_of = [cast(func.sum(table.c[m]), Float if m in ("usage", "byok_usage_inference") else BigInteger).label(m) for m in CHECKED_METRICS]
        query = select(table.c.date, *sums_of).where(table.c.date.in_(days)).group_by(table.c.date)
        return {r["date"]: dict(r) for r in conn.execute(query).mappings()}

    results = {}
    for breakdown in ("key", "workspace"):
        marked = (
            select(archived_breakdown_days.c.date)
            .where(archived_breakdown_days.c.breakdown == breakdown)
            .where(archived_breakdown_days.c.date.in_(select(archived_days.c.date)))
            .distinct()
        )
        if first is not None:
            marked = marked.where(archived_breakdown_days.c.date >= first)
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


def history_counts(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per table (``activity``, then each breakdown): versions kept in its history table."""
    results = {}
    for name, current in (("activity", activity), *BREAKDOWN_TABLES.items()):
        history = HISTORY_TABLES[current.name]
        counts: dict[str, Any] = {"retired": 0, "revised": 0, "last_retired_at": None, "last_superseded_at": None}
        query = select(history.c.reason, func.count(), func.max(history.c.superseded_at)).group_by(history.c.reason)
        for reason, n, last in conn.execute(query):
            counts[reason] = n
            if reason == "retired":
                counts["last_retired_at"] = last.isoformat()
            if counts["last_superseded_at"] is None or last.isoformat() > counts["last_superseded_at"]:
                counts["last_superseded_at"] = last.isoformat()
        results[name] = counts
    return results


def miscounted_days(conn: Connection, revision: str) -> list[dict[str, Any]]:
    """Archived days (per breakdown subject) whose current rows are not as many as the latest answer listed.

    From revision 0008 on, the monthly summaries count the rows: only the months whose
    marks and summaries disagree are counted day by day, so this reads the marks and the
    summaries, not every row of the archive.
    """
    summarised = revision >= "0008"
    suspects = _counted_suspects(conn) if revision >= "0009" else None
    found = _miscounted(conn, activity, archived_days, [], None, summarised, suspects)
    if revision >= "0003":
        for breakdown, table in BREAKDOWN_TABLES.items():
            column = None if breakdown == "workspace" else BREAKDOWN_SUBJECTS[breakdown]  # "*": all workspaces
            found += _miscounted(conn, table, archived_breakdown_days, [archived_breakdown_days.c.breakdown == breakdown], column,
                                 summarised, suspects)
    return found


def _counted_suspects(conn: Connection) -> dict[str, list[str]]:
    """Per table, the months whose marks' row counts add up to another number than the
    summary's rows, from the monthly counts (revision 0009): the same months as
    ``_suspect_months`` finds, reading one row per month and subject."""
    c = month_counts
    query = select(c.c.counted, c.c.month).where(c.c.marked_days > 0, c.c.marked_rows != c.c.held_rows).distinct()
    out: dict[str, set[str]] = {}
    for counted, month in conn.execute(query):
        out.setdefault(counted, set()).add(month)
    return {t: sorted(m) for t, m in out.items()}


def _month_days(month: str) -> list[date]:
    first = date.fromisoformat(f"{month}-01")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return days_between(first, following - timedelta(days=1))


def _count_days(conn: Connection, status: ArchiveStatus, today: date) -> Gaps:
    """Days archived, empty days, rows, first and last day and the gaps, from the monthly
    counts (revision 0009): the dates are read only in the months not wholly archived and in
    the window's; the result is exactly what ``find_gaps`` makes of every archived day."""
    c = month_counts
    marked: dict[str, int] = {}
    for month, days, empty, rows in conn.execute(
        select(c.c.month, c.c.marked_days, c.c.empty_days, c.c.held_rows).where(c.c.counted == activity.name)
    ):
        marked[month] = int(days)
        status.days_archived += int(days)
        status.empty_days += int(empty)
        status.rows += int(rows)
    first_day, last_day = conn.execute(select(func.min(archived_days.c.date), func.max(archived_days.c.date))).one()
    status.first_day, status.last_day = first_day, last_day
    if first_day is None:
        return Gaps([], [])
    window_first, yesterday = completed_window(today)
    first = date.fromisoformat(first_day)
    if first > yesterday:
        return Gaps([], [])
    months, month = [], first.replace(day=1)
    while month <= yesterday:
        key = month.isoformat()[:7]
        whole = marked.get(key, 0) == len(_month_days(key))
        if month <= first or key >= window_first.isoformat()[:7] or not whole:
            months.append(key)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    dates = archived_days.c.date
    have = set(conn.execute(select(dates).where(or_(*(and_(dates >= f"{m}-01", dates <= f"{m}-32") for m in months)))).scalars())
    missing = [d for m in months for d in _month_days(m) if first <= d <= yesterday and d.isoformat() not in have]
    return Gaps(
        pending=[d.isoformat() for d in missing if d >= window_first],
        lost=[d.isoformat() for d in missing if d < window_first],
    )


def _suspect_months(conn: Connection, table: Table, marks: Table, where: list[Any], column: str | None) -> list[str]:
    """Months whose marks' row counts add up to another number than the summary's rows.

    A month of miscounted days shows here unless its days err by amounts that cancel out
    exactly; the miscounts older versions made were all excess rows, which never cancel.
    """
    summary = SUMMARY_TABLES[table.name]
    month = func.substr(marks.c.date, 1, 7)
    group = [month, *([marks.c.subject] if column else [])]
    marked = {tuple(r[:-1]): int(r[-1]) for r in conn.execute(select(*group, func.sum(marks.c.row_count)).where(*where).group_by(*group))}
    held_group = [summary.c.month, *([summary.c[column]] if column else [])]
    held = {tuple(r[:-1]): int(r[-1]) for r in conn.execute(select(*held_group, func.sum(summary.c.row_count)).group_by(*held_group))}
    return sorted({key[0] for key, n in marked.items() if held.get(key, 0) != n})


def _miscounted(
    conn: Connection, table: Table, marks: Table, where: list[Any], column: str | None, summarised: bool = False,
    suspects: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Marks whose row_count differs from the current rows of their day (and subject, if
    ``column``); with ``suspects`` (the monthly counts'), only in those months."""
    if summarised:
        months = suspects.get(table.name, []) if suspects is not None else _suspect_months(conn, table, marks, where, column)
        if not months:
            return []
        days = or_(*(and_(marks.c.date >= f"{m}-01", marks.c.date <= f"{m}-32") for m in months))
        where = [*where, days]
    group = [table.c.date, *([table.c[column]] if column else [])]
    rows = select(*group, func.count().label("n"))
    if summarised:
        rows = rows.where(or_(*(and_(table.c.date >= f"{m}-01", table.c.date <= f"{m}-32") for m in months)))
    counts = rows.group_by(*group).subquery()
    on = [counts.c.date == marks.c.date, *([counts.c[column] == marks.c.subject] if column else [])]
    held = func.coalesce(counts.c.n, 0)
    subject = marks.c.subject if "subject" in marks.c else null()
    query = (
        select(marks.c.date, subject, marks.c.row_count, held)
        .select_from(marks.outerjoin(counts, and_(*on)))
        .where(*where, marks.c.row_count != held)
        .order_by(marks.c.date)
    )
    return [{"table": table.name, "date": d, "subject": s, "row_count": n, "rows": h} for d, s, n, h in conn.execute(query)]


def describe_miscounts(found: list[dict[str, Any]], revision: str | None) -> list[str]:
    """The health problem of miscounted days, if any (pure)."""
    if not found:
        return []
    by_table: dict[str, list[str]] = {}
    for m in found:
        by_table.setdefault(m["table"], []).append(m["date"])
    where = "; ".join(f"{t}: {', '.join(as_ranges(set(days)))}" for t, days in by_table.items())
    fix = (
        "`openrouter-archive db upgrade` repairs them from the stored answers"
        if revision is not None and revision < "0004"
        else "their stored answers are gone, so they cannot be repaired; reports over them are not exact"
    )
    return [f"{len(found)} archived day(s) hold a different number of rows than OpenRouter's latest answer ({where}): {fix}"]


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
    history: dict[str, dict[str, Any]] = field(default_factory=dict)  # superseded versions per table
    miscounted_days: list[dict[str, Any]] = field(default_factory=list)
    integrity: list[str] | None = None  # quick_check's findings ([] = ok); None = not checked
    analytics: dict[str, dict[str, Any]] = field(default_factory=dict)  # per series: days held, gaps
    reconciliation: dict[str, Any] = field(default_factory=dict)  # /activity vs the Analytics API
    integrity_check: str | None = None  # how it was checked (quick_check, amcheck), or why it was not
    server_version: str | None = None  # PostgreSQL's; None for a SQLite file
    summaries: dict[str, Any] = field(default_factory=dict)  # the window's months: summaries vs base rows
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _writer_active(engine: Engine) -> bool:
    from etl.lock import writer_active

    if engine.dialect.name == "postgresql":
        from etl import postgres

        with engine.connect() as conn:
            return postgres.writer_active(conn)
    return writer_active(engine.url.render_as_string(hide_password=False))


def read_status(engine: Engine, today: date, health: HealthConfig | None = None, *, check_integrity: bool = False) -> ArchiveStatus:
    """What the archive holds; with ``check_integrity``, also a structural check of the file.

    The check runs first: on a damaged file the other queries may fail, and the damage is
    then still what the report says.
    """
    health = health or HealthConfig()
    integrity, checked = None, None
    path = sqlite_path(engine)
    if check_integrity and (path is None or path.exists()):
        try:
            integrity, checked = structure_check(engine)
        except SQLAlchemyError as exc:
            integrity, checked = [describe_failure(exc, str(engine.url))], "quick_check"
    if integrity:
        window_first, window_last = completed_window(today)
        status = ArchiveStatus(engine.url.render_as_string(hide_password=True), None, None, window_first.isoformat(), window_last.isoformat())
        status.integrity, status.integrity_check = integrity, checked
        status.problems = [_damage(integrity, checked)]
        return status
    status = _read(engine, today)
    status.integrity, status.integrity_check = integrity, checked
    status.problems = assess_health(
        status.last_day, status.pending, today, health.stale_after_days, health.window_margin_days, status.lost
    )
    status.problems += describe_miscounts(status.miscounted_days, status.schema_revision)
    status.problems += analytics_problems(status.reconciliation)
    if status.summaries:
        from etl.summaries import describe

        status.problems += describe(status.summaries["mismatches"], *status.summaries["months"])
    return status


def _damage(findings: list[str], checked: str | None = "quick_check") -> str:
    shown = "; ".join(findings[:3]) + (f"; … {len(findings) - 3} more" if len(findings) > 3 else "")
    what = "warehouse file" if checked == "quick_check" else "warehouse"
    return f"the {what} is damaged: {checked} found {len(findings)} problem(s): {shown}; restore it from a backup"


def _read(engine: Engine, today: date) -> ArchiveStatus:
    window_first, window_last = completed_window(today)
    path = sqlite_path(engine)
    size, version = storage_facts(engine)
    status = ArchiveStatus(
        warehouse=engine.url.render_as_string(hide_password=True),
        warehouse_bytes=size,
        schema_revision=current_revision(engine) if path is None or path.exists() else None,
        window_first=window_first.isoformat(),
        window_last=window_last.isoformat(),
        server_version=version,
    )
    if status.schema_revision is None:
        return status
    ensure_known(status.schema_revision)
    with engine.connect() as conn:
        summarised = status.schema_revision >= "0008"
        runs = conn.execute(select(sync_runs.c.details).where(sync_runs.c.details.like('%"gone"%'))).scalars()
        refused = refused_days(runs)
        if status.schema_revision >= "0009":  # the monthly counts: a few rows a month, no mark read outside the window
            gaps = _count_days(conn, status, today)
            if refused:
                refused -= set(conn.execute(select(archived_days.c.date).where(archived_days.c.date.in_(sorted(refused)))).scalars())
        else:
            days = list(conn.execute(select(archived_days.c.date, archived_days.c.row_count)))
            status.days_archived = len(days)
            status.empty_days = sum(1 for _, n in days if n == 0)
            if summarised:  # the summaries count the rows: no scan of the whole table
                status.rows = int(conn.execute(select(func.coalesce(func.sum(SUMMARY_TABLES[activity.name].c.row_count), 0))).scalar_one())
            else:
                status.rows = conn.execute(select(func.count()).select_from(activity)).scalar_one()
            if days:
                status.first_day = min(d for d, _ in days)
                status.last_day = max(d for d, _ in days)
            gaps = find_gaps((d for d, _ in days), today)
            refused -= {d for d, _ in days}
        status.pending = [d for d in gaps.pending if d not in refused]
        status.lost = sorted(set(gaps.lost) | refused)
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
            status.breakdowns = check_breakdowns(conn, window_first.isoformat())
        if status.schema_revision >= "0004":
            status.history = history_counts(conn)
        status.miscounted_days = miscounted_days(conn, status.schema_revision)
        if summarised:
            from etl import summaries

            months = (window_first.isoformat()[:7], window_last.isoformat()[:7])
            mismatches = summaries.verify(conn, *months, with_counts=status.schema_revision >= "0009")
            status.summaries = {"months": list(months), "mismatches": mismatches}
        if status.schema_revision >= "0005":
            status.analytics, status.reconciliation = analytics_coverage(conn, today), reconcile(conn)
        snap = conn.execute(select(credits_snapshots).order_by(credits_snapshots.c.id.desc()).limit(1)).mappings().first()
        if snap:
            status.credits = {
                "fetched_at": snap["fetched_at"].isoformat(),
                "total_credits": snap["total_credits"],
                "total_usage": snap["total_usage"],
            }
    return status
