"""The logs service's tables, the repository that maps their rows to domain objects, and the
logs unit of work over them (application.ports.LogsUnitOfWork: SqlLogsUnitOfWork, whose
repositories are `LogsRepository` bound to the unit's session).

- `api_requests`: one row per partner request, keyed by (org, request id) so a record that
  arrives twice is stored once. Rows with no organisation (`org_id` = '') are the platform log
  (domain.PLATFORM_LOG): requests nobody could be attributed to, where one row may stand for
  `repeats` requests; it is kept within `platform_max_rows` as well as the retention days. Every index leads with `org_id` (every query is filtered by
  the caller's organisation) and ends with `(ts, request_id)`, the keyset of the newest-first
  order, so each filter below reads its first page straight from one index:
  integration, date range, exact status, IP and error code use their own index; status
  classes (`4xx`, `success`, `error`) and the endpoint substring walk `ix_api_requests_org_ts`
  backwards and filter (they match a large share of rows, or cannot use a B-tree at all).
  Retention finds the organisations with a loose index scan and deletes each one's oldest
  rows through `ix_api_requests_org_ts`, so no index on `ts` alone slows every insert.
- `audit_entries` and `audit_chains`: each organisation's hash-chained audit trail and its head.
- `integrations`: the latest known facts of each integration (name, scopes, limits).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    case,
    cast,
    delete,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import Select
from sqlalchemy.sql.base import ColumnCollection
from sqlalchemy.sql.elements import ColumnElement, KeyedColumnElement

from services.kit.db import UTCDateTime, new_metadata, rowcount
from services.kit.outbox import outbox_table
from services.kit.sqluow import SqlUnitOfWork
from services.logs.application.commands import QueryAudit
from services.logs.application.ports import RequestPage
from services.logs.domain.model import (
    ApiRequest,
    AuditEntry,
    ChainHead,
    Cursor,
    HistogramCell,
    RequestFilter,
)
from services.logs.domain.review import (
    READ_METHODS,
    REFUSED_CODES,
    IntegrationFacts,
    Usage,
    exercised_scope,
)

metadata = new_metadata()

api_requests = Table(
    "api_requests",
    metadata,
    Column("org_id", String(200), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    # Part of the key: a partner chooses its X-Request-ID and may send one twice; a record sent
    # again carries the same time (migration 0002).
    Column("ts", UTCDateTime(), primary_key=True),
    Column("integration_id", String(64), nullable=False),
    Column("method", String(16), nullable=False),
    Column("endpoint", String(2048), nullable=False),
    Column("status", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("ip", String(64), nullable=False),
    Column("error_code", String(64), nullable=False),
    Column("scope_category", String(64), nullable=False),
    # Requests the row stands for: 1, or more for a folded flood in the platform log (migration 0003).
    Column("repeats", Integer, nullable=False, server_default=text("1")),
    Index("ix_api_requests_org_ts", "org_id", "ts", "request_id"),
    # Status and repeats ride along (PostgreSQL INCLUDE, migration 0004): an integration's
    # histogram and count read the index alone, not a table page per row.
    Index("ix_api_requests_org_integration_ts", "org_id", "integration_id", "ts", "request_id",
          postgresql_include=["status", "repeats"]),
    Index("ix_api_requests_org_status_ts", "org_id", "status", "ts", "request_id"),
    Index("ix_api_requests_org_ip_ts", "org_id", "ip", "ts", "request_id"),
    Index("ix_api_requests_org_error_ts", "org_id", "error_code", "ts", "request_id"),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("org_id", String(200), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("service", String(64), nullable=False),
    Column("actor_id", String(200), nullable=False),
    Column("action", String(128), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("before_json", Text, nullable=False),
    Column("after_json", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("mac", String(64), nullable=False),
    Index("ix_audit_entries_org_object", "org_id", "object_id", "seq"),
    Index("ix_audit_entries_org_actor", "org_id", "actor_id", "seq"),
    Index("ix_audit_entries_org_action", "org_id", "action", "seq"),
    Index("ix_audit_entries_org_occurred", "org_id", "occurred_at"),
)

audit_chains = Table(
    "audit_chains",
    metadata,
    Column("org_id", String(200), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("head_mac", String(64), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

integrations = Table(
    "integrations",
    metadata,
    Column("integration_id", String(64), primary_key=True),
    Column("org_id", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("vendor_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("rate_limit_per_minute", Integer, nullable=False),
    Column("daily_quota", BigInteger, nullable=False),
    Column("ip_allowlist", JSON, nullable=False),
    Column("credentials_issued_at", UTCDateTime(), nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_integrations_org_id", "org_id"),
)

# Every service owns an outbox (services.kit.outbox). The logs service publishes nothing yet;
# the table keeps its schema shaped like every other service's for the day it does.
outbox = outbox_table(metadata)

# Rows one page may search with a condition checked row by row (LogsRepository.page_query).
SCAN_WINDOW = 10_000

_REQUEST_COLUMNS = ("org_id", "request_id", "ts", "integration_id", "method", "endpoint", "status", "duration_ms",
                    "ip", "error_code", "scope_category", "repeats")


def _request_row(r: ApiRequest) -> dict[str, object]:
    return {"org_id": r.org_id, "request_id": r.request_id, "ts": r.timestamp, "integration_id": r.integration_id,
            "method": r.method, "endpoint": r.endpoint, "status": r.status, "duration_ms": r.duration_ms, "ip": r.ip,
            "error_code": r.error_code, "scope_category": r.scope_category, "repeats": r.repeats}


def _request_values(r: ApiRequest) -> tuple[object, ...]:
    return (r.org_id, r.request_id, r.timestamp, r.integration_id, r.method, r.endpoint, r.status, r.duration_ms, r.ip,
            r.error_code, r.scope_category, r.repeats)


_PG_TYPES = ("text", "text", "timestamptz", "text", "text", "text", "int4", "float8", "text", "text", "text", "int4")
_PG_BATCH_INSERT = text(
    f"INSERT INTO api_requests ({', '.join(_REQUEST_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'CAST(:c{i} AS {t}[])' for i, t in enumerate(_PG_TYPES))}) "
    f"ON CONFLICT (org_id, request_id, ts) DO NOTHING"
)


_SQLITE_BATCH_INSERT = (
    f"INSERT INTO api_requests ({', '.join(_REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(_REQUEST_COLUMNS))}) "
    f"ON CONFLICT (org_id, request_id, ts) DO NOTHING"
)


def _sqlite_time(when: dt.datetime) -> str:
    """A UTC time as SQLAlchemy's SQLite DateTime stores it, so both sort and compare alike."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _request(row: Sequence[Any], names: dict[str, str]) -> ApiRequest:
    """A record from a row of `_REQUEST_COLUMNS`, in their order (a page's rows by position: the
    export reads a million of them, and a mapping per row costs more than the row itself)."""
    org_id, request_id, ts, integration_id, method, endpoint, status, duration_ms, ip, error_code, scope_category, \
        repeats = row
    return ApiRequest(org_id, request_id, ts, integration_id, method, endpoint, status, duration_ms, ip, error_code,
                      scope_category, names.get(integration_id, ""), repeats)


