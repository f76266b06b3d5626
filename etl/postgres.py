"""PostgreSQL as the warehouse: read-only SQL, the writer lock, size, version and health.

Kept apart from ``etl/db.py`` (which dispatches here) so that SQLite users never import
psycopg. Quirks worth knowing:

- psycopg sends a query without parameters as a *simple* query, which runs every statement
  in it: ``COMMIT; DELETE …`` would leave a read-only transaction and write. `sql` therefore
  uses the extended protocol (``prepare=True``), which accepts one statement only.
- A ``READ ONLY`` transaction does not stop ``COPY … TO PROGRAM`` (it reads), nor volatile
  functions such as ``pg_terminate_backend``, nor ``SET TRANSACTION READ WRITE`` issued
  before the first query. So `sql` checks, before running anything, that the statement is a
  query (SELECT, WITH, VALUES, TABLE), that its plan modifies nothing, and that it calls no
  volatile function; then runs it in a ``READ ONLY`` transaction whose snapshot is already
  taken, under a statement timeout. Each layer alone would stop most attacks; together,
  also a superuser's.
- The writer lock is a session-level advisory lock on the warehouse itself, so writers on
  other hosts, as other users or through other spellings of the URL (``localhost`` vs
  ``127.0.0.1``) exclude each other. Its key is derived on the server from the database and
  schema names; the server drops it when the holder's connection ends, even by SIGKILL
  (TCP keepalives bound how long a vanished host keeps it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from etl.errors import WarehouseError

log = logging.getLogger(__name__)

DRIVER = "postgresql+psycopg"
INSTALL_HINT = "install the PostgreSQL driver: pip install 'openrouter-archive[postgresql]'"
# The server notices a writer's host vanished within about a minute (keepalives), and then
# releases its lock; a process that dies on a live host releases it at once.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def normalise(url: URL) -> URL:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver of the extra."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername=DRIVER)
    return url


def engine_for(url: URL, **kwargs: Any) -> Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise WarehouseError(f"cannot open warehouse {url.render_as_string(hide_password=True)}: {INSTALL_HINT}") from None
    try:
        return create_engine(normalise(url), **kwargs)
    except Exception as exc:  # e.g. another driver named in the URL that is not installed
        raise WarehouseError(f"cannot open warehouse {url.render_as_string(hide_password=True)}: {exc}") from None


# -- read-only SQL -----------------------------------------------------------------------

STATEMENT_TIMEOUT_SECONDS = 300
_QUERY_KEYWORDS = frozenset({"select", "with", "values", "table"})
# Volatile functions that only compute: harmless in a query. Every other volatile function
# (pg_terminate_backend, nextval, setval, set_config, lo_export, dblink_exec, pg_sleep,
# pg_advisory_lock, pg_reload_conf, …) is refused.
_HARMLESS_VOLATILE = frozenset({"random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v4"})
_CALL = re.compile(r'(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\(')
REFUSED = "refused: `sql` is read-only; statements that change the archive, attach a database or set a pragma are not allowed"


class _Refused(Exception):
    pass


def _first_keyword(statement: str) -> str:
    """The statement's first word, past whitespace, comments and opening parentheses."""
    i, n = 0, len(statement)
    while i < n:
        if statement[i].isspace() or statement[i] == "(":
            i += 1
        elif statement.startswith("--", i):
            end = statement.find("\n", i)
            i = n if end < 0 else end + 1
        elif statement.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if statement.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif statement.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    match = re.match(r"[A-Za-z_]+", statement[i:])
    return match.group(0).lower() if match else ""


def _plan_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _plan_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _plan_strings(value)
    elif isinstance(node, str):
        yield node


def _plan_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "Node Type" in node:
            yield node
        for value in node.values():
            yield from _plan_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _plan_nodes(value)


