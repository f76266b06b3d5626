"""Report output: table, CSV, JSON, NDJSON and a terminal bar chart (pure formatting).

CSV and JSON carry exact amounts: money is summed exactly and rounded to 1e-9 USD
(``etl.query.exact_money``), so no float noise, and the same digits on SQLite and
PostgreSQL. The table rounds money to cents by largest remainder, so that its rows add up
to its total row (``cents_adding_up``); on a terminal it shows human units ($1,234.56,
12.3M tokens) and leaves out the columns that do not fit, least important first.
PDF and PNG live in ``etl/charts.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from fractions import Fraction
from typing import IO, Any

from etl import metrics as metric_names
from etl.errors import BadArgument
from etl.metrics import AMOUNTS, LABELS, LATENCY, UNITS
from etl.query import TIME_DIMENSIONS, Report
from etl.render import human_count, usd

def rows_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV with a header row; NULL is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def rows_json(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A JSON array of objects keyed by column name (values JSON cannot hold as text)."""
    return json.dumps([dict(zip(columns, r)) for r in rows], indent=2, default=str) + "\n"


def rows_ndjson(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    return "".join(json.dumps(dict(zip(columns, r)), default=str) + "\n" for r in rows)


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], width: int | None = None, file: IO[str] | None = None) -> None:
    """Any columns and rows as an aligned table (NULL shown as ``NULL``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    for name in columns:
        table.add_column(name)
    for r in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in r))
    Console(width=width, file=file, color_system=None if file else "auto").print(table)


TEXT_FORMATS = {"csv": rows_csv, "json": rows_json, "ndjson": rows_ndjson}


def _cells(report: Report) -> list[list[Any]]:
    return [[row[c] for c in report.columns] for row in report.rows]


def to_csv(report: Report) -> str:
    return rows_csv(report.columns, _cells(report))


def to_json(report: Report) -> str:
    return rows_json(report.columns, _cells(report))


def to_ndjson(report: Report) -> str:
    return rows_ndjson(report.columns, _cells(report))


# Table columns in the order they are given up when the terminal is too narrow: the last
# first. Spend and BYOK spend are never dropped, nor the extra metrics asked for by name.
PRIORITY = ("usage", "byok_usage_inference", *metric_names.EXTRA, "requests", *LATENCY, "total_tokens", "prompt_tokens",
            "completion_tokens", "reasoning_tokens", "cached_tokens")
KEPT = ("usage", "byok_usage_inference", *metric_names.EXTRA, *LATENCY)
GROUP_MIN_WIDTH = 14  # a group column is cut (with …) down to this before a metric is dropped


metric_aliases, metric_choices, resolve_metric = metric_names.aliases, metric_names.choices, metric_names.resolve


def parse_columns(text: str | None) -> tuple[str, ...] | None:
    """``--columns usage,requests`` → the metrics to show, in that order (None: automatic)."""
    if text is None:
        return None
    picked = tuple(dict.fromkeys(resolve_metric(part, "column") for part in text.split(",") if part.strip()))
    if not picked:
        raise BadArgument("--columns: name at least one column, e.g. --columns spend,requests")
    return picked


def cell(metric: str, value: Any, human: bool) -> str:
    """A table cell: USD, a count, or latency with its unit; ``n/a`` for a value not known."""
    if value is None:
        return "n/a"
    if metric in AMOUNTS:
        return usd(value)
    if metric in LATENCY:
        return f"{value:,.1f} {UNITS[metric]}"
    return human_count(value) if human else f"{value:,}"


def cents_adding_up(values: Sequence[float], total: float) -> tuple[list[int], int]:
    """Each value in whole cents such that the cents add up to ``total`` in cents.

    The total is rounded to the cent as ``f"{total:.2f}"`` would (exactly, from the
    float's binary value). Largest-remainder rounding (Hamilton's method): every value is
    rounded down to the cent, then the cents still missing go one each to the values with
    the largest remainders (ties: the earlier row). Each shown value is then less than a
    cent from its exact amount, and the table's rows add up to its total row. Returns the
    cents per value and the total's cents.
    """
    exact = [Fraction(v) * 100 for v in values]
    floors = [math.floor(e) for e in exact]
    total_cents = round(Fraction(total) * 100)
    missing = total_cents - sum(floors)
    if not 0 <= missing <= len(values):  # a total that is not the sum of these values
        return [round(e) for e in exact], total_cents
    for i in sorted(range(len(values)), key=lambda i: (floors[i] - exact[i], i))[:missing]:
        floors[i] += 1
    return floors, total_cents


def _money_cells(report: Report, metric: str) -> tuple[list[str], str]:
    """Cents adding up to the total row; ``n/a`` where a value is not known (a cost component
    on /activity's days), the known ones adding up to the total."""
    known = [i for i, row in enumerate(report.rows) if row[metric] is not None]
    if report.totals.get(metric) is None:
        return ["n/a"] * len(report.rows), "n/a"
    cents, total = cents_adding_up([report.rows[i][metric] for i in known], report.totals[metric])
    shown = ["n/a"] * len(report.rows)
    for i, c in zip(known, cents):
        shown[i] = usd(c / 100)
    return shown, usd(total / 100)


def default_metrics(report: Report) -> list[str]:
    """The table's columns before fitting: every metric of the report; cached tokens only when
    there are any."""
    return [m for m in report.spec.columns if m != "cached_tokens" or report.totals.get("cached_tokens")]


def table_rows(report: Report, human: bool, columns: Sequence[str] | None = None) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and footer (totals) cells; cached tokens only when there are any.

    Money cells are rounded so that the rows add up to the total row (``cents_adding_up``).
    """
    metrics = default_metrics(report) if columns is None else list(columns)
    groups = report.spec.group_by
    header = [*groups, *(LABELS[m] for m in metrics)]
    cols: list[list[str]] = []
    feet: list[str] = []
    for m in metrics:
        if m in AMOUNTS:
            body_cells, foot = _money_cells(report, m)
        else:
            body_cells, foot = [cell(m, row[m], human) for row in report.rows], cell(m, report.totals[m], human)
        cols.append(body_cells)
        feet.append(foot)
    body = [[str(row[g]) for g in groups] + [c[i] for c in cols] for i, row in enumerate(report.rows)]
    footer = ["total", *([""] * (len(groups) - 1)), *feet]
    if any("source" in row for row in report.rows):  # reports across both sources say where each row came from
        header.append("source")
        body = [[*cells, str(row.get("source", ""))] for cells, row in zip(body, report.rows)]
        footer.append("")
    return header, body, footer


def fit_columns(header: Sequence[str], body: Sequence[Sequence[str]], footer: Sequence[str], n_groups: int,
                metrics: Sequence[str], width: int) -> list[str]:
    """The metrics that fit in ``width`` characters, dropping the lowest priority first.

    Widths as rich draws this table (no outer edge, one space of padding, a one-character
    rule between columns); group columns count at most GROUP_MIN_WIDTH since rich cuts
    them with an ellipsis.
    """
    def natural(i: int) -> int:
        return max(len(header[i]), len(footer[i]), *(len(r[i]) for r in body)) if body else max(len(header[i]), len(footer[i]))

    widths = {i: natural(i) for i in range(len(header))}
    group_width = sum(min(widths[i], GROUP_MIN_WIDTH) for i in range(n_groups))
    shown = list(metrics)
    ranked = sorted(shown, key=lambda m: PRIORITY.index(m) if m in PRIORITY else len(PRIORITY))

    def needed(ms: Sequence[str]) -> int:
        cells = group_width + sum(widths[n_groups + list(metrics).index(m)] for m in ms)
        n = n_groups + len(ms)
        return cells + 2 * n - 2 + (n - 1)  # padding inside, minus the unpadded edges, plus rules

    while needed(shown) > width:
        droppable = [m for m in reversed(ranked) if m in shown and m not in KEPT]
        if not droppable:
            break
        shown.remove(droppable[0])
    return shown


def group_widths(naturals: Sequence[int], room: int, minimum: int = GROUP_MIN_WIDTH) -> list[int]:
    """Widths for the group columns within ``room`` characters: each its natural width when
    they fit, else the narrowest first keep theirs and the rest share what is left (at
    least ``minimum`` each, or its natural width when narrower)."""
    caps = list(naturals)
    if sum(caps) <= room:
        return caps
    left, order = room, sorted(range(len(caps)), key=lambda i: caps[i])
    for k, i in enumerate(order):
        share = left // (len(order) - k)
        caps[i] = max(min(naturals[i], share), min(naturals[i], minimum))
        left -= caps[i]
    return caps


def print_table(report: Report, human: bool, width: int | None = None, file: IO[str] | None = None,
                columns: Sequence[str] | None = None) -> list[str]:
    """Aligned table with a totals row, on stdout or into ``file`` (plain text, no colour).

    Without ``columns``, metrics that do not fit the width are left out, the least
    important first (spend and BYOK spend are always shown, in full); returns the labels
    of the columns left out, for a note.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(width=width, file=file, color_system=None if file else "auto")
    metrics = list(columns) if columns is not None else default_metrics(report)
    header, body, footer = table_rows(report, human, metrics)
    n_groups = len(report.spec.group_by)
    sourced = len(header) > n_groups + len(metrics)  # the last column says where each row came from
    room = console.width - (max(len(header[-1]), *(len(r[-1]) for r in body)) + 3 if sourced and body else 0)
    shown = metrics if columns is not None else fit_columns(header, body, footer, n_groups, metrics, room)
    dropped = [m for m in metrics if m not in shown]
    keep = list(range(n_groups)) + [n_groups + metrics.index(m) for m in shown] + ([len(header) - 1] if sourced else [])
    def natural(i: int) -> int:
        return max(len(header[i]), len(footer[i]), *(len(r[i]) for r in body)) if body else max(len(header[i]), len(footer[i]))

    # rich measures a no_wrap column's minimum as its whole text and, short of room, crops
    # the table's right edge (a number cut to "26,85"): cap the group columns to what the
    # metrics leave instead, so that only a group label is ever cut, with an ellipsis.
    others = [i for i in keep if i >= n_groups]
    used = sum(natural(i) for i in others) + 3 * (len(keep) - 1)  # padding and rules
    caps = group_widths([natural(i) for i in range(n_groups)], console.width - used)
    table = Table(show_footer=True, show_edge=False, pad_edge=False)
    for i in keep:
        if i < n_groups:
            table.add_column(header[i], footer=footer[i], justify="left", no_wrap=True, overflow="ellipsis", max_width=caps[i])
        elif sourced and i == len(header) - 1:
            table.add_column(header[i], footer=footer[i], justify="left", no_wrap=True, overflow="ellipsis")
        else:  # a number is never cut: its full width is reserved
            full = max(len(header[i]), len(footer[i]), *(len(r[i]) for r in body)) if body else len(footer[i])
            table.add_column(header[i], footer=footer[i], justify="right", no_wrap=True, min_width=full)
    for cells in body:
        table.add_row(*(cells[i] for i in keep))
    console.print(table)
    return [LABELS[m] for m in dropped]


def period_label(bucket: str, day: date) -> str:
    """The label SQL gives ``day`` when grouped by ``bucket`` (``2026-W47``, ``2026-11``)."""
    if bucket == "date":
        return day.isoformat()
    if bucket == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day:%Y-%m}" if bucket == "month" else f"{day:%Y}"


