"""Engine set-up and the one dialect-aware place.

Everything SQLite-specific lives here (connection pragmas, the upsert construct), so the
rest of the code is plain SQLAlchemy Core and runs on PostgreSQL unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql.dml import Insert

from etl.errors import WarehouseError

BUSY_TIMEOUT_MS = 30_000


def open_engine(url: str) -> Engine:
    """An engine for the warehouse URL; a SQLite file's folder is created if needed."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise WarehouseError(f"not a valid warehouse URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            try:
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WarehouseError(f"cannot create the warehouse folder for {parsed.database}: {exc.strerror}") from None
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except Exception as exc:  # e.g. a driver that is not installed
        raise WarehouseError(f"cannot open warehouse {parsed.render_as_string(hide_password=True)}: {exc}") from None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status, reports, SQL) run while a sync writes; FULL sync because
    # this file is often the only copy left of data OpenRouter has already deleted.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def upsert(engine_or_dialect: Engine | str, table: Table, keys: Sequence[str], update: Sequence[str]) -> Insert:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET update = excluded.update`` for the dialect."""
    name = engine_or_dialect if isinstance(engine_or_dialect, str) else engine_or_dialect.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise WarehouseError(f"upsert is not supported on {name}; use SQLite or PostgreSQL")
    stmt = insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})


def sqlite_path(engine: Engine) -> Path | None:
    """The file behind a SQLite engine, or None (another engine, or in memory)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()
