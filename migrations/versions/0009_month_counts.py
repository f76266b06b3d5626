"""Monthly counts: ``month_counts``, per counted table, subject and month, the marks, the
empty marks, the sum of their ``row_count`` and the summary's rows, built from the rows the
archive holds, and the triggers on the marks and the summaries that keep it exact
(etl/counts.py says why). Lets ``status`` read a few rows per month, not the whole archive.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from etl import counts

    op.create_table(
        "month_counts",
        sa.Column("counted", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        *(sa.Column(v, sa.BigInteger(), nullable=False) for v in ("marked_days", "empty_days", "marked_rows", "held_rows")),
        sa.PrimaryKeyConstraint("counted", "subject", "month", name="pk_month_counts"),
    )
    conn = op.get_bind()
    counts.build(conn)
    for statement in counts.trigger_ddl(conn.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    from etl import counts

    for statement in counts.drop_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("month_counts")
