"""Create and evolve the warehouse with the Alembic migrations shipped with the package.

An upgrade is one transaction, on SQLite as on PostgreSQL (see etl/db.py for how SQLite
gets transactional DDL): interrupted at any point, by a signal, a crash or an error, it
leaves the warehouse exactly as it was. Callers hold the single-writer lock.

Older versions committed each statement of a first migration on its own, so an
interrupted first run could leave some tables and no revision. An upgrade that finds our
tables without a revision drops them when they are all empty (nothing is lost: the first
run had not written yet) and creates the warehouse afresh, in the same transaction; if
any holds a row, it refuses and touches nothing.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl.db import describe_failure
from etl.errors import WarehouseError

log = logging.getLogger(__name__)


@cache
def script_location() -> Path:
    package = Path(__file__).resolve().parent
    # A wheel carries the scripts inside the package; a source checkout has them beside it.
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise WarehouseError("the Alembic migrations are missing from this installation")


def _alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


# The newest revision in migrations/versions. Knowing it without loading Alembic keeps
# every command on an up-to-date warehouse fast; tests/test_warehouse.py checks that it
# matches the scripts.
HEAD_REVISION = "0011"


def head_revision() -> str:
    return HEAD_REVISION


def scripts_head() -> str | None:
    """The head according to the migration scripts themselves."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise WarehouseError(describe_failure(exc, str(engine.url))) from None


def ensure_known(revision: str | None) -> None:
    """Refuse a warehouse whose revision this code does not know (made by a newer version)."""
    if revision is None or revision == HEAD_REVISION:
        return
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        known = ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except CommandError:
        known = False
    if known:
        return
    if re.fullmatch(r"\d{4}", revision) and revision > HEAD_REVISION:
        raise WarehouseError(
            f"the warehouse is at schema revision {revision}, made by a newer openrouter-archive "
            f"(this one knows revisions up to {HEAD_REVISION}): upgrade openrouter-archive to use it"
        )
    raise WarehouseError(
        f"the warehouse's alembic_version says {revision!r}, which is no revision of openrouter-archive: "
        "is [warehouse] url the right database?"
    )


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``, all or nothing; returns (before, after). A no-op when already there."""
    before = current_revision(engine)
    ensure_known(before)
    if revision == "head" and before == head_revision():
        return before, before
    _run("upgrade", engine, revision)
    after = current_revision(engine) or "base"
    log.info("warehouse migrated from %s to %s", before or "empty", after)
    return before, after


def downgrade(engine: Engine, revision: str) -> None:
    _run("downgrade", engine, revision)


def _run(direction: str, engine: Engine, revision: str) -> None:
    from alembic import command

    from etl.db import broken_foreign_keys, foreign_keys_deferred

    cfg = _alembic_config()
    try:
        with engine.connect() as conn:
            # Batch migrations rebuild tables that others reference; SQLite would refuse the
            # intermediate state. The check below runs before anything is committed.
            with foreign_keys_deferred(conn):
                # IMMEDIATE: the revision read and the DDL happen under one write lock.
                with conn.execution_options(sqlite_begin="IMMEDIATE").begin():
                    if direction == "upgrade":
                        _clear_interrupted_first_run(conn)
                    cfg.attributes["connection"] = conn
                    getattr(command, direction)(cfg, revision)
                    if broken_foreign_keys(conn):
                        raise WarehouseError("migration failed, the warehouse is unchanged: it would break a foreign key")
    except SQLAlchemyError as exc:
        raise WarehouseError(f"migration failed, the warehouse is unchanged: {describe_failure(exc, str(engine.url))}") from None


# The views revisions 0002 and 0007 create; views are not part of etl.schema's metadata.
_VIEWS = ("daily_spend", "monthly_spend", "monthly_spend_by_model", "spend_by_provider", "raw_response_bodies")


def _clear_interrupted_first_run(conn: Connection) -> None:
    """Drop the empty tables an interrupted first run of an older version left (see above)."""
    from etl.schema import metadata

    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    if "alembic_version" in present and conn.execute(text("SELECT 1 FROM alembic_version")).first() is not None:
        return
    ours = [t for t in reversed(metadata.sorted_tables) if t.name in present]
    views = [v for v in _VIEWS if v in set(inspector.get_view_names())]
    if not ours and not views:
        return
    quote = conn.dialect.identifier_preparer.quote
    holding = [t.name for t in ours if conn.execute(text(f"SELECT 1 FROM {quote(t.name)} LIMIT 1")).first() is not None]
    if holding:
        raise WarehouseError(
            f"the warehouse has tables but no schema revision, and {', '.join(sorted(holding))} hold rows: "
            "it was not made by openrouter-archive, or a migration broke off; nothing was changed. "
            "Move the file aside (or point [warehouse] url elsewhere) and run again"
        )
    for name in views:
        conn.exec_driver_sql(f"DROP VIEW {quote(name)}")
    for table in ours:
        conn.exec_driver_sql(f"DROP TABLE {quote(table.name)}")
    log.warning(
        "the warehouse held empty tables and no schema revision, left by an interrupted first run of an older "
        "version (%s); creating it afresh", ", ".join(t.name for t in ours) or ", ".join(views),
    )
