"""Engine set-up and the one dialect-aware place.

Everything SQLite-specific lives here (connection pragmas, the upsert construct, the ISO
week expression, read-only connections), so the rest of the code is plain SQLAlchemy Core
and runs on PostgreSQL unchanged; PostgreSQL's own parts (read-only SQL, the advisory
writer lock, amcheck) are in ``etl/postgres.py``, imported only for a PostgreSQL URL.

Transactions on SQLite: Python's sqlite3 driver, left to itself, emits BEGIN only before
INSERT, UPDATE and DELETE, so a CREATE TABLE runs (and commits) on its own and a
migration is not atomic. The engine therefore takes over BEGIN, as SQLAlchemy documents:
the driver is put in autocommit mode on connect and the ``begin`` event emits BEGIN
itself (``BEGIN IMMEDIATE`` for a connection with the ``sqlite_begin="IMMEDIATE"``
execution option). Pragmas that cannot run inside a transaction (journal_mode,
foreign_keys) run on connect, before any BEGIN.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Boolean, Connection, String, Table, create_engine, event, literal
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.functions import FunctionElement

from etl.errors import ReadOnlyViolation, WarehouseError

BUSY_TIMEOUT_MS = 30_000


def open_engine(url: str, busy_timeout_seconds: float = BUSY_TIMEOUT_MS / 1000, *, read_only: bool = False) -> Engine:
    """An engine for the warehouse URL.

    For writing (the default), a SQLite file and its folder are created if needed. With
    ``read_only``, nothing is ever created: a missing file fails to connect (callers check
    first to say so nicely) and connections refuse to write (``query_only``).
    ``busy_timeout_seconds``: how long a statement waits for another process's lock on a
    SQLite file before it fails with "database is locked".
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise WarehouseError(f"not a valid warehouse URL: {display_url(url)!r}") from None
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(parsed.database)
        if file is not None and not read_only:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WarehouseError(f"cannot create the warehouse folder for {parsed.database}: {exc.strerror}") from None
        if read_only and file is not None:
            # mode=rw opens an existing file only; unlike mode=ro, the last connection to
            # close still tidies the -wal and -shm files away.
            uri = f"file:{quote(str(file.resolve()))}?mode=rw"
            engine = create_engine(
                parsed, creator=lambda: sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds, check_same_thread=False)
            )
        else:
            engine = create_engine(parsed, connect_args={"timeout": busy_timeout_seconds})
        event.listen(engine, "connect", _sqlite_on_connect_read_only if read_only else _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    register_url_secret(url)
    if parsed.get_backend_name() == "postgresql":
        from etl import postgres

        engine = postgres.engine_for(parsed, pool_pre_ping=True, connect_args=postgres.KEEPALIVES)
    else:
        try:
            engine = create_engine(parsed, pool_pre_ping=True)
        except Exception as exc:  # e.g. a driver that is not installed
            raise WarehouseError(f"cannot open warehouse {parsed.render_as_string(hide_password=True)}: {exc}") from None
    if read_only:
        engine = engine.execution_options(postgresql_readonly=True)
    return engine


def register_url_secret(url: str) -> None:
    """Mask the URL's password (if it has one) in every log line and error from now on."""
    from etl.logs import register_secret

    try:
        password = make_url(url).password
    except ArgumentError:
        return
    if password:
        register_secret(str(password))
        register_secret(quote(str(password), safe=""))


def sqlite_file(database: str | None) -> Path | None:
    """The file a SQLite URL's database names; None in memory (``:memory:``, ``file:`` URIs).

    The one place that tells a SQLite file from a database in memory."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def new_sqlite_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet, or is empty: a warehouse
    that holds nothing, so that what a run would read from it is known without opening it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    file = sqlite_file(parsed.database) if parsed.get_backend_name() == "sqlite" else None
    if file is None:
        return False
    try:
        return file.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False  # unreadable: opening it says why


def sqlite_in_memory(url: str) -> bool:
    """Whether ``url`` names a SQLite database in memory (``sqlite://``, ``:memory:``,
    ``mode=memory``), which keeps nothing once the process ends; False for any other URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or "mode=memory" in database or parsed.query.get("mode") == "memory"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: _sqlite_begin emits every BEGIN (see the docstring).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status, reports, SQL) run while a sync writes; FULL sync because
    # this file is often the only copy left of data OpenRouter has already deleted.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # The rows that INSERT OR REPLACE deletes then fire their delete triggers, so that the
    # monthly summaries and counts (etl/summaries.py, etl/counts.py) stay exact.
    cursor.execute("PRAGMA recursive_triggers=ON")
    cursor.close()


