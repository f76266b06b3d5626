"""Views for the common questions: daily spend, monthly spend by model, spend by provider.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import re

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Plain SQL that SQLite and PostgreSQL both read: dates are YYYY-MM-DD text, so a month is
# its first seven characters. Spend and BYOK spend stay separate columns.
VIEWS = {
    "daily_spend": """
        SELECT date,
               sum(usage) AS spend_usd,
               sum(byok_usage_inference) AS byok_spend_usd,
               sum(requests) AS requests,
               sum(prompt_tokens) AS prompt_tokens,
               sum(completion_tokens) AS completion_tokens,
               sum(reasoning_tokens) AS reasoning_tokens,
               sum(prompt_tokens + completion_tokens) AS total_tokens
        FROM activity
        GROUP BY date
    """,
    "monthly_spend_by_model": """
        SELECT substr(date, 1, 7) AS month,
               model,
               sum(usage) AS spend_usd,
               sum(byok_usage_inference) AS byok_spend_usd,
               sum(requests) AS requests,
               sum(prompt_tokens + completion_tokens) AS total_tokens
        FROM activity
        GROUP BY substr(date, 1, 7), model
    """,
    "spend_by_provider": """
        SELECT provider_name,
               min(date) AS first_day,
               max(date) AS last_day,
               sum(usage) AS spend_usd,
               sum(byok_usage_inference) AS byok_spend_usd,
               sum(requests) AS requests,
               sum(prompt_tokens + completion_tokens) AS total_tokens
        FROM activity
        GROUP BY provider_name
    """,
    "monthly_spend": """
        SELECT substr(date, 1, 7) AS month,
               sum(usage) AS spend_usd,
               sum(byok_usage_inference) AS byok_spend_usd,
               sum(requests) AS requests,
               sum(prompt_tokens + completion_tokens) AS total_tokens,
               count(DISTINCT date) AS days_with_activity
        FROM activity
        GROUP BY substr(date, 1, 7)
    """,
}


def _for_dialect(body: str, dialect: str) -> str:
    # PostgreSQL's sum(bigint) is numeric; cast counts back to bigint so that the views
    # give integers on both engines (SQLite's views stay exactly as they always were).
    if dialect != "postgresql":
        return body
    return re.sub(
        r"sum\((requests|prompt_tokens|completion_tokens|reasoning_tokens|prompt_tokens \+ completion_tokens)\)",
        r"CAST(sum(\1) AS bigint)",
        body,
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {_for_dialect(body, dialect)}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