@dataclass
class _Tally:
    """What `usage` counts of one integration, as its queries come back."""

    requests: int = 0
    errors: int = 0
    peak: int = 0
    exercised: set[str] = field(default_factory=set)
    ips: list[str] = field(default_factory=list)


def _audit_row(e: AuditEntry) -> dict[str, object]:
    return {"org_id": e.org_id, "seq": e.seq, "event_id": e.event_id, "occurred_at": e.occurred_at,
            "recorded_at": e.recorded_at, "service": e.service, "actor_id": e.actor_id, "action": e.action,
            "object_type": e.object_type, "object_id": e.object_id, "before_json": e.before_json,
            "after_json": e.after_json, "reason": e.reason, "request_id": e.request_id, "mac": e.mac}


def _audit(row: RowMapping) -> AuditEntry:
    return AuditEntry(**{k: row[k] for k in AuditEntry.__dataclass_fields__})


def _facts(row: RowMapping) -> IntegrationFacts:
    return IntegrationFacts(
        integration_id=row["integration_id"], org_id=row["org_id"], name=row["name"], owner=row["owner"],
        vendor_id=row["vendor_id"], status=row["status"], scopes=tuple(row["scopes"] or ()),
        rate_limit_per_minute=row["rate_limit_per_minute"], daily_quota=row["daily_quota"],
        ip_allowlist=tuple(row["ip_allowlist"] or ()), credentials_issued_at=row["credentials_issued_at"],
        version=row["version"], updated_at=row["updated_at"],
    )


