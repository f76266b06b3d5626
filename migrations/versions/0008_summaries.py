"""Monthly summaries: ``activity_monthly`` and one per breakdown (``activity_by_key_monthly``,
``activity_by_workspace_monthly``, ``activity_by_member_monthly``), built from the rows the
archive holds, and the triggers that keep them exact on every later write (etl/summaries.py
says why). Nothing existing changes; independent of the raw-response tables.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DIMENSIONS = ("model", "model_permaslug", "provider_name")
VALUES = ("row_count", "usage_units", "byok_usage_units", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
SUMMARIES = {"activity": None, "activity_by_key": "api_key_hash", "activity_by_workspace": "workspace_id", "activity_by_member": "user_id"}


def upgrade() -> None:
    from etl import summaries

    for base, subject in SUMMARIES.items():
        keys = ["month", *([subject] if subject else []), *DIMENSIONS]
        op.create_table(
            f"{base}_monthly",
            sa.Column("month", sa.String(7), nullable=False),
            *([sa.Column(subject, sa.String(200), nullable=False)] if subject else []),
            *(sa.Column(d, sa.String(200), nullable=False) for d in DIMENSIONS),
            *(sa.Column(v, sa.BigInteger(), nullable=False) for v in VALUES),
            sa.PrimaryKeyConstraint(*keys, name=f"pk_{base}_monthly"),
        )
    conn = op.get_bind()
    summaries.build(conn)
    for statement in summaries.trigger_ddl(conn.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    from etl import summaries

    for statement in summaries.drop_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    for base in reversed(list(SUMMARIES)):
        op.drop_table(f"{base}_monthly")
