"""``analytics_daily`` keyed by (series, date, subject, model, variant); on SQLite without a rowid.

Every question of the table starts from a series and a range of days (a report, a day's
rewrite, the first sync's days in order), and only some name a subject; with the day
second in the key, the key serves them all and the ``(series, date)`` index is redundant:
it goes. On SQLite the table is rebuilt ``WITHOUT ROWID``, so that the key is the table
itself rather than a second copy of every row's key beside a rowid table, and a first
sync writes two b-trees instead of four (``scripts/bench_history.py`` prints the warehouse
a first sync leaves: 27.3 MB for a year of the key, app and member series, from 32.3 MB). PostgreSQL keeps its heap and only reorders the key. Same columns, same rows,
same values; the ``(model, date)`` index stays (the reports' model filters).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NEW_KEY = ("series", "date", "subject", "model", "variant")
OLD_KEY = ("series", "subject", "date", "model", "variant")


def upgrade() -> None:
    op.drop_index("ix_analytics_daily_series_date", table_name="analytics_daily")
    _rekey(NEW_KEY, rowid=False)


def downgrade() -> None:
    _rekey(OLD_KEY, rowid=True)
    op.create_index("ix_analytics_daily_series_date", "analytics_daily", ["series", "date"])


def _rekey(key: tuple[str, ...], *, rowid: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        op.drop_constraint("pk_analytics_daily", "analytics_daily", type_="primary")
        op.create_primary_key("pk_analytics_daily", "analytics_daily", list(key))
        return
    # SQLite cannot change a table's key or rowid in place: a new table, the rows copied in
    # key order, the old one dropped (its indexes with it), the new one renamed. All in the
    # migration's one transaction; no view, trigger or foreign key names this table.
    columns = sa.Table("analytics_daily", sa.MetaData(), autoload_with=conn).columns
    names = ", ".join(f'"{c.name}"' for c in columns)
    definitions = ",\n\t".join(f'"{c.name}" {c.type.compile(conn.dialect)}{"" if c.nullable else " NOT NULL"}' for c in columns)
    tail = "" if rowid else " WITHOUT ROWID"
    op.execute(f'CREATE TABLE analytics_daily_rekeyed (\n\t{definitions},\n\tCONSTRAINT pk_analytics_daily PRIMARY KEY ({", ".join(key)})\n){tail}')
    op.execute(f"INSERT INTO analytics_daily_rekeyed ({names}) SELECT {names} FROM analytics_daily ORDER BY {', '.join(key)}")
    op.execute("DROP TABLE analytics_daily")
    op.execute("ALTER TABLE analytics_daily_rekeyed RENAME TO analytics_daily")
    op.create_index("ix_analytics_daily_model_date", "analytics_daily", ["model", "date"])
