"""The stand-in's Analytics API: ``GET /analytics/meta`` and ``POST /analytics/query``.

Served from the same `Dataset` as ``/activity``: every analytics figure is a sum over
*facts*, one per (day, API key, endpoint) row that ``/activity?api_key_hash=`` lists, so
that per day and model ``credits_usage`` equals the sum of ``usage``, ``byok_usage`` of
``byok_usage_inference``, ``request_count`` of ``requests`` and the token metrics of the
``_tokens`` columns. Each fact belongs to one app (or none) and, through its key, to one
member (the key's creator) and one workspace.

What the live API does, as observed of it and as served here (the README's "A year of
history: the Analytics API" says what the archive makes of it): at most 2 dimensions and 20 filters (400 beyond); ``limit`` up to 10,000 (default
1,000) with ``metadata.truncated`` when rows were cut; long-range metrics and dimensions
for 365 completed days, provider and per-request ones (latency, throughput) for 31, and a
400 for a range beyond that; dimensions ``api_key_id``, ``user``, ``workspace`` and ``app``
come back as display labels while filters take raw ids; an unknown filter id gives zero
rows and a ``warnings`` entry; 64 requests a minute, 429 with ``Retry-After`` beyond.
Quirks on request (constructor options): counts as strings, ``null`` for cost components
that do not apply. ``skew()`` makes the two sources disagree, for reconciliation tests.

Simplifications (documented, not hidden): the time axis is days (granularity ``day``,
``week``, ``month`` or none; ``minute`` is a 400 here), ``time_range.end`` is exclusive,
today is not served by day (it has not completed), and latency and throughput of a group
are request-weighted means of per-endpoint daily figures. Granularity ``hour`` serves the
current UTC day only (a range starting before today is a 400 here): today's partial spend,
the first half of the day's traffic spread evenly over hours 00-11 whatever the clock
says, as ``/credits`` counts half of today; money is 1/24 of the day per hour, counts an
even integer split.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from collections.abc import Callable, Iterable

from etl.standin.data import BYOK_PROVIDERS, Dataset, stable_int, stable_rng

__all__ = [
    "APP_TITLES",
    "COUNT_METRICS",
    "LONG_DIMENSIONS",
    "LONG_METRICS",
    "LONG_RANGE_DAYS",
    "SHORT_DIMENSIONS",
    "SHORT_METRICS",
    "SHORT_RANGE_DAYS",
    "Analytics",
    "QueryError",
    "variant_of",
]

LONG_RANGE_DAYS = 365
SHORT_RANGE_DAYS = 31
MAX_DIMENSIONS = 2
MAX_FILTERS = 20
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
RATE_LIMIT = 64
RATE_WINDOW = 60.0

MONEY_METRICS = (
    "total_usage",
    "credits_usage",
    "byok_usage",
    "usage_upstream",
    "usage_cache",
    "usage_data",
    "usage_web",
    "usage_upstream_web",
)
COUNT_METRICS = (
    "request_count",
    "byok_request_count",
    "tokens_prompt",
    "tokens_completion",
    "tokens_total",
    "reasoning_tokens",
    "cached_tokens",
)
LONG_METRICS = MONEY_METRICS + COUNT_METRICS
# Components that may not apply to a request: `null` rather than 0 when asked to.
NULLABLE_COMPONENTS = ("usage_cache", "usage_data", "usage_web", "usage_upstream_web")
SHORT_SUMMED = ("openrouter_usage", "byok_fees")
LATENCY_METRICS = ("avg_latency", "p50_latency", "p90_latency", "p99_latency")
THROUGHPUT_METRICS = ("avg_throughput",)
SHORT_METRICS = SHORT_SUMMED + LATENCY_METRICS + THROUGHPUT_METRICS
RATE_METRICS = ("cache_hit_rate",)  # long-range, averaged (is_rate)
LONG_DIMENSIONS = ("model", "variant", "api_key_id", "user", "workspace", "app")
SHORT_DIMENSIONS = ("provider",)
OPERATORS = {"eq": "scalar", "neq": "scalar", "gt": "scalar", "gte": "scalar", "lt": "scalar", "lte": "scalar", "in": "array", "not_in": "array"}
GRANULARITIES = ("day", "week", "month")
PARTIAL_HOURS = 12  # the hours of today served (granularity "hour"), each 1/24 of the day

# Titles as apps announce themselves (HTTP-Referer / X-Title); deliberately not unique.
APP_TITLES = ("Cline", "Roo Code", "SillyTavern", "Open WebUI", "LibreChat", "Aider", "Continue", "Zed", "Internal tool", "Internal tool")
_FIRST_APP_ID = 4100


class QueryError(Exception):
    """A request the live API refuses: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def variant_of(model_slug: str) -> str:
    """The analytics `variant` of an /activity model id: its `:suffix`, else "standard"."""
    return model_slug.partition(":")[2] or "standard"


