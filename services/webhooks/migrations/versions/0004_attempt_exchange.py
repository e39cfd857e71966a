"""What each attempt sent and what came back: `attempts.exchange`, JSON of the headers sent
(signature included), the answer's status headers and first 4 KiB, bounded, secrets masked.
NULL for the attempts made before, and when TRELLIS_WEBHOOKS_RECORD_ATTEMPT_DETAILS is off.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("exchange", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("exchange")