class LogsRepository:
    """Reads and writes the logs service's tables; `postgres` picks dialect-specific SQL."""

    def __init__(self, *, postgres: bool, scan_window: int = SCAN_WINDOW) -> None:
        self.postgres = postgres
        self.scan_window = scan_window
        self._insert = postgresql.insert if postgres else sqlite.insert

    # --- the request log ------------------------------------------------------------------

    async def add_requests(self, session: AsyncSession, records: Sequence[ApiRequest]) -> None:
        """Insert a batch in one statement; a (org, request id) already stored is skipped."""
        if not records:
            return
        if self.postgres:
            # One statement, one array per column: PostgreSQL plans and runs it once for the
            # whole batch (an executemany would run one INSERT per row).
            columns = list(zip(*(_request_values(r) for r in records)))
            await session.execute(_PG_BATCH_INSERT, {f"c{i}": list(values) for i, values in enumerate(columns)})
            return
        # One prepared statement run per row by the driver inside one transaction; the values
        # go as SQLAlchemy's SQLite DateTime would store them, without its per-value processing.
        conn = await session.connection()
        await conn.exec_driver_sql(_SQLITE_BATCH_INSERT, [
            (*v[:2], _sqlite_time(r.timestamp), *v[3:]) for r in records for v in (_request_values(r),)
        ])

    def _indexed(self, org_id: str, f: RequestFilter, after: Cursor | None) -> list[ColumnElement[bool]]:
        """What an index answers: organisation, integration, time, exact status, IP, error code."""
        t = api_requests
        conditions: list[ColumnElement[bool]] = [t.c.org_id == org_id]
        if f.integration_id:
            conditions.append(t.c.integration_id == f.integration_id)
        if f.since is not None:
            conditions.append(t.c.ts >= f.since)
        if f.until is not None:
            conditions.append(t.c.ts < f.until)
        if f.status is not None and f.status.exact:
            conditions.append(t.c.status == f.status.low)
        if f.ip:
            conditions.append(t.c.ip == f.ip)
        if f.error_code:
            conditions.append(t.c.error_code == f.error_code)
        if after is not None:
            conditions.append(tuple_(t.c.ts, t.c.request_id)
                              < tuple_(literal(after.timestamp, UTCDateTime()), literal(after.request_id, String())))
        return conditions

    def _scanned(self, f: RequestFilter, c: ColumnCollection[str, KeyedColumnElement[Any]]) -> list[ColumnElement[bool]]:
        """What is checked row by row: a status range, the endpoint substring."""
        conditions: list[ColumnElement[bool]] = []
        if f.status is not None and not f.status.exact:
            # `+ 0` keeps both planners off the status index for a range that matches a large
            # share of rows: walking the time index and filtering finds a page sooner.
            conditions.append((c.status + 0).between(f.status.low, f.status.high))
        if f.endpoint:
            # Case-insensitive on both: SQLite's LIKE is, PostgreSQL's ILIKE is.
            if self.postgres:
                conditions.append(c.endpoint.icontains(f.endpoint, autoescape=True))
            else:
                conditions.append(c.endpoint.contains(f.endpoint, autoescape=True))
        return conditions

    @staticmethod
    def scans(f: RequestFilter) -> bool:
        """Whether `f` has a condition checked row by row."""
        return bool(f.endpoint) or (f.status is not None and not f.status.exact)

    def request_query(self, org_id: str, f: RequestFilter, *, after: Cursor | None = None) -> Select[Any]:
        """Every request of the organisation matching `f`, newest first (see the module doc)."""
        t = api_requests
        return (select(*(t.c[c] for c in _REQUEST_COLUMNS))
                .where(*self._indexed(org_id, f, after), *self._scanned(f, t.c))
                .order_by(t.c.ts.desc(), t.c.request_id.desc()))

    def page_query(self, org_id: str, f: RequestFilter, *, size: int, after: Cursor | None = None,
                   search_end: Cursor | None = None) -> Select[Any]:
        """One page. With a condition checked row by row, only the next `scan_window` rows the
        indexes yield are searched, so a filter that rarely matches costs a bounded scan per
        page rather than a walk through the whole log. PostgreSQL bounds the search with a
        LIMIT in a subquery (its plan keeps the index order); SQLite would sort that subquery,
        so there the caller finds where the window ends first (`search_end`, index only)."""
        t = api_requests
        if not self.scans(f):
            return self.request_query(org_id, f, after=after).limit(size + 1)
        if not self.postgres:
            query = self.request_query(org_id, f, after=after)
            if search_end is not None:
                query = query.where(tuple_(t.c.ts, t.c.request_id) >= tuple_(
                    literal(search_end.timestamp, UTCDateTime()), literal(search_end.request_id, String())))
            return query.limit(size + 1)
        window = (select(*(t.c[c] for c in _REQUEST_COLUMNS)).where(*self._indexed(org_id, f, after))
                  .order_by(t.c.ts.desc(), t.c.request_id.desc()).limit(self.scan_window).subquery("searched"))
        return (select(*window.c).where(*self._scanned(f, window.c))
                .order_by(window.c.ts.desc(), window.c.request_id.desc()).limit(size + 1))

    async def _search_end(self, session: AsyncSession, org_id: str, f: RequestFilter, after: Cursor | None) -> Cursor | None:
        """The last row of the next search window, None when fewer rows are left."""
        t = api_requests
        end = (await session.execute(
            select(t.c.ts, t.c.request_id).where(*self._indexed(org_id, f, after))
            .order_by(t.c.ts.desc(), t.c.request_id.desc()).offset(self.scan_window - 1).limit(1)
        )).first()
        return Cursor(end.ts, end.request_id) if end is not None else None

    async def query_requests(self, session: AsyncSession, org_id: str, f: RequestFilter, *, size: int,
                             after: Cursor | None = None) -> RequestPage:
        """A page and where the next starts. A page may hold fewer than `size` records and still
        have a next cursor: its bounded search ran out before the page filled."""
        scans = self.scans(f)
        search_end = await self._search_end(session, org_id, f, after) if scans and not self.postgres else None
        query = self.page_query(org_id, f, size=size, after=after, search_end=search_end)
        rows = (await session.execute(query)).all()
        names = await self.integration_names(session, org_id, {r.integration_id for r in rows[:size]})
        records = [_request(r, names) for r in rows[:size]]
        if len(rows) > size:
            return RequestPage(records, Cursor(records[-1].timestamp, records[-1].request_id))
        if scans and self.postgres:
            search_end = await self._search_end(session, org_id, f, after)
        return RequestPage(records, search_end)

    async def count_requests(self, session: AsyncSession, org_id: str, f: RequestFilter) -> int:
        query = self.request_query(org_id, f).order_by(None).with_only_columns(func.count())
        return int((await session.execute(query)).scalar_one())

    async def request_span(self, session: AsyncSession, org_id: str,
                           f: RequestFilter) -> tuple[dt.datetime, dt.datetime] | None:
        """The oldest and newest matching request's time: two ends of one index range."""
        t = api_requests
        row = (await session.execute(
            select(func.min(t.c.ts), func.max(t.c.ts)).where(*self._indexed(org_id, f, None), *self._scanned(f, t.c))
        )).one()
        return (row[0], row[1]) if row[0] is not None and row[1] is not None else None

    def _epoch_seconds(self) -> ColumnElement[int]:
        """A request's time as whole seconds since the epoch, on either database."""
        ts = api_requests.c.ts
        if self.postgres:
            return cast(func.floor(func.extract("epoch", ts)), BigInteger)
        # SQLite keeps the time as text "YYYY-MM-DD HH:MM:SS.ffffff" (UTC), which strftime reads.
        return cast(func.strftime("%s", ts), BigInteger)

    async def histogram(self, session: AsyncSession, org_id: str, f: RequestFilter, step: int) -> list[HistogramCell]:
        """One GROUP BY over the matching rows: (bucket, integration) -> requests, errors, 429s.
        The bucket is `epoch // step * step`, integer division on both databases; `step` is
        written into the SQL as a number (never text from a caller) so the select and the
        GROUP BY are the same expression to PostgreSQL."""
        t = api_requests
        width = literal_column(str(int(step)), BigInteger)
        bucket = (self._epoch_seconds().op("/")(width) * width).label("bucket")
        query = (select(bucket, t.c.integration_id, func.sum(t.c.repeats),
                        func.sum(case((t.c.status >= 400, t.c.repeats), else_=0)),
                        func.sum(case((t.c.status == 429, t.c.repeats), else_=0)))
                 .where(*self._indexed(org_id, f, None), *self._scanned(f, t.c))
                 .group_by(literal_column("bucket"), t.c.integration_id))
        rows = (await session.execute(query)).all()
        names = await self.integration_names(session, org_id, {r[1] for r in rows})
        return [HistogramCell(dt.datetime.fromtimestamp(int(b), dt.timezone.utc), iid, int(n), int(errors or 0),
                              int(limited or 0), names.get(iid, ""))
                for b, iid, n, errors, limited in rows]

    async def get_request(self, session: AsyncSession, org_id: str, request_id: str) -> ApiRequest | None:
        t = api_requests
        row = (await session.execute(
            select(*(t.c[c] for c in _REQUEST_COLUMNS)).where(t.c.org_id == org_id, t.c.request_id == request_id)
            .order_by(t.c.ts.desc()).limit(1)  # a partner may have sent the same X-Request-ID twice: the latest
        )).first()
        if row is None:
            return None
        return _request(row, await self.integration_names(session, org_id, {row.integration_id}))

    async def integration_names(self, session: AsyncSession, org_id: str, ids: set[str]) -> dict[str, str]:
        ids.discard("")
        if not ids:
            return {}
        i = integrations
        rows = await session.execute(select(i.c.integration_id, i.c.name).where(i.c.org_id == org_id,
                                                                                i.c.integration_id.in_(ids)))
        return {integration_id: name for integration_id, name in rows.all()}

    async def request_orgs(self, session: AsyncSession) -> list[str]:
        """The organisations with stored requests: one index seek each (a loose index scan)."""
        rows = await session.execute(text(
            "WITH RECURSIVE orgs(org_id) AS ("
            " SELECT MIN(org_id) FROM api_requests"
            " UNION ALL"
            " SELECT (SELECT MIN(a.org_id) FROM api_requests a WHERE a.org_id > orgs.org_id)"
            " FROM orgs WHERE orgs.org_id IS NOT NULL"
            ") SELECT org_id FROM orgs WHERE org_id IS NOT NULL"
        ))
        return list(rows.scalars().all())

    async def delete_requests_before(self, session: AsyncSession, org_id: str, cutoff: dt.datetime, *, limit: int) -> int:
        """Delete at most `limit` of the organisation's requests older than `cutoff`; returns how many went."""
        t = api_requests
        oldest = select(t.c.org_id, t.c.request_id, t.c.ts).where(t.c.org_id == org_id, t.c.ts < cutoff).limit(limit)
        return rowcount(await session.execute(delete(t).where(tuple_(t.c.org_id, t.c.request_id, t.c.ts).in_(oldest))))

    async def oldest_kept(self, session: AsyncSession, org_id: str, keep: int) -> Cursor | None:
        """The newest row beyond the organisation's `keep` newest (None when it has no more than
        that): one walk of `keep` entries of ix_api_requests_org_ts."""
        t = api_requests
        row = (await session.execute(
            select(t.c.ts, t.c.request_id).where(t.c.org_id == org_id)
            .order_by(t.c.ts.desc(), t.c.request_id.desc()).offset(keep).limit(1)
        )).first()
        return Cursor(row.ts, row.request_id) if row is not None else None

    async def delete_requests_through(self, session: AsyncSession, org_id: str, last: Cursor, *, limit: int) -> int:
        """Delete at most `limit` of the organisation's oldest requests up to and including `last`."""
        t = api_requests
        oldest = (select(t.c.org_id, t.c.request_id, t.c.ts)
                  .where(t.c.org_id == org_id, tuple_(t.c.ts, t.c.request_id) <= tuple_(
                      literal(last.timestamp, UTCDateTime()), literal(last.request_id, String())))
                  .order_by(t.c.ts, t.c.request_id).limit(limit))
        return rowcount(await session.execute(delete(t).where(tuple_(t.c.org_id, t.c.request_id, t.c.ts).in_(oldest))))

    # --- the audit trail ------------------------------------------------------------------

    async def lock_chain(self, session: AsyncSession, org_id: str, genesis: ChainHead, now: dt.datetime) -> ChainHead:
        """The organisation's chain head, locked until the transaction ends (created when new).

        On PostgreSQL the row lock serialises appends from several logs replicas; SQLite has one
        writer at a time anyway.
        """
        c = audit_chains
        await session.execute(
            self._insert(c).values(org_id=org_id, count=0, last_seq=0, head_mac=genesis.head_mac, updated_at=now)
            .on_conflict_do_nothing(index_elements=["org_id"])
        )
        query = select(c.c.count, c.c.last_seq, c.c.head_mac).where(c.c.org_id == org_id)
        if self.postgres:
            query = query.with_for_update()
        row = (await session.execute(query)).mappings().one()
        return ChainHead(org_id, row["count"], row["last_seq"], row["head_mac"])

    async def chain_head(self, session: AsyncSession, org_id: str) -> ChainHead | None:
        c = audit_chains
        row = (await session.execute(select(c.c.count, c.c.last_seq, c.c.head_mac)
                                     .where(c.c.org_id == org_id))).mappings().first()
        return ChainHead(org_id, row["count"], row["last_seq"], row["head_mac"]) if row else None

    async def save_chain(self, session: AsyncSession, head: ChainHead, now: dt.datetime) -> None:
        c = audit_chains
        await session.execute(c.update().where(c.c.org_id == head.org_id).values(
            count=head.count, last_seq=head.last_seq, head_mac=head.head_mac, updated_at=now))

    async def stored_event_ids(self, session: AsyncSession, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        a = audit_entries
        rows = await session.execute(select(a.c.event_id).where(a.c.event_id.in_(list(event_ids))))
        return set(rows.scalars().all())

    async def add_audit_entries(self, session: AsyncSession, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await session.execute(audit_entries.insert(), [_audit_row(e) for e in entries])

    async def query_audit(self, session: AsyncSession, org_id: str, q: QueryAudit, *, size: int,
                          before_seq: int | None = None) -> list[AuditEntry]:
        a = audit_entries
        conditions: list[ColumnElement[bool]] = [a.c.org_id == org_id]
        for column, value in ((a.c.object_type, q.object_type), (a.c.object_id, q.object_id),
                              (a.c.actor_id, q.actor_id), (a.c.action, q.action)):
            if value:
                conditions.append(column == value)
        if q.since is not None:
            conditions.append(a.c.occurred_at >= q.since)
        if q.until is not None:
            conditions.append(a.c.occurred_at < q.until)
        if before_seq is not None:
            conditions.append(a.c.seq < before_seq)
        rows = await session.execute(select(a).where(*conditions).order_by(a.c.seq.desc()).limit(size))
        return [_audit(r) for r in rows.mappings().all()]

    async def snapshot(self, session: AsyncSession) -> None:
        """Make the session's reads see one snapshot, so a walk and the head agree even while
        appends go on: REPEATABLE READ on PostgreSQL, an explicit read transaction on SQLite."""
        if self.postgres:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:
            await (await session.connection()).exec_driver_sql("BEGIN")

    async def walk_chain(self, session: AsyncSession, org_id: str, *, page: int = 1000) -> AsyncIterator[AuditEntry]:
        """Every entry of the organisation's chain in position order, a page at a time."""
        a = audit_entries
        last: int | None = None
        while True:
            query = select(a).where(a.c.org_id == org_id)
            if last is not None:
                query = query.where(a.c.seq > last)
            rows = (await session.execute(query.order_by(a.c.seq).limit(page))).mappings().all()
            for row in rows:
                yield _audit(row)
            if len(rows) < page:
                return
            last = rows[-1]["seq"]

    # --- integrations ---------------------------------------------------------------------

    async def upsert_integration(self, session: AsyncSession, facts: IntegrationFacts) -> None:
        """Store the facts unless a later (or the same) version is stored already."""
        i = integrations
        values = {
            "integration_id": facts.integration_id, "org_id": facts.org_id, "name": facts.name, "owner": facts.owner,
            "vendor_id": facts.vendor_id, "status": facts.status, "scopes": list(facts.scopes),
            "rate_limit_per_minute": facts.rate_limit_per_minute, "daily_quota": facts.daily_quota,
            "ip_allowlist": list(facts.ip_allowlist), "credentials_issued_at": facts.credentials_issued_at,
            "version": facts.version, "updated_at": facts.updated_at,
        }
        stmt = self._insert(i).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["integration_id"],
            set_={k: stmt.excluded[k] for k in values if k != "integration_id"},
            where=i.c.version < stmt.excluded.version,
        )
        await session.execute(stmt)

    async def integration_facts(self, session: AsyncSession, org_id: str) -> list[IntegrationFacts]:
        i = integrations
        rows = await session.execute(select(i).where(i.c.org_id == org_id).order_by(i.c.name, i.c.integration_id))
        return [_facts(r) for r in rows.mappings().all()]

    async def usage(self, session: AsyncSession, org_id: str, since: dt.datetime) -> dict[str, Usage]:
        """Per integration: requests, errors, peak per minute, scopes exercised and IPs since `since`."""
        t = api_requests
        window = (t.c.org_id == org_id, t.c.ts >= since)
        totals = await session.execute(
            select(t.c.integration_id, func.count(), func.sum(case((t.c.status >= 400, 1), else_=0)))
            .where(*window).group_by(t.c.integration_id)
        )
        found: dict[str, _Tally] = {iid: _Tally(int(n), int(errors or 0)) for iid, n, errors in totals.all()}

        minute = func.date_trunc("minute", t.c.ts) if self.postgres else func.substr(t.c.ts, 1, 16)
        per_minute = (select(t.c.integration_id.label("iid"), func.count().label("n"))
                      .where(*window).group_by(t.c.integration_id, minute).subquery())
        peaks = await session.execute(select(per_minute.c.iid, func.max(per_minute.c.n)).group_by(per_minute.c.iid))
        for iid, peak in peaks.all():
            found.setdefault(iid, _Tally()).peak = int(peak)

        reads = t.c.method.in_(sorted(READ_METHODS))
        passed = (t.c.scope_category != "") & t.c.status.notin_([401, 403]) & t.c.error_code.notin_(sorted(REFUSED_CODES))
        used = await session.execute(
            select(t.c.integration_id, t.c.scope_category, reads.label("is_read")).where(*window, passed)
            .group_by(t.c.integration_id, t.c.scope_category, reads)
        )
        for iid, category, is_read in used.all():
            found.setdefault(iid, _Tally()).exercised.add(exercised_scope(category, "GET" if is_read else "POST"))

        ips = await session.execute(select(t.c.integration_id, t.c.ip).where(*window).group_by(t.c.integration_id, t.c.ip))
        for iid, ip in ips.all():
            found.setdefault(iid, _Tally()).ips.append(ip)

        return {
            iid: Usage(requests=v.requests, errors=v.errors, peak_per_minute=v.peak, exercised=frozenset(v.exercised),
                       ips=tuple(v.ips))
            for iid, v in found.items()
        }

    async def last_request_at(self, session: AsyncSession, org_id: str, integration_id: str) -> dt.datetime | None:
        t = api_requests
        return (await session.execute(
            select(t.c.ts).where(t.c.org_id == org_id, t.c.integration_id == integration_id)
            .order_by(t.c.ts.desc(), t.c.request_id.desc()).limit(1)
        )).scalar_one_or_none()


class SessionLogs:
    """`LogsRepository` bound to one unit's session: the request log, the audit trail and the
    integration facts of application.ports, in that unit's transaction."""

    def __init__(self, repo: LogsRepository, session: AsyncSession) -> None:
        self._repo, self._session = repo, session

    # the request log

    async def add_requests(self, records: Sequence[ApiRequest]) -> None:
        await self._repo.add_requests(self._session, records)

    async def query_requests(self, org_id: str, f: RequestFilter, *, size: int,
                             after: Cursor | None = None) -> RequestPage:
        return await self._repo.query_requests(self._session, org_id, f, size=size, after=after)

    async def count_requests(self, org_id: str, f: RequestFilter) -> int:
        return await self._repo.count_requests(self._session, org_id, f)

    async def request_span(self, org_id: str, f: RequestFilter) -> tuple[dt.datetime, dt.datetime] | None:
        return await self._repo.request_span(self._session, org_id, f)

    async def histogram(self, org_id: str, f: RequestFilter, step: int) -> list[HistogramCell]:
        return await self._repo.histogram(self._session, org_id, f, step)

    async def get_request(self, org_id: str, request_id: str) -> ApiRequest | None:
        return await self._repo.get_request(self._session, org_id, request_id)

    async def request_orgs(self) -> list[str]:
        return await self._repo.request_orgs(self._session)

    async def delete_requests_before(self, org_id: str, cutoff: dt.datetime, *, limit: int) -> int:
        return await self._repo.delete_requests_before(self._session, org_id, cutoff, limit=limit)

    async def oldest_kept(self, org_id: str, keep: int) -> Cursor | None:
        return await self._repo.oldest_kept(self._session, org_id, keep)

    async def delete_requests_through(self, org_id: str, last: Cursor, *, limit: int) -> int:
        return await self._repo.delete_requests_through(self._session, org_id, last, limit=limit)

    async def usage(self, org_id: str, since: dt.datetime) -> dict[str, Usage]:
        return await self._repo.usage(self._session, org_id, since)

    async def last_request_at(self, org_id: str, integration_id: str) -> dt.datetime | None:
        return await self._repo.last_request_at(self._session, org_id, integration_id)

    # the audit trail

    async def lock_chain(self, org_id: str, genesis: ChainHead, now: dt.datetime) -> ChainHead:
        return await self._repo.lock_chain(self._session, org_id, genesis, now)

    async def chain_head(self, org_id: str) -> ChainHead | None:
        return await self._repo.chain_head(self._session, org_id)

    async def save_chain(self, head: ChainHead, now: dt.datetime) -> None:
        await self._repo.save_chain(self._session, head, now)

    async def stored_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        return await self._repo.stored_event_ids(self._session, event_ids)

    async def add_audit_entries(self, entries: Sequence[AuditEntry]) -> None:
        await self._repo.add_audit_entries(self._session, entries)

    async def query_audit(self, org_id: str, q: QueryAudit, *, size: int,
                          before_seq: int | None = None) -> list[AuditEntry]:
        return await self._repo.query_audit(self._session, org_id, q, size=size, before_seq=before_seq)

    async def snapshot(self) -> None:
        await self._repo.snapshot(self._session)

    def walk_chain(self, org_id: str) -> AsyncIterator[AuditEntry]:
        return self._repo.walk_chain(self._session, org_id)

    # integrations

    async def upsert_integration(self, facts: IntegrationFacts) -> None:
        await self._repo.upsert_integration(self._session, facts)

    async def integration_facts(self, org_id: str) -> list[IntegrationFacts]:
        return await self._repo.integration_facts(self._session, org_id)


class SqlLogsUnitOfWork(SqlUnitOfWork):
    """application.ports.LogsUnitOfWork on one AsyncSession: `requests`, `audit` and
    `integrations` are `repo` on that session. The logs service publishes nothing: no outbox
    events, no wait. Like the sessions it replaces it takes no write lock: SQLite serialises
    its writers itself (busy timeout), PostgreSQL by the chain head's row lock."""

    requests: SessionLogs
    audit: SessionLogs
    integrations: SessionLogs

    def __init__(self, sessions: async_sessionmaker[AsyncSession], repo: LogsRepository) -> None:
        super().__init__(sessions, outbox_table=outbox)
        self._repo = repo

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.requests = self.audit = self.integrations = SessionLogs(self._repo, self.session)
        return self


def units_of_work(sessions: async_sessionmaker[AsyncSession], repo: LogsRepository) -> Callable[[], SqlLogsUnitOfWork]:
    """A new unit of work per call, as LogsHandlers takes them."""
    return lambda: SqlLogsUnitOfWork(sessions, repo)
