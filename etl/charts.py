"""PDF and PNG reports with matplotlib (object API, no pyplot global state).

The PDF is the accountant's export: page 1 holds the period, the totals and a table of
the groups (spend, BYOK spend, requests, tokens), then a chart over time; then one page
per value of the first group, with its own table and chart. The PNG is the chart alone.
Figures agree to the cent with the table, CSV and JSON of the same report: they are drawn
from the same query results, and tables round by largest remainder (their rows add up to
their total row).

Charts are drawn per the report's own time group when it has one (``-g month,model`` is
"spend per month by model"), else per day up to three months and per month beyond. Every
period of the range gets a bar, zero where there was no activity: a gap is never closed up.
The y axis starts at zero (a flat zero series too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import IO, Any

from sqlalchemy import Connection

from etl.export import LABELS, cents_adding_up, fill_periods
from etl.metrics import AMOUNTS
from etl.query import MONEY, OTHER, TIME_DIMENSIONS, Report, pick_bucket, time_series
from etl.render import human_count, usd

PAGE = (11.69, 8.27)  # A4 landscape, inches
MAX_SERIES = 8  # stacked series on one chart; the rest is folded into "other"
TABLE_ROWS = 12  # group rows in a page's table; the rest are summed into one row
TABLE_METRICS = ("usage", "byok_usage_inference", "requests", "total_tokens")
PERIOD_NAMES = {"date": "day", "week": "week", "month": "month", "year": "year"}


def _fmt(metric: str, value: float) -> str:
    return usd(value) if metric in AMOUNTS else human_count(value)


def _range(conn: Connection, report: Report) -> tuple[str | None, str | None]:
    """The report's range: its --since/--until, else the first and last day with rows
    (across both sources: the Analytics API's history reaches back past /activity's)."""
    days = sorted(str(r["date"]) for r in time_series(conn, report.spec, "date").rows)
    return report.spec.since or (days[0] if days else None), report.spec.until or (days[-1] if days else None)


def chart_plan(report: Report, since: str | None, until: str | None) -> tuple[str, str | None]:
    """The time bucket on the x axis and the group stacked in the bars (or None)."""
    groups = report.spec.group_by
    bucket = next((g for g in groups if g in TIME_DIMENSIONS), None) or pick_bucket(since, until)
    by = next((g for g in groups if g not in TIME_DIMENSIONS), None)
    return bucket, by


def chart_title(metric: str, bucket: str, by: str | None) -> str:
    return f"{LABELS[metric]} per {PERIOD_NAMES[bucket]}" + (f" by {by}" if by else "")


def _series(conn: Connection, report: Report, bucket: str, by: str | None, metric: str,
            since: str | None, until: str | None, every: bool = False) -> tuple[list[str], dict[str, list[float]]]:
    """Every period of the range on the x axis and, per series, the metric in each.

    ``every``: each value of ``by`` shown in the report keeps its own series (the per-group
    pages); else the MAX_SERIES biggest, the rest folded into ``other``.
    """
    rows = time_series(conn, report.spec, bucket, by).rows
    buckets = fill_periods(bucket, sorted({str(r[bucket]) for r in rows}), since, until)
    index = {b: i for i, b in enumerate(buckets)}
    if by is None:
        values = [0.0] * len(buckets)
        for r in rows:
            values[index[str(r[bucket])]] += r[metric] or 0  # a cost component not known (/activity's days): no bar
        return buckets, {LABELS[metric]: values}
    if every:
        shown = {str(r[by]) for r in report.rows}
        keep = shown - {OTHER} if OTHER in shown else {str(r[by]) for r in rows}
    else:
        totals: dict[str, float] = defaultdict(float)
        for r in rows:
            totals[str(r[by])] += r[metric] or 0
        keep = set(sorted(totals, key=lambda k: -totals[k])[:MAX_SERIES])
    series: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: str(r[by]) not in keep):
        name = str(r[by]) if str(r[by]) in keep else OTHER
        series.setdefault(name, [0.0] * len(buckets))[index[str(r[bucket])]] += r[metric] or 0
    return buckets, series


def _bars(ax: Any, buckets: Sequence[str], series: dict[str, list[float]], metric: str) -> None:
    bottom = [0.0] * len(buckets)
    for name, values in series.items():
        ax.bar(range(len(buckets)), values, bottom=bottom, label=name[:40].replace("$", r"\$"))
        bottom = [b + v for b, v in zip(bottom, values)]
    step = max(1, len(buckets) // 15)
    ax.set_xticks(range(0, len(buckets), step))
    ax.set_xticklabels(buckets[::step], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(LABELS[metric])
    lowest = min([0.0, *(v for values in series.values() for v in values)])
    peak = max([0.0, *bottom])
    ax.set_ylim(lowest, peak * 1.05 if peak > 0 else 1.0)  # zero-based, also for a flat zero series
    if metric not in AMOUNTS:  # counts: whole ticks (a flat zero series reads 0 and 1, not 0, 0, 1, 1)
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(lambda v, _pos: _fmt(metric, v))
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def table_cells(rows: Sequence[dict[str, Any]], groups: Sequence[str], totals: dict[str, Any],
                limit: int = TABLE_ROWS) -> tuple[list[str], list[list[str]]]:
    """Header and rows (the last one the total) of a page's table of groups.

    Beyond ``limit`` rows, the rest are summed into one row that says how many it holds,
    so that the table still adds up to its total (money rounded by largest remainder).
    """
    shown = [dict(r) for r in rows[:limit]]
    rest = rows[limit:]
    if rest:
        folded: dict[str, Any] = {g: "" for g in groups}
        folded[groups[0]] = f"… {len(rest)} more"
        for m in TABLE_METRICS:
            folded[m] = sum(r[m] for r in rest)
        shown.append(folded)
    columns: dict[str, list[str]] = {}
    foot: dict[str, str] = {}
    for m in TABLE_METRICS:
        if m in MONEY:
            cents, total = cents_adding_up([r[m] for r in shown], totals[m])
            columns[m], foot[m] = [usd(c / 100) for c in cents], usd(total / 100)
        else:
            columns[m], foot[m] = [f"{int(r[m]):,}" for r in shown], f"{int(totals[m]):,}"
    header = [*groups, *(LABELS[m] for m in TABLE_METRICS)]
    body = [[str(r[g])[:40] for g in groups] + [columns[m][i] for m in TABLE_METRICS] for i, r in enumerate(shown)]
    body.append(["total", *([""] * (len(groups) - 1)), *(foot[m] for m in TABLE_METRICS)])
    return header, body


def _draw_table(fig: Any, box: tuple[float, float, float, float], header: list[str], body: list[list[str]]) -> None:
    ax = fig.add_axes(box)
    ax.axis("off")
    n_groups = sum(1 for h in header if h not in LABELS.values())
    table = ax.table(cellText=body, colLabels=header, loc="upper center", cellLoc="right", colLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (row, col), cell in table.get_celld().items():
        cell.get_text().set_parse_math(False)  # "$1.00 … $2.00" is not maths
        cell.set_linewidth(0.3)
        if col < n_groups:
            cell.get_text().set_horizontalalignment("left")
            cell._loc = "left"
        if row == 0 or row == len(body):
            cell.get_text().set_fontweight("bold")
    table.auto_set_column_width(list(range(len(header))))


def _totals_text(totals: dict[str, Any]) -> str:
    t = totals
    return "\n".join([
        f"Spend (OpenRouter credits): {usd(t['usage'])}",
        f"BYOK spend (estimated, not charged by OpenRouter): {usd(t['byok_usage_inference'])}",
        f"Requests: {t['requests']:,}",
        f"Tokens: {t['total_tokens']:,} ({t['prompt_tokens']:,} prompt, {t['completion_tokens']:,} completion, "
        f"{t['reasoning_tokens']:,} of them reasoning)",
    ])


def _summary_figure(conn: Connection, report: Report, metric: str) -> Any:
    from matplotlib.figure import Figure

    since, until = _range(conn, report)
    bucket, by = chart_plan(report, since, until)
    buckets, series = _series(conn, report, bucket, by, metric, since, until)

    fig = Figure(figsize=PAGE)
    fig.suptitle(f"OpenRouter usage, {since or '…'} to {until or '…'}", fontsize=16, x=0.05, ha="left", parse_math=False)
    # parse_math=False: two dollar amounts on a line would otherwise be typeset as maths.
    fig.text(0.05, 0.91, _totals_text(report.totals), fontsize=10, va="top", linespacing=1.5, parse_math=False)
    header, body = table_cells(report.rows, report.spec.group_by, report.totals)
    fig.text(0.05, 0.74, f"Per {' and '.join(report.spec.group_by)}", fontsize=11, va="top")
    _draw_table(fig, (0.05, 0.40, 0.9, 0.32), header, body)
    ax = fig.add_axes((0.07, 0.08, 0.72 if by else 0.88, 0.26))
    _bars(ax, buckets, series, metric)
    ax.set_title(chart_title(metric, bucket, by), fontsize=11, loc="left")
    if report.note:  # across both sources: where the figures came from, what was left out
        fig.text(0.05, 0.015, "Note: " + report.note, fontsize=6, va="bottom", wrap=True, parse_math=False)
    return fig


def _group_pages(conn: Connection, report: Report, metric: str) -> list[Any]:
    from matplotlib.figure import Figure

    group = report.spec.group_by[0]
    rest = list(report.spec.group_by[1:])
    rows_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report.rows:
        rows_of[str(row[group])].append(row)

    since, until = _range(conn, report)
    per_time: dict[str, tuple[list[str], dict[str, list[float]]]] = {}
    bucket = pick_bucket(since, until)
    if group not in TIME_DIMENSIONS:
        bucket = next((g for g in rest if g in TIME_DIMENSIONS), bucket)
        buckets, series = _series(conn, report, bucket, group, metric, since, until, every=True)
        per_time = {name: (buckets, {LABELS[metric]: s}) for name, s in series.items()}

    figures = []
    for name, rows in rows_of.items():
        fig = Figure(figsize=PAGE)
        fig.suptitle(f"{group}: {name}", fontsize=14, x=0.05, ha="left", parse_math=False)
        totals = {m: sum(r[m] for r in rows) for m in TABLE_METRICS}
        header, body = table_cells(rows, rest or [group], totals) if rest else table_cells(rows, [group], totals)
        height = min(0.36, 0.03 * (len(body) + 1))
        _draw_table(fig, (0.05, 0.88 - height, 0.9, height), header, body)
        if name in per_time:
            ax = fig.add_axes((0.07, 0.1, 0.88, max(0.34, 0.88 - height - 0.2)))
            buckets, series = per_time[name]
            _bars(ax, buckets, series, metric)
            ax.set_title(chart_title(metric, bucket, None), fontsize=10, loc="left")
        figures.append(fig)
    return figures


def write_pdf(conn: Connection, report: Report, out: IO[bytes], metric: str = "usage") -> int:
    """Write the PDF; returns its number of pages."""
    from matplotlib.backends.backend_pdf import PdfPages

    figures = [_summary_figure(conn, report, metric), *_group_pages(conn, report, metric)]
    with PdfPages(out, metadata={"Title": "OpenRouter usage report", "Creator": "openrouter-archive"}) as pdf:
        for fig in figures:
            pdf.savefig(fig)
    return len(figures)


def write_png(conn: Connection, report: Report, out: IO[bytes], metric: str = "usage") -> None:
    """The chart alone: the metric over the report's range, stacked by its group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    since, until = _range(conn, report)
    bucket, by = chart_plan(report, since, until)
    buckets, series = _series(conn, report, bucket, by, metric, since, until)
    fig = Figure(figsize=(11.0, 5.5))
    ax = fig.add_axes((0.08, 0.18, 0.70 if by else 0.88, 0.72))
    _bars(ax, buckets, series, metric)
    ax.set_title(f"{chart_title(metric, bucket, by)}, {since or '…'} to {until or '…'}", fontsize=11, loc="left")
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", dpi=110)
