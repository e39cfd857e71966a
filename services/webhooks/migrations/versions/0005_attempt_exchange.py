"""What each attempt sent and what came back: `attempts.exchange`, JSON of the headers sent
(signature included), the answer's status headers and first 4 KiB, bounded, secrets masked.
NULL for the attempts made before, and when TRELLIS_WEBHOOKS_RECORD_ATTEMPT_DETAILS is off.

Custom headers per subscription: `subscriptions.custom_headers` (names and value hints, JSON)
and `custom_headers_sealed` (the values, sealed like the signing secret; NULL: none).

Mutual TLS: `subscriptions.client_certificate` (what is shown of it, JSON) and
`client_tls_sealed` (the certificate and its key, sealed; NULL: none).

Secret rotation with an overlap: `subscriptions.previous_secret` (sealed) and
`previous_secret_expires_at`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.kit.db import UTCDateTime

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("exchange", sa.Text(), nullable=True))
    op.add_column("subscriptions", sa.Column("custom_headers", sa.Text(), nullable=False, server_default="[]"))
    op.add_column("subscriptions", sa.Column("custom_headers_sealed", sa.LargeBinary(), nullable=True))
    op.add_column("subscriptions", sa.Column("client_certificate", sa.Text(), nullable=True))
    op.add_column("subscriptions", sa.Column("client_tls_sealed", sa.LargeBinary(), nullable=True))
    op.add_column("subscriptions", sa.Column("previous_secret", sa.LargeBinary(), nullable=True))
    op.add_column("subscriptions", sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret")
        batch.drop_column("client_tls_sealed")
        batch.drop_column("client_certificate")
        batch.drop_column("custom_headers_sealed")
        batch.drop_column("custom_headers")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("exchange")