@dataclass(frozen=True)
class Fact:
    """One (day, key, endpoint) row of /activity, with what analytics adds to it."""

    day: date
    key_index: int
    endpoint_id: str
    dims: dict[str, Any]  # raw ids: model, variant, api_key_id (hash), user, workspace, app (int | None), provider
    values: dict[str, Any]  # every metric, plus the "_latency_*" inputs


@dataclass
class _Skew:
    day: date
    model: str
    metric: str
    delta: float


@dataclass
class Analytics:
    """The analytics view of a `Dataset`, and the HTTP-independent query engine."""

    dataset: Dataset
    apps: int = 10
    string_counts: bool = False
    null_components: bool = False
    rate_limit: int = RATE_LIMIT
    rate_window: float = RATE_WINDOW
    clock: Callable[[], float] = time.monotonic
    # How far back the data reaches (the live API says "about" 365 and 31 days).
    long_reach: int = LONG_RANGE_DAYS
    short_reach: int = SHORT_RANGE_DAYS
    served: int = 0  # queries and meta answered (not 429)
    rate_limited: int = 0  # 429s answered
    max_in_window: int = 0  # the most requests accepted within any `rate_window`
    _starts: deque[float] = field(default_factory=deque)
    _skews: list[_Skew] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _facts: dict[tuple[date, int], list[Fact]] = field(default_factory=dict)
    _index: dict[tuple[int, str], tuple[list[Fact], dict[str, list[Fact]]]] = field(default_factory=dict)
    _rows: dict[tuple[Any, ...], list[dict[str, Any]]] = field(default_factory=dict)
    _answers: dict[tuple[Any, ...], bytes] = field(default_factory=dict)

    # ---------------------------------------------------------------- knobs

    def skew(self, day: date, model: str, metric: str = "credits_usage", delta: float = 0.5) -> None:
        """From now on, analytics reports `metric` of (`day`, `model` permaslug) off by `delta`."""
        if metric not in LONG_METRICS:
            raise ValueError(f"cannot skew {metric!r}")
        with self._lock:
            self._skews.append(_Skew(day, model, metric, delta))

    def app_ids(self) -> list[int]:
        return [_FIRST_APP_ID + i for i in range(self.apps)]

    def app_title(self, app_id: int) -> str:
        return APP_TITLES[(app_id - _FIRST_APP_ID) % len(APP_TITLES)] if self.apps else ""

    def user_label(self, user_id: str) -> str:
        return f"member{self.dataset.user_ids.index(user_id) + 1}@example.com"

    def workspace_label(self, workspace_id: str) -> str:
        index = self.dataset.workspace_ids.index(workspace_id)
        return "Default Workspace" if index == 0 else f"Workspace {index + 1}"

    # ---------------------------------------------------------------- rate limit

    def forget_requests(self) -> None:
        """Start a new rate-limit window, as a minute later would (benchmarks: each run alone)."""
        with self._lock:
            self._starts.clear()

    def admit(self) -> None:
        """Count a request against the limit; raise a 429 QueryError when beyond it."""
        with self._lock:
            now = self.clock()
            while self._starts and self._starts[0] <= now - self.rate_window:
                self._starts.popleft()
            if len(self._starts) >= self.rate_limit:
                self.rate_limited += 1
                wait = max(0.001, self._starts[0] + self.rate_window - now)
                retry_after = str(max(1, math.ceil(wait))) if self.rate_window >= 1 else f"{wait:.3f}"
                raise QueryError(429, "Rate limit exceeded", {"Retry-After": retry_after})
            self._starts.append(now)
            self.served += 1
            self.max_in_window = max(self.max_in_window, len(self._starts))

    # ---------------------------------------------------------------- facts

    def facts(self, day: date) -> list[Fact]:
        """Every fact of `day`, in key then endpoint order (so float sums are reproducible)."""
        # Cached per (day, revision); an amended dataset is recomputed every time (rare, small).
        cacheable = not self.dataset._amendments
        slot = (day, self.dataset.revision(day))
        if cacheable:
            with self._lock:
                hit = self._facts.get(slot)
            if hit is not None:
                return hit
        out = []
        seed = self.dataset.seed
        for key in self.dataset.api_keys:
            for item in self.dataset.activity(day, api_key_hash=key.hash):
                app_slot = stable_int(seed, day.isoformat(), key.hash, item["endpoint_id"], "app") % (self.apps + 1)
                app = _FIRST_APP_ID + app_slot if app_slot < self.apps else None
                dims = {
                    "model": item["model_permaslug"],
                    "variant": variant_of(item["model"]),
                    "api_key_id": key.hash,
                    "user": key.creator_user_id,
                    "workspace": key.workspace_id,
                    "app": app,
                    "provider": item["provider_name"],
                }
                out.append(Fact(day, key.index, item["endpoint_id"], dims, self._values(day, item)))
        if cacheable:
            with self._lock:
                if len(self._facts) > 5_000:
                    self._facts.clear()
                self._facts[slot] = out
        return out

    def _indexed(self, day: date, name: str) -> dict[str, list[Fact]]:
        """The facts of `day` by their value of dimension `name` (as text, the way filters compare)."""
        facts = self.facts(day)
        slot = (id(facts), name)
        with self._lock:
            hit = self._index.get(slot)
            if hit is not None and hit[0] is facts:
                return hit[1]
        index: dict[str, list[Fact]] = {}
        for fact in facts:
            value = fact.dims.get(name)
            index.setdefault("" if value is None else str(value), []).append(fact)
        with self._lock:
            if len(self._index) > 20_000:
                self._index.clear()
            self._index[slot] = (facts, index)
        return index

    def _values(self, day: date, item: dict[str, Any]) -> dict[str, Any]:
        usage, byok = item["usage"], item["byok_usage_inference"]
        is_byok = item["provider_name"] in BYOK_PROVIDERS
        requests = item["requests"]
        cached = item.get("cached_tokens")
        rng = stable_rng(self.dataset.seed, day.isoformat(), item["endpoint_id"], "analytics")
        # A data-policy discount on some rows: the one component that can be negative.
        data = -round(usage * 0.01, 10) if not is_byok and rng.random() < 0.15 else None
        values: dict[str, Any] = {
            "total_usage": usage + byok,
            "credits_usage": usage,
            "byok_usage": byok,
            "usage_upstream": byok if is_byok else usage,
            "usage_cache": round(-usage * 0.02, 10) if cached else None,
            "usage_data": data,
            "usage_web": None,
            "usage_upstream_web": None,
            "request_count": requests,
            "byok_request_count": requests if is_byok else 0,
            "tokens_prompt": item["prompt_tokens"],
            "tokens_completion": item["completion_tokens"],
            "tokens_total": item["prompt_tokens"] + item["completion_tokens"],
            "reasoning_tokens": item["reasoning_tokens"],
            "cached_tokens": cached or 0,
            "openrouter_usage": 0.0 if is_byok else usage,
            "byok_fees": usage if is_byok else 0.0,
        }
        # Latency is a property of the endpoint on the day (all keys see the same provider).
        lat = stable_rng(self.dataset.seed, day.isoformat(), item["endpoint_id"], "latency")
        p50 = round(lat.uniform(300, 2500), 1)
        values["_lat"] = (round(p50 * lat.uniform(1.05, 1.3), 1), p50, round(p50 * lat.uniform(1.6, 2.4), 1), round(p50 * lat.uniform(2.6, 4.5), 1))
        values["_tput"] = round(lat.uniform(20, 180), 2)
        return values

    # ---------------------------------------------------------------- query

    def meta(self) -> dict[str, Any]:
        def metric(name: str, fmt: str, rate: bool = False) -> dict[str, Any]:
            return {"name": name, "display_label": name.replace("_", " ").title(), "is_rate": rate, "display_format": fmt}

        metrics = [metric(m, "currency") for m in MONEY_METRICS + SHORT_SUMMED]
        metrics += [metric(m, "number") for m in COUNT_METRICS]
        metrics += [metric(m, "latency") for m in LATENCY_METRICS] + [metric(m, "throughput") for m in THROUGHPUT_METRICS]
        metrics += [metric(m, "percent", True) for m in RATE_METRICS]
        dims = [{"name": d, "display_label": d.replace("_", " ").title()} for d in LONG_DIMENSIONS + SHORT_DIMENSIONS]
        return {
            "data": {
                "metrics": metrics,
                "dimensions": dims,
                "operators": [{"name": n, "value_type": t} for n, t in OPERATORS.items()],
                "granularities": [{"name": g, "display_label": g.title()} for g in ("minute", "hour", *GRANULARITIES)],
            }
        }

    def query(self, body: Any, today: date) -> dict[str, Any]:
        """The answer to one query body (a parsed JSON object), or QueryError."""
        started = time.perf_counter()
        q = _parse(body, today, self.long_reach, self.short_reach)
        warnings = self._unresolved(q.filters)
        if q.granularity == "day":
            rows = [row for day in iter_days(q.first, q.end) for row in self._day_rows(q, day)]
        else:
            groups: dict[tuple[Any, ...], list[Fact]] = {}
            for day in iter_days(q.first, q.end):
                for fact in self._matching(q, day):
                    groups.setdefault((_bucket(day, q.granularity), *(fact.dims[d] for d in q.dimensions)), []).append(fact)
            rows = [self._row(q, group, facts) for group, facts in groups.items()]
        if q.granularity == "hour":
            rows = [hourly for row in rows for hourly in _hours(row, q)]
        rows = _order(rows, q)
        truncated = len(rows) > q.limit
        rows = rows[: q.limit]
        answer: dict[str, Any] = {
            "data": rows,
            "metadata": {"query_time_ms": round((time.perf_counter() - started) * 1000, 1), "row_count": len(rows), "truncated": truncated},
            "cachedAt": None,
        }
        if warnings:
            answer["warnings"] = warnings
        return {"data": answer}

    def encoded(self, body: Any, today: date) -> bytes:
        """``query`` as the bytes sent, kept for the same query, day and data (or QueryError).

        A server answers the same query over unchanged data from its cache; here that keeps
        the stand-in's own encoding (megabytes for a year of keys) off the cores the client
        under test runs on (``scripts/bench_history.py``). Skews, amendments and revisions
        change the key or are never kept. ``query_time_ms`` is the first answer's.
        """
        cacheable = not self._skews and not self.dataset._amendments
        slot = (json.dumps(body, sort_keys=True, default=str), today, self.string_counts, self.null_components, self.apps,
                self.long_reach, self.short_reach, self.dataset.revisions())
        if cacheable:
            with self._lock:
                hit = self._answers.get(slot)
            if hit is not None:
                return hit
        answer = encode(self.query(body, today))
        if cacheable:
            with self._lock:
                if sum(map(len, self._answers.values())) > 200 * 2**20:
                    self._answers.clear()
                self._answers[slot] = answer
        return answer

    def _matching(self, q: _Query, day: date) -> list[Fact]:
        # An `eq` filter narrows the day to the facts of that value (the usual per-subject query).
        narrow = next((f for f in q.filters if f["operator"] == "eq"), None)
        facts = self.facts(day) if narrow is None else self._indexed(day, narrow["field"]).get(str(narrow["value"]), [])
        return [fact for fact in facts if all(_matches(fact.dims.get(f["field"]), f) for f in q.filters)]

    def _day_rows(self, q: _Query, day: date) -> list[dict[str, Any]]:
        """One day's rows of a query by day: computed once per (day, revision, query shape) and kept.

        The answers are a pure function of the deterministic account, so a year asked again
        (every round of a benchmark, a backfill) costs the encoding only, as a server's
        cache would. Skews and amendments (tests) are never cached. The rows are shared:
        callers only read them.
        """
        cacheable = not self._skews and not self.dataset._amendments
        shape = (day, self.dataset.revision(day), tuple(q.dimensions), tuple(q.metrics), json.dumps(q.filters, sort_keys=True),
                 self.string_counts, self.null_components)
        if cacheable:
            with self._lock:
                hit = self._rows.get(shape)
            if hit is not None:
                return hit
        groups: dict[tuple[Any, ...], list[Fact]] = {}
        for fact in self._matching(q, day):
            groups.setdefault((day, *(fact.dims[d] for d in q.dimensions)), []).append(fact)
        rows = [self._row(q, group, facts) for group, facts in groups.items()]
        if cacheable:
            with self._lock:
                if len(self._rows) > 50_000:
                    self._rows.clear()
                self._rows[shape] = rows
        return rows

    def _unresolved(self, filters: list[dict[str, Any]]) -> list[str]:
        known: dict[str, set[Any]] = {
            "api_key_id": {k.hash for k in self.dataset.api_keys} | {str(k.index + 1) for k in self.dataset.api_keys},
            "user": set(self.dataset.user_ids),
            "workspace": set(self.dataset.workspace_ids),
            "app": {str(a) for a in self.app_ids()},
        }
        warnings = []
        for f in filters:
            ids = known.get(f["field"])
            if ids is None:
                continue
            values = f["value"] if isinstance(f["value"], list) else [f["value"]]
            for value in values:
                if str(value) not in ids:
                    warnings.append(f"Could not resolve {f['field']} filter value {str(value)!r}; it matches no rows")
        return warnings

    def _row(self, q: _Query, group: tuple[Any, ...], facts: list[Fact]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if q.granularity:
            row[f"date__{q.granularity}"] = group[0].strftime("%Y-%m-%dT00:00:00.000Z")
        for name, value in zip(q.dimensions, group[1:]):
            row[name] = self._label(name, value)
        requests = sum(f.values["request_count"] for f in facts)
        for metric in q.metrics:
            row[metric] = self._metric(metric, facts, requests, group[0] if q.granularity == "day" else None)
        return row

    def _label(self, dimension: str, value: Any) -> Any:
        if value is None:
            return None
        if dimension == "api_key_id":
            key = self.dataset.key_by_hash(value)
            return key.name if key else value
        if dimension == "user":
            return self.user_label(value)
        if dimension == "workspace":
            return self.workspace_label(value)
        if dimension == "app":
            return self.app_title(value)
        return value

    def _metric(self, metric: str, facts: list[Fact], requests: int, day: date | None) -> Any:
        if metric in LATENCY_METRICS or metric in THROUGHPUT_METRICS:
            if not requests:
                return None
            if metric in THROUGHPUT_METRICS:
                weighted = sum(f.values["_tput"] * f.values["request_count"] for f in facts)
            else:
                index = LATENCY_METRICS.index(metric)
                weighted = sum(f.values["_lat"][index] * f.values["request_count"] for f in facts)
            return round(weighted / requests, 2)
        if metric == "cache_hit_rate":
            prompt = sum(f.values["tokens_prompt"] for f in facts)
            return round(sum(f.values["cached_tokens"] for f in facts) / prompt, 6) if prompt else 0.0
        values = [f.values[metric] for f in facts]
        if metric in COUNT_METRICS:
            total: Any = sum(values)
            total += int(self._skew_for(facts, metric))
            return str(total) if self.string_counts else total
        present = [v for v in values if v is not None]
        if not present and metric in NULLABLE_COMPONENTS:
            return None if self.null_components else 0.0
        return sum(present) + self._skew_for(facts, metric)

    def _skew_for(self, facts: list[Fact], metric: str) -> float:
        if not self._skews or not facts:
            return 0.0
        with self._lock:
            skews = list(self._skews)
        models = {f.dims["model"] for f in facts}
        days = {f.day for f in facts}
        # A skew applies once, to the group that holds the first fact of its (day, model).
        delta = 0.0
        for skew in skews:
            if skew.metric == metric and skew.day in days and skew.model in models:
                first = next((f for f in self.facts(skew.day) if f.dims["model"] == skew.model), None)
                if first is not None and any(f.day == first.day and f.key_index == first.key_index and f.endpoint_id == first.endpoint_id for f in facts):
                    delta += skew.delta
        return delta


# --------------------------------------------------------------------------- request parsing


@dataclass
class _Query:
    metrics: list[str]
    dimensions: list[str]
    filters: list[dict[str, Any]]
    granularity: str | None
    first: date
    end: date  # exclusive
    limit: int
    order_by: dict[str, str] | None
    hours: range = range(0)  # granularity "hour": the hours of today served


def _bad(message: str) -> QueryError:
    return QueryError(400, message)


def _parse_time(text: Any, what: str) -> datetime:
    if not isinstance(text, str):
        raise _bad(f"time_range.{what} must be an ISO 8601 date-time")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"time_range.{what} must be an ISO 8601 date-time") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _parse(body: Any, today: date, long_reach: int = LONG_RANGE_DAYS, short_reach: int = SHORT_RANGE_DAYS) -> _Query:
    if not isinstance(body, dict):
        raise _bad("Invalid request parameters: expected a JSON object")
    metrics = body.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise _bad("metrics: at least one metric is required")
    known_metrics = set(LONG_METRICS + SHORT_METRICS + RATE_METRICS)
    for m in metrics:
        if m not in known_metrics:
            raise _bad(f"Unknown metric: {m}")
    dimensions = body.get("dimensions") or []
    if not isinstance(dimensions, list) or not all(isinstance(d, str) for d in dimensions):
        raise _bad("dimensions must be a list of strings")
    if len(dimensions) > MAX_DIMENSIONS:
        raise _bad(f"At most {MAX_DIMENSIONS} dimensions are allowed")
    for d in dimensions:
        if d not in LONG_DIMENSIONS + SHORT_DIMENSIONS:
            raise _bad(f"Unknown dimension: {d}")
    filters = body.get("filters") or []
    if not isinstance(filters, list):
        raise _bad("filters must be a list")
    if len(filters) > MAX_FILTERS:
        raise _bad(f"At most {MAX_FILTERS} filters are allowed")
    for f in filters:
        if not isinstance(f, dict) or not {"field", "operator", "value"} <= set(f):
            raise _bad("each filter needs field, operator and value")
        if f["field"] not in LONG_DIMENSIONS + SHORT_DIMENSIONS:
            raise _bad(f"Unknown filter field: {f['field']}")
        kind = OPERATORS.get(f["operator"])
        if kind is None:
            raise _bad(f"Unknown operator: {f['operator']}")
        if (kind == "array") != isinstance(f["value"], list):
            raise _bad(f"operator {f['operator']} expects {'an array' if kind == 'array' else 'a scalar'} value")
    granularity = body.get("granularity")
    if granularity == "hour":
        return _parse_hours(body, today, metrics, dimensions, filters)
    if granularity is not None and granularity not in GRANULARITIES:
        if granularity == "minute":
            raise _bad(f"granularity {granularity!r} is not served by the stand-in (days only)")
        raise _bad(f"Unknown granularity: {granularity}")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad("limit must be a positive integer")
    if limit > MAX_LIMIT:
        raise _bad(f"limit must be at most {MAX_LIMIT}")
    time_range = body.get("time_range")
    midnight = datetime(today.year, today.month, today.day, tzinfo=timezone.utc)
    if time_range is None:
        start, end = midnight - timedelta(days=7), midnight
    else:
        if not isinstance(time_range, dict):
            raise _bad("time_range must be an object with start and end")
        start, end = _parse_time(time_range.get("start"), "start"), _parse_time(time_range.get("end"), "end")
    if end <= start:
        raise _bad("time_range.end must be after time_range.start")
    short = any(m in SHORT_METRICS for m in metrics) or any(d in SHORT_DIMENSIONS for d in dimensions) or any(
        f["field"] in SHORT_DIMENSIONS for f in filters
    )
    reach = short_reach if short else long_reach
    if start < midnight - timedelta(days=reach):
        what = "provider, latency and other per-request data are" if short else "analytics data is"
        raise _bad(f"time_range.start is too far back: {what} kept for {reach} days")
    order_by = body.get("order_by")
    if order_by is not None:
        if not isinstance(order_by, dict) or order_by.get("direction") not in ("asc", "desc"):
            raise _bad("order_by needs field and direction (asc or desc)")
        if order_by.get("field") not in ("date", "request_count", *metrics, *dimensions):
            raise _bad(f"Cannot order by {order_by.get('field')!r}")
    # Buckets are whole UTC days: a start inside a day counts that day; today is not served.
    first = start.date()
    last_end = min(end, midnight)
    end_day = last_end.date() + (timedelta(days=1) if last_end.time() != datetime.min.time() else timedelta(0))
    return _Query(metrics, dimensions, filters, granularity, first, max(first, end_day), limit, order_by)


