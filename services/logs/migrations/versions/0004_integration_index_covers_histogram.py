"""The request log's index by integration carries each row's status and repeats (PostgreSQL).

The histogram of one integration (the console's chart filtered by integration) reads
(ts, integration_id, status, repeats) of every matching row. Through the index on
(org_id, integration_id, ts, request_id) alone, PostgreSQL fetched each row from the table:
one integration's rows are spread over the whole table (rows are stored as they arrive), so a
fetch per row, a page each. With status and repeats in the index (INCLUDE), the histogram and
the count of one integration are index-only scans. Measured with `python -m bench.curves.logs`
(docs/benchmarks.md, "How cost grows with work"). SQLite has no INCLUDE; its index is unchanged.

The index is rebuilt in the migration's transaction: on a large log, writes to the request log
wait for the build (the logs consumer's fetches stay in JetStream until it commits again).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_api_requests_org_integration_ts"
COLUMNS = ["org_id", "integration_id", "ts", "request_id"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.drop_index(INDEX, table_name="api_requests")
    op.create_index(INDEX, "api_requests", COLUMNS, postgresql_include=["status", "repeats"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.drop_index(INDEX, table_name="api_requests")
    op.create_index(INDEX, "api_requests", COLUMNS)
