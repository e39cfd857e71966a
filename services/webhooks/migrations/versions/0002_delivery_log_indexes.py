"""The delivery log's indexes: a subscription's attempts newest first, all or by outcome.

The console's Delivery Logs (`ListAttempts` by subscription, newest first, keyset-paged on
(attempted_at, id)) found one subscription's newest attempts by sorting all of them: 270 ms for
the newest 25 of 100,000 (docs/benchmarks.md). With (subscription_id, attempted_at, id) it is a
walk of the index from its end; the Succeeded and Failed tabs filter on `succeeded` first, so
they get (subscription_id, succeeded, attempted_at, id). The first replaces the single-column
index on subscription_id, which it leads with.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_subscription_log", "attempts", ["subscription_id", "attempted_at", "id"])
    op.create_index("ix_attempts_subscription_outcome_log", "attempts",
                    ["subscription_id", "succeeded", "attempted_at", "id"])
    op.drop_index("ix_attempts_subscription_id", table_name="attempts")


def downgrade() -> None:
    op.create_index("ix_attempts_subscription_id", "attempts", ["subscription_id"])
    op.drop_index("ix_attempts_subscription_outcome_log", table_name="attempts")
    op.drop_index("ix_attempts_subscription_log", table_name="attempts")
