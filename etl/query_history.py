"""Reports across both sources: `/activity`'s archive, then the Analytics API's year before it.

``/activity`` serves 30 days; the Analytics API keeps about 365 (the provider series 31).
A report reaches back past the ``/activity`` archive into the analytics series for the
groups and metrics they have, and says so (a note; ``source`` in every row), rather than
silently mixing grains. Nothing is counted twice: **each day (per key, member or
workspace for those reports) is read from one source only**, the first that holds it and
can give the report's groups:

==========================  ==========================================  =====================================
report                      first: /activity's archive (its marks)      then: the Analytics API series
==========================  ==========================================  =====================================
account (date … permaslug,  ``activity`` (``archived_days``)            ``account`` (model x variant), then
variant, provider,                                                      ``provider`` (model x provider, 31
endpoint)                                                               days): for days neither gives the
                                                                        groups of, the days are left out
key / member / workspace    ``activity_by_*`` (``archived_breakdown_    ``key`` (by hash) / ``member`` (user
                            days``, per subject; ``*`` for workspaces)  id) / ``workspace`` (UUID), by model
app                         none: ``/activity`` has no app              ``app`` (by title, ``(no app)``)
==========================  ==========================================  =====================================

A series "holds" a day when ``archived_analytics_days`` marks it (an empty day is held,
never a gap). Groups a source cannot give (``endpoint`` outside ``/activity``, ``provider``
before the provider series began, ``variant`` in the per-subject and provider series,
``app`` on ``/activity`` days) are reported for the days that have them, and the note
states the days left out.

Metrics. ``usage`` ← ``credits_usage``, ``byok_usage_inference`` ← ``byok_usage``,
``requests`` ← ``request_count``, the token columns ← ``tokens_prompt``,
``tokens_completion``, ``reasoning_tokens``, ``cached_tokens`` (``total_tokens`` is prompt
+ completion on both sides). ``total_usage_incl_byok`` (the Activity page's "Spend") is
``total_usage`` on analytics days and ``usage + byok_usage_inference`` on ``/activity``
days: the only column that ever adds BYOK to credits spend. The cost components
(``usage_upstream`` …) exist in the Analytics API only: None (NULL) in rows from
``/activity``; a row marked ``both`` sums its analytics days' components only, and the
note says so. The provider series has no reasoning or cached tokens nor components: None
on its days likewise.

Models. The analytics ``model`` is the permaslug; it is mapped to the model id through the
(model, permaslug) pairs ``activity`` holds: by the variant where the series has one
(``:free`` …); in the series without a variant dimension (provider, key, member,
workspace, app) a permaslug that stands for one model id becomes it, and one that stands
for several (``x`` and ``x:free``) stays the permaslug. An unmapped permaslug stays itself.

Latency (``latency_report``): from the provider series alone, grouped by time, model,
permaslug and/or provider. Never summed: each value is the request-weighted mean of the
daily (model, provider) values the row covers, so that grouped by model and provider over one day
it is OpenRouter's own figure; a percentile over several days or models is so an
approximation (percentiles of a whole cannot be computed from the parts'), and the note
says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, inspect, select

from etl import metrics as metric_names
from etl.db import glob_matches
from etl.errors import BadArgument
from etl.schema import (
    activity,
    analytics_daily,
    analytics_labels,
    analytics_provider_daily,
    archived_analytics_days,
    archived_breakdown_days,
    archived_days,
)

if TYPE_CHECKING:
    from etl.query import Report

TIME = ("date", "week", "month", "year")
SUBJECT_GROUPS = ("key", "member", "workspace", "app")
LATENCY_GROUPS = (*TIME, "model", "permaslug", "provider")
NO_APP = "(no app)"  # the app series' subject '' (requests that named no app)
LATENCY_DIGITS = 6  # latency (ms) and throughput (tok/s) are rounded to 1e-6, like money to 1e-9 USD

# Report metric <- analytics column, for the long-range series (analytics_daily).
LONG = {
    "usage": "credits_usage",
    "byok_usage_inference": "byok_usage",
    "requests": "request_count",
    "prompt_tokens": "tokens_prompt",
    "completion_tokens": "tokens_completion",
    "reasoning_tokens": "reasoning_tokens",
    "cached_tokens": "cached_tokens",
    "total_usage_incl_byok": "total_usage",
    **{c: c for c in metric_names.COMPONENTS},
}
# ... and for the 31-day model x provider series (no reasoning or cached tokens, no components).
SHORT = {m: c for m, c in LONG.items() if c in ("credits_usage", "byok_usage", "request_count", "tokens_prompt", "tokens_completion", "total_usage")}
LATENCY_COLUMNS = {
    "avg_latency_ms": "avg_latency", "p50_latency_ms": "p50_latency", "p90_latency_ms": "p90_latency",
    "p99_latency_ms": "p99_latency", "avg_throughput_tps": "avg_throughput",
}
PAIRS = {m: c for m, c in LONG.items() if m in metric_names.NAMES}  # the base metrics (kept for callers)


@dataclass(frozen=True, eq=False)  # hashed by identity: there is one of each
class Source:
    """One analytics series as a report source: what it can group by and which metrics it has."""

    series: str
    table: Table
    groups: frozenset[str]
    metrics: dict[str, str]  # report metric -> column
    per_subject: bool = False  # held per subject (key, member, workspace); else as a whole ('*')
    has_variant: bool = False

    def __str__(self) -> str:
        return f"{self.series} series"


_ANY = frozenset((*TIME, "model", "permaslug"))
SOURCES = {
    "account": Source("account", analytics_daily, _ANY | {"variant"}, LONG, has_variant=True),
    "provider": Source("provider", analytics_provider_daily, _ANY | {"provider"}, SHORT),
    "key": Source("key", analytics_daily, _ANY | {"key"}, LONG, per_subject=True),
    "member": Source("member", analytics_daily, _ANY | {"member"}, LONG, per_subject=True),
    "workspace": Source("workspace", analytics_daily, _ANY | {"workspace"}, LONG, per_subject=True),
    "app": Source("app", analytics_daily, _ANY | {"app"}, LONG),
}


def variant(model: str) -> str:
    """The analytics ``variant`` of an ``/activity`` model id (``etl.db.model_variant`` in SQL)."""
    return model.partition(":")[2] or "standard"


_variant = variant  # the name this module used before


# -- checks (pure) -----------------------------------------------------------------------------


def check(spec: Any) -> None:
    """BadArgument for groups, filters and metrics that no source can give together."""
    unknown = [m for m in spec.metrics if m not in metric_names.ALL]
    if unknown:
        raise BadArgument(f"unknown metric {unknown[0]!r}; choose from: {', '.join(metric_names.ALL)}")
    groups = set(spec.group_by)
    if spec.latency:
        bad = sorted(groups - set(LATENCY_GROUPS)) + (["--key"] if spec.keys else [])
        if bad:
            raise BadArgument(
                f"latency and throughput are in the Analytics API's model x provider series only: group by "
                f"{', '.join(LATENCY_GROUPS)}, not {', '.join(bad)}"
            )
    if "app" in groups:
        bad = sorted(groups - _ANY - {"app"}) + (["--key"] if spec.keys else []) + (["--provider"] if spec.providers else [])
        if bad:
            raise BadArgument(f"app comes from the Analytics API's app series (by app and model only): it cannot be combined with {', '.join(bad)}")
        if not spec.history:
            raise BadArgument("app is in the Analytics API history only: report it with history=True")


# -- model ids -----------------------------------------------------------------------------------


def model_map(conn: Connection) -> dict[tuple[str, str], str]:
    """(permaslug, variant) -> model id, from the pairs ``activity`` holds (read from its
    monthly summary where there is one: the same pairs, without a scan of every row)."""
    from etl.schema import activity_monthly
    from etl.summaries import tables_present

    t = activity_monthly if tables_present(conn) else activity
    pairs = conn.execute(select(t.c.model_permaslug, t.c.model).distinct())
    return {(permaslug, variant(model)): model for permaslug, model in pairs}


def report_models(conn: Connection) -> dict[tuple[str, str], str]:
    """``model_map``, and (permaslug, "") -> the model id where the permaslug stands for exactly
    one: the mapping of the series without a variant dimension."""
    out = model_map(conn)
    ids: dict[str, set[str]] = {}
    for permaslug, model in out.items():
        ids.setdefault(permaslug[0], set()).add(model)
    return {**out, **{(permaslug, ""): next(iter(models)) for permaslug, models in ids.items() if len(models) == 1}}


def _model(names: dict[tuple[str, str], str], permaslug: str, variant_: str | None, has_variant: bool) -> str:
    if has_variant:
        return names.get((permaslug, variant_ or "standard"), permaslug)
    return names.get((permaslug, ""), permaslug)


def _group_value(name: str, day: str, model: str, permaslug: str, extra: dict[str, str] | None = None) -> str:
    if name == "date":
        return day
    if name == "month":
        return day[:7]
    if name == "year":
        return day[:4]
    if name == "week":
        year, week, _ = date.fromisoformat(day).isocalendar()
        return f"{year}-W{week:02d}"
    if name == "model":
        return model
    if name == "permaslug":
        return permaslug
    return (extra or {})[name]


def days_text(days: Iterable[str]) -> str:
    """``2025-12-01 .. 2026-10-30`` for a run of days; ``N day(s) from A to B`` otherwise."""
    ordered = sorted(set(days))
    if not ordered:
        return "no day"
    first, last = ordered[0], ordered[-1]
    if (date.fromisoformat(last) - date.fromisoformat(first)).days + 1 == len(ordered):
        return first if first == last else f"{first} .. {last}"
    return f"{len(ordered)} day(s) from {first} to {last}"


# -- rows ----------------------------------------------------------------------------------------


def complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``/activity`` rows with the EXTRA metrics: spend incl. BYOK = usage + BYOK, no components."""
    for row in rows:
        if "total_usage_incl_byok" not in row:
            row["total_usage_incl_byok"] = row["usage"] + row["byok_usage_inference"]
            row.update(dict.fromkeys(metric_names.COMPONENTS))
    return rows


