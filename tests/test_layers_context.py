"""Issue 14: one run context and one request-planning rule, shared by sync and breakdowns."""

from __future__ import annotations

import dataclasses
import threading
from datetime import date, datetime, timezone

import pytest

from etl.context import Request, RunContext, plan_requests
from etl.errors import Interrupted

WINDOW = (date(2026, 10, 23), date(2026, 11, 21))


def test_no_day_is_no_request():
    assert plan_requests([], WINDOW) == []


def test_one_day_is_asked_for_by_date():
    (request,) = plan_requests([date(2026, 11, 1)], WINDOW)
    assert request == Request(date(2026, 11, 1), (date(2026, 11, 1), date(2026, 11, 1)))
    assert request.date_param == "2026-11-01"


@pytest.mark.parametrize("days", [
    [date(2026, 11, 20), date(2026, 11, 21)],
    [date(2026, 10, 23), date(2026, 11, 21)],  # far apart: still one request
    [date(2026, 10, 23) + (date(2026, 10, 24) - date(2026, 10, 23)) * k for k in range(30)],
])
def test_two_days_or_more_are_one_whole_window_request(days):
    (request,) = plan_requests(days, WINDOW)
    assert request == Request(None, WINDOW) and request.date_param is None


def test_the_sync_module_uses_the_same_rule():
    from etl import breakdowns, sync

    assert sync.plan_requests is plan_requests and breakdowns.plan_requests is plan_requests


def context(stop: threading.Event) -> RunContext:
    return RunContext(engine=None, client=None, run_id=7, now=lambda: datetime.now(timezone.utc), stop=stop)  # type: ignore[arg-type]


def test_check_stop_ends_a_step_once_a_stop_is_requested():
    stop = threading.Event()
    ctx = context(stop)
    ctx.check_stop()  # not set: goes on
    stop.set()
    with pytest.raises(Interrupted, match="stop requested"):
        ctx.check_stop()


def test_the_run_context_cannot_be_changed_half_way():
    ctx = context(threading.Event())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.run_id = 8  # type: ignore[misc]


def test_no_function_of_sync_or_breakdowns_takes_the_five_apart():
    """The engine, client, run id, clock and stop travel together in a RunContext."""
    import ast
    from pathlib import Path

    five = {"engine", "client", "run_id", "now", "stop"}
    for name in ("sync.py", "breakdowns.py"):
        tree = ast.parse((Path(__file__).resolve().parent.parent / "etl" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = {a.arg for a in (*node.args.args, *node.args.kwonlyargs)}
                if node.name == "run_sync":  # the public entry point builds the context
                    continue
                assert len(args & five) <= 1, (name, node.name, sorted(args & five))
