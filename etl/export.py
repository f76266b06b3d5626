"""Report output: table, CSV, JSON, NDJSON and a terminal bar chart (pure formatting).

CSV and JSON carry exact numbers (floats as Python prints them, no rounding); the table
rounds money to cents and, on a terminal, shows human units ($1,234.56, 12.3M tokens).
PDF and PNG live in ``etl/charts.py``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import IO, Any

from etl.query import METRICS, MONEY, Report
from etl.render import human_count, usd

LABELS = {
    "usage": "spend",
    "byok_usage_inference": "BYOK spend",
    "requests": "requests",
    "prompt_tokens": "prompt tok",
    "completion_tokens": "completion tok",
    "reasoning_tokens": "reasoning tok",
    "cached_tokens": "cached tok",
    "total_tokens": "total tok",
}


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([row[c] for c in report.columns])
    return out.getvalue()


def to_json(report: Report) -> str:
    return json.dumps([{c: row[c] for c in report.columns} for row in report.rows], indent=2) + "\n"


def to_ndjson(report: Report) -> str:
    return "".join(json.dumps({c: row[c] for c in report.columns}) + "\n" for row in report.rows)


def cell(metric: str, value: Any, human: bool) -> str:
    if metric in MONEY:
        return usd(value)
    return human_count(value) if human else f"{value:,}"


def table_rows(report: Report, human: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and footer (totals) cells; cached tokens only when there are any."""
    metrics = [m for m in METRICS if m != "cached_tokens" or report.totals.get("cached_tokens")]
    header = [*report.spec.group_by, *(LABELS[m] for m in metrics)]
    body = [[str(row[g]) for g in report.spec.group_by] + [cell(m, row[m], human) for m in metrics] for row in report.rows]
    footer = ["total", *([""] * (len(report.spec.group_by) - 1)), *(cell(m, report.totals[m], human) for m in metrics)]
    return header, body, footer


def print_table(report: Report, human: bool, width: int | None = None, file: IO[str] | None = None) -> None:
    """Aligned table with a totals row, on stdout or into ``file`` (plain text, no colour)."""
    from rich.console import Console
    from rich.table import Table

    header, body, footer = table_rows(report, human)
    table = Table(show_footer=True, show_edge=False, pad_edge=False)
    n_groups = len(report.spec.group_by)
    for i, (name, foot) in enumerate(zip(header, footer)):
        table.add_column(name, footer=foot, justify="left" if i < n_groups else "right", no_wrap=i < n_groups)
    for cells in body:
        table.add_row(*cells)
    Console(width=width, file=file, color_system=None if file else "auto").print(table)


def bar_chart(report: Report, metric: str = "usage", width: int = 40) -> str:
    """Horizontal bars of ``metric`` per value of the first group (summed over the second)."""
    first = report.spec.group_by[0]
    totals: dict[str, float] = {}
    for row in report.rows:
        key = str(row[first])
        totals[key] = totals.get(key, 0) + row[metric]
    if not totals:
        return "(no rows)\n"
    fmt: Callable[[Any], str] = usd if metric in MONEY else human_count
    peak = max(totals.values()) or 1
    label_width = min(40, max(len(k) for k in totals))
    lines = [f"{LABELS[metric]} by {first}"]
    for key, value in totals.items():
        filled = value / peak * width
        bar = "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else "")
        lines.append(f"{key[:label_width]:<{label_width}} {bar:<{width + 1}} {fmt(value)}")
    return "\n".join(lines) + "\n"
