"""What the API has shown about its own window: may a day absent from an answer be called empty?

``/activity`` lists only days with activity, and serves today−30 … today−1 by *its* clock,
which need not agree with ours (a sync across midnight, retries past 00:00, a skewed
clock). A day absent from a whole-window answer is therefore either a day without
activity or a day outside the API's window at that moment: just gone (lost for good) or
not served yet. Only the first may be archived as empty.

The API's window is 30 consecutive days that only ever moves forward, a day at each UTC
midnight. A listed day, or a ``date=`` request answered 200, shows a day inside the window
at that moment; a ``date=`` request answered 400 shows it outside. So a day ``d`` was inside
the window when an answer ``A`` was produced if both ends are shown:

* old end: a day ``e <= d`` was served after ``A`` (the first day only moves forward), or
  a day ``e < d`` was served less than a day away from ``A`` (at most one midnight between);
* new end: a day ``e >= d`` was served before ``A``, or a day ``e > d`` less than a day away.

Within one answer both ends hold when it lists a strictly older and a strictly newer day.
"Before" and "after" compare request times conservatively: an answer was produced at some
moment between sending the request and receiving the answer.

Pure logic, no I/O; the callers make the requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

DAY_SECONDS = 86_400.0

Edge = Literal["old", "new"]


@dataclass(frozen=True)
class Moment:
    """When an answer was asked for and received (``time.monotonic()`` seconds)."""

    sent: float
    received: float

    def before(self, other: Moment) -> bool:
        return self.received <= other.sent

    def within_a_day(self, other: Moment) -> bool:
        return max(self.received, other.received) - min(self.sent, other.sent) < DAY_SECONDS


@dataclass(frozen=True)
class Served:
    """The oldest and newest day an answer showed inside the window."""

    first: date
    last: date
    at: Moment


@dataclass(frozen=True)
class Refused:
    """A ``date=`` request answered 400: the day was outside the window at that moment."""

    day: date
    edge: Edge
    at: Moment


@dataclass
class WindowEvidence:
    """Every answer of a run, as evidence of where the API's window was and when."""

    served: list[Served] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def saw(self, days: Iterable[date], at: Moment) -> None:
        shown = list(days)
        if shown:
            self.served.append(Served(min(shown), max(shown), at))

    def refuse(self, day: date, at: Moment, window: tuple[date, date]) -> Edge:
        """Record a 400 for ``day``; returns which end of the window it fell off."""
        edge = self.edge(day, window)
        self.refused.append(Refused(day, edge, at))
        return edge

    def old_end(self, day: date, answer: Moment, own: Iterable[date] = ()) -> bool:
        if any(e <= day for e in own):
            return True
        return any(
            (s.first <= day and answer.before(s.at)) or (s.first < day and s.at.within_a_day(answer)) for s in self.served
        )

    def new_end(self, day: date, answer: Moment, own: Iterable[date] = ()) -> bool:
        if any(e >= day for e in own):
            return True
        return any(
            (s.last >= day and s.at.before(answer)) or (s.last > day and s.at.within_a_day(answer)) for s in self.served
        )

    def held(self, day: date, answer: Moment, own: Iterable[date] = ()) -> bool:
        """Whether ``day`` was inside the API's window when ``answer`` was produced.

        ``own``: the days that answer itself showed served (its listed days, and the day
        of a ``date=`` request answered 200).
        """
        own = list(own)
        return self.old_end(day, answer, own) and self.new_end(day, answer, own)

    def gone(self, day: date, answer: Moment) -> bool:
        """Whether ``day`` had already left the window when ``answer`` was produced."""
        return any(r.edge == "old" and r.day >= day and r.at.before(answer) for r in self.refused)

    def refused_new(self, day: date) -> bool:
        return any(r.edge == "new" and r.day <= day for r in self.refused)

    def edge(self, day: date, window: tuple[date, date]) -> Edge:
        """Which end of the window a day outside it is at: judged by what the API did serve,
        else by where the day sits in our own window."""
        newer = any(s.last > day for s in self.served)
        older = any(s.first < day for s in self.served)
        if newer != older:
            return "old" if newer else "new"
        first, last = window
        return "old" if (day - first) < (last - day) else "new"

    def span(self) -> tuple[date, date] | None:
        """The oldest and newest day seen served in this run."""
        if not self.served:
            return None
        return min(s.first for s in self.served), max(s.last for s in self.served)