def period_start(bucket: str, label: str) -> date:
    """The first day of the period ``label`` names (the inverse of ``period_label``)."""
    if bucket == "date":
        return date.fromisoformat(label)
    if bucket == "week":
        year, _, week = label.partition("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    return date.fromisoformat(label + "-01") if bucket == "month" else date(int(label), 1, 1)


def fill_periods(bucket: str, labels: Sequence[str], since: str | None = None, until: str | None = None) -> list[str]:
    """Every period from ``since`` (or the first label) to ``until`` (or the last), in order:
    a day, week or month without activity is a bar of zero, never a gap closed up."""
    if not labels and not (since and until):
        return []
    starts = [period_start(bucket, label) for label in labels]
    first = date.fromisoformat(since) if since else min(starts)
    last = date.fromisoformat(until) if until else max(starts)
    first, last = min([first, *starts]), max([last, *starts])
    seen: dict[str, None] = {}
    day = first
    while day <= last:
        seen.setdefault(period_label(bucket, day), None)
        day += timedelta(days=1 if bucket in ("date", "week") else 28 if bucket == "month" else 365)
    seen.setdefault(period_label(bucket, last), None)
    return list(seen)


def bar_chart(report: Report, metric: str = "usage", width: int = 40) -> str:
    """Horizontal bars of ``metric`` per value of the first group (summed over the second;
    latency: its request-weighted mean over the second, never a sum).

    A time group shows every period of the range, zero where there was no activity; a value
    not known (a cost component on /activity's days only, latency on a day without it) is
    shown as ``n/a`` with no bar.
    """
    from etl.query_history import combine

    first = report.spec.group_by[0]
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for row in report.rows:
        rows_of.setdefault(str(row[first]), []).append(row)
    totals: dict[str, float | None] = {k: combine(rows, metric) for k, rows in rows_of.items()}
    if first in TIME_DIMENSIONS and totals:
        empty = None if metric in LATENCY else 0
        totals = {p: totals.get(p, empty) for p in fill_periods(first, sorted(totals), report.spec.since, report.spec.until)}
    if not totals:
        return "(no rows)\n"
    peak = max((abs(v) for v in totals.values() if v is not None), default=0) or 1  # a negative amount (usage_data) by its size
    label_width = min(40, max(len(k) for k in totals))
    lines = [f"{LABELS[metric]} by {first}" + (f" ({UNITS[metric]}, request-weighted mean)" if metric in LATENCY else "")]
    for key, value in totals.items():
        filled = abs(value or 0) / peak * width
        bar = "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else "")
        shown = "n/a" if value is None else usd(value) if metric in AMOUNTS else f"{value:,.1f}" if metric in LATENCY else human_count(value)
        lines.append(f"{key[:label_width]:<{label_width}} {bar:<{width + 1}} {shown}")
    return "\n".join(lines) + "\n"