def _check_query(pg: Any, statement: str) -> None:
    """Raise _Refused unless ``statement`` is one query that modifies nothing; psycopg errors pass through."""
    from psycopg import pq

    if _first_keyword(statement) not in _QUERY_KEYWORDS:
        # Parse it without running it: a typo is reported as the syntax error it is,
        # anything else that parses (COPY, DO, CALL, LOCK, SET, COMMIT, …) is refused.
        result = pg.pgconn.prepare(b"", statement.encode())
        if result.status == pq.ExecStatus.FATAL_ERROR:
            message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(errors="replace")
            raise WarehouseError(f"SQL error: {_plain(message)}")
        raise _Refused("only a query (SELECT, WITH, VALUES or TABLE) may run here")
    plan = pg.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {statement}", prepare=True).fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    if any(n.get("Node Type") == "ModifyTable" for n in _plan_nodes(plan)):
        raise _Refused("the query changes rows")
    names = {quoted.replace('""', '"') if quoted else bare.lower() for s in _plan_strings(plan) for quoted, bare in _CALL.findall(s)}
    if names:
        volatile = pg.execute(
            "SELECT DISTINCT proname FROM pg_proc WHERE proname = ANY(%s) AND provolatile = 'v'", [sorted(names)], prepare=True
        ).fetchall()
        calls = sorted({name for (name,) in volatile} - _HARMLESS_VOLATILE)
        if calls:
            raise _Refused(f"it calls {', '.join(calls)}, which may change the server or its data")


def _plain(message: str) -> str:
    if "cannot insert multiple commands" in message:
        return "You can only execute one statement at a time."
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


def plain_value(value: Any) -> Any:
    """numeric comes back as Decimal: an int when whole, else a float, as SQLite gives them."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def run_read_only(url: URL, statement: str, timeout_seconds: float = STATEMENT_TIMEOUT_SECONDS) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One query on a connection that cannot write (see the module docstring for how)."""
    import psycopg

    from etl.db import ReadOnlyViolation, describe_failure

    engine = engine_for(url, poolclass=NullPool, connect_args=KEEPALIVES)
    try:
        try:
            conn = engine.connect()
        except Exception as exc:
            raise WarehouseError(describe_failure(exc, url.render_as_string(hide_password=False))) from None
        with conn:
            pg: Any = conn.connection.driver_connection  # the psycopg connection itself
            pg.rollback()
            pg.autocommit = True
            archived = pg.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]
            if not archived:
                raise WarehouseError(f"no archive at {url.render_as_string(hide_password=True)} yet: run `openrouter-archive sync` first")
            pg.autocommit = False
            pg.read_only = True
            pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                # Taking the snapshot first makes a later SET TRANSACTION READ WRITE fail.
                pg.execute(
                    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
                    [f"{int(timeout_seconds * 1000)}ms", f"{BUSY_LOCK_TIMEOUT_MS}ms"],
                )
                _check_query(pg, statement)
                cursor = pg.execute(statement, prepare=True)
                columns = [d.name for d in cursor.description or ()]
                rows = [tuple(plain_value(v) for v in r) for r in cursor.fetchall()] if cursor.description else []
                return columns, rows
            except _Refused as why:
                raise ReadOnlyViolation(f"{REFUSED} ({why})") from None
            except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege) as exc:
                raise ReadOnlyViolation(f"{REFUSED} ({_plain(exc.diag.message_primary or str(exc))})") from None
            except psycopg.errors.QueryCanceled:
                raise WarehouseError(f"SQL error: the statement ran longer than {timeout_seconds:g}s and was cancelled") from None
            except psycopg.OperationalError as exc:
                raise WarehouseError(describe_failure(exc, url.render_as_string(hide_password=False))) from None
            except psycopg.Error as exc:
                raise WarehouseError(f"SQL error: {_plain(exc.diag.message_primary or str(exc))}") from None
            finally:
                if not pg.closed:
                    pg.rollback()
    finally:
        engine.dispose()


BUSY_LOCK_TIMEOUT_MS = 30_000


# -- the writer lock ---------------------------------------------------------------------

# The key: a 64-bit hash, computed by the server, of who the archive is (database and
# schema), never of the URL the client happened to use.
_KEY_SQL = "SELECT hashtextextended('openrouter-archive writer:' || current_database() || '.' || current_schema(), 0)"
_HOLDER_SQL = """
    SELECT a.pid, a.application_name, a.client_addr::text, a.state_change, a.backend_start
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = ((%(key)s >> 32) & 4294967295)::bigint::oid AND l.objid = (%(key)s & 4294967295)::bigint::oid
    LIMIT 1
"""
APP_PREFIX = "openrouter-archive"


def _application_name(command: str) -> str:
    # What other sessions see in pg_stat_activity (63 bytes at most): who holds the lock.
    word = command.split()[1] if len(command.split()) > 1 else command
    return f"{APP_PREFIX} {word} pid {os.getpid()} on {socket.gethostname()}"[:63]


