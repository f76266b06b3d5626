"""Expected values that do not come from the code under test.

Tests compare the warehouse with the stand-in's own ground truth (its generator's items,
read as plain JSON) or with the input item itself, normalised here by the rules the
README and the API notes state. Nothing here imports ``etl``: if validation swapped two
columns or let a boolean through, these functions would not follow it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

# The warehouse's activity columns, in the order tests select them.
COLUMNS = (
    "date", "endpoint_id", "model", "model_permaslug", "provider_name", "usage", "byok_usage_inference",
    "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens",
)
ACTIVITY_SQL = f"SELECT {', '.join(COLUMNS)} FROM activity ORDER BY date, endpoint_id"
NAMES = ("model", "model_permaslug", "endpoint_id", "provider_name")
AMOUNTS = ("usage", "byok_usage_inference")
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens")
BIGGEST_COUNT = 2**63 - 1  # SQLite INTEGER


class Invalid(ValueError):
    """The item breaks a documented rule; ``field`` names the first field that does."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field = field


def window(today: date) -> tuple[date, date]:
    """The 30 completed UTC days before ``today`` (the API's retention window)."""
    return today - timedelta(days=30), today - timedelta(days=1)


def calendar_day(value: object) -> str:
    """The documented date forms, ``2026-08-23`` and ``2026-08-23 00:00:00``, as ``2026-08-23``."""
    if not isinstance(value, str):
        raise Invalid("date", f"not a string: {value!r}")
    text = value[:-9] if value.endswith(" 00:00:00") else value
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise Invalid("date", f"not a calendar day: {value!r}") from None


def count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(field, f"not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise Invalid(field, f"not a whole number: {value!r}")
        value = int(value)
    if not 0 <= value <= BIGGEST_COUNT:
        raise Invalid(field, f"out of range: {value!r}")
    return value


def amount(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(field, f"not a finite amount: {value!r}")
    return float(value)


def expected_row(item: Mapping[str, Any]) -> tuple[Any, ...]:
    """The row the warehouse must hold for ``item``, in COLUMNS order, or Invalid."""
    out: dict[str, Any] = {}
    if "date" not in item:
        raise Invalid("date", "missing")
    out["date"] = calendar_day(item["date"])
    for field in NAMES:
        value = item.get(field)
        if not isinstance(value, str) or not 1 <= len(value) <= 1000:
            raise Invalid(field, f"not a non-empty name: {value!r}")
        out[field] = value
    for field in AMOUNTS:
        if field not in item:
            raise Invalid(field, "missing")
        out[field] = amount(field, item[field])
    for field in COUNTS:
        if field not in item:
            raise Invalid(field, "missing")
        out[field] = count(field, item[field])
    cached = item.get("cached_tokens")
    out["cached_tokens"] = None if cached is None else count("cached_tokens", cached)
    return tuple(out[c] for c in COLUMNS)


def standin_rows(dataset: Any, days: Iterable[date], **filters: Any) -> list[tuple[Any, ...]]:
    """What the stand-in serves for ``days``, as plain JSON, normalised by ``expected_row``."""
    rows = []
    for day in days:
        for item in json.loads(json.dumps(dataset.activity(day, **filters))):
            rows.append(expected_row(item))
    return sorted(rows, key=lambda r: (r[0], r[1]))


def window_rows(dataset: Any, today: date) -> list[tuple[Any, ...]]:
    first, last = window(today)
    return standin_rows(dataset, (first + timedelta(days=i) for i in range((last - first).days + 1)))


def assert_same_rows(actual: Sequence[Sequence[Any]], expected: Sequence[Sequence[Any]], columns: Sequence[str] = COLUMNS) -> None:
    """Equal row for row, checked column by column (value and type), naming the first difference."""
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"
    for i, (got, want) in enumerate(zip(actual, expected)):
        for name, a, b in zip(columns, got, want):
            assert (type(a), a) == (type(b), b), f"row {i} ({want[:2]}), column {name}: {a!r}, expected {b!r}"


# -- reports -------------------------------------------------------------------------------

REPORT_METRICS = ("usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens",
                  "reasoning_tokens", "cached_tokens", "total_tokens")
TIME_GROUPS = ("date", "week", "month", "year")


def group_label(row: Mapping[str, Any], group: str) -> str:
    """A row's label for ``group``, computed with the standard library alone."""
    day = row["date"]
    if group == "week":
        year, week, _ = date.fromisoformat(day).isocalendar()
        return f"{year}-W{week:02d}"
    return {
        "date": day, "month": day[:7], "year": day[:4], "model": row["model"], "permaslug": row["model_permaslug"],
        "provider": row["provider_name"], "endpoint": row["endpoint_id"],
    }[group]


def expected_groups(rows: Iterable[Mapping[str, Any]], group_by: Sequence[str], since: str | None = None, until: str | None = None,
                    models: Sequence[str] = (), providers: Sequence[str] = ()) -> dict[tuple[str, ...], dict[str, Any]]:
    """Per group (a tuple of labels): every report metric, summed here from the rows themselves."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        if since and row["date"] < since or until and row["date"] > until:
            continue
        if models and not any(glob_match(row["model"], p) for p in models):
            continue
        if providers and not any(glob_match(row["provider_name"], p) for p in providers):
            continue
        key = tuple(group_label(row, g) for g in group_by)
        sums = out.setdefault(key, dict.fromkeys(REPORT_METRICS, 0))
        for metric in ("usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens"):
            sums[metric] += row[metric]
        sums["cached_tokens"] += row["cached_tokens"] or 0
        sums["total_tokens"] += row["prompt_tokens"] + row["completion_tokens"]
    return out


def glob_match(value: str, pattern: str) -> bool:
    """The README's globs: ``*`` any run of characters, ``?`` exactly one, everything else literal."""
    if "*" not in pattern and "?" not in pattern:
        return value == pattern
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None