class _Groups:
    """Rows by group, with the analytics values of each metric gathered and summed exactly (fsum)."""

    def __init__(self, group_by: Sequence[str], rows: list[dict[str, Any]]):
        self.group_by = tuple(group_by)
        self.rows = rows
        self.by_key = {tuple(r[g] for g in self.group_by): r for r in rows}
        self.parts: dict[int, dict[str, list[Any]]] = {}

    def add(self, key: tuple[str, ...], values: dict[str, Any]) -> None:
        row = self.by_key.get(key)
        if row is None:
            row = self.by_key[key] = {**dict(zip(self.group_by, key)), **dict.fromkeys(metric_names.NAMES + metric_names.EXTRA), "source": "analytics"}
            self.rows.append(row)
        elif row.get("source", "activity") == "activity":
            row["source"] = "both"
        parts = self.parts.setdefault(id(row), {})
        for metric, value in values.items():
            if value is not None:
                parts.setdefault(metric, []).append(value)

    def finish(self) -> list[dict[str, Any]]:
        """The rows with their sums; each with its ``source`` once any analytics value was added."""
        if self.parts or any("source" in r for r in self.rows):
            for row in self.rows:
                row.setdefault("source", "activity")
        for row in self.rows:
            for metric, values in self.parts.get(id(row), {}).items():
                total = math.fsum(values) if metric in metric_names.AMOUNTS else sum(values)
                row[metric] = metric_names.add(row[metric], total)
        return self.rows


