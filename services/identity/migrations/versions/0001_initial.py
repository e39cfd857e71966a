"""Identity's first tables: API keys, OAuth clients, issuances, external clients, signing keys,
processed events and the outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LIVE = sa.text("status = 'active'")
CURRENT = sa.text("status = 'current'")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("integration_id", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_org_id", "api_keys", ["org_id"])
    op.create_index("ix_api_keys_integration_id", "api_keys", ["integration_id"])
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_index(
        "ux_api_keys_live_integration", "api_keys", ["integration_id"], unique=True, sqlite_where=LIVE, postgresql_where=LIVE
    )

    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("integration_id", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("scopes_updated_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name="pk_oauth_clients"),
    )
    op.create_index("ix_oauth_clients_org_id", "oauth_clients", ["org_id"])
    op.create_index("ix_oauth_clients_integration_id", "oauth_clients", ["integration_id"])
    op.create_index(
        "ux_oauth_clients_live_integration", "oauth_clients", ["integration_id"], unique=True,
        sqlite_where=LIVE, postgresql_where=LIVE,
    )

    op.create_table(
        "issuances",
        sa.Column("integration_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.String(40), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "request_id", name="pk_issuances"),
    )
    op.create_index("ix_issuances_org_id", "issuances", ["org_id"])

    op.create_table(
        "external_clients",
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("integration_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "client_id", name="pk_external_clients"),
    )
    op.create_index("ix_external_clients_org_id", "external_clients", ["org_id"])
    op.create_index("ix_external_clients_integration_id", "external_clients", ["integration_id"])

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(10), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_index(
        "ux_signing_keys_one_current", "signing_keys", ["status"], unique=True, sqlite_where=CURRENT, postgresql_where=CURRENT
    )

    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_processed_events"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_seq", "outbox", ["seq"])
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])


def downgrade() -> None:
    for table in ("outbox", "processed_events", "signing_keys", "external_clients", "issuances", "oauth_clients", "api_keys"):
        op.drop_table(table)
