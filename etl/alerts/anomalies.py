"""Spend anomalies, pure: one day's spend of a model, key, member, workspace or app against
its own trailing 28 days.

Baseline: the days of the 28 before ``day`` that the archive holds (a held day without
spend counts as $0; a day not archived is left out). With 4+ weeks of them (at least four
values on ``day``'s weekday) the expected value is the median of that weekday and the
spread the MAD of every day's distance from its weekday's median (a day-of-week profile:
weekends are quieter); otherwise the median and MAD of all of them. The score is
(value − expected) / (1.4826 × MAD), the spread floored at 5% of the expected value and
1 cent so that a flat history does not make every cent infinite.

An anomaly needs all of: at least 7 baseline days, a score ≥ ``sensitivity``, and an excess
(value − expected) ≥ ``min_usd``: cents never alert. A subject with no spend in its whole
baseline that spends ≥ ``min_usd`` is a "new spender" (with 7+ baseline days held, so a new
archive does not call everything new).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from etl.alerts.findings import Finding, usd

WINDOW_DAYS = 28
MIN_BASELINE_DAYS = 7
PROFILE_MIN_SAME_WEEKDAY = 4
MAD_SCALE = 1.4826  # MAD of a normal distribution's sample → its standard deviation


@dataclass(frozen=True)
class Baseline:
    expected: float
    spread: float  # 1.4826 x MAD, floored
    days: int
    method: str  # "weekday" | "flat"


def baseline(history: Mapping[date, float], day: date) -> Baseline | None:
    """The expected spend of ``day`` from ``history`` (its 28 prior days, held ones only)."""
    window = {d: v for d, v in history.items() if day - timedelta(days=WINDOW_DAYS) <= d < day}
    if len(window) < MIN_BASELINE_DAYS:
        return None
    by_weekday: dict[int, list[float]] = {}
    for d, v in window.items():
        by_weekday.setdefault(d.weekday(), []).append(v)
    if len(by_weekday.get(day.weekday(), [])) >= PROFILE_MIN_SAME_WEEKDAY:
        medians = {w: statistics.median(vs) for w, vs in by_weekday.items()}
        expected = medians[day.weekday()]
        mad = statistics.median(abs(v - medians[d.weekday()]) for d, v in window.items())
        method = "weekday"
    else:
        expected = statistics.median(window.values())
        mad = statistics.median(abs(v - expected) for v in window.values())
        method = "flat"
    spread = max(MAD_SCALE * mad, 0.05 * abs(expected), 0.01)
    return Baseline(expected, spread, len(window), method)


def detect(
    dimension: str, series: Mapping[str, Mapping[date, float]], day: date, held_days: Iterable[date], *,
    min_usd: float, sensitivity: float, labels: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Anomalies and new spenders of ``day`` among the subjects of one dimension.

    ``series`` maps a subject (model id, key hash...) to its spend per day; ``held_days`` are
    the days the archive holds for this dimension (on which a missing subject spent $0).
    """
    held = set(held_days)
    if day not in held:
        return []
    window = [day - timedelta(days=i) for i in range(1, WINDOW_DAYS + 1) if day - timedelta(days=i) in held]
    out = []
    for subject, per_day in sorted(series.items()):
        value = per_day.get(day, 0.0)
        if value < min_usd:
            continue  # the floor: neither an anomaly nor a new spender can be below it
        name = (labels or {}).get(subject, subject)
        scope = f"{dimension}={name}"
        history = {d: per_day.get(d, 0.0) for d in window}
        if len(window) >= MIN_BASELINE_DAYS and not any(history.values()):
            text = f'new spender: {dimension} "{name}" spent {usd(value)} on {day.isoformat()}, with no spend in the {len(window)} day(s) before'
            out.append(Finding("new_spender", "anomaly", scope, day.isoformat(), "", value, None, 0.0, text,
                               {"dimension": dimension, "subject": subject, "name": name, "day": day.isoformat(), "baseline_days": len(window)}))
            continue
        base = baseline(history, day)
        if base is None:
            continue
        score = (value - base.expected) / base.spread
        if score >= sensitivity and value - base.expected >= min_usd:
            text = (f'anomaly: {dimension} "{name}" spent {usd(value)} on {day.isoformat()}, baseline {usd(base.expected)} '
                    f"(robust z {score:.1f}, {base.method}, {base.days} day(s))")
            out.append(Finding("anomaly", "anomaly", scope, day.isoformat(), "", value, None, base.expected, text,
                               {"dimension": dimension, "subject": subject, "name": name, "day": day.isoformat(), "score": round(score, 2),
                                "method": base.method, "baseline_days": base.days}))
    return out
