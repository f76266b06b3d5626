"""What every step of one sync run shares, and the one rule for what to ask ``/activity``.

A run's steps (the account's days, each breakdown, the proofs of the window's edges)
write to the same warehouse, ask the same client, stamp the same run id and clock, and
end at the same stop request: ``RunContext`` carries those five together, so that no
function passes them along one by one, and ``check_stop`` is the one place a step ends
on a stop request.

``plan_requests`` is the rule every caller of ``/activity`` follows (the account in
``etl.sync``, every key, member or workspace in ``etl.breakdowns``): a plan of one day
asks for that day alone (``date=``), which keeps the answer small; a plan of two or more
days asks for the whole API window at once, one request, whose unplanned days are
neither validated nor loaded (the raw answer keeps them). Pure; no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, NamedTuple

from etl.errors import Interrupted

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from etl.client import OpenRouterClient


@dataclass(frozen=True)
class RunContext:
    """The warehouse, the client, the run being recorded, its clock and its stop event."""

    engine: Engine
    client: OpenRouterClient
    run_id: int | None
    now: Callable[[], datetime]
    stop: threading.Event

    def check_stop(self) -> None:
        """Raise Interrupted when a stop was requested: called before each request and each day written."""
        if self.stop.is_set():
            raise Interrupted("interrupted: stop requested")


class Request(NamedTuple):
    """One ``GET /activity``: the day of its ``date=`` parameter (None: the whole window) and the days its answer covers."""

    day: date | None
    covers: tuple[date, date]

    @property
    def date_param(self) -> str | None:
        return self.day.isoformat() if self.day is not None else None


def plan_requests(days: Sequence[date], api_window: tuple[date, date]) -> list[Request]:
    """The requests that fetch ``days``: none for no day, ``date=`` for one, else the whole window once."""
    if not days:
        return []
    if len(days) == 1:
        return [Request(days[0], (days[0], days[0]))]
    return [Request(None, api_window)]
