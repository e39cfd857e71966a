"""Recovery after an outage and retention of the delivery log.

`recoveries` holds each recovery operation and `recovery_deliveries` which delivery it sent
again, in which round (its progress is read from those deliveries). `retention_settings` is an
organisation's override of the retention period. `ix_deliveries_org_created` lets a retention
pass walk one organisation's oldest deliveries instead of reading them all.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.kit.db import UTCDateTime

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recoveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("queued", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_recoveries_org_id", "recoveries", ["org_id"])
    op.create_index("ix_recoveries_subscription_id", "recoveries", ["subscription_id"])
    op.create_table(
        "recovery_deliveries",
        sa.Column("recovery_id", sa.String(40), primary_key=True),
        sa.Column("delivery_id", sa.String(40), primary_key=True),
        sa.Column("round", sa.Integer, nullable=False),
    )
    op.create_index("ix_recovery_deliveries_delivery", "recovery_deliveries", ["delivery_id"])
    op.create_table(
        "retention_settings",
        sa.Column("org_id", sa.String(64), primary_key=True),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_deliveries_org_created", "deliveries", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_org_created", table_name="deliveries")
    op.drop_table("retention_settings")
    op.drop_index("ix_recovery_deliveries_delivery", table_name="recovery_deliveries")
    op.drop_table("recovery_deliveries")
    op.drop_index("ix_recoveries_subscription_id", table_name="recoveries")
    op.drop_index("ix_recoveries_org_id", table_name="recoveries")
    op.drop_table("recoveries")
