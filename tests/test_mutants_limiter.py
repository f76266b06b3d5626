"""Mutation audit (module ``limiter``): the Analytics API's 64 requests a minute, exactly.

The limit is the API's (64 per 60 s): the default setting, the window ``run_analytics``
gives the limiter, and the limiter's own count are each checked without a timed assert (a
hand-driven clock; a stop request ends a wait that would otherwise last).
"""

from __future__ import annotations

import inspect
import threading

import pytest

from etl.analytics import RateLimiter, run_analytics
from etl.config import SyncConfig
from etl.errors import Interrupted


def test_the_default_is_64_requests_per_60_seconds():
    assert SyncConfig().analytics_requests_per_minute == 64
    assert inspect.signature(run_analytics).parameters["rate_window"].default == 60.0


def test_the_limit_plus_one_request_waits_for_the_window():
    clock = {"now": 0.0}
    stop = threading.Event()
    limiter = RateLimiter(3, 60.0, stop, clock=lambda: clock["now"])
    for _ in range(3):
        with limiter.slot():
            pass
    assert limiter.most == 3
    clock["now"] = 59.5
    stop.set()  # the fourth would wait half a second more: the stop ends the wait
    with pytest.raises(Interrupted):
        with limiter.slot():
            pass
    stop.clear()
    clock["now"] = 60.0  # the three ended a whole window ago: their slots are free
    with limiter.slot():
        pass
    assert limiter.most == 3
