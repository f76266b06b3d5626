"""Create and evolve the warehouse with the Alembic migrations shipped with the package."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from sqlalchemy import inspect, text
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
HEAD_REVISION = "0005"


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


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``; returns (before, after). A no-op when already there."""
    before = current_revision(engine)
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

    cfg = _alembic_config()
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild tables that others reference; SQLite would refuse
                # the intermediate state. The check below runs before anything is committed.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    getattr(command, direction)(cfg, revision)
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise WarehouseError("migration failed, the warehouse is unchanged: it would break a foreign key")
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
    except SQLAlchemyError as exc:
        raise WarehouseError(f"migration failed, the warehouse is unchanged: {describe_failure(exc, str(engine.url))}") from None
