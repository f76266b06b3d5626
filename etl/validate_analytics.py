"""Validate: check every ``POST /analytics/query`` answer before anything is written.

Pure functions, no I/O. An answer is ``{"data": {"data": [rows], "metadata": {...,
"truncated": bool}, "warnings": [...]}}``; it is split by day and each day is accepted
whole or rejected whole, as for ``/activity``. The rules follow the live API (the
stand-in, ``etl/standin/analytics.py``, serves each of them):

* ``metadata.truncated: true`` means rows were cut at ``limit``: the answer is refused as
  incomplete (`TruncatedAnswerError`) and the caller splits the time range.
* The bucket ``date__day`` comes as ``2025-01-01T00:00:00.000Z``; it is stored as the
  calendar day ``2025-01-01``. A bucket that is not midnight UTC is an error.
* Counts may come as strings (``"1500"``): accepted when integral and not negative, as
  are doubles like ``5.0``; ``5.5``, ``"lots"`` and booleans are errors.
* Cost components that do not apply come as ``null``: kept as NULL, never turned into 0.
  Costs can be negative (``usage_data``: discounts). NaN and Infinity are errors.
* Latency and throughput are non-negative numbers or ``null`` (no request in the group).
* Dimension values are labels or ids as served; ``null`` (the unset bucket, e.g. requests
  without an app) is stored as the empty string so that it can be part of a key.

A year of answers is tens of megabytes. ``answer_decoder`` decodes an answer, checks every
row and gives it its stored form in one compiled pass (pydantic-core's ``validate_json``),
with a schema that accepts only the usual case: counts as JSON integers, costs and
measures as finite numbers or ``null``, dimensions as strings or ``null``, midnight
buckets. Whatever that schema refuses (a count as a string, a bad row, a body that is not
JSON) is decoded again with ``json`` and checked by the rules above, row by row, so the
messages, and the days rejected, are theirs. The checked document is a ``CheckedAnswer``
whose rows are already what ``parse_answer`` makes of a row; it accepts one only for the
dimensions and metrics it was checked for.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from pydantic_core import SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

from etl.errors import InvalidResponseError, TruncatedAnswerError

MAX_COUNT = 2**63 - 1
_BUCKET_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[ T]00:00:00(?:\.0+)?(?:Z|\+00:00)?)?$")
_INT_RE = re.compile(r"^[+]?\d+(?:\.0*)?$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")

COUNT = "count"
AMOUNT = "amount"  # USD, may be null, may be negative
MEASURE = "measure"  # latency (ms) or throughput: non-negative, may be null


@dataclass(frozen=True)
class ParsedAnswer:
    days: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# (granularity, dimensions, their columns, ((metric, kind), ...))
_Shape = tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]


class CheckedAnswer(dict[str, Any]):
    """An answer decoded by the schema of one shape (``answer_decoder``): each row already in
    the form ``parse_answer`` gives it (``{"date", <column>..., <metric>...}``), its values
    checked, so that only the range and duplicates are left to check."""

    def __init__(self, document: dict[str, Any], shape: _Shape) -> None:
        super().__init__(document)
        self.shape = shape


def _shape(dimensions: Mapping[str, str], metrics: Mapping[str, str], granularity: str) -> _Shape:
    return granularity, tuple(dimensions), tuple(dimensions.values()), tuple(metrics.items())


@lru_cache(maxsize=16)
def _validator(shape: _Shape) -> SchemaValidator:
    """The schema of an answer whose every value is already what the checks would keep.

    Each field's schema admits a subset of what ``bucket_day``, ``count``, ``amount`` and
    ``_dimension`` accept, and yields what they would return for it, under the row's column
    name (a JSON integer as a cost becomes its float, as ``amount`` makes it; ``null`` as a
    dimension the empty string; ``tests/test_analytics_validate.py`` checks that the two
    paths agree). Fields not named are ignored, as the row by row checks ignore them.
    """
    granularity, dimensions, columns, metrics = shape
    kinds = {
        COUNT: cs.int_schema(strict=True, ge=0, le=MAX_COUNT),
        AMOUNT: cs.nullable_schema(cs.float_schema(strict=True, allow_inf_nan=False)),
        MEASURE: cs.nullable_schema(cs.float_schema(strict=True, allow_inf_nan=False, ge=0)),
    }
    text = cs.nullable_schema(cs.str_schema(strict=True, max_length=1000))
    dimension = cs.with_default_schema(cs.no_info_after_validator_function(_unset_as_empty, text), default="")
    bucket = cs.no_info_after_validator_function(_bucket_day, cs.str_schema(strict=True))
    row = cs.typed_dict_schema(
        {
            "date": cs.typed_dict_field(bucket, validation_alias=f"date__{granularity}"),
            **{column: cs.typed_dict_field(dimension, validation_alias=name) for name, column in zip(dimensions, columns)},
            **{name: cs.typed_dict_field(kinds[kind]) for name, kind in metrics},
        },
        extra_behavior="ignore",
    )
    metadata = cs.typed_dict_schema({"truncated": cs.typed_dict_field(cs.bool_schema(strict=True))}, extra_behavior="ignore")
    body = cs.typed_dict_schema(
        {
            "data": cs.typed_dict_field(cs.list_schema(row)),
            "metadata": cs.typed_dict_field(metadata),
            "warnings": cs.typed_dict_field(cs.any_schema(), required=False),  # read as the checks read it
        },
        extra_behavior="ignore",
    )
    return SchemaValidator(cs.typed_dict_schema({"data": cs.typed_dict_field(body)}, extra_behavior="ignore"))


def _unset_as_empty(value: str | None) -> str:
    return "" if value is None else value


@lru_cache(maxsize=4096)
def _bucket_day(value: str) -> str:
    return bucket_day(value)  # ValueError: the schema refuses the answer, and the checks say why


def answer_decoder(dimensions: Mapping[str, str], metrics: Mapping[str, str], granularity: str = "day") -> Callable[[bytes], Any]:
    """A function from an answer's bytes to its document: a ``CheckedAnswer`` when the fast
    schema accepts it, else ``json.loads`` of it (ValueError when it is not JSON)."""
    shape = _shape(dimensions, metrics, granularity)
    validator = _validator(shape)

    def decode(body: bytes) -> Any:
        try:
            return CheckedAnswer(validator.validate_json(body), shape)
        except ValidationError:
            return json.loads(body)  # the row by row checks say what is wrong, and where

    return decode


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def bucket_day(value: object) -> str:
    """``YYYY-MM-DD`` for a day bucket (``2025-01-01T00:00:00.000Z``), else ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"expected a date-time string, got {_show(value)}")
    match = _BUCKET_RE.match(value.strip())
    if not match:
        raise ValueError(f"expected a day bucket like 2025-01-01T00:00:00.000Z, got {_show(value)}")
    try:
        return date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        raise ValueError(f"not a calendar date: {_show(value)}") from None