def _held(conn: Connection, series: str, spec: Any) -> set[tuple[str, str]]:
    """(subject, day) pairs the series marks as archived, within the report's range."""
    t = archived_analytics_days
    query = _in_range(select(t.c.subject, t.c.date).where(t.c.series == series), t, spec)
    return {(s, d) for s, d in conn.execute(query)}


def _in_range(query: Any, t: Table, spec: Any) -> Any:
    """``query`` limited to the report's days (inclusive)."""
    if spec.since:
        query = query.where(t.c.date >= spec.since)
    if spec.until:
        query = query.where(t.c.date <= spec.until)
    return query


def _primary(conn: Connection, spec: Any, breakdown: str | None) -> set[tuple[str, str]]:
    """(subject, day) pairs ``/activity``'s archive holds: ('*', day) for the account."""
    if breakdown is None:
        t: Table = archived_days
        query = select(t.c.date)
    else:
        t = archived_breakdown_days
        query = select(t.c.subject, t.c.date).where(t.c.breakdown == breakdown)
    query = _in_range(query, t, spec)
    if breakdown is None:
        return {("*", d) for (d,) in conn.execute(query)}
    return {(s, d) for s, d in conn.execute(query)}


def _labels(conn: Connection, series: str) -> dict[str, str]:
    t = analytics_labels
    return {s: label for s, label in conn.execute(select(t.c.subject, t.c.label).where(t.c.series == series))}


