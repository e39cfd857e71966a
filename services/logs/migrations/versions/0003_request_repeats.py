"""The request log's rows say how many requests each stands for (`repeats`, 1 for every row so far).

The platform log (the rows with no organisation: requests nobody could be attributed to) takes
a flood of them from one source as a few rows and one row standing for the rest, so that the
flood cannot grow the log without bound (services/edge/adapters/apilog.py). Rows with no organisation
stored before this revision become the platform log's as they are.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL (11+) and SQLite add the column without rewriting the table.
    op.add_column("api_requests", sa.Column("repeats", sa.Integer(), nullable=False, server_default=sa.text("1")))


def downgrade() -> None:
    with op.batch_alter_table("api_requests") as batch:
        batch.drop_column("repeats")
