"""A subscription's filter: a JMESPath expression over the delivery document ("" for none).

Deliveries a filter does not pass are stored with status `filtered` (a new value of the
existing string column, so nothing else changes).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("filter", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("filter")
