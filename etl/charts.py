"""PDF and PNG reports with matplotlib (object API, no pyplot global state).

The PDF follows OpenRouter's own export: a summary page (totals of spend, BYOK spend,
tokens and requests, and a chart over time), then one page per group with its own
breakdown over time. The PNG is the summary chart alone. Figures agree to the cent with
the table, CSV and JSON of the same report: they are drawn from the same query results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import IO, Any

from sqlalchemy import Connection

from etl.export import LABELS
from etl.query import MONEY, OTHER, TIME_DIMENSIONS, Report, archive_range, pick_bucket, time_series
from etl.render import human_count, usd

PAGE = (11.69, 8.27)  # A4 landscape, inches
MAX_SERIES = 8  # stacked series on one chart; the rest is folded into "other"


def _fmt(metric: str, value: float) -> str:
    return usd(value) if metric in MONEY else human_count(value)


def _series(conn: Connection, report: Report, bucket: str, by: str | None, metric: str) -> tuple[list[str], dict[str, list[float]]]:
    """Buckets on the x axis and, per series, the metric in each bucket."""
    rows = time_series(conn, report.spec, bucket, by).rows
    buckets = sorted({str(r[bucket]) for r in rows})
    index = {b: i for i, b in enumerate(buckets)}
    if by is None:
        values = [0.0] * len(buckets)
        for r in rows:
            values[index[str(r[bucket])]] += r[metric]
        return buckets, {LABELS[metric]: values}
    totals: dict[str, float] = defaultdict(float)
    for r in rows:
        totals[str(r[by])] += r[metric]
    keep = sorted(totals, key=lambda k: -totals[k])[:MAX_SERIES]
    series: dict[str, list[float]] = {k: [0.0] * len(buckets) for k in keep}
    for r in rows:
        name = str(r[by]) if str(r[by]) in series else OTHER
        series.setdefault(name, [0.0] * len(buckets))[index[str(r[bucket])]] += r[metric]
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
    ax.yaxis.set_major_formatter(lambda v, _pos: _fmt(metric, v))
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _summary_figure(conn: Connection, report: Report, metric: str) -> Any:
    from matplotlib.figure import Figure

    first, last = archive_range(conn, report.spec)
    since, until = report.spec.since or first, report.spec.until or last
    bucket = pick_bucket(since, until)
    by = next((g for g in report.spec.group_by if g not in TIME_DIMENSIONS), None)
    buckets, series = _series(conn, report, bucket, by, metric)

    fig = Figure(figsize=PAGE)
    fig.suptitle(f"OpenRouter usage, {since or '…'} to {until or '…'}", fontsize=16, x=0.05, ha="left", parse_math=False)
    t = report.totals
    lines = [
        f"Spend (OpenRouter credits): {usd(t['usage'])}",
        f"BYOK spend (estimated, not charged by OpenRouter): {usd(t['byok_usage_inference'])}",
        f"Requests: {t['requests']:,}",
        f"Tokens: {t['total_tokens']:,} ({t['prompt_tokens']:,} prompt, {t['completion_tokens']:,} completion, "
        f"{t['reasoning_tokens']:,} of them reasoning)",
    ]
    # parse_math=False: two dollar amounts on a line would otherwise be typeset as maths.
    fig.text(0.05, 0.86, "\n".join(lines), fontsize=11, va="top", linespacing=1.6, parse_math=False)
    ax = fig.add_axes((0.07, 0.12, 0.72 if by else 0.88, 0.5))
    _bars(ax, buckets, series, metric)
    ax.set_title(f"{LABELS[metric]} per {bucket}" + (f" by {by}" if by else ""), fontsize=11, loc="left")
    return fig


def _group_pages(conn: Connection, report: Report, metric: str) -> list[Any]:
    from matplotlib.figure import Figure

    group = report.spec.group_by[0]
    second = report.spec.group_by[1] if len(report.spec.group_by) > 1 else None
    values: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rows_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report.rows:
        rows_of[str(row[group])].append(row)
        for m in ("usage", "byok_usage_inference", "requests", "total_tokens"):
            values[str(row[group])][m] += row[m]

    per_time: dict[str, tuple[list[str], dict[str, list[float]]]] = {}
    if group not in TIME_DIMENSIONS:
        first, last = archive_range(conn, report.spec)
        bucket = pick_bucket(report.spec.since or first, report.spec.until or last)
        buckets, series = _series_all(conn, report, bucket, group, metric)
        per_time = {name: (buckets, {LABELS[metric]: s}) for name, s in series.items()}

    figures = []
    for name, rows in rows_of.items():
        fig = Figure(figsize=PAGE)
        v = values[name]
        fig.suptitle(f"{group}: {name}", fontsize=14, x=0.05, ha="left", parse_math=False)
        fig.text(
            0.05, 0.88,
            f"Spend {usd(v['usage'])}   BYOK spend {usd(v['byok_usage_inference'])}   "
            f"Requests {int(v['requests']):,}   Tokens {int(v['total_tokens']):,}",
            fontsize=10, va="top", parse_math=False,
        )
        if name in per_time:
            ax = fig.add_axes((0.07, 0.45 if second else 0.12, 0.88, 0.35 if second else 0.65))
            buckets, series = per_time[name]
            _bars(ax, buckets, series, metric)
            ax.set_title(f"{LABELS[metric]} over time", fontsize=10, loc="left")
        if second:
            top = sorted(rows, key=lambda r: -r[metric])[:15]
            ax2 = fig.add_axes((0.3, 0.07, 0.6, 0.3) if name in per_time else (0.3, 0.1, 0.6, 0.7))
            labels = [str(r[second])[:45] for r in reversed(top)]
            ax2.barh(range(len(top)), [r[metric] for r in reversed(top)])
            ax2.set_yticks(range(len(top)))
            ax2.set_yticklabels(labels, fontsize=8)
            ax2.xaxis.set_major_formatter(lambda x, _pos: _fmt(metric, x))
            ax2.set_title(f"{LABELS[metric]} by {second}", fontsize=10, loc="left")
        figures.append(fig)
    return figures


def _series_all(conn: Connection, report: Report, bucket: str, by: str, metric: str) -> tuple[list[str], dict[str, list[float]]]:
    """Like _series, but every value of ``by`` keeps its own series (folded per the report's top)."""
    rows = time_series(conn, report.spec, bucket, by).rows
    buckets = sorted({str(r[bucket]) for r in rows})
    index = {b: i for i, b in enumerate(buckets)}
    shown = {str(r[by]) for r in report.rows}
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(buckets))
    for r in rows:
        name = str(r[by]) if str(r[by]) in shown or OTHER not in shown else OTHER
        series[name][index[str(r[bucket])]] += r[metric]
    return buckets, dict(series)


def write_pdf(conn: Connection, report: Report, out: IO[bytes], metric: str = "usage") -> int:
    """Write the PDF; returns its number of pages."""
    from matplotlib.backends.backend_pdf import PdfPages

    figures = [_summary_figure(conn, report, metric), *_group_pages(conn, report, metric)]
    with PdfPages(out, metadata={"Title": "OpenRouter usage report", "Creator": "openrouter-archive"}) as pdf:
        for fig in figures:
            pdf.savefig(fig)
    return len(figures)


def write_png(conn: Connection, report: Report, out: IO[bytes], metric: str = "usage") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _summary_figure(conn, report, metric)
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", dpi=110)
