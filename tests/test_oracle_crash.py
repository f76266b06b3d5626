"""A crash at a chosen statement, then the next sync: the archive must recover on its own.

``test_sigkill_at_random_moments_never_damages_the_archive`` once ended with a warehouse
empty after its recovery sync (``recoveries 5 != 6, rows_lost=135000``). Its kills land at
random moments; one on a fresh warehouse can land inside the first migration. SQLite's
Python driver does not open a transaction before DDL, so the first migration's
``CREATE TABLE`` statements commit one by one: a kill between two of them leaves tables
without an ``alembic_version`` row, and every later run fails on "table ... already
exists". These tests kill the real CLI at exactly such a statement (a fault no server can
produce, hence the SQL hook), then run the next sync as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import query
from oracle import ACTIVITY_SQL, assert_same_rows, window_rows

# Runs `openrouter-archive <args>` and SIGKILLs itself right after the Nth statement that
# starts with PREFIX: a crash at a precise moment of the real code path.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    prefix, nth = sys.argv[1], int(sys.argv[2])
    seen = 0

    @event.listens_for(Engine, "after_cursor_execute")
    def crash(conn, cursor, statement, parameters, context, executemany):
        global seen
        if statement.lstrip().upper().startswith(prefix):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    from etl.cli import main
    sys.argv = ["openrouter-archive", *sys.argv[3:]]
    main()
    """
)


def crash_at(cli_env, tmp_path, prefix: str, nth: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILLER, prefix, str(nth), *args], env={**os.environ, **cli_env}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )


def recovers(run, api, warehouse_url):
    from etl.window import utc_today

    result = run("sync")
    assert result.exit_code == 0, result.output
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]
    assert_same_rows(query(warehouse_url, ACTIVITY_SQL), window_rows(api.dataset, utc_today()))


# Was a product bug (issue 9 item 1): the first migration's DDL ran outside a transaction.
@pytest.mark.parametrize("nth", [2, 3, 5])
def test_a_sync_killed_inside_its_first_migration_is_recovered_by_the_next_sync(cli_env, run, api, warehouse_url, tmp_path, nth):
    killed = crash_at(cli_env, tmp_path, "CREATE TABLE", nth, "sync")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    recovers(run, api, warehouse_url)


def test_a_sync_killed_while_writing_a_day_is_recovered_by_the_next_sync(cli_env, run, api, warehouse_url, tmp_path):
    killed = crash_at(cli_env, tmp_path, "INSERT INTO ACTIVITY", 3, "sync")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    marked = {d for (d,) in query(warehouse_url, "SELECT date FROM archived_days")}
    stored = {d for (d,) in query(warehouse_url, "SELECT DISTINCT date FROM activity")}
    assert stored <= marked  # the day being written when the process died left nothing behind
    recovers(run, api, warehouse_url)
