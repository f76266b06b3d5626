"""Read side: grouped aggregates over the archive, built with SQLAlchemy Core.

Usable from a notebook as well as from the CLI::

    from etl.query import ReportSpec, run_report
    with engine.connect() as conn:
        report = run_report(conn, ReportSpec(group_by=("month", "model"), since="2026-01-01"))

Spend (``usage``, USD from OpenRouter credits) and BYOK spend (``byok_usage_inference``,
estimated USD of bring-your-own-key inference, not charged by OpenRouter) are always
separate columns; nothing here adds them together (the one column that does,
``total_usage_incl_byok``, the Activity page's "Spend", is asked for by name and says so).
Totals are the exact (``math.fsum``)
sum of the groups, so they agree with a hand-written ``SELECT sum(usage) …`` far inside a
cent without a second scan of the archive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Select, Table, and_, cast, func, or_, select

from etl import metrics as metric_names
from etl.db import glob_match, glob_matches, iso_week, model_variant
from etl.errors import BadArgument
from etl.schema import BREAKDOWN_SUBJECTS, BREAKDOWN_TABLES, SUMMARY_COUNTS, SUMMARY_MONEY, SUMMARY_TABLES, activity, api_keys
from etl.summaries import tables_present, units, usd

def _dimensions(t: Table) -> dict[str, ColumnElement[Any]]:
    return {
        "date": t.c.date,
        "week": iso_week(t.c.date),
        "month": func.substr(t.c.date, 1, 7),
        "year": func.substr(t.c.date, 1, 4),
        "model": t.c.model,
        "permaslug": t.c.model_permaslug,
        "provider": t.c.provider_name,
        "endpoint": t.c.endpoint_id,
    }


def _count(expr: ColumnElement[Any]) -> ColumnElement[int]:
    # PostgreSQL's sum(bigint) is numeric (a Decimal in Python, which JSON refuses):
    # cast back so that counts are ints on every engine. A no-op on SQLite.
    return cast(func.coalesce(func.sum(expr), 0), BigInteger)


def _money(expr: ColumnElement[Any]) -> ColumnElement[int]:
    # Whole units of 1e-10 USD (etl/summaries.py): integer sums are exact in any order, so
    # the summaries' path and this one give the very same amounts; ``usd`` turns them back.
    return cast(func.coalesce(func.sum(units(expr)), 0), BigInteger)


def _metrics(t: Table) -> dict[str, ColumnElement[Any]]:
    return {
        "usage": _money(t.c.usage),
        "byok_usage_inference": _money(t.c.byok_usage_inference),
        "requests": _count(t.c.requests),
        "prompt_tokens": _count(t.c.prompt_tokens),
        "completion_tokens": _count(t.c.completion_tokens),
        "reasoning_tokens": _count(t.c.reasoning_tokens),
        "cached_tokens": _count(t.c.cached_tokens),
        # Reasoning tokens are already part of completion tokens (OpenRouter bills them so).
        "total_tokens": _count(t.c.prompt_tokens + t.c.completion_tokens),
    }


# Groups that only the breakdown tables have: which breakdown, and its subject column.
BREAKDOWN_DIMENSIONS = {"key": "key", "workspace": "workspace", "member": "member"}
DIMENSIONS = {**_dimensions(activity), **{name: None for name in BREAKDOWN_DIMENSIONS}}
# Every group a report takes: also `variant` (the model id's `:suffix`, SQL on /activity's
# side) and `app` (the Analytics API's app series only); etl/query_history.py says which
# source gives which group.
GROUPS = (*DIMENSIONS, "variant", "app")
TIME_DIMENSIONS = ("date", "week", "month", "year")
METRICS = _metrics(activity)
MONEY = metric_names.MONEY
assert tuple(METRICS) == metric_names.NAMES
OTHER = "other"
_LAST_RE = re.compile(r"^(\d+)([dwmy])$")


@dataclass(frozen=True)
class ReportSpec:
    """What to report: grouping, filters (inclusive UTC dates), folding and order."""

    group_by: tuple[str, ...] = ("model",)
    since: str | None = None
    until: str | None = None
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    top: int | None = None
    sort: str | None = None  # a metric, or "group"; None: chronological for time groups, else by spend
    ascending: bool = False
    keys: tuple[str, ...] = ()  # API key names (exact or glob); reads the per-key breakdown
    history: bool = False  # also the Analytics API's history for days /activity's archive lacks (etl/query_history.py)
    metrics: tuple[str, ...] = ()  # metrics asked for (--metric, --sort, --columns): extra columns, or a latency report

    def __post_init__(self) -> None:
        if not 1 <= len(self.group_by) <= 2:
            raise BadArgument("group by one or two of: " + ", ".join(GROUPS))
        for name in self.group_by:
            if name not in GROUPS:
                raise BadArgument(f"unknown group {name!r}; choose from: {', '.join(GROUPS)}")
        if len(set(self.group_by)) != len(self.group_by):
            raise BadArgument(f"group {self.group_by[0]!r} given twice")
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None:
                parse_day(value, name)
        if self.since and self.until and self.since > self.until:
            raise BadArgument(f"the range is inverted: since {self.since} is after until {self.until}")
        if self.top is not None and self.top < 1:
            raise BadArgument("top must be at least 1")
        columns = metric_names.report_metrics((*self.metrics, *([self.sort] if self.sort not in (None, "group") else [])))
        if self.sort is not None and self.sort != "group" and self.sort not in columns:
            raise BadArgument(f"unknown sort {self.sort!r}; choose 'group' or one of: {', '.join(columns)}")
        split = {g for g in self.group_by if g in BREAKDOWN_DIMENSIONS} | ({"key"} if self.keys else set())
        if len(split) > 1:
            raise BadArgument(f"{' and '.join(sorted(split))} come from different breakdowns; use one of them at a time")
        from etl.query_history import check

        check(self)  # groups, filters and metrics that no one source can give together

    @property
    def breakdown(self) -> str | None:
        """The breakdown table this report reads, or None for the account-level one."""
        if self.keys:
            return "key"
        return next((g for g in self.group_by if g in BREAKDOWN_DIMENSIONS), None)

    @property
    def table(self) -> Table:
        return BREAKDOWN_TABLES[self.breakdown] if self.breakdown else activity

    @property
    def columns(self) -> tuple[str, ...]:
        """The metric columns: the base ones and the extra ones asked for, or a latency report's."""
        return metric_names.report_metrics((*self.metrics, *([self.sort] if self.sort not in (None, "group") else [])))

    @property
    def latency(self) -> bool:
        return self.columns == metric_names.LATENCY_REPORT

    @property
    def sort_metric(self) -> str:
        if self.sort in self.columns:
            return str(self.sort)
        asked = [m for m in self.metrics if m in metric_names.LATENCY]
        return asked[0] if asked else "requests" if self.latency else "usage"