def describe_holder(row: Any) -> str:
    if row is None:
        return "holder unknown"
    pid, app, addr, since, started = row
    since = since or started
    who = app if app and app.startswith(APP_PREFIX) else f"server pid {pid}" + (f" ({app})" if app else "")
    where = f" from {addr}" if addr else ""
    when = f", since {since.astimezone(timezone.utc).isoformat(timespec='seconds')}" if isinstance(since, datetime) else ""
    return f"{who}{where}{when}"


@contextmanager
def writer_lock(url: URL, timeout: float, command: str, url_text: str, stop: threading.Event | None = None) -> Iterator[str]:
    """Hold the warehouse's advisory lock on a connection of its own, waiting up to ``timeout``."""
    from etl.db import describe_failure
    from etl.lock import LockTimeout, interrupted_waiting

    engine = engine_for(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=KEEPALIVES)
    try:
        try:
            conn = engine.connect()
        except Exception as exc:
            raise WarehouseError(describe_failure(exc, url_text)) from None
        with conn:
            key = conn.exec_driver_sql(_KEY_SQL).scalar_one()
            deadline = time.monotonic() + max(timeout, 0)
            warned = False
            while not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
                if stop is not None and stop.is_set():
                    raise interrupted_waiting()
                holder = describe_holder(conn.execute(text(_HOLDER_SQL.replace("%(key)s", ":key")), {"key": key}).first())
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another writer holds this warehouse ({holder}; PostgreSQL advisory lock {key}); "
                        f"gave up after {timeout:g}s, try again later"
                    )
                if not warned:
                    log.warning("waiting up to %gs for the writer lock of this warehouse, held by %s", timeout, holder, extra={"event": "lock_wait"})
                    warned = True
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0.01)))
            try:
                conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": _application_name(command)})
                yield f"postgresql advisory lock {key}"
            finally:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                except Exception:  # the connection is gone: so is the lock
                    log.debug("could not release the advisory lock explicitly", exc_info=True)
    finally:
        engine.dispose()


def writer_active(conn: Connection) -> bool:
    """Whether some session holds the warehouse's writer lock (reads pg_locks; takes nothing)."""
    key = conn.exec_driver_sql(_KEY_SQL).scalar_one()
    return conn.execute(text(_HOLDER_SQL.replace("%(key)s", ":key")), {"key": key}).first() is not None


# -- status --------------------------------------------------------------------------------


def server_facts(conn: Connection) -> tuple[int, str]:
    """(size of the database in bytes, server version)."""
    size, version = conn.exec_driver_sql("SELECT pg_database_size(current_database()), current_setting('server_version')").one()
    return int(size), str(version)


def amcheck(conn: Connection) -> tuple[list[str] | None, str]:
    """(problems found, empty when none; or None when not checked) and how it was checked."""
    has = conn.exec_driver_sql("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'").first()
    if has is None:
        return None, "not checked: the amcheck extension is not installed in this database (a superuser can run CREATE EXTENSION amcheck)"
    relations = conn.exec_driver_sql(
        """
        SELECT c.oid::regclass::text, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_am am ON am.oid = c.relam
        WHERE n.nspname = current_schema() AND (c.relkind = 'r' OR (c.relkind = 'i' AND am.amname = 'btree'))
        ORDER BY c.relkind DESC, 1
        """
    ).all()
    from sqlalchemy.exc import DBAPIError

    found: list[str] = []
    for name, kind in relations:
        try:
            with conn.begin_nested():
                if kind == "i":
                    conn.execute(text("SELECT bt_index_check(CAST(:r AS regclass))"), {"r": name})
                else:
                    for blk, _off, _att, msg in conn.execute(text("SELECT * FROM verify_heapam(CAST(:r AS regclass))"), {"r": name}):
                        found.append(f"{name} block {blk}: {msg}")
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None) or ""
            message = str(exc.orig).strip().splitlines()[0]
            if state.startswith("XX"):  # data_corrupted, index_corrupted: what amcheck reports damage with
                found.append(f"{name}: {message}")
            elif state == "42501":
                return None, "not checked: amcheck is installed, but this role may not run bt_index_check and verify_heapam"
            else:  # not a finding about the data: say the check could not run, never "damaged"
                return None, f"not checked: amcheck failed on {name}: {message}"
    return found[:20], "amcheck"