def count(value: object) -> int:
    """A whole, non-negative count from an int, an integral double or an integral string."""
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the usual case, first (a year is 100,000s of values)
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {_show(value)}")
    if isinstance(value, str):
        if not _INT_RE.match(value.strip()):
            raise ValueError(f"must be a whole number, got {_show(value)}")
        value = int(value.strip().split(".")[0])
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, got {_show(value)}")
        value = int(value)
    elif not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {_show(value)}")
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"must be between 0 and {MAX_COUNT}, got {_show(value)}")
    return value


def amount(value: object, *, negative: bool = True) -> float | None:
    """A finite number, or None for ``null``; numeric strings are accepted."""
    if type(value) is float and math.isfinite(value) and (negative or value >= 0):  # the usual case, first
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {_show(value)}")
    if isinstance(value, str):
        if not _NUMBER_RE.match(value.strip()):
            raise ValueError(f"must be a number, got {_show(value)}")
        value = float(value)
    if not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any double
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {_show(value)}")
    if not negative and number < 0:
        raise ValueError(f"must not be negative, got {_show(value)}")
    return number


def _dimension(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected a string, got {_show(value)}")
    text = str(value)
    if len(text) > 1000:
        raise ValueError("longer than 1000 characters")
    return text


def parse_answer(
    document: Any,
    *,
    dimensions: Mapping[str, str],
    metrics: Mapping[str, str],
    first: date,
    last: date,
    granularity: str = "day",
    merge_duplicates: bool = False,
) -> ParsedAnswer:
    """Rows of one answer as ``{"date", <column>..., <metric>...}``, split by day.

    ``dimensions`` maps each API dimension to its column; ``metrics`` maps each metric to
    its kind (`COUNT`, `AMOUNT`, `MEASURE`). Days outside ``first`` … ``last`` are
    rejected (not loaded): the answer holds more than was asked for. Two rows with the same
    dimensions reject their day, unless ``merge_duplicates`` (dimensions that are labels,
    such as app titles, which need not be unique): then they are added up.
    """
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise InvalidResponseError(f"analytics answer: expected a JSON object with a 'data' object, got {type(document).__name__}")
    body = document["data"]
    rows = body.get("data")
    meta = body.get("metadata")
    if not isinstance(rows, list):
        raise InvalidResponseError(f"analytics answer: expected 'data.data' to be a list, got {type(rows).__name__}")
    if not isinstance(meta, dict) or not isinstance(meta.get("truncated"), bool):
        raise InvalidResponseError("analytics answer: 'data.metadata.truncated' is missing; cannot tell whether the answer is complete")
    if meta["truncated"]:
        raise TruncatedAnswerError(f"analytics answer truncated at {len(rows)} row(s): split the time range")
    warnings = [str(w)[:300] for w in body.get("warnings") or [] if w is not None]
    bucket = f"date__{granularity}"
    days: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, set[tuple[str, ...]]] = {}
    rejected: dict[str, str] = {}
    lowest, highest = first.isoformat(), last.isoformat()
    buckets: dict[str, str] = {}  # a day's rows share their bucket: parsed once
    columns = tuple(dimensions.values())
    identify = operator.itemgetter(*columns) if len(columns) > 1 else (lambda r: tuple(r[c] for c in columns))
    checked = isinstance(document, CheckedAnswer)
    if isinstance(document, CheckedAnswer) and document.shape != _shape(dimensions, metrics, granularity):
        # It holds only the fields of its own shape: checking it for another would see the rest as missing.
        raise TypeError("parse_answer: the answer was decoded for other dimensions or metrics")
    for index, row in enumerate(rows):
        if checked:
            day = row["date"]
        else:
            if not isinstance(row, dict):
                raise InvalidResponseError(f"analytics answer: row {index} is {type(row).__name__}, not an object")
            raw = row.get(bucket)
            day = buckets.get(raw) if type(raw) is str else None
            if day is None:
                try:
                    day = bucket_day(raw)
                except ValueError as exc:
                    raise InvalidResponseError(f"analytics answer: row {index}: {bucket}: {exc}") from None
                if type(raw) is str:
                    buckets[raw] = day
        if day in rejected:
            continue
        if not lowest <= day <= highest:
            rejected[day] = f"the answer holds {day}, outside the range asked for ({first} .. {last})"
            continue
        if checked:
            parsed = row  # already the stored form
        else:
            try:
                parsed = _row(row, day, dimensions, metrics)
            except ValueError as exc:
                rejected[day] = f"row {index}: {exc}"
                days.pop(day, None)
                continue
        ident = identify(parsed)
        if ident in seen.setdefault(day, set()) and merge_duplicates:
            twin = next(r for r in days[day] if identify(r) == ident)
            for name in metrics:
                if metrics[name] == MEASURE:
                    rejected[day] = f"row {index}: two rows for {dict(zip(dimensions, ident))} with {name}, which cannot be added"
                    break
                if parsed[name] is not None:
                    twin[name] = parsed[name] if twin[name] is None else twin[name] + parsed[name]
                    if metrics[name] == COUNT and twin[name] > MAX_COUNT:
                        rejected[day] = f"row {index}: {name}: the rows for {dict(zip(dimensions, ident))} add up beyond {MAX_COUNT}"
                        break
            if day in rejected:
                days.pop(day, None)
            continue
        if ident in seen[day]:
            rejected[day] = f"row {index}: duplicate row for {dict(zip(dimensions, ident))}"
            days.pop(day, None)
            continue
        seen[day].add(ident)
        days.setdefault(day, []).append(parsed)
    return ParsedAnswer(days, rejected, warnings)


