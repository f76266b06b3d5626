"""Validate: check every ``/activity`` item before anything is written.

Pure functions, no I/O. A response is split by day; each day is accepted whole or
rejected whole, so a bad item never leaves a partial day in the warehouse. The rules
follow the live API rather than only its contract:

* ``date`` comes as ``2026-08-23`` or, live, ``2026-08-23 00:00:00``; both are stored as
  the calendar date ``2026-08-23``.
* Counts are integers, but older spec versions typed them as doubles, so ``5.0`` is a
  count of 5; ``5.5``, negatives, booleans and strings are errors.
* ``reasoning_tokens`` may exceed ``completion_tokens``.
* ``usage`` and ``byok_usage_inference`` are finite USD amounts (NaN and Infinity are errors).
* Fields beyond the spec are allowed (kept in the raw archive); ``cached_tokens`` is a column.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from etl.errors import InvalidResponseError
from etl.fetched import ROW_COLUMNS

MAX_COUNT = 2**63 - 1  # what a 64-bit integer column holds
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[ T]00:00:00(?:\.0+)?(?:Z|\+00:00)?)?$")


def normalize_date(value: object) -> str:
    """``YYYY-MM-DD`` for a valid calendar date in either API format, else ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"expected a date string, got {_show(value)}")
    match = _DATE_RE.match(value.strip())
    if not match:
        raise ValueError(f"expected YYYY-MM-DD or 'YYYY-MM-DD 00:00:00', got {_show(value)}")
    try:
        return date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        raise ValueError(f"not a calendar date: {_show(value)}") from None


def _count(value: object) -> object:
    # bool is an int subclass; True is never a count.
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {_show(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, got {_show(value)}")
        return int(value)
    if not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {_show(value)}")
    return value


def _amount(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any double; pydantic only turns ValueError into a rejection
        raise ValueError(f"must be a finite number, got {_show(value)}") from None


Count = Annotated[int, BeforeValidator(_count), Field(ge=0, le=MAX_COUNT)]
Amount = Annotated[float, BeforeValidator(_amount), Field(allow_inf_nan=False)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=1000)]


class ActivityItem(BaseModel):
    """One row of ``GET /activity``: a (date, endpoint) aggregate."""

    model_config = ConfigDict(extra="allow", frozen=True)

    date: Annotated[str, BeforeValidator(normalize_date)]
    model: Name
    model_permaslug: Name
    endpoint_id: Name
    provider_name: Name
    usage: Amount
    byok_usage_inference: Amount
    requests: Count
    prompt_tokens: Count
    completion_tokens: Count
    reasoning_tokens: Count
    cached_tokens: Count | None = None

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ROW_COLUMNS}


@dataclass
class ParsedActivity:
    """A response split by day: rows of the accepted days, reasons for the rejected ones,
    and how many items each day of the window that was not asked for holds (not checked)."""

    days: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unchecked: dict[str, int] = field(default_factory=dict)

    def listed(self) -> list[str]:
        """Every day the answer lists, checked or not: what it shows of the API's window."""
        return sorted({*self.days, *self.rejected, *self.unchecked})


def parse_activity(
    document: Any, window: tuple[date, date], subject: str | None = None, planned: Collection[str] | None = None,
) -> ParsedActivity:
    """Split and validate a ``/activity`` document against the requested window.

    ``subject`` names a field every item must carry and that becomes part of the row
    (``workspace_id`` with ``group_by=workspace``). With ``planned`` (ISO days), only those
    days are validated: the other days of the window are counted in ``unchecked``, since
    nothing of them will be loaded (a whole-window answer serves a plan of two days).
    Raises InvalidResponseError when the document cannot be split by day at all (wrong
    shape, an item that is not an object or has no readable date).
    """
    items = _data_items(document)
    first, last = window[0].isoformat(), window[1].isoformat()
    by_day: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidResponseError(f"item {index} of the response is {_kind(item)}, not an object")
        try:
            day = normalize_date(item.get("date"))
        except ValueError as exc:
            raise InvalidResponseError(f"item {index} of the response has no usable date: {exc}") from None
        by_day.setdefault(day, []).append((index, item))

    parsed = ParsedActivity()
    for day, day_items in sorted(by_day.items()):
        if not first <= day <= last:
            parsed.rejected[day] = f"dated outside the requested window {first}..{last}"
            continue
        if planned is not None and day not in planned:
            parsed.unchecked[day] = len(day_items)
            continue
        try:
            parsed.days[day] = validate_day(day, day_items, subject)
        except ValueError as exc:
            parsed.rejected[day] = str(exc)
    return parsed


def validate_day(day: str, items: Iterable[tuple[int, Mapping[str, Any]]], subject: str | None = None) -> list[dict[str, Any]]:
    """Rows of one day, or ValueError naming the item, the field and the value."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in items:
        try:
            item = ActivityItem.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(_describe(index, raw, exc)) from None
        row = item.row()
        scope = ""
        if subject is not None:
            value = raw.get(subject)
            if not isinstance(value, str) or not value:
                raise ValueError(f"item {index}: {subject}: expected a non-empty string, got {_show(value)}")
            row[subject] = scope = value
        if (scope, item.endpoint_id) in seen:
            what = f"{subject} {scope!r} and " if subject else ""
            raise ValueError(f"item {index}: duplicate row for {what}endpoint_id {item.endpoint_id!r}")
        seen.add((scope, item.endpoint_id))
        rows.append(row)
    return rows


def _data_items(document: Any) -> list[Any]:
    if not isinstance(document, Mapping):
        raise InvalidResponseError(f"expected a JSON object with a 'data' list, got {_kind(document)}")
    data = document.get("data")
    if not isinstance(data, list):
        raise InvalidResponseError(f"expected 'data' to be a list, got {_kind(data)}")
    return data


def _describe(index: int, raw: Mapping[str, Any], exc: ValidationError) -> str:
    err = exc.errors()[0]
    fieldname = ".".join(str(p) for p in err["loc"]) or "?"
    endpoint = raw.get("endpoint_id")
    where = f"item {index}" + (f" (endpoint_id {endpoint!r})" if isinstance(endpoint, str) else "")
    if err["type"] == "missing":
        return f"{where}: {fieldname}: missing"
    message = err["msg"].removeprefix("Value error, ")
    value = raw.get(str(err["loc"][0])) if err["loc"] else None
    if "got" in message:
        return f"{where}: {fieldname}: {message}"
    return f"{where}: {fieldname}: {message}, got {_show(value)}"


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True)
class CreditBalance:
    """``GET /credits``: credits bought and used, in USD."""

    total_credits: float
    total_usage: float

    @property
    def remaining(self) -> float:
        return self.total_credits - self.total_usage


def parse_credits(document: Any, body: bytes) -> CreditBalance:
    """The balance in a ``/credits`` answer (``{"data": {"total_credits", "total_usage"}}``).

    Both amounts must be finite numbers (not booleans, not strings): anything else is an
    InvalidResponseError, and nothing of the answer is stored.
    """
    import math

    data = document.get("data") if isinstance(document, dict) else None
    values = [data.get(name) if isinstance(data, dict) else None for name in ("total_credits", "total_usage")]
    def finite(value: Any) -> bool:
        try:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        except OverflowError:  # an integer beyond any double
            return False

    if not all(finite(v) for v in values):
        raise InvalidResponseError(f"GET /credits: unexpected body: {body[:120]!r}")
    return CreditBalance(float(values[0]), float(values[1]))  # type: ignore[arg-type]
