"""Setup requests of pre-built integrations (WooCommerce, Shopify, QuickBooks Online): their
connection details, the secret ones sealed as one blob, and their history of steps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "setup_requests",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(200), nullable=False),
        sa.Column("prebuilt_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("connection", sa.JSON(), nullable=False),
        sa.Column("secrets_given", sa.JSON(), nullable=False),
        sa.Column("sealed_secrets", sa.LargeBinary(), nullable=True),
        sa.Column("contact_email", sa.String(254), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("handled_by", sa.String(200), nullable=False),
        sa.Column("decline_reason", sa.Text(), nullable=False),
        sa.Column("configured_note", sa.Text(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_setup_requests"),
        sa.UniqueConstraint("org_id", "request_id", name="uq_setup_requests_org_id_request_id"),
    )
    op.create_index("ix_setup_requests_org_created", "setup_requests", ["org_id", "created_at", "id"])
    op.create_index("ix_setup_requests_created", "setup_requests", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_setup_requests_created", table_name="setup_requests")
    op.drop_index("ix_setup_requests_org_created", table_name="setup_requests")
    op.drop_table("setup_requests")