def _row(row: Mapping[str, Any], day: str, dimensions: Mapping[str, str], metrics: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"date": day}
    for name, column in dimensions.items():
        value = row.get(name)
        if type(value) is str and len(value) <= 1000:  # the usual case, without a call
            out[column] = value
            continue
        try:
            out[column] = _dimension(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    for name, kind in metrics.items():
        if name not in row:
            raise ValueError(f"{name}: missing")
        value = row[name]
        # The usual cases without a call: what count() and amount() would return unchanged.
        if kind == COUNT:
            if type(value) is int and 0 <= value <= MAX_COUNT:
                out[name] = value
                continue
        elif type(value) is float and value - value == 0.0 and (kind == AMOUNT or value >= 0):  # finite
            out[name] = value
            continue
        try:
            if kind == COUNT:
                out[name] = count(value)
            elif kind == AMOUNT:
                out[name] = amount(value)
            else:
                out[name] = amount(value, negative=False)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def held_days(document: Any, granularity: str = "day") -> tuple[int, date | None]:
    """How many days a (truncated) answer's rows hold, and the first of them (rows whose bucket
    cannot be read as a day are left out), the same for either form of the document."""
    rows = document.get("data", {}).get("data") if isinstance(document, dict) and isinstance(document.get("data"), dict) else None
    if not isinstance(rows, list):
        return 0, None
    if isinstance(document, CheckedAnswer):
        days = {r["date"] for r in rows}
    else:
        days = set()
        for r in rows:
            try:
                days.add(_bucket_day(r.get(f"date__{granularity}")) if isinstance(r, dict) else "")
            except (TypeError, ValueError):  # unreadable (or unhashable): not a day held
                continue
        days.discard("")
    return len(days), date.fromisoformat(min(days)) if days else None


def split_range(first: date, last: date, parts: int) -> list[tuple[date, date]]:
    """``first`` … ``last`` cut into ``parts`` contiguous ranges of near-equal length."""
    total = (last - first).days + 1
    parts = max(1, min(parts, total))
    out = []
    start = 0
    for i in range(parts):
        size = total // parts + (1 if i < total % parts else 0)
        out.append((date.fromordinal(first.toordinal() + start), date.fromordinal(first.toordinal() + start + size - 1)))
        start += size
    return out


def runs(days: Sequence[date]) -> list[tuple[date, date]]:
    """Contiguous runs of ``days`` (sorted, distinct) as (first, last) pairs."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and (day - out[-1][1]).days == 1:
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out
