"""Alembic environment for the openrouter-archive warehouse.

The application passes an open connection in ``config.attributes["connection"]`` (see
``etl/migrate.py``). Run by hand (``alembic -c alembic.ini upgrade head``), the URL comes
from ``OPENROUTER_ARCHIVE_DB`` or the config file, as for the CLI.
"""

from __future__ import annotations

from alembic import context

from etl.schema import metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables for it.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from etl.config import load_config
    from etl.db import open_engine

    engine = open_engine(config.get_main_option("sqlalchemy.url") or load_config().warehouse_url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