def _read(conn: Connection, source: Source, spec: Any, take: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The source's rows of the (subject, day) pairs in ``take`` ('*' for a whole series)."""
    t = source.table
    days = sorted({d for _, d in take})
    if not days:
        return []
    columns = [t.c.date, t.c.model, *(t.c[c] for c in source.metrics.values())]
    if t is analytics_provider_daily:
        query = select(*columns, t.c.provider)
    else:
        query = select(*columns, t.c.subject, t.c.variant).where(t.c.series == source.series)
    query = query.where(t.c.date >= days[0], t.c.date <= days[-1]).order_by(*t.primary_key.columns)
    out = []
    for r in conn.execute(query).mappings():
        subject = r["subject"] if source.per_subject else "*"
        if (subject, r["date"]) in take:
            out.append(dict(r))
    return out


def extend(
    conn: Connection, spec: Any, rows: list[dict[str, Any]], key_names: dict[str, str] | None = None,
    key_hashes: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """``rows`` (from ``/activity``'s archive) plus the analytics history of the days it lacks; and a note."""
    if not inspect(conn).has_table(analytics_daily.name):
        return rows, None
    breakdown = spec.breakdown  # key, member or workspace (from a group or --key)
    if "app" in spec.group_by:
        family, primary = "app", set()
        candidates = [SOURCES["app"]]
        # Days held elsewhere that no app series gives: /activity's, and the account series'.
        activity_days = {d for _, d in _primary(conn, spec, None) | _held(conn, "account", spec)}
    elif breakdown:
        family, primary = breakdown, _primary(conn, spec, breakdown)
        candidates = [SOURCES[breakdown]]
        activity_days = set()
    else:
        family, primary = "account", _primary(conn, spec, None)
        candidates = [SOURCES["account"], SOURCES["provider"]]
        activity_days = set()
    needed = set(spec.group_by) | ({"provider"} if spec.providers else set())
    if family == "workspace":  # one request covers every workspace: its marks have subject '*'
        covered = {d for _, d in primary}
        primary_has = lambda subject, day: day in covered  # noqa: E731
    else:
        primary_has = lambda subject, day: (subject, day) in primary  # noqa: E731

    taken: set[tuple[str, str]] = set()  # (subject, day) read from some analytics series
    used: list[tuple[Source, set[tuple[str, str]]]] = []
    unable: dict[Source, set[str]] = {}
    for source in candidates:
        held = {(s, d) for s, d in _held(conn, source.series, spec) if not primary_has(s, d)}
        if key_hashes is not None and source.series == "key":
            held = {(s, d) for s, d in held if s in set(key_hashes)}
        fresh = {(s, d) for s, d in held if (s, d) not in taken}
        if not needed <= source.groups:
            unable[source] = {d for _, d in fresh}
            continue
        taken |= fresh
        if fresh:
            used.append((source, fresh))
    left_out = {d for days in unable.values() for d in days} - {d for _, d in taken}
    if family == "app":  # /activity's days that the app series does not hold
        left_out |= activity_days - {d for _, d in taken}

    names = report_models(conn) if used else {}
    labels = _labels(conn, family) if family in ("key",) and used else {}
    groups = _Groups(spec.group_by, rows)
    seen_days: dict[str, set[str]] = {}
    for source, take in used:
        for r in _read(conn, source, spec, take):
            model = _model(names, r["model"], r.get("variant"), source.has_variant)
            if spec.models and not any(glob_matches(model, p) for p in spec.models):
                continue
            provider = r.get("provider")
            if spec.providers and not (provider is not None and any(glob_matches(provider, p) for p in spec.providers)):
                continue
            extra = {"variant": r.get("variant") or "standard", "provider": provider or ""}
            if family == "key":  # the key's current name (api_keys), else its label as the API gave it, else the hash
                extra["key"] = (key_names or {}).get(r["subject"]) or labels.get(r["subject"]) or r["subject"]
            elif source.per_subject or family == "app":
                extra[family] = r["subject"] or NO_APP
            key = tuple(_group_value(g, r["date"], model, r["model"], extra) for g in spec.group_by)
            values = {m: r[c] for m, c in source.metrics.items()}
            tokens = [values.get("prompt_tokens"), values.get("completion_tokens")]
            values["total_tokens"] = sum(t for t in tokens if t is not None)
            groups.add(key, values)
            seen_days.setdefault(source.series, set()).add(r["date"])
    rows = groups.finish()
    return rows, _note(spec, used, seen_days, left_out, unable, needed, family, any(r.get("source") == "both" for r in rows))


def _note(spec: Any, used: list[tuple[Source, set[tuple[str, str]]]], seen: dict[str, set[str]], left_out: set[str],
          unable: dict[Source, set[str]], needed: set[str], family: str, mixed: bool) -> str | None:
    """What came from where, and what was left out (None when the history added nothing and left nothing out)."""
    details = {
        "account": "account series: no endpoint or provider detail",
        "provider": "provider series: no endpoint detail, no reasoning or cached tokens, no cost components",
        "key": "per-key series: keys by hash, shown by their current name",
        "member": "per-member series",
        "workspace": "per-workspace series",
        "app": "app series: apps by title",
    }
    parts = [f"{days_text(d for _, d in take)} come from the Analytics API history ({details[source.series]})"
             for source, take in used if take and seen.get(source.series)]
    if left_out and family == "app":
        parts.append(f"{days_text(left_out)}: the archive holds them (/activity, the account series) but the app series does not "
                     "(apps are in the Analytics API's app series only: add \"app\" to [sync] analytics_series): those days are left out")
    elif left_out:
        missing = sorted({g for s in unable for g in needed - s.groups})
        grouped = [g for g in missing if g in spec.group_by]
        what = " and ".join(([f"group {', '.join(grouped)}"] if grouped else []) + (["a provider filter"] if "provider" in missing and "provider" not in grouped else []))
        parts.append(f"{days_text(left_out)} are in the Analytics API history only, which cannot give {what or 'these groups'}: those days are left out")
    if not parts:
        return None
    if used and seen:
        asked = [m for m in spec.columns if m in metric_names.COMPONENTS]
        if asked:
            parts.append(f"{', '.join(asked)}: in the Analytics API only, NULL in rows from /activity"
                         + (", and rows marked both sum their analytics days only" if mixed else ""))
        if seen.get("provider"):
            parts.append("reasoning and cached tokens: none from the provider series' days")
        parts.append("`source` in CSV and JSON says which rows")
    return "; ".join(parts)


# -- latency -------------------------------------------------------------------------------------


def latency_report(conn: Connection, spec: Any) -> Report:
    """Latency and throughput per group from the provider series: request-weighted means, never sums."""
    from etl.query import OTHER, Report, order_rows

    rows: list[dict[str, Any]] = []
    note = None
    if inspect(conn).has_table(analytics_provider_daily.name):
        t = analytics_provider_daily
        query = select(t.c.date, t.c.model, t.c.provider, t.c.request_count, *(t.c[c] for c in LATENCY_COLUMNS.values())).order_by(
            *t.primary_key.columns)
        query = _in_range(query, t, spec)
        names = report_models(conn)
        acc: dict[tuple[str, ...], dict[str, Any]] = {}
        days: set[str] = set()
        for r in conn.execute(query).mappings():
            model = _model(names, r["model"], None, False)
            if spec.models and not any(glob_matches(model, p) for p in spec.models):
                continue
            if spec.providers and not any(glob_matches(r["provider"], p) for p in spec.providers):
                continue
            key = tuple(_group_value(g, r["date"], model, r["model"], {"provider": r["provider"]}) for g in spec.group_by)
            a = acc.setdefault(key, {"requests": 0, **{m: [] for m in metric_names.LATENCY}})
            a["requests"] += r["request_count"]
            for metric, column in LATENCY_COLUMNS.items():
                a[metric].append((r[column], r["request_count"]))
            days.add(r["date"])
        rows = [_latency_row(spec.group_by, key, a) for key, a in acc.items()]
        if days:
            note = (f"latency and throughput: {days_text(days)} from the Analytics API's provider series (OpenRouter keeps them "
                    "31 days; the archive keeps every day it fetched); each value is the request-weighted mean of the daily "
                    "model x provider values, never a sum (a percentile over several days or models is so an approximation); "
                    "`source` in CSV and JSON")
            first = min(days)
            if spec.since and spec.since < first:
                note += f"; {spec.since} .. {first} has no latency archived"
    totals = _latency_totals(rows)
    if spec.top is not None:
        rows = _fold_latency(rows, spec, OTHER)
    for row in rows:
        row.pop("_pairs", None)
    return Report(spec, order_rows(rows, spec), totals, note)


def _latency_row(group_by: Sequence[str], key: tuple[str, ...], a: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {**dict(zip(group_by, key)), "requests": a["requests"]}
    for metric in metric_names.LATENCY:
        row[metric] = _mean(a[metric])
    row["source"] = "analytics"
    row["_pairs"] = {m: a[m] for m in metric_names.LATENCY}
    row["_acc"] = {m: _acc(a[m]) for m in metric_names.LATENCY}
    return row


def _acc(pairs: list[tuple[float | None, int]]) -> tuple[float, int]:
    """(sum of value x requests, sum of requests) over the pairs with a value and requests."""
    known = [(v, w) for v, w in pairs if v is not None and w]
    return math.fsum(v * w for v, w in known), sum(w for _, w in known)


def _mean(pairs: Iterable[tuple[float | None, int]]) -> float | None:
    value = metric_names.weighted(pairs)
    return None if value is None else round(value, LATENCY_DIGITS)


def combine(rows: Sequence[dict[str, Any]], metric: str) -> float | int | None:
    """``metric`` over several rows of a report: a sum, or for latency the request-weighted mean."""
    if metric in metric_names.LATENCY:
        accs = [r["_acc"][metric] for r in rows if "_acc" in r]
        total = sum(w for _, w in accs)
        return round(math.fsum(s for s, _ in accs) / total, LATENCY_DIGITS) if total else None
    value: float | int | None = None
    for r in rows:
        value = metric_names.add(value, r[metric])
    return value


def _latency_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {"requests": sum(r["requests"] for r in rows)}
    for metric in metric_names.LATENCY:
        totals[metric] = _mean(p for r in rows for p in r["_pairs"][metric])
    return totals


def _fold_latency(rows: list[dict[str, Any]], spec: Any, other_name: str) -> list[dict[str, Any]]:
    """The ``top`` values of the last group (by the sort metric over all rows); the rest one ``other`` row per first group."""
    last = spec.group_by[-1]
    metric = spec.sort_metric
    by_value: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_value.setdefault(r[last], []).append(r)
    ranking = {v: combine(rs, metric) or 0 for v, rs in by_value.items()}
    keep = set(sorted(ranking, key=lambda v: (-ranking[v], str(v)))[: spec.top])
    kept = [r for r in rows if r[last] in keep]
    folded: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r[last] not in keep:
            folded.setdefault(tuple(r[g] for g in spec.group_by[:-1]), []).append(r)
    for key, rs in folded.items():
        pairs = {m: [p for r in rs for p in r["_pairs"][m]] for m in metric_names.LATENCY}
        kept.append(_latency_row(spec.group_by, (*key, other_name), {"requests": sum(r["requests"] for r in rs), **pairs}))
    return kept