def _sqlite_on_connect_read_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at once (waiting busy_timeout for it), so a
    # transaction that reads and then writes, like a migration, cannot fail half-way
    # because another connection wrote in between.
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def run_outside_transaction(conn: Connection, statement: str) -> None:
    """Run a pragma that SQLite ignores inside a transaction (foreign_keys) on ``conn``."""
    if conn.in_transaction():
        raise RuntimeError(f"{statement!r} must run outside a transaction")
    conn.connection.dbapi_connection.execute(statement)  # type: ignore[union-attr]


@contextmanager
def foreign_keys_deferred(conn: Connection) -> Iterator[None]:
    """SQLite: no foreign key enforcement on ``conn`` inside the block, on again after it.

    For migrations that rebuild a table others reference (SQLite would refuse the
    intermediate state); ``broken_foreign_keys`` then checks the result before commit.
    Opened outside a transaction (the pragma is a no-op inside one). Elsewhere: nothing.
    """
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        run_outside_transaction(conn, "PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if sqlite:
            run_outside_transaction(conn, "PRAGMA foreign_keys=ON")


def broken_foreign_keys(conn: Connection) -> bool:
    """Whether a row breaks a foreign key (SQLite's ``foreign_key_check``, in the caller's
    transaction). PostgreSQL enforces them on every statement: never."""
    if conn.dialect.name != "sqlite":
        return False
    return conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None


def checkpoint_wal(conn: Connection) -> None:
    """SQLite: fold the -wal file into the database file and empty it. Elsewhere: nothing."""
    if conn.dialect.name == "sqlite":
        run_outside_transaction(conn, "PRAGMA wal_checkpoint(TRUNCATE)")


def storage_facts(engine: Engine) -> tuple[int | None, str | None]:
    """(bytes the warehouse takes, the server's version): a SQLite file with its -wal (no
    server), a PostgreSQL database's size and version; (None, None) when unknown."""
    path = sqlite_path(engine)
    if path is not None:
        files = (path, path.with_name(path.name + "-wal"))
        return (sum(p.stat().st_size for p in files if p.exists()) if path.exists() else None), None
    if engine.dialect.name != "postgresql":
        return None, None
    from sqlalchemy.exc import SQLAlchemyError

    from etl import postgres

    try:
        with engine.connect() as conn:
            return postgres.server_facts(conn)
    except SQLAlchemyError as exc:
        raise WarehouseError(describe_failure(exc, engine.url.render_as_string(hide_password=False))) from None


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None when there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


# What a database failure means for the person running the tool, by the driver's own words
# (SQLite's messages, PostgreSQL's SQLSTATE text): the fix differs, so the hint does.
_FAILURE_HINTS = (
    (("database or disk is full", "disk full", "no space left"), "the disk is full: free some space and run it again; every day already written is intact"),
    (("readonly database", "read-only", "permission denied", "readonly"), "the warehouse is read-only for this user: check the permissions of the file and its folder"),
    (("malformed", "not a database", "disk i/o error", "corrupt"), "the warehouse file is damaged: restore it from a backup (`status --check` runs SQLite's quick_check)"),
    (("database is locked", "database table is locked", "busy", "lock timeout"), "the warehouse is locked by another process for longer than [warehouse] busy_timeout_seconds"),
    (("unable to open database", "could not connect", "connection refused"), "cannot open the warehouse: check the path (or server) and its permissions"),
)


def is_operational_failure(exc: BaseException) -> bool:
    """A failure of the warehouse itself (disk, file, lock, server), not a bug in our SQL.

    Integrity and programming errors stay "unexpected": they would mean a bug of ours.
    """
    import sqlite3

    from sqlalchemy import exc as sa

    if isinstance(exc, (sa.OperationalError, sa.InternalError)) or type(exc) is sa.DatabaseError:
        return True
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def describe_failure(exc: BaseException, url: str) -> str:
    """One line naming the warehouse and the cause of a database failure.

    Never the SQL, its parameters or a password: the driver's first line of text, and what
    to do about it.
    """
    orig = getattr(exc, "orig", None) or exc
    cause = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    lowered = cause.lower()
    hint = next((h for needles, h in _FAILURE_HINTS if any(n in lowered for n in needles)), None)
    return f"warehouse {display_url(url)}: {cause}" + (f" ({hint})" if hint else "")


def display_url(url: str) -> str:
    """The warehouse as a user recognises it: a SQLite file's path, another URL without its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)  # whatever it is, never its password
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)


def quick_check(engine: Engine) -> list[str] | None:
    """Problems a fast structural check finds (empty: none), or None where there is no such check."""
    return structure_check(engine)[0]


def structure_check(engine: Engine) -> tuple[list[str] | None, str]:
    """(problems found, empty when none, or None when not checked; how it checked or why not).

    SQLite: ``PRAGMA quick_check``. PostgreSQL: amcheck's ``verify_heapam`` and
    ``bt_index_check`` when the extension is installed; otherwise not checked, with a note.
    """
    if engine.dialect.name == "postgresql":
        from etl import postgres

        with engine.connect() as conn:
            return postgres.amcheck(conn)
    if engine.dialect.name != "sqlite":
        return None, f"not checked: no structural check for {engine.dialect.name}"
    with engine.connect() as conn:
        found = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check(20)")]
    return ([] if found == ["ok"] else found), "quick_check"


def upsert(engine_or_dialect: Engine | str, table: Table, keys: Sequence[str], update: Sequence[str]) -> Insert:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET update = excluded.update`` for the dialect."""
    name = engine_or_dialect if isinstance(engine_or_dialect, str) else engine_or_dialect.dialect.name
    return _upsert(name, table, tuple(keys), tuple(update))


@lru_cache(maxsize=64)
def _upsert(name: str, table: Table, keys: tuple[str, ...], update: tuple[str, ...]) -> Insert:
    # Cached: statements are immutable, and building one (with its `excluded` columns)
    # costs more than the few rows of a typical day it writes.
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]  # same on_conflict API
    else:
        raise WarehouseError(f"upsert is not supported on {name}; use SQLite or PostgreSQL")
    stmt = insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})