def _parse_hours(body: dict[str, Any], today: date, metrics: list[str], dimensions: list[str], filters: list[dict[str, Any]]) -> _Query:
    """Granularity "hour": today's hours only; ``end`` (exclusive) may cut them short."""
    midnight = datetime(today.year, today.month, today.day, tzinfo=timezone.utc)
    time_range = body.get("time_range")
    if not isinstance(time_range, dict):
        raise _bad("time_range must be an object with start and end")
    start, end = _parse_time(time_range.get("start"), "start"), _parse_time(time_range.get("end"), "end")
    if end <= start:
        raise _bad("time_range.end must be after time_range.start")
    if start < midnight:
        raise _bad("granularity 'hour' is served for the current UTC day only by the stand-in")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit must be a positive integer, at most {MAX_LIMIT}")
    hours = max(0, min(PARTIAL_HOURS, math.ceil((end - midnight).total_seconds() / 3600)))
    first_hour = int((start - midnight).total_seconds() // 3600)
    query = _Query(metrics, dimensions, filters, "hour", today, today + timedelta(days=1), limit, None)
    query.hours = range(first_hour, hours)
    return query


def _hours(row: dict[str, Any], q: _Query) -> list[dict[str, Any]]:
    """One day's row (``date__hour`` at midnight) as the rows of today's served hours."""
    day = row.pop("date__hour")[:10]
    out = []
    for hour in q.hours:
        part = dict(row)
        part["date__hour"] = f"{day}T{hour:02d}:00:00.000Z"
        for metric in q.metrics:
            value = row.get(metric)
            if metric in COUNT_METRICS and value is not None:
                total = int(value)
                share = total * (hour + 1) // 24 - total * hour // 24
                part[metric] = str(share) if isinstance(value, str) else share
            elif metric in MONEY_METRICS and value is not None:
                part[metric] = value / 24
        out.append(part)
    return out


def _matches(value: Any, f: dict[str, Any]) -> bool:
    op, target = f["operator"], f["value"]
    raw = "" if value is None else str(value)
    if op in ("in", "not_in"):
        inside = raw in {str(t) for t in target}
        return inside if op == "in" else not inside
    if op == "eq":
        return raw == str(target)
    if op == "neq":
        return raw != str(target)
    compare = {"gt": raw > str(target), "gte": raw >= str(target), "lt": raw < str(target), "lte": raw <= str(target)}
    return compare[op]


def _bucket(day: date, granularity: str | None) -> date:
    """The time bucket of ``day``; no granularity is one total per group (one bucket)."""
    if granularity is None:
        return date.min
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _order(rows: list[dict[str, Any]], q: _Query) -> list[dict[str, Any]]:
    date_field = f"date__{q.granularity}" if q.granularity else None

    def natural(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row.get(date_field, "") if date_field else "", *(str(row.get(d) or "") for d in q.dimensions))

    rows.sort(key=natural)
    if q.order_by:
        name = q.order_by["field"]
        name = date_field if name == "date" and date_field else name

        def numeric(row: dict[str, Any]) -> Any:
            value = row.get(name)
            try:
                return float(value) if value is not None else -math.inf
            except (TypeError, ValueError):
                return value

        if name in q.dimensions or name == date_field:
            rows.sort(key=lambda r: str(r.get(name) or ""), reverse=q.order_by["direction"] == "desc")
        elif name in q.metrics:
            rows.sort(key=numeric, reverse=q.order_by["direction"] == "desc")
    return rows


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def iter_days(first: date, end: date) -> Iterable[date]:
    day = first
    while day < end:
        yield day
        day += timedelta(days=1)
