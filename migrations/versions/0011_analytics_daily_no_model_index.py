"""``analytics_daily`` without its ``(model, date)`` index.

No question the archiver asks of the table uses it: every one names a series and a range
of days (reports, ``status``'s reconciliation, a day's rewrite), the first two columns of
the key since migration 0010, and the reports' model filters are globs applied to the rows
those ranges give (``etl.query_history``), never a lookup by model. Kept, it was a third
b-tree written for every row: about a third of SQLite's time in a first sync's writes of
a year of series (68,240 rows, 0.26 s with it and 0.17 s without, raw ``sqlite3``), and
space in the file. ``sql`` users filtering one model over every series scan the table
instead (a year of a large account's series is some hundreds of thousands of rows).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_analytics_daily_model_date", table_name="analytics_daily")


def downgrade() -> None:
    op.create_index("ix_analytics_daily_model_date", "analytics_daily", ["model", "date"])
