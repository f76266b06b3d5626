"""Issue 14, step 6: one exception module, the query layer's own bad-argument error, one
credits path for `credits` and the daemon, dialect tests in etl/db.py."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

import etl
from etl import errors
from etl.errors import ArchiveError, BadArgument, InvalidResponseError
from etl.standin import Fault
from tests.conftest import KEY, query

BAD_CREDITS = [b'{"data": {"total_credits": "lots", "total_usage": 1}}', b'{"data": {"total_credits": true, "total_usage": 1}}',
               b'{"data": {"total_usage": 1}}', b'{"data": []}', b'[]',
               b'{"data": {"total_credits": 1' + b'0' * 400 + b', "total_usage": 1}}']  # beyond any double: OverflowError, not a balance


def etl_modules():
    for info in pkgutil.walk_packages(etl.__path__, "etl."):
        if ".standin" in info.name or info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_archive_error_lives_in_etl_errors_and_its_docstring():
    found = {}
    for module in etl_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, ArchiveError):
                found[obj.__name__] = obj
    assert {"LockTimeout", "ReadOnlyViolation", "SyncFailed", "BadArgument"} <= set(found)
    for name, cls in found.items():
        assert cls.__module__ == "etl.errors", name
        line = next((line for line in errors.__doc__.splitlines() if f" {name} " in line), None)
        assert line is not None and f" {cls.exit_code} " in line, name


def test_old_import_paths_still_work():
    from etl.daemon import SyncFailed
    from etl.db import ReadOnlyViolation
    from etl.lock import LockTimeout

    assert LockTimeout.exit_code == 75 and SyncFailed is errors.SyncFailed and ReadOnlyViolation is errors.ReadOnlyViolation


def test_the_query_layer_raises_bad_argument():
    from etl.query import ReportSpec, last_range, parse_day

    for call in (lambda: ReportSpec(("colour",)), lambda: parse_day("soon"), lambda: last_range("x", None)):
        with pytest.raises(BadArgument):
            call()


def test_a_real_value_error_is_not_called_a_bad_argument(run, cli_env, monkeypatch):
    assert run("backfill", "--days", "2").exit_code == 0
    import etl.query

    def broken(rows, spec):
        raise ValueError("a bug")

    monkeypatch.setattr(etl.query, "order_rows", broken)  # a bug no server can produce
    result = run("report")
    assert result.exit_code == 1 and "unexpected ValueError: a bug" in result.stderr


@pytest.mark.parametrize("body", BAD_CREDITS)
def test_parse_credits_refuses_what_is_not_a_balance(body):
    import json

    from etl.validate import parse_credits

    with pytest.raises(InvalidResponseError, match="GET /credits"):
        parse_credits(json.loads(body), body)


def test_parse_credits_reads_a_balance():
    from etl.validate import parse_credits

    balance = parse_credits({"data": {"total_credits": 10, "total_usage": 2.5}}, b"")
    assert (balance.total_credits, balance.total_usage, balance.remaining) == (10.0, 2.5, 7.5)


def build_daemon(api, warehouse_url):
    from etl import migrate
    from etl.client import OpenRouterClient
    from etl.config import parse_config
    from etl.daemon import Daemon
    from etl.db import open_engine

    config = parse_config({"openrouter": {"base_url": api.base_url, "max_attempts": 1, "timeout_seconds": 2},
                           "warehouse": {"url": warehouse_url}, "sync": {"lock_timeout_seconds": 5}}, "test")
    engine = open_engine(warehouse_url)
    migrate.upgrade(engine)
    stop = threading.Event()
    client = OpenRouterClient.from_config(config.openrouter, KEY, stop=stop)
    return Daemon.build(config, engine, client, stop, scheduler=BackgroundScheduler())


@pytest.mark.parametrize("body", BAD_CREDITS[:2])
def test_the_daemon_credits_job_checks_the_answer_like_the_command(api, warehouse_url, run, cli_env, body):
    daemon = build_daemon(api, warehouse_url)
    api.inject(Fault("body", path="/credits", body=body), Fault("body", path="/credits", body=body))
    with pytest.raises(InvalidResponseError, match="GET /credits"):
        daemon.credits_job()
    result = run("credits")
    assert result.exit_code == 1 and "GET /credits: unexpected body" in result.stderr
    assert query(warehouse_url, "SELECT count(*) FROM credits_snapshots") == [(0,)]
    daemon.credits_job()  # a good answer: stored
    assert query(warehouse_url, "SELECT count(*) FROM credits_snapshots") == [(1,)]
    daemon.engine.dispose()


def test_sqlite_files_and_memory_are_told_apart_in_one_place():
    from pathlib import Path

    from etl.db import sqlite_file
    from etl.lock import lock_path

    assert sqlite_file(":memory:") is None and sqlite_file("file:x?mode=memory") is None and sqlite_file("") is None
    assert sqlite_file("/tmp/a.db") == Path("/tmp/a.db")
    assert lock_path("sqlite:////tmp/a.db") == Path("/tmp/a.db.lock")
    assert lock_path("sqlite:///:memory:").name.startswith("warehouse-")
