"""Erase the sealed connection secrets of setup requests already Configured or Declined: from now
on completing or declining a request deletes them (handlers.SetupRequestHandlers), and a request
that ended before this revision must not keep what a new one would not. Their history gains no
secrets_erased step (a migration does not write the domain's history); the names stay in
secrets_given. There is no downgrade of the data: erased is erased.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE setup_requests SET sealed_secrets = NULL "
                       "WHERE status IN ('configured', 'declined') AND sealed_secrets IS NOT NULL"))


def downgrade() -> None:
    pass