def insert_missing(engine_or_dialect: Engine | str, table: Table, keys: Sequence[str]) -> Insert:
    """``INSERT … ON CONFLICT (keys) DO NOTHING`` for the dialect: content-addressed rows
    (etl/rawstore.py) are written once, whoever writes them first."""
    name = engine_or_dialect if isinstance(engine_or_dialect, str) else engine_or_dialect.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]  # same on_conflict API
    else:
        raise WarehouseError(f"upsert is not supported on {name}; use SQLite or PostgreSQL")
    return insert(table).on_conflict_do_nothing(index_elements=list(keys))


@dataclass(frozen=True)
class Positional:
    """A statement compiled once for a dialect, to send with positional tuples to the driver.

    SQLAlchemy processes every parameter of every row of an ``executemany`` in Python
    (``construct_params``, each type's bind processor); for a day of thousands of rows that
    was a third of a load. This is the same SQL text SQLAlchemy would send (its compiler,
    so PostgreSQL keeps its bind casts), its parameters in order, and the bind processors
    SQLAlchemy would apply, run once per column of a batch (once only for a constant).
    Executed with ``Connection.exec_driver_sql``: the caller's transaction, and driver
    errors wrapped as SQLAlchemy's like any other statement's.
    """

    sql: str
    names: tuple[str, ...]  # the bind parameters, in the order the SQL takes them
    processors: tuple[Callable[[Any], Any] | None, ...]

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """One set of parameters from a mapping of bind names to values."""
        return tuple(values[n] if p is None else p(values[n]) for n, p in zip(self.names, self.processors))

    def bind_many(self, rows: Sequence[Mapping[str, Any]], constants: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Parameters for each of ``rows``; a name in ``constants`` takes that value in every row."""
        columns: list[Iterable[Any]] = []
        for name, process in zip(self.names, self.processors):
            if name in constants:
                value = constants[name]
                columns.append(repeat(value if process is None else process(value)))
            else:
                values = map(itemgetter(name), rows)
                columns.append(values if process is None else map(process, values))
        return list(islice(zip(*columns), len(rows)))


def unnest_values(sql: str, types: Sequence[str]) -> str:
    """A one-row ``INSERT … VALUES (…) …`` as ``INSERT … SELECT * FROM unnest(%s::t[], …) …`` (pure).

    PostgreSQL runs a statement-level trigger once per statement, and psycopg's
    ``executemany`` sends one statement per row: the summary triggers (migrations 0008,
    0009) ran once per row. With one array per column, a whole day is one short statement
    (which psycopg caches and PostgreSQL can prepare, unlike a long multi-row VALUES list).
    The tuple is found by matching parentheses from ``VALUES (``, so casts such as
    ``%s::TIMESTAMP WITH TIME ZONE`` inside it are skipped whole.
    """
    start = sql.index(" VALUES (")
    depth, opened = 0, start + len(" VALUES ")
    for end in range(opened, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            break
    else:
        raise ValueError("no VALUES tuple")
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    return f"{sql[:start]} SELECT * FROM unnest({arrays}){sql[end + 1:]}"


def positional(dialect: Dialect, statement: ClauseElement, column_keys: Sequence[str] | None = None) -> Positional:
    """``statement`` compiled for ``dialect`` with positional parameters (see ``Positional``).

    ``column_keys``: for an INSERT, the columns given values, as SQLAlchemy derives them
    from the first row's keys.
    """
    compiled = statement.compile(dialect=_positional_dialect(dialect), column_keys=list(column_keys) if column_keys else None)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {type(statement).__name__}")
    names = tuple(compiled.positiontup or ())
    processors = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    return Positional(compiled.string, names, processors)


@lru_cache(maxsize=8)
def _positional_dialect(dialect: Dialect) -> Dialect:
    """``dialect`` itself when it binds by position (sqlite3's ``?``), else a twin that
    renders ``%s`` (psycopg's positional style) and otherwise compiles alike."""
    if dialect.positional:
        return dialect
    twin: Dialect = type(dialect)(paramstyle="format")  # type: ignore[call-arg]  # every DefaultDialect takes it
    twin.server_version_info = dialect.server_version_info
    return twin


def sqlite_path(engine: Engine) -> Path | None:
    """The file behind a SQLite engine, or None (another engine, or in memory)."""
    if engine.dialect.name != "sqlite":
        return None
    return sqlite_file(engine.url.database)


class iso_week(FunctionElement[str]):
    """ISO 8601 week label (``2026-W47``, Monday-based) of a ``YYYY-MM-DD`` text column."""

    type = String()
    inherit_cache = True
    name = "iso_week"


@compiles(iso_week, "sqlite")
def _iso_week_sqlite(element: iso_week, compiler: Any, **kw: Any) -> str:
    # The ISO year and week are those of the week's Thursday.
    (day,) = element.clauses
    thursday = f"date({compiler.process(day, **kw)}, '-3 days', 'weekday 4')"
    return f"(strftime('%Y', {thursday}) || '-W' || printf('%02d', (CAST(strftime('%j', {thursday}) AS INTEGER) - 1) / 7 + 1))"


@compiles(iso_week, "postgresql")
def _iso_week_postgresql(element: iso_week, compiler: Any, **kw: Any) -> str:
    (day,) = element.clauses
    return f"to_char(CAST({compiler.process(day, **kw)} AS DATE), 'IYYY-\"W\"IW')"


class glob_match(FunctionElement[bool]):
    """``column`` matches the glob ``pattern`` (``*`` any run, ``?`` one character), case-sensitively.

    SQLite's LIKE ignores ASCII case and PostgreSQL's does not, so a LIKE-based filter gave
    different reports on the two warehouses (and the analytics history, filtered with
    ``fnmatch.fnmatchcase``, a third answer): SQLite gets GLOB, PostgreSQL an escaped LIKE.
    Every other character, ``[``, ``%`` and ``_`` included, matches only itself.
    """

    type = Boolean()
    inherit_cache = True
    name = "glob_match"

    def __init__(self, column: Any, pattern: str) -> None:
        glob = pattern.replace("[", "[[]")
        like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%").replace("?", "_")
        super().__init__(column, literal(glob, String()), literal(like, String()))


def glob_matches(value: str, pattern: str) -> bool:
    """What glob_match says, in Python: for rows filtered after the query (exact, ``*``, ``?``)."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


@compiles(glob_match, "sqlite")
def _glob_match_sqlite(element: glob_match, compiler: Any, **kw: Any) -> str:
    column, glob, _like = element.clauses
    return f"({compiler.process(column, **kw)} GLOB {compiler.process(glob, **kw)})"


@compiles(glob_match)
def _glob_match_default(element: glob_match, compiler: Any, **kw: Any) -> str:
    column, _glob, like = element.clauses
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(like, **kw)} ESCAPE '\\')"


class model_variant(FunctionElement[str]):
    """The analytics ``variant`` of an ``/activity`` model id: its ``:suffix``, else ``standard``.

    As ``etl.query_history.variant`` in Python (``model.partition(":")[2] or "standard"``):
    the part after the first colon, ``standard`` when there is none (or it is empty).
    """

    type = String()
    inherit_cache = True
    name = "model_variant"


def _model_variant(element: model_variant, compiler: Any, position: str, **kw: Any) -> str:
    (model,) = element.clauses
    m = compiler.process(model, **kw)
    return f"coalesce(nullif(CASE WHEN {position}({m}, ':') > 0 THEN substr({m}, {position}({m}, ':') + 1) ELSE '' END, ''), 'standard')"


@compiles(model_variant, "sqlite")
def _model_variant_sqlite(element: model_variant, compiler: Any, **kw: Any) -> str:
    return _model_variant(element, compiler, "instr", **kw)


@compiles(model_variant, "postgresql")
def _model_variant_postgresql(element: model_variant, compiler: Any, **kw: Any) -> str:
    return _model_variant(element, compiler, "strpos", **kw)


# -- read-only SQL -----------------------------------------------------------------------

# Pragmas that only read; those in _PRAGMAS_WITH_ARGUMENT may name a table or a limit.
_READ_PRAGMAS = frozenset(
    "table_info table_xinfo index_list index_info index_xinfo foreign_key_list table_list database_list "
    "collation_list function_list pragma_list module_list compile_options integrity_check quick_check "
    "foreign_key_check user_version schema_version application_id page_count page_size freelist_count "
    "journal_mode encoding data_version".split()
)
_PRAGMAS_WITH_ARGUMENT = frozenset(
    "table_info table_xinfo index_list index_info index_xinfo foreign_key_list table_list integrity_check "
    "quick_check foreign_key_check".split()
)


def _read_only_authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_PRAGMAS and (arg2 is None or arg1 in _PRAGMAS_WITH_ARGUMENT):
        return sqlite3.SQLITE_OK
    # Everything else: writes, DDL, ATTACH (VACUUM INTO attaches its target), transactions.
    return sqlite3.SQLITE_DENY


def run_read_only(url: str, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SQL statement on a connection that cannot write; (column names, rows)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise WarehouseError(f"not a valid warehouse URL: {display_url(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_read_only(parsed.database or "", statement)
    if parsed.get_backend_name() == "postgresql":
        from etl import postgres

        register_url_secret(url)
        return postgres.run_read_only(parsed, statement)
    raise WarehouseError(f"`sql` supports SQLite and PostgreSQL warehouses, not {parsed.get_backend_name()}")


def _sqlite_read_only(database: str, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    file = sqlite_file(database)
    path = file or Path(database)
    if file is None or not file.is_file():
        raise WarehouseError(f"no archive at {path}: run `openrouter-archive sync` first")
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only=ON")
        conn.set_authorizer(_read_only_authorizer)
        try:
            cursor = conn.execute(statement)
            columns = [d[0] for d in cursor.description or ()]
            return columns, cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if "not authorized" in message or "authorization denied" in message or "readonly" in message:
                raise ReadOnlyViolation(
                    "refused: `sql` is read-only; statements that change the archive, attach a database "
                    f"or set a pragma are not allowed ({message})"
                ) from None
            raise WarehouseError(f"SQL error: {message}") from None
        except sqlite3.Warning as exc:  # e.g. more than one statement
            raise WarehouseError(f"SQL error: {exc}") from None
    finally:
        conn.close()