@dataclass
class Report:
    spec: ReportSpec
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # what the report could not say, or where rows came from

    @property
    def columns(self) -> list[str]:
        sourced = bool(self.rows) and "source" in self.rows[0]
        return [*self.spec.group_by, *self.spec.columns, *(["source"] if sourced else [])]


# -- parsing helpers (pure) ---------------------------------------------------------------


def parse_day(value: str, what: str = "date") -> date:
    # Python 3.11's fromisoformat also takes 20260115 and 2026-W03-4; the filters compare
    # the text itself with the stored YYYY-MM-DD dates, so only that form is a date here.
    try:
        day = date.fromisoformat(value)
    except (TypeError, ValueError):
        day = None
    if day is None or day.isoformat() != value:
        raise BadArgument(f"{what}: expected a date as YYYY-MM-DD, got {value!r}")
    return day


def parse_group_by(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def last_range(text: str, today: date) -> tuple[str, str]:
    """``7d``, ``4w``, ``3m``, ``1y``: that many complete days, weeks, months or years up to yesterday."""
    match = _LAST_RE.match(text.strip().lower())
    if not match or int(match.group(1)) < 1:
        raise BadArgument(f"expected a period like 7d, 4w, 3m or 1y, got {text!r}")
    n, unit = int(match.group(1)), match.group(2)
    until = today - timedelta(days=1)
    if unit == "d":
        since = today - timedelta(days=n)
    elif unit == "w":
        since = today - timedelta(weeks=n)
    else:
        months = n if unit == "m" else 12 * n
        since = _months_before(today, months)
    return since.isoformat(), until.isoformat()


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    for candidate in range(day.day, 0, -1):  # 31 March minus one month is 28/29 February
        try:
            return date(year, month, candidate)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _pattern(column: ColumnElement[Any], patterns: Sequence[str]) -> ColumnElement[bool]:
    """Exact match, or a case-sensitive glob (``*``, ``?``), the same on every backend."""
    clauses: list[ColumnElement[bool]] = []
    for pattern in patterns:
        if "*" in pattern or "?" in pattern:
            clauses.append(glob_match(column, pattern))
        else:
            clauses.append(column == pattern)
    return or_(*clauses)


# -- queries ------------------------------------------------------------------------------


def filters(spec: ReportSpec, key_hashes: Sequence[str] | None = None, *, dates: bool = True) -> list[ColumnElement[bool]]:
    return _filters(spec, spec.table, key_hashes, dates=dates)


def _filters(spec: ReportSpec, t: Table, key_hashes: Sequence[str] | None, *, dates: bool = True) -> list[ColumnElement[bool]]:
    """The spec's filters on ``t`` (a base table or its summary); ``dates``: also its range."""
    where: list[ColumnElement[bool]] = []
    if dates and spec.since:
        where.append(t.c.date >= spec.since)
    if dates and spec.until:
        where.append(t.c.date <= spec.until)
    if spec.models:
        where.append(_pattern(t.c.model, spec.models))
    if spec.providers:
        where.append(_pattern(t.c.provider_name, spec.providers))
    if key_hashes is not None:
        where.append(t.c.api_key_hash.in_(list(key_hashes)))
    return where


def dimension(name: str, table: Table) -> ColumnElement[Any]:
    if name == "variant":
        return model_variant(table.c.model)
    if name in BREAKDOWN_DIMENSIONS:
        return table.c[BREAKDOWN_SUBJECTS[name]]
    return _dimensions(table)[name]


def build_query(spec: ReportSpec, key_hashes: Sequence[str] | None = None) -> Select[Any]:
    t = spec.table
    dims = [dimension(name, t).label(name) for name in spec.group_by]
    metrics = [expr.label(name) for name, expr in _metrics(t).items()]
    query = select(*dims, *metrics).group_by(*dims)
    where = filters(spec, key_hashes)
    return query.where(and_(*where)) if where else query


def key_names(conn: Connection) -> dict[str, str]:
    """Display name per key hash: the key's name, with its masked label where names repeat."""
    keys = list(conn.execute(select(api_keys.c.hash, api_keys.c.name, api_keys.c.label)))
    counts: dict[str, int] = {}
    for _, name, _ in keys:
        counts[name] = counts.get(name, 0) + 1
    return {h: (f"{name} ({label})" if counts[name] > 1 else name) for h, name, label in keys}


def resolve_keys(names: dict[str, str], patterns: Sequence[str]) -> list[str]:
    """Hashes of the keys whose display name matches one of ``patterns`` (exact or glob)."""
    hashes = [h for h, name in names.items() if any(glob_matches(name, p) for p in patterns)]
    if not hashes:
        known = ", ".join(sorted(names.values())) or "none archived yet (enable [sync] breakdowns = [\"key\"])"
        raise BadArgument(f"no API key matches {', '.join(patterns)}; known keys: {known}")
    return hashes


def run_report(conn: Connection, spec: ReportSpec) -> Report:
    from etl import query_history

    if spec.latency:  # the 31-day provider series alone: averaged, never summed
        return query_history.latency_report(conn, spec)
    names = key_names(conn) if spec.breakdown == "key" else {}
    key_hashes = resolve_keys(names, spec.keys) if spec.keys else None
    # `app` is in the Analytics API's app series only: no /activity rows to start from.
    rows = [] if "app" in spec.group_by else grouped_rows(conn, spec, key_hashes)
    if "key" in spec.group_by:  # rows show the key's name, not its hash
        for row in rows:
            row["key"] = names.get(row["key"], row["key"])
    rows = query_history.complete(rows)
    note = None
    if spec.history:
        rows, note = query_history.extend(conn, spec, rows, names, key_hashes)
    rows = exact_money(rows)
    totals = sum_rows(rows)
    if spec.top is not None:
        rows = exact_money(fold_top(rows, spec.group_by, spec.top, spec.sort_metric))
    return Report(spec, order_rows(rows, spec), totals, note)


def grouped_rows(conn: Connection, spec: ReportSpec, key_hashes: Sequence[str] | None = None, *, fast: bool = True) -> list[dict[str, Any]]:
    """One row per group, money in USD rounded to 1e-9: from the monthly summaries for the
    whole months of the range and the base rows for the rest (``fast``), or from the base
    rows alone. Both give the very same numbers: every sum is of whole units."""
    span = summary_span(spec) if fast else None
    if span is not None and tables_present(conn, [SUMMARY_TABLES[spec.table.name].name]):
        rows = _summary_rows(conn, spec, key_hashes, *span)
    else:
        rows = [dict(r) for r in conn.execute(build_query(spec, key_hashes)).mappings()]
    for row in rows:
        for m in MONEY:
            row[m] = usd(row[m])
    return rows


SUMMARY_GROUPS = {"month", "year", "model", "permaslug", "provider", *BREAKDOWN_DIMENSIONS}


def summary_span(spec: ReportSpec) -> tuple[str | None, str | None, list[tuple[str, str]]] | None:
    """Whole months of the spec's range (first, last; None: open) and the day ranges left
    at its edges, or None when the summaries cannot help (a group they lack, no whole month)."""
    if any(g not in SUMMARY_GROUPS for g in spec.group_by):
        return None
    edges: list[tuple[str, str]] = []
    first = last = None
    if spec.since:
        start = parse_day(spec.since)
        first = spec.since[:7] if start.day == 1 else _month_after(start).isoformat()[:7]
        if start.day != 1:
            end = _month_after(start) - timedelta(days=1)
            edges.append((spec.since, min(end.isoformat(), spec.until or end.isoformat())))
    if spec.until:
        stop = parse_day(spec.until)
        whole = (stop + timedelta(days=1)).day == 1
        last = spec.until[:7] if whole else (stop.replace(day=1) - timedelta(days=1)).isoformat()[:7]
        if not whole:
            begin = stop.replace(day=1).isoformat()
            edges.append((max(begin, spec.since or begin), spec.until))
    if first is not None and last is not None and first > last:
        return None  # no whole month inside the range
    return first, last, sorted(set(edges))


def _month_after(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _summary_rows(
    conn: Connection, spec: ReportSpec, key_hashes: Sequence[str] | None, first: str | None, last: str | None, edges: list[tuple[str, str]],
) -> list[dict[str, Any]]:
    s = SUMMARY_TABLES[spec.table.name]
    dims = [_summary_dimension(name, s).label(name) for name in spec.group_by]
    sums = {
        **{m: cast(func.sum(s.c[column]), BigInteger) for m, column in SUMMARY_MONEY.items()},
        **{m: cast(func.sum(s.c[m]), BigInteger) for m in SUMMARY_COUNTS},
        "total_tokens": cast(func.sum(s.c.prompt_tokens + s.c.completion_tokens), BigInteger),
    }
    where = _filters(spec, s, key_hashes, dates=False)
    if first:
        where.append(s.c.month >= first)
    if last:
        where.append(s.c.month <= last)
    query = select(*dims, *(sums[m].label(m) for m in METRICS)).group_by(*dims)
    rows = {tuple(r[g] for g in spec.group_by): dict(r) for r in conn.execute(query.where(*where) if where else query).mappings()}
    if edges:
        t = spec.table
        days = or_(*(and_(t.c.date >= a, t.c.date <= b) for a, b in edges))
        edge = build_query(replace(spec, since=None, until=None), key_hashes).where(days)
        for r in conn.execute(edge).mappings():
            key = tuple(r[g] for g in spec.group_by)
            if key in rows:
                for m in METRICS:
                    rows[key][m] += r[m]
            else:
                rows[key] = dict(r)
    return [{**r, **{m: int(r[m]) for m in METRICS}} for r in rows.values()]


def _summary_dimension(name: str, s: Table) -> ColumnElement[Any]:
    if name in BREAKDOWN_DIMENSIONS:
        return s.c[BREAKDOWN_SUBJECTS[name]]
    return {"month": s.c.month, "year": func.substr(s.c.month, 1, 4), "model": s.c.model,
            "permaslug": s.c.model_permaslug, "provider": s.c.provider_name}[name]


MONEY_DIGITS = 9  # amounts are rounded to 1e-9 USD: far below a cent, far above float noise


def exact_money(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Money as floats rounded to 1e-9 USD (``30.8839774``, never ``30.88397740000001``).

    SQL sums of floats carry rounding noise that differs between SQLite and PostgreSQL
    (which may also return ``Decimal``); rounding to nine decimals makes every export
    print the same digits on both.
    """
    for row in rows:
        for m in metric_names.AMOUNTS:
            if m in row:
                row[m] = None if row[m] is None else round(float(row[m]), MONEY_DIGITS)
    return rows


def sum_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals of grouped rows: exact for counts, correctly rounded (fsum) for money.

    Summing the groups avoids a second scan of the archive; the result equals SQL's own
    sum over the same rows up to float rounding, far inside a cent. Money is then rounded
    to 1e-9 USD like the rows (``exact_money``). A metric no row knows (None: a cost
    component over ``/activity`` days only) totals None; else the known values are summed.
    """
    out: dict[str, Any] = {}
    for m in (m for m in metric_names.ALL if rows and m in rows[0]):
        known = [r[m] for r in rows if r[m] is not None]
        if m in metric_names.AMOUNTS:
            out[m] = round(math.fsum(known), MONEY_DIGITS) if known else None
        else:
            out[m] = sum(known) if known or m in METRICS else None
    for m in METRICS:
        out.setdefault(m, 0.0 if m in MONEY else 0)
    return out


def fold_top(rows: list[dict[str, Any]], group_by: Sequence[str], top: int, metric: str) -> list[dict[str, Any]]:
    """Keep the ``top`` largest values of the last group (ranked by ``metric`` over all
    rows), and fold the others into one ``other`` row per value of the first group."""
    last = group_by[-1]
    ranking: dict[Any, float] = {}
    for row in rows:
        ranking[row[last]] = ranking.get(row[last], 0) + (row[metric] or 0)
    keep = set(sorted(ranking, key=lambda k: (-ranking[k], str(k)))[:top])
    kept = [r for r in rows if r[last] in keep]
    folded: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if row[last] in keep:
            continue
        key = tuple(row[g] for g in group_by[:-1])
        summed = [m for m in metric_names.ALL if m in row]
        other = folded.setdefault(key, {**dict(zip(group_by[:-1], key)), last: OTHER, **{m: 0 if m in METRICS else None for m in summed}})
        for m in summed:
            other[m] = metric_names.add(other[m], row[m])
        if "source" in row:  # reports across both sources say where each row came from
            other["source"] = row["source"] if other.get("source") in (None, row["source"]) else "both"
    return kept + list(folded.values())


def order_rows(rows: list[dict[str, Any]], spec: ReportSpec) -> list[dict[str, Any]]:
    """Chronological blocks when the first group is a time; else by the sort metric.

    Within a block the biggest comes first (``other`` always last); ``--sort group``
    orders by the group values alone, ``ascending`` flips the metric order.
    """
    groups = spec.group_by
    metric = spec.sort_metric
    sign = 1 if spec.ascending else -1

    def by_metric(row: dict[str, Any]) -> tuple[Any, ...]:
        value = row[metric]  # None (not known) after every known value
        return (row[groups[-1]] == OTHER, value is None, sign * (value or 0), tuple(str(row[g]) for g in groups))

    if spec.sort == "group":
        return sorted(rows, key=lambda r: (tuple(r[g] == OTHER for g in groups), tuple(str(r[g]) for g in groups)), reverse=False)
    if groups[0] in TIME_DIMENSIONS and spec.sort is None and len(groups) == 1:
        return sorted(rows, key=lambda r: str(r[groups[0]]))
    if groups[0] in TIME_DIMENSIONS and spec.sort is None:
        return sorted(rows, key=lambda r: (str(r[groups[0]]), *by_metric(r)))
    return sorted(rows, key=by_metric)


def time_series(conn: Connection, spec: ReportSpec, bucket: str, by: str | None = None) -> Report:
    """Spend and volume per time bucket (and per ``by`` group), with the spec's filters."""
    group_by = (bucket,) if by is None else (bucket, by)
    return run_report(conn, replace(spec, group_by=group_by, top=None, sort="group"))


def pick_bucket(since: str | None, until: str | None) -> str:
    """Days for up to three months, months beyond."""
    if since and until and (parse_day(until) - parse_day(since)).days <= 92:
        return "date"
    return "month"


def archive_range(conn: Connection, spec: ReportSpec) -> tuple[str | None, str | None]:
    """First and last day with rows among the spec's filters."""
    where = filters(spec, resolve_keys(key_names(conn), spec.keys) if spec.keys else None)
    query = select(func.min(spec.table.c.date), func.max(spec.table.c.date))
    row = conn.execute(query.where(and_(*where)) if where else query).one()
    return row[0], row[1]
