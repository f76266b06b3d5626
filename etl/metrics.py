"""The report metrics by name, with the labels tables show and the aliases users type.

Dependency-free, so that ``--help`` can list the choices without importing SQLAlchemy.
``etl.query.METRICS`` holds the SQL expressions for the base names (``NAMES``), in the same
order.

Three kinds of metric, because they come from different places and combine differently:

* ``NAMES``, the columns of every spend report: ``/activity``'s own columns (and the
  Analytics API history mapped onto them), summed.
* ``EXTRA``, asked for by name (``--metric``, ``--sort``, ``--columns``): the Activity
  page's "Spend" *including* estimated BYOK (``total_usage_incl_byok``: the one column that
  ever adds BYOK to credits spend, and says so in its name), and the cost components only
  the Analytics API gives (NULL on ``/activity`` days: ``/activity`` has no such split).
  Summed where known; None (NULL in CSV/JSON) where no day of a row had them.
* ``LATENCY``, from the Analytics API's 31-day model x provider series: latency (ms) and
  throughput (tokens per second) are *never summed*. A row's value is the request-weighted
  mean of the daily (model, provider) values it covers (``weighted``), so grouped by model
  and provider over one day it is OpenRouter's own value of that day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from etl.errors import BadArgument

NAMES = ("usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens",
         "cached_tokens", "total_tokens")
MONEY = ("usage", "byok_usage_inference")  # the money among NAMES (never added together)
COMPONENTS = ("usage_upstream", "usage_cache", "usage_data", "usage_web", "usage_upstream_web")
EXTRA = ("total_usage_incl_byok", *COMPONENTS)
AMOUNTS = (*MONEY, *EXTRA)  # every money metric (USD)
LATENCY = ("avg_latency_ms", "p50_latency_ms", "p90_latency_ms", "p99_latency_ms", "avg_throughput_tps")
LATENCY_REPORT = ("requests", *LATENCY)  # the columns of a latency report: requests are the weights
ALL = (*NAMES, *EXTRA, *LATENCY)
UNITS = {**dict.fromkeys(LATENCY[:4], "ms"), "avg_throughput_tps": "tok/s"}
LABELS = {
    "usage": "spend",
    "byok_usage_inference": "BYOK spend",
    "requests": "requests",
    "prompt_tokens": "prompt tok",
    "completion_tokens": "completion tok",
    "reasoning_tokens": "reasoning tok",
    "cached_tokens": "cached tok",
    "total_tokens": "total tok",
    "total_usage_incl_byok": "spend incl BYOK",
    "usage_upstream": "upstream cost",
    "usage_cache": "cache cost",
    "usage_data": "data cost",
    "usage_web": "web cost",
    "usage_upstream_web": "upstream web cost",
    "avg_latency_ms": "avg latency",
    "p50_latency_ms": "p50 latency",
    "p90_latency_ms": "p90 latency",
    "p99_latency_ms": "p99 latency",
    "avg_throughput_tps": "throughput",
}
SHORT = {
    "byok": "byok_usage_inference", "tokens": "total_tokens", "cost": "usage",
    # The Analytics API's own names.
    "total_usage": "total_usage_incl_byok", "credits_usage": "usage", "byok_usage": "byok_usage_inference",
    "request_count": "requests", "tokens_prompt": "prompt_tokens", "tokens_completion": "completion_tokens",
    "tokens_total": "total_tokens", "avg_latency": "avg_latency_ms", "p50_latency": "p50_latency_ms",
    "p90_latency": "p90_latency_ms", "p99_latency": "p99_latency_ms", "avg_throughput": "avg_throughput_tps",
    "latency": "avg_latency_ms",
}


def aliases() -> dict[str, str]:
    """Every name a metric goes by: its own, its table label (``spend``, ``byok spend``,
    ``prompt tok``, in any case, with ``_`` or ``-`` for spaces) and a few short ones."""
    found = {m: m for m in ALL}
    for metric, label in LABELS.items():
        for variant in (label, label.replace(" ", "_"), label.replace(" ", "-")):
            found[variant.lower()] = metric
    found.update(SHORT)
    return found


def choices() -> list[str]:
    """What ``--help`` lists: each metric by its table label, then by its column name, then
    the Analytics API's names that are not one of those (``total_usage``, ``p90_latency``)."""
    names = [LABELS[m].replace(" ", "_").lower() for m in ALL] + list(ALL)
    api = [a for a in SHORT if a.endswith(("_usage", "_latency", "_throughput")) and a not in ("credits_usage", "byok_usage")]
    return list(dict.fromkeys(names + api))


def resolve(name: str, what: str = "metric") -> str:
    """The metric called ``name`` (a column or a table label); BadArgument when none is."""
    found = aliases().get(name.strip().lower())
    if found is None:
        raise BadArgument(f"unknown {what} {name!r}; choose from: {', '.join(choices())}")
    return found


def report_metrics(asked: Iterable[str]) -> tuple[str, ...]:
    """The metric columns of a report asked for ``asked`` (from --metric, --sort, --columns).

    A latency metric makes it a latency report (requests and the latency metrics); else the
    base metrics plus the EXTRA ones asked for. Both kinds at once is a BadArgument: they
    come from different series and combine differently (sums and weighted means).
    """
    asked = tuple(asked)
    latency = [m for m in asked if m in LATENCY]
    if latency:
        spend = [m for m in asked if m not in LATENCY_REPORT]
        if spend:
            raise BadArgument(
                f"{LABELS[latency[0]]} comes from the 31-day model x provider series and is averaged, not summed: "
                f"report it without {', '.join(LABELS[m] for m in spend)} (e.g. --metric {latency[0]} alone)"
            )
        return LATENCY_REPORT
    return (*NAMES, *(m for m in EXTRA if m in asked))


def add(a: float | int | None, b: float | int | None) -> float | int | None:
    """a + b where None means "not known": None only when both are."""
    if a is None:
        return b
    return a if b is None else a + b


def weighted(pairs: Iterable[tuple[float | None, int | None]]) -> float | None:
    """The request-weighted mean of (value, requests) pairs, exact (fsum); None without weight.

    A value of None, or a day without requests, carries no weight.
    """
    known = [(v, w) for v, w in pairs if v is not None and w]
    total = sum(w for _, w in known if w is not None)
    if not total:
        return None
    return math.fsum(v * w for v, w in known if w is not None) / total
