"""Read side: grouped aggregates over the archive, built with SQLAlchemy Core.

Usable from a notebook as well as from the CLI::

    from etl.query import ReportSpec, run_report
    with engine.connect() as conn:
        report = run_report(conn, ReportSpec(group_by=("month", "model"), since="2026-01-01"))

Spend (``usage``, USD from OpenRouter credits) and BYOK spend (``byok_usage_inference``,
estimated USD of bring-your-own-key inference, not charged by OpenRouter) are always
separate columns; nothing here adds them together. Totals are the exact (``math.fsum``)
sum of the groups, so they agree with a hand-written ``SELECT sum(usage) …`` far inside a
cent without a second scan of the archive.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Float, Select, Table, and_, cast, func, or_, select

from etl import metrics as metric_names
from etl.db import glob_match, iso_week
from etl.errors import BadArgument
from etl.schema import BREAKDOWN_SUBJECTS, BREAKDOWN_TABLES, activity, api_keys

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


def _money(expr: ColumnElement[Any]) -> ColumnElement[float]:
    return cast(func.coalesce(func.sum(expr), 0.0), Float)


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

    def __post_init__(self) -> None:
        if not 1 <= len(self.group_by) <= 2:
            raise BadArgument("group by one or two of: " + ", ".join(DIMENSIONS))
        for name in self.group_by:
            if name not in DIMENSIONS:
                raise BadArgument(f"unknown group {name!r}; choose from: {', '.join(DIMENSIONS)}")
        if len(set(self.group_by)) != len(self.group_by):
            raise BadArgument(f"group {self.group_by[0]!r} given twice")
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None:
                parse_day(value, name)
        if self.since and self.until and self.since > self.until:
            raise BadArgument(f"the range is inverted: since {self.since} is after until {self.until}")
        if self.top is not None and self.top < 1:
            raise BadArgument("top must be at least 1")
        if self.sort is not None and self.sort != "group" and self.sort not in METRICS:
            raise BadArgument(f"unknown sort {self.sort!r}; choose 'group' or one of: {', '.join(METRICS)}")
        split = {g for g in self.group_by if g in BREAKDOWN_DIMENSIONS} | ({"key"} if self.keys else set())
        if len(split) > 1:
            raise BadArgument(f"{' and '.join(sorted(split))} come from different breakdowns; use one of them at a time")

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
    def sort_metric(self) -> str:
        return self.sort if self.sort in METRICS else "usage"


@dataclass
class Report:
    spec: ReportSpec
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # what the report could not say, or where rows came from

    @property
    def columns(self) -> list[str]:
        sourced = bool(self.rows) and "source" in self.rows[0]
        return [*self.spec.group_by, *METRICS, *(["source"] if sourced else [])]


# -- parsing helpers (pure) ---------------------------------------------------------------


def parse_day(value: str, what: str = "date") -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadArgument(f"{what}: expected a date as YYYY-MM-DD, got {value!r}") from None


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


def filters(spec: ReportSpec, key_hashes: Sequence[str] | None = None) -> list[ColumnElement[bool]]:
    t = spec.table
    where: list[ColumnElement[bool]] = []
    if spec.since:
        where.append(t.c.date >= spec.since)
    if spec.until:
        where.append(t.c.date <= spec.until)
    if spec.models:
        where.append(_pattern(t.c.model, spec.models))
    if spec.providers:
        where.append(_pattern(t.c.provider_name, spec.providers))
    if key_hashes is not None:
        where.append(t.c.api_key_hash.in_(list(key_hashes)))
    return where


def dimension(name: str, table: Table) -> ColumnElement[Any]:
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
    hashes = [h for h, name in names.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    if not hashes:
        known = ", ".join(sorted(names.values())) or "none archived yet (enable [sync] breakdowns = [\"key\"])"
        raise BadArgument(f"no API key matches {', '.join(patterns)}; known keys: {known}")
    return hashes


def run_report(conn: Connection, spec: ReportSpec) -> Report:
    names = key_names(conn) if spec.breakdown == "key" else {}
    key_hashes = resolve_keys(names, spec.keys) if spec.keys else None
    rows = [dict(r) for r in conn.execute(build_query(spec, key_hashes)).mappings()]
    if "key" in spec.group_by:  # rows show the key's name, not its hash
        for row in rows:
            row["key"] = names.get(row["key"], row["key"])
    note = None
    if spec.history:
        from etl.query_history import extend

        rows, note = extend(conn, spec, rows, tuple(METRICS))
    rows = exact_money(rows)
    totals = sum_rows(rows)
    if spec.top is not None:
        rows = exact_money(fold_top(rows, spec.group_by, spec.top, spec.sort_metric))
    return Report(spec, order_rows(rows, spec), totals, note)


MONEY_DIGITS = 9  # amounts are rounded to 1e-9 USD: far below a cent, far above float noise


def exact_money(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Money as floats rounded to 1e-9 USD (``30.8839774``, never ``30.88397740000001``).

    SQL sums of floats carry rounding noise that differs between SQLite and PostgreSQL
    (which may also return ``Decimal``); rounding to nine decimals makes every export
    print the same digits on both.
    """
    for row in rows:
        for m in MONEY:
            row[m] = round(float(row[m]), MONEY_DIGITS)
    return rows


def sum_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals of grouped rows: exact for counts, correctly rounded (fsum) for money.

    Summing the groups avoids a second scan of the archive; the result equals SQL's own
    sum over the same rows up to float rounding, far inside a cent. Money is then rounded
    to 1e-9 USD like the rows (``exact_money``).
    """
    return {m: round(math.fsum(r[m] for r in rows), MONEY_DIGITS) if m in MONEY else sum(r[m] for r in rows) for m in METRICS}


def fold_top(rows: list[dict[str, Any]], group_by: Sequence[str], top: int, metric: str) -> list[dict[str, Any]]:
    """Keep the ``top`` largest values of the last group (ranked by ``metric`` over all
    rows), and fold the others into one ``other`` row per value of the first group."""
    last = group_by[-1]
    ranking: dict[Any, float] = {}
    for row in rows:
        ranking[row[last]] = ranking.get(row[last], 0) + row[metric]
    keep = set(sorted(ranking, key=lambda k: (-ranking[k], str(k)))[:top])
    kept = [r for r in rows if r[last] in keep]
    folded: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if row[last] in keep:
            continue
        key = tuple(row[g] for g in group_by[:-1])
        other = folded.setdefault(key, {**dict(zip(group_by[:-1], key)), last: OTHER, **{m: 0 for m in METRICS}})
        for m in METRICS:
            other[m] += row[m]
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
        return (row[groups[-1]] == OTHER, sign * row[metric], tuple(str(row[g]) for g in groups))

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
