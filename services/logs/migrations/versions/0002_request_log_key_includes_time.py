"""The request log's key includes the request's time: (org_id, request_id, ts).

A partner chooses its X-Request-ID, so keyed by (org_id, request_id) alone, a partner that sent
the same id twice (by mistake, or to hide what it did) had every later request of that id
dropped as a "duplicate". A record sent again (a batch re-published after a lost ack) carries
the same time, so it is still stored once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("api_requests", recreate="always") as batch:
            batch.drop_constraint("pk_api_requests", type_="primary")
            batch.create_primary_key("pk_api_requests", ["org_id", "request_id", "ts"])
    else:
        op.drop_constraint("pk_api_requests", "api_requests", type_="primary")
        op.create_primary_key("pk_api_requests", "api_requests", ["org_id", "request_id", "ts"])


def downgrade() -> None:
    raise NotImplementedError("the request log cannot go back to one row per request id without losing rows")
