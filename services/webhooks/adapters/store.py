"""Webhooks' tables, the repositories that map rows to domain objects (bound to one session),
and the unit of work over them (application.ports.WebhooksUnitOfWork, SqlWebhooksUnitOfWork).

- `subscriptions`: one per endpoint; the signing secret is sealed by envelope encryption,
  bound to `subscriptions.secret:<id>`. Deleted ones stay (soft delete) for the log.
- `activities`: every platform activity received, keyed by (organisation, event id), with the
  delivery body serialised once (`body`, the exact bytes every attempt signs).
- `deliveries`: one per (subscription, event), the work queue: `next_attempt_at` says when it
  is due, `lease_until`/`claimed_by` which replica holds it (claims: services.webhooks.adapters.queue).
- `attempts`: the delivery log, one row per POST.
- `integrations`: the last status seen of each owning integration (from its events).
- `recoveries` and `recovery_deliveries`: each recovery after an outage, and which delivery
  (in which round) it sent again; its progress is read from those deliveries.
- `retention_settings`: an organisation's retention override (days).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self

from sqlalchemy import (
    BigInteger, Boolean, Column, ColumnElement, Float, Index, Integer, LargeBinary, String, Table, Text, UniqueConstraint,
    and_, bindparam, case, delete, exists, func, literal, or_, select, text, tuple_, union, update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.db import UTCDateTime, new_metadata, rowcount
from services.kit.errors import InvalidArgument, NotFound
from services.kit.outbox import add_event, outbox_table
from services.kit.sqluow import SqlUnitOfWork
from services.kit.uow import Flush, no_flush
from services.webhooks.adapters import events
from services.webhooks.domain.client_tls import ClientCertificate
from services.webhooks.application.ports import (
    Accepted, ActivityRecord, AttemptRecord, DeliveryRecord, Scope, SentBody,
)
from services.webhooks.domain.filters import verdict
from services.webhooks.domain.model import (
    AttemptError, AttemptExchange, CustomHeaderHint, DeliveryStatus, IncomingActivity, Recovery, SignatureScheme,
    Subscription, SubscriptionStatus, delivery_body, delivery_document,
)

metadata = new_metadata()


class Database:
    """Sessions for reads, and write transactions that take turns within this process on
    SQLite: it has one writer, and waiting here is cheaper than its busy-retry sleeps."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, serialize_writes: bool) -> None:
        self.sessions = sessions
        # Shared with the units of work (SqlWebhooksUnitOfWork): one writer at a time on SQLite.
        self.write_lock = asyncio.Lock() if serialize_writes else None

    def read(self) -> AsyncSession:
        return self.sessions()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed when the block ends without an error."""
        async with contextlib.AsyncExitStack() as stack:
            if self.write_lock is not None:
                await stack.enter_async_context(self.write_lock)
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            yield session

_PENDING = text("status = 'pending'")

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    # The owning integration ("" when an administrator created it).
    Column("integration_id", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("activity_types", Text, nullable=False),  # JSON list
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("scheme", String(32), nullable=False),
    # `whsec_…` sealed by services.kit.crypto.Envelope, bound to subscriptions.secret:<id>.
    Column("secret", LargeBinary, nullable=False),
    Column("secret_created_at", UTCDateTime(), nullable=False),
    Column("integration_suspended", Boolean, nullable=False),
    Column("failing_since", UTCDateTime(), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
    # A JMESPath expression over the delivery document ("": none); domain/filters.py (migration 0004).
    Column("filter", Text, nullable=False, server_default=""),
    # Custom headers: names and value hints as JSON (shown), the values sealed like the secret,
    # bound to subscriptions.custom_headers:<id> (NULL: none).
    Column("custom_headers", Text, nullable=False, server_default="[]"),
    Column("custom_headers_sealed", LargeBinary, nullable=True),
    # Mutual TLS: what is shown of the client certificate (JSON; NULL: none), and the certificate
    # and its key sealed, bound to subscriptions.client_tls:<id>.
    Column("client_certificate", Text, nullable=True),
    Column("client_tls_sealed", LargeBinary, nullable=True),
    # A rotation with an overlap: the previous secret, sealed (bound to
    # subscriptions.previous_secret:<id>), signs too until previous_secret_expires_at.
    Column("previous_secret", LargeBinary, nullable=True),
    Column("previous_secret_expires_at", UTCDateTime(), nullable=True),
)

activities = Table(
    "activities",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("type", String(128), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("sender_type", String(16), nullable=False),
    Column("sender_id", String(128), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("trace_headers", Text, nullable=False),  # JSON: the trace context it arrived with
    Index("ix_activities_org_seq", "org_id", "seq"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("subscription_id", String(40), nullable=False, index=True),
    Column("event_id", String(128), nullable=False, index=True),
    Column("event_type", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("status", String(16), nullable=False),
    Column("round", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("last_status_code", Integer, nullable=False),
    Column("last_error", String(32), nullable=False),
    Column("last_error_detail", Text, nullable=False),
    Column("test", Boolean, nullable=False),
    UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_subscription_id_event_id"),
    # A claim reads one subscription's due work in order (due time, then arrival) from this
    # index and stops at its LIMIT; `ix_deliveries_next` finds when the next work falls due.
    Index("ix_deliveries_due", "subscription_id", "next_attempt_at", "seq", sqlite_where=_PENDING, postgresql_where=_PENDING),
    Index("ix_deliveries_next", "next_attempt_at", sqlite_where=_PENDING, postgresql_where=_PENDING),
    # Retention walks an organisation's oldest deliveries (migration 0003).
    Index("ix_deliveries_org_created", "org_id", "created_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("delivery_id", String(40), nullable=False, index=True),
    Column("subscription_id", String(40), nullable=False),
    Column("event_id", String(128), nullable=False, index=True),
    Column("event_type", String(128), nullable=False),
    Column("round", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", UTCDateTime(), nullable=False, index=True),
    Column("duration_ms", Float, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("succeeded", Boolean, nullable=False),
    Column("error", String(32), nullable=False),
    Column("error_detail", Text, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("test", Boolean, nullable=False),
    Column("sent_by", String(64), nullable=False),  # the replica that made the attempt
    # JSON of domain.model.AttemptExchange (headers sent, the answer's headers and first 4 KiB,
    # secrets masked); NULL when attempt details are not stored (and before migration 0005).
    Column("exchange", Text, nullable=True),
    # The delivery log (list_attempts): one subscription's attempts newest first, walked from
    # the index's end, all of them or one outcome's (the Succeeded and Failed tabs).
    Index("ix_attempts_subscription_log", "subscription_id", "attempted_at", "id"),
    Index("ix_attempts_subscription_outcome_log", "subscription_id", "succeeded", "attempted_at", "id"),
)

# What a page of the log reads: every column but the recorded exchange (up to ~20 KB a row).
_LOG_COLUMNS = [c for c in attempts.c if c.name != "exchange"]

integrations = Table(
    "integrations",
    metadata,
    Column("integration_id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# IntegrationChanged events already applied (idempotency by event id).
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("processed_at", UTCDateTime(), nullable=False),
)

recoveries = Table(
    "recoveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("subscription_id", String(40), nullable=False, index=True),
    Column("since", UTCDateTime(), nullable=False),
    Column("until", UTCDateTime(), nullable=False),
    Column("queued", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Which delivery a recovery sent again, and the round it started for it.
recovery_deliveries = Table(
    "recovery_deliveries",
    metadata,
    Column("recovery_id", String(40), primary_key=True),
    Column("delivery_id", String(40), primary_key=True),
    Column("round", Integer, nullable=False),
    Index("ix_recovery_deliveries_delivery", "delivery_id"),
)

retention_settings = Table(
    "retention_settings",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("days", Integer, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

outbox = outbox_table(metadata)

_last_seq = 0


def next_seq() -> int:
    """Nanoseconds, strictly increasing within the process: the order activities arrived in."""
    global _last_seq
    _last_seq = max(time.time_ns(), _last_seq + 1)
    return _last_seq


_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # as services.kit.ids
# Two digits for each 10 bits, and where each pair sits: 13 lookups instead of 26 divisions.
_DIGIT_PAIRS = [a + b for a in _ID_ALPHABET for b in _ID_ALPHABET]
_PAIR_SHIFTS = tuple(range(120, -1, -10))
_row_random = random.Random()


def row_id(prefix: str) -> str:
    """An id shaped like services.kit.ids.new_id (time-ordered), for the rows written once per
    delivery and attempt: their random part only avoids collisions, it guards nothing, so it
    comes from a seeded PRNG instead of a system call per id."""
    value = (int(time.time() * 1000) << 80) | _row_random.getrandbits(80)
    return prefix + "_" + "".join([_DIGIT_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def insert_for(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT … ON CONFLICT DO NOTHING for the session's dialect."""
    return _insert_ignoring_conflicts(session.get_bind().dialect.name, table)


def _insert_ignoring_conflicts(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class _IngestStatements:
    """What ActivityLog.ingest executes for every batch, built once per dialect: the activities'
    insert (returning the new ones), the deliveries' insert, and the subscriptions of the
    batch's organisations (bind parameter `orgs`)."""

    def __init__(self, dialect: str) -> None:
        self.activities = _insert_ignoring_conflicts(dialect, activities).returning(activities.c.org_id,
                                                                                    activities.c.event_id)
        self.deliveries = _insert_ignoring_conflicts(dialect, deliveries)
        t = subscriptions
        self.matching = select(t.c.id, t.c.org_id, t.c.activity_types, t.c.integration_id, t.c.filter).where(
            t.c.org_id.in_(bindparam("orgs", expanding=True)), t.c.deleted_at.is_(None),
            t.c.status.in_([SubscriptionStatus.ACTIVE.value, SubscriptionStatus.FAILING.value]),
        )


_INGEST_STATEMENTS = {dialect: _IngestStatements(dialect) for dialect in ("postgresql", "sqlite")}


# --- reading rows ------------------------------------------------------------------------------------


def _subscription(row: Row[Any]) -> Subscription:
    return Subscription(
        id=row.id, org_id=row.org_id, integration_id=row.integration_id, url=row.url,
        activity_types=tuple(json.loads(row.activity_types)), description=row.description,
        status=SubscriptionStatus(row.status), scheme=SignatureScheme(row.scheme),
        integration_suspended=row.integration_suspended, failing_since=row.failing_since,
        created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
        secret_created_at=row.secret_created_at, version=row.version, filter=row.filter,
        custom_headers=tuple(CustomHeaderHint(str(n), str(h)) for n, h in json.loads(row.custom_headers or "[]")),
        client_certificate=ClientCertificate.from_json(row.client_certificate) if row.client_certificate else None,
        previous_secret_expires_at=row.previous_secret_expires_at,
    )


def _subscription_values(s: Subscription) -> dict[str, object]:
    return {
        "org_id": s.org_id, "integration_id": s.integration_id, "url": s.url,
        "activity_types": json.dumps(list(s.activity_types)), "description": s.description,
        "status": s.status.value, "scheme": s.scheme.value, "integration_suspended": s.integration_suspended,
        "failing_since": s.failing_since, "created_by": s.created_by, "created_at": s.created_at,
        "updated_at": s.updated_at, "secret_created_at": s.secret_created_at, "version": s.version,
        "filter": s.filter,
        "custom_headers": json.dumps([[h.name, h.hint] for h in s.custom_headers]),
        "client_certificate": s.client_certificate.as_json() if s.client_certificate else None,
        "previous_secret_expires_at": s.previous_secret_expires_at,
    }


def _delivery(row: Row[Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id, org_id=row.org_id, subscription_id=row.subscription_id, event_id=row.event_id,
        event_type=row.event_type, status=DeliveryStatus(row.status), round=row.round, attempts=row.attempts,
        next_attempt_at=row.next_attempt_at, created_at=row.created_at, updated_at=row.updated_at,
        last_status_code=row.last_status_code, last_error=AttemptError(row.last_error),
        last_error_detail=row.last_error_detail, test=row.test,
    )


def _attempt(row: Row[Any]) -> AttemptRecord:
    return AttemptRecord(
        id=row.id, org_id=row.org_id, delivery_id=row.delivery_id, subscription_id=row.subscription_id,
        event_id=row.event_id, event_type=row.event_type, round=row.round, attempt=row.attempt,
        attempted_at=row.attempted_at, duration_ms=row.duration_ms, status_code=row.status_code,
        succeeded=row.succeeded, error=AttemptError(row.error), error_detail=row.error_detail,
        response_body=row.response_body, url=row.url, test=row.test,
        next_attempt_at=getattr(row, "next_attempt_at", None),
        exchange=AttemptExchange.from_json(exchange) if (exchange := getattr(row, "exchange", None)) else None,
    )


def _activity(row: Row[Any]) -> ActivityRecord:
    data = json.loads(row.body).get("data", {})
    return ActivityRecord(
        event_id=row.event_id, org_id=row.org_id, type=row.type, occurred_at=row.occurred_at,
        received_at=row.received_at, sender_type=row.sender_type, sender_id=row.sender_id,
        data_json=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
    )


# --- page tokens -----------------------------------------------------------------------------------------


def encode_token(key: object, id_: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([key, id_]).encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[object, str]:
    try:
        key, id_ = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(id_, str):
            raise ValueError
        return key, id_
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("page_token is not one this service gave out") from exc


def decode_seq_token(token: str) -> tuple[int, str]:
    """A page token whose key is a sequence number (deliveries, activities)."""
    key, id_ = decode_token(token)
    if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < 2**63:
        raise InvalidArgument("page_token is not one this service gave out")
    return key, id_


def _time_key(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat()


def _parse_time_key(value: object) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidArgument("page_token is not one this service gave out") from exc
    if when.tzinfo is None:  # every token this service gives out is in UTC
        raise InvalidArgument("page_token is not one this service gave out")
    return when


# --- subscriptions ---------------------------------------------------------------------------------------


class SubscriptionRepository:
    """Subscriptions and what changes with them, always within one organisation, in one
    session's transaction (the unit of work's): application.ports.Subscriptions over SQL."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def _scoped(self, scope: Scope) -> ColumnElement[bool]:
        t = subscriptions
        condition = and_(t.c.org_id == scope.org_id, t.c.deleted_at.is_(None))
        if scope.integration_id is not None:
            condition = and_(condition, t.c.integration_id == scope.integration_id)
        return condition

    async def add(self, subscription: Subscription, sealed_secret: bytes, *, sealed_headers: bytes = b"",
                  sealed_client_tls: bytes = b"") -> None:
        await self._session.execute(subscriptions.insert().values(id=subscription.id, secret=sealed_secret,
                                                            custom_headers_sealed=sealed_headers or None,
                                                            client_tls_sealed=sealed_client_tls or None,
                                                            **_subscription_values(subscription)))

    async def get(self, scope: Scope, subscription_id: str, *, for_update: bool = False) -> Subscription:
        query = select(subscriptions).where(self._scoped(scope), subscriptions.c.id == subscription_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        if row is None:
            raise NotFound(f"no webhook subscription {subscription_id}", subscription_id=subscription_id)
        return _subscription(row)

    async def sealed_secret(self, subscription_id: str) -> bytes:
        sealed: bytes = (await self._session.execute(
            select(subscriptions.c.secret).where(subscriptions.c.id == subscription_id))).scalar_one()
        return sealed

    async def sealed_headers(self, subscription_id: str) -> bytes:
        sealed: bytes | None = (await self._session.execute(
            select(subscriptions.c.custom_headers_sealed).where(subscriptions.c.id == subscription_id))).scalar_one()
        return sealed or b""

    async def sealed_previous_secret(self, subscription_id: str) -> bytes:
        sealed: bytes | None = (await self._session.execute(
            select(subscriptions.c.previous_secret).where(subscriptions.c.id == subscription_id))).scalar_one()
        return sealed or b""

    async def erase_ended_overlaps(self, now: dt.datetime) -> int:
        t = subscriptions
        ended = await self._session.execute(update(t).where(t.c.previous_secret_expires_at < now).values(
            previous_secret=None, previous_secret_expires_at=None))
        return rowcount(ended)

    async def sealed_client_tls(self, subscription_id: str) -> bytes:
        sealed: bytes | None = (await self._session.execute(
            select(subscriptions.c.client_tls_sealed).where(subscriptions.c.id == subscription_id))).scalar_one()
        return sealed or b""

    async def save(self, subscription: Subscription, *, sealed_secret: bytes | None = None,
                   sealed_headers: bytes | None = None, sealed_client_tls: bytes | None = None,
                   sealed_previous_secret: bytes | None = None) -> None:
        values = _subscription_values(subscription)
        if sealed_previous_secret is not None:  # b"": none (a rotation without an overlap)
            values["previous_secret"] = sealed_previous_secret or None
        if sealed_secret is not None:
            values["secret"] = sealed_secret
        if sealed_headers is not None:  # b"": the subscription has none any more
            values["custom_headers_sealed"] = sealed_headers or None
        if sealed_client_tls is not None:  # b"": no client certificate any more
            values["client_tls_sealed"] = sealed_client_tls or None
        await self._session.execute(update(subscriptions).where(subscriptions.c.id == subscription.id).values(**values))

    async def delete(self, subscription: Subscription, now: dt.datetime) -> int:
        """Soft-deletes it and cancels its pending deliveries; returns how many were cancelled."""
        await self._session.execute(update(subscriptions).where(subscriptions.c.id == subscription.id)
                              .values(deleted_at=now, updated_at=now, version=subscription.version + 1))
        return await self.cancel_pending([subscription.id], now)

    async def cancel_pending(self, subscription_ids: Sequence[str], now: dt.datetime) -> int:
        if not subscription_ids:
            return 0
        result = await self._session.execute(
            update(deliveries)
            .where(deliveries.c.subscription_id.in_(list(subscription_ids)), deliveries.c.status == DeliveryStatus.PENDING.value)
            .values(status=DeliveryStatus.CANCELLED.value, next_attempt_at=None, lease_until=None, claimed_by=None,
                    updated_at=now)
        )
        return rowcount(result)

    async def release_queue(self, subscription_id: str, now: dt.datetime) -> int:
        """Makes every pending delivery due now (after recovery): they go out oldest first."""
        result = await self._session.execute(
            update(deliveries)
            .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == DeliveryStatus.PENDING.value,
                   deliveries.c.next_attempt_at.is_not(None))
            .values(next_attempt_at=now, updated_at=now)
        )
        return rowcount(result)

    async def list_page(self, scope: Scope, *, statuses: Sequence[SubscriptionStatus],
                        size: int, token: str) -> tuple[list[Subscription], str]:
        t = subscriptions
        query = select(t).where(self._scoped(scope))
        if statuses:
            query = query.where(t.c.status.in_([s.value for s in statuses]))
        if token:
            key, last_id = decode_token(token)
            when = _parse_time_key(key)
            query = query.where(or_(t.c.created_at > when, and_(t.c.created_at == when, t.c.id > last_id)))
        rows = (await self._session.execute(query.order_by(t.c.created_at, t.c.id).limit(size + 1))).all()
        found = [_subscription(r) for r in rows[:size]]
        next_token = encode_token(_time_key(found[-1].created_at), found[-1].id) if len(rows) > size else ""
        return found, next_token

    async def of_integration(self, org_id: str, integration_id: str) -> list[Subscription]:
        t = subscriptions
        query = select(t).where(t.c.org_id == org_id, t.c.integration_id == integration_id, t.c.deleted_at.is_(None))
        return [_subscription(r) for r in (await self._session.execute(query.with_for_update())).all()]

    # integrations seen on the bus

    async def integration_status(self, org_id: str, integration_id: str) -> str | None:
        query = select(integrations.c.status).where(integrations.c.integration_id == integration_id,
                                                    integrations.c.org_id == org_id)
        return (await self._session.execute(query)).scalar_one_or_none()

    async def record_integration(self, org_id: str, integration_id: str, status: str,
                                 version: int, now: dt.datetime) -> bool:
        """Stores the integration's status unless a newer version is already known or it was
        revoked (terminal); True if stored."""
        t = integrations
        row = (await self._session.execute(select(t.c.version, t.c.status).where(t.c.integration_id == integration_id))).first()
        if row is None:
            await self._session.execute(insert_for(self._session, t).values(integration_id=integration_id, org_id=org_id,
                                                                status=status, version=version, updated_at=now))
            return True
        if row.status == "revoked" or (version and row.version > version):
            return False
        await self._session.execute(update(t).where(t.c.integration_id == integration_id)
                              .values(status=status, version=version, updated_at=now))
        return True

    async def mark_processed(self, event_id: str, now: dt.datetime) -> bool:
        """False when this event was already applied."""
        result = await self._session.execute(insert_for(self._session, processed_events).values(event_id=event_id, processed_at=now))
        return bool(rowcount(result))


# --- activities and the delivery log -----------------------------------------------------------------------


class ActivityLog:
    """Stores activities with their deliveries, and reads the delivery log, in one session's
    transaction: application.ports.Activities over SQL."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def ingest(self, batch: Sequence[IncomingActivity], bodies: Sequence[bytes],
                     now: dt.datetime, new_delivery_id: Callable[[], str] = lambda: row_id("dlv")) -> list[Accepted]:
        """Stores each new activity and one pending delivery per matching subscription, due now;
        one its filter does not pass is stored as Filtered, never attempted."""
        unique: dict[tuple[str, str], tuple[IncomingActivity, bytes, int]] = {}
        for activity, body in zip(batch, bodies, strict=True):
            unique.setdefault((activity.org_id, activity.event_id), (activity, body, next_seq()))
        rows = [
            {"org_id": a.org_id, "event_id": a.event_id, "seq": seq, "type": a.type, "occurred_at": a.occurred_at,
             "received_at": now, "sender_type": a.sender_type, "sender_id": a.sender_id, "body": body,
             "trace_headers": json.dumps(dict(a.trace_headers))}
            for a, body, seq in unique.values()
        ]
        statements = _INGEST_STATEMENTS[self._session.get_bind().dialect.name]
        inserted = set()
        if rows:
            inserted = {(r.org_id, r.event_id) for r in (await self._session.execute(statements.activities, rows)).all()}
        matches = await self._matching(statements, {org for org, _ in inserted})
        counts: dict[tuple[str, str], int] = {}
        filtered: dict[tuple[str, str], int] = {}
        delivery_rows = []
        for key in inserted:
            activity, _, seq = unique[key]
            document: dict[str, object] | None = None  # built for the first filter only
            for sub_id, sub_org, types, sub_integration, expression in matches:
                if sub_org != activity.org_id or not ("*" in types or activity.type in types) \
                        or not activity.reaches(sub_id, sub_integration):
                    continue
                row = _new_delivery(new_delivery_id(), activity.org_id, sub_id, activity.event_id,
                                    activity.type, seq, now, next_attempt_at=now)
                delivery_rows.append(row)
                if expression:
                    document = document if document is not None else delivery_document(activity)
                    passes, why = verdict(expression, document)
                    if not passes:
                        row.update(status=DeliveryStatus.FILTERED.value, next_attempt_at=None, last_error_detail=why)
                        filtered[key] = filtered.get(key, 0) + 1
                        continue
                counts[key] = counts.get(key, 0) + 1
        if delivery_rows:
            await self._session.execute(statements.deliveries, delivery_rows)
        return [
            Accepted(a.event_id, a.org_id, duplicate=(a.org_id, a.event_id) not in inserted,
                     deliveries=counts.get((a.org_id, a.event_id), 0), filtered=filtered.get((a.org_id, a.event_id), 0))
            for a in batch
        ]

    async def _matching(self, statements: _IngestStatements,
                        orgs: set[str]) -> list[tuple[str, str, frozenset[str], str, str]]:
        if not orgs:
            return []
        rows = (await self._session.execute(statements.matching, {"orgs": sorted(orgs)})).all()
        return [(r.id, r.org_id, frozenset(json.loads(r.activity_types)), r.integration_id, r.filter) for r in rows]

    async def add_test(self, activity: IncomingActivity, body: bytes, subscription_id: str,
                       delivery_id: str, now: dt.datetime) -> None:
        """A test event and its delivery, which only the caller attempts (never due)."""
        seq = next_seq()
        await self._session.execute(activities.insert().values(
            org_id=activity.org_id, event_id=activity.event_id, seq=seq, type=activity.type,
            occurred_at=activity.occurred_at, received_at=now, sender_type=activity.sender_type,
            sender_id=activity.sender_id, body=body, trace_headers=json.dumps(dict(activity.trace_headers)),
        ))
        await self._session.execute(deliveries.insert().values(
            _new_delivery(delivery_id, activity.org_id, subscription_id, activity.event_id, activity.type, seq, now,
                          next_attempt_at=None, test=True)
        ))

    async def finish_test(self, delivery_id: str, row: dict[str, object], status: DeliveryStatus,
                          now: dt.datetime) -> None:
        await self._session.execute(attempts.insert().values(**row))
        await self._session.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(
            status=status.value, attempts=1, updated_at=now, last_status_code=row["status_code"],
            last_error=row["error"], last_error_detail=row["error_detail"],
        ))

    def _visible(self, table: Table, scope: Scope) -> ColumnElement[bool]:
        condition = table.c.org_id == scope.org_id
        if scope.integration_id is not None:
            owned = select(subscriptions.c.id).where(subscriptions.c.org_id == scope.org_id,
                                                     subscriptions.c.integration_id == scope.integration_id)
            condition = and_(condition, table.c.subscription_id.in_(owned))
        return condition

    async def get_delivery(self, scope: Scope, delivery_id: str) -> DeliveryRecord:
        query = select(deliveries).where(self._visible(deliveries, scope), deliveries.c.id == delivery_id)
        row = (await self._session.execute(query)).first()
        if row is None:
            raise NotFound(f"no delivery {delivery_id}", delivery_id=delivery_id)
        return _delivery(row)

    async def list_deliveries(self, scope: Scope, *, subscription_id: str, statuses: Sequence[DeliveryStatus],
                              event_id: str, size: int, token: str) -> tuple[list[DeliveryRecord], str]:
        t = deliveries
        query = select(t).where(self._visible(t, scope))
        if subscription_id:
            query = query.where(t.c.subscription_id == subscription_id)
        if statuses:
            query = query.where(t.c.status.in_([s.value for s in statuses]))
        if event_id:
            query = query.where(t.c.event_id == event_id)
        if token:
            key, last_id = decode_seq_token(token)
            query = query.where(or_(t.c.seq < key, and_(t.c.seq == key, t.c.id < last_id)))
        rows = (await self._session.execute(query.order_by(t.c.seq.desc(), t.c.id.desc()).limit(size + 1))).all()
        found = [_delivery(r) for r in rows[:size]]
        next_token = encode_token(rows[size - 1].seq, found[-1].id) if len(rows) > size else ""
        return found, next_token

    async def attempts_of(self, scope: Scope, delivery_id: str) -> list[AttemptRecord]:
        t = attempts
        query = select(t).where(self._visible(t, scope), t.c.delivery_id == delivery_id)
        return [_attempt(r) for r in (await self._session.execute(query.order_by(t.c.attempted_at, t.c.id))).all()]

    async def get_attempt(self, scope: Scope, attempt_id: str) -> AttemptRecord:
        row = (await self._session.execute(select(attempts).where(self._visible(attempts, scope),
                                                                  attempts.c.id == attempt_id))).first()
        if row is None:
            raise NotFound(f"no attempt {attempt_id}", attempt_id=attempt_id)
        return _attempt(row)

    async def last_attempts(self, scope: Scope, subscription_ids: Sequence[str]) -> list[AttemptRecord]:
        t, latest = attempts, attempts.alias("latest")
        # Per subscription, one probe of ix_attempts_subscription_log from its end; all in one query.
        newest = (select(latest.c.id).where(latest.c.subscription_id == subscriptions.c.id)
                  .order_by(latest.c.attempted_at.desc(), latest.c.id.desc()).limit(1).scalar_subquery())
        ids = select(newest).where(subscriptions.c.id.in_(list(subscription_ids)), subscriptions.c.org_id == scope.org_id)
        query = select(*_LOG_COLUMNS).where(self._visible(t, scope), t.c.id.in_(ids))
        return [_attempt(r) for r in (await self._session.execute(query)).all()]

    async def sent_body(self, delivery: DeliveryRecord, limit: int) -> SentBody:
        a, s = activities, subscriptions
        # The prefix only: a body can be large and the log shows a bounded part of it.
        query = (select(func.substr(a.c.body, 1, limit).label("head"), func.length(a.c.body).label("size"), s.c.scheme)
                 .select_from(a.join(s, s.c.id == delivery.subscription_id))
                 .where(a.c.org_id == delivery.org_id, a.c.event_id == delivery.event_id))
        row = (await self._session.execute(query)).first()
        if row is None:
            # Retention never deletes an event a delivery still refers to; should the row be gone
            # anyway, the page shows no body rather than failing.
            scheme = (await self._session.execute(
                select(s.c.scheme).where(s.c.id == delivery.subscription_id))).scalar_one_or_none()
            return SentBody(b"", 0, SignatureScheme(scheme or SignatureScheme.SPEC.value))
        return SentBody(bytes(row.head), int(row.size), SignatureScheme(row.scheme))

    async def list_attempts(self, scope: Scope, *, subscription_id: str, succeeded: bool | None,
                            event_id: str, delivery_id: str, size: int, token: str) -> tuple[list[AttemptRecord], str]:
        t, d = attempts, deliveries
        # A pending delivery's `attempts` counts its current round's attempts, so its latest
        # attempt row is the one with that round and number.
        latest_of_pending = and_(d.c.status == DeliveryStatus.PENDING.value, d.c.round == t.c.round, d.c.attempts == t.c.attempt)
        next_attempt_at = case((latest_of_pending, d.c.next_attempt_at), else_=None).label("next_attempt_at")
        query = (select(*_LOG_COLUMNS, next_attempt_at).select_from(t.outerjoin(d, d.c.id == t.c.delivery_id))
                 .where(self._visible(t, scope)))
        for column, value in ((t.c.subscription_id, subscription_id), (t.c.event_id, event_id), (t.c.delivery_id, delivery_id)):
            if value:
                query = query.where(column == value)
        if succeeded is not None:
            # `=`, not `IS`: PostgreSQL reads an index on `succeeded` for equality only.
            query = query.where(t.c.succeeded == succeeded)
        if token:
            key, last_id = decode_token(token)
            when = _parse_time_key(key)
            # A row value, so that both databases start the walk of the index at the token.
            query = query.where(tuple_(t.c.attempted_at, t.c.id) < tuple_(literal(when, UTCDateTime()), literal(last_id)))
        rows: Sequence[Any] = (await self._session.execute(query.order_by(t.c.attempted_at.desc(), t.c.id.desc()).limit(size + 1))).all()
        found = [_attempt(r) for r in rows[:size]]
        next_token = encode_token(_time_key(found[-1].attempted_at), found[-1].id) if len(rows) > size else ""
        return found, next_token

    async def redeliver(self, delivery: DeliveryRecord, now: dt.datetime) -> None:
        await self._session.execute(
            update(deliveries).where(deliveries.c.id == delivery.id, deliveries.c.status == delivery.status.value)
            .values(status=DeliveryStatus.PENDING.value, round=delivery.round + 1, attempts=0, next_attempt_at=now,
                    lease_until=None, claimed_by=None, updated_at=now)
        )

    async def list_activities(self, org_id: str, *, types: Sequence[str], size: int,
                              token: str, hide_alerts: bool = False) -> tuple[list[ActivityRecord], str]:
        t = activities
        query = select(t).where(t.c.org_id == org_id, t.c.type != "webhook.test")
        if hide_alerts:  # a partner's list: the alerts may be about other integrations' subscriptions
            query = query.where(t.c.type.not_like("webhook.%"))
        if types:
            query = query.where(t.c.type.in_(list(types)))
        if token:
            key, last_id = decode_seq_token(token)
            query = query.where(or_(t.c.seq < key, and_(t.c.seq == key, t.c.event_id < last_id)))
        rows = (await self._session.execute(query.order_by(t.c.seq.desc(), t.c.event_id.desc()).limit(size + 1))).all()
        found = [_activity(r) for r in rows[:size]]
        next_token = encode_token(rows[size - 1].seq, found[-1].event_id) if len(rows) > size else ""
        return found, next_token

    # --- recovery after an outage ---------------------------------------------------------------

    async def add_recovery(self, recovery: Recovery) -> None:
        await self._session.execute(recoveries.insert().values(
            id=recovery.id, org_id=recovery.org_id, subscription_id=recovery.subscription_id, since=recovery.since,
            until=recovery.until, queued=0, created_by=recovery.created_by, created_at=recovery.created_at,
        ))

    async def recover_batch(self, recovery: Recovery, *, after: tuple[int, str] | None, limit: int,
                            now: dt.datetime) -> tuple[int, tuple[int, str] | None]:
        d = deliveries
        query = select(d.c.id, d.c.seq).where(
            d.c.org_id == recovery.org_id, d.c.subscription_id == recovery.subscription_id,
            d.c.status == DeliveryStatus.FAILED.value, d.c.test == False,  # noqa: E712 - SQL, not Python
            d.c.created_at >= recovery.since, d.c.created_at < recovery.until,
        )
        if after is not None:
            query = query.where(tuple_(d.c.seq, d.c.id) > tuple_(literal(after[0], BigInteger()), literal(after[1])))
        rows = (await self._session.execute(query.order_by(d.c.seq, d.c.id).limit(limit))).all()
        if not rows:
            return 0, None
        # Only what is still failed: a redelivery or another recovery may have taken some since.
        requeued = (await self._session.execute(
            update(d).where(d.c.id.in_([r.id for r in rows]), d.c.status == DeliveryStatus.FAILED.value)
            .values(status=DeliveryStatus.PENDING.value, round=d.c.round + 1, attempts=0, next_attempt_at=now,
                    lease_until=None, claimed_by=None, updated_at=now)
            .returning(d.c.id, d.c.round)
        )).all()
        if requeued:
            await self._session.execute(recovery_deliveries.insert(), [
                {"recovery_id": recovery.id, "delivery_id": r.id, "round": r.round} for r in requeued])
        last = rows[-1]
        return len(requeued), ((int(last.seq), str(last.id)) if len(rows) == limit else None)

    async def set_recovery_queued(self, recovery_id: str, queued: int) -> None:
        await self._session.execute(update(recoveries).where(recoveries.c.id == recovery_id).values(queued=queued))

    async def get_recovery(self, scope: Scope, recovery_id: str) -> Recovery:
        r = recoveries
        row = (await self._session.execute(
            select(r).where(self._visible(r, scope), r.c.id == recovery_id))).first()
        if row is None:
            raise NotFound(f"no recovery {recovery_id}", recovery_id=recovery_id)
        return _recovery(row, (await self._progress([recovery_id])).get(recovery_id))

    async def list_recoveries(self, scope: Scope, *, subscription_id: str, size: int,
                              token: str) -> tuple[list[Recovery], str]:
        r = recoveries
        query = select(r).where(self._visible(r, scope))
        if subscription_id:
            query = query.where(r.c.subscription_id == subscription_id)
        if token:  # ids are time-ordered: newest first is id descending
            query = query.where(r.c.id < decode_token(token)[1])
        rows = (await self._session.execute(query.order_by(r.c.id.desc()).limit(size + 1))).all()
        progress = await self._progress([row.id for row in rows[:size]])
        found = [_recovery(row, progress.get(row.id)) for row in rows[:size]]
        return found, (encode_token("rcv", found[-1].id) if len(rows) > size else "")

    async def _progress(self, recovery_ids: Sequence[str]) -> dict[str, Row[Any]]:
        """Per recovery: the deliveries it queued, how many are done (their round is over, a later
        round began, or retention deleted them) and how many of those succeeded."""
        if not recovery_ids:
            return {}
        rd, d = recovery_deliveries, deliveries
        in_round = and_(d.c.status == DeliveryStatus.PENDING.value, d.c.round <= rd.c.round)
        succeeded = and_(d.c.status == DeliveryStatus.SUCCEEDED.value, d.c.round >= rd.c.round)
        rows = (await self._session.execute(
            select(rd.c.recovery_id, func.count().label("queued"),
                   func.coalesce(func.sum(case((in_round, 0), else_=1)), 0).label("done"),
                   func.coalesce(func.sum(case((succeeded, 1), else_=0)), 0).label("succeeded"))
            .select_from(rd.outerjoin(d, d.c.id == rd.c.delivery_id))
            .where(rd.c.recovery_id.in_(list(recovery_ids))).group_by(rd.c.recovery_id)
        )).all()
        return {row.recovery_id: row for row in rows}

    # --- retention -----------------------------------------------------------------------------

    async def retention_override(self, org_id: str) -> int | None:
        t = retention_settings
        days = (await self._session.execute(select(t.c.days).where(t.c.org_id == org_id))).scalar_one_or_none()
        return None if days is None else int(days)

    async def set_retention_override(self, org_id: str, days: int | None, *, actor_id: str, now: dt.datetime) -> None:
        t = retention_settings
        await self._session.execute(delete(t).where(t.c.org_id == org_id))
        if days is not None:
            await self._session.execute(t.insert().values(org_id=org_id, days=days, updated_by=actor_id, updated_at=now))

    async def retention_overrides(self) -> dict[str, int]:
        t = retention_settings
        return {r.org_id: int(r.days) for r in (await self._session.execute(select(t.c.org_id, t.c.days))).all()}

    async def log_orgs(self) -> list[str]:
        query = union(select(deliveries.c.org_id).distinct(), select(activities.c.org_id).distinct())
        return sorted(str(org) for org in (await self._session.execute(query)).scalars().all())

    async def delete_expired(self, org_id: str, cutoff: dt.datetime, *, limit: int) -> int:
        """Finished deliveries (never a pending one: it is still to be sent) go with their
        attempts in one statement each; an activity goes only once no delivery refers to it, so
        a delivery's page always finds its event's body."""
        d, a, r, rd = deliveries, activities, recoveries, recovery_deliveries
        ids = list((await self._session.execute(
            select(d.c.id).where(d.c.org_id == org_id, d.c.created_at < cutoff,
                                 d.c.status != DeliveryStatus.PENDING.value).limit(limit))).scalars().all())
        deleted = 0
        if ids:
            deleted += rowcount(await self._session.execute(delete(attempts).where(attempts.c.delivery_id.in_(ids))))
            await self._session.execute(delete(rd).where(rd.c.delivery_id.in_(ids)))
            deleted += rowcount(await self._session.execute(delete(d).where(d.c.id.in_(ids))))
        room = limit - len(ids)
        if room <= 0:
            return deleted
        cutoff_seq = int(cutoff.timestamp() * 1_000_000_000)
        unreferenced = ~exists().where(d.c.org_id == a.c.org_id, d.c.event_id == a.c.event_id)
        events = list((await self._session.execute(
            select(a.c.event_id).where(a.c.org_id == org_id, a.c.seq < cutoff_seq, unreferenced).limit(room)
        )).scalars().all())
        if events:
            deleted += rowcount(await self._session.execute(
                delete(a).where(a.c.org_id == org_id, a.c.event_id.in_(events))))
        emptied = ~exists().where(rd.c.recovery_id == r.c.id)
        deleted += rowcount(await self._session.execute(
            delete(r).where(r.c.id.in_(select(r.c.id).where(r.c.org_id == org_id, r.c.created_at < cutoff, emptied)
                                        .limit(room)))))
        return deleted


def _recovery(row: Row[Any], progress: Row[Any] | None) -> Recovery:
    """A recoveries row with its progress (none yet: nothing queued)."""
    queued, done, succeeded = (progress.queued, progress.done, progress.succeeded) if progress is not None else (0, 0, 0)
    return Recovery(
        id=row.id, org_id=row.org_id, subscription_id=row.subscription_id, since=row.since, until=row.until,
        created_by=row.created_by, created_at=row.created_at, queued=int(queued), done=int(done),
        succeeded=int(succeeded),
    )


def _new_delivery(id_: str, org_id: str, subscription_id: str, event_id: str, event_type: str, seq: int,
                  now: dt.datetime, *, next_attempt_at: dt.datetime | None, test: bool = False) -> dict[str, object]:
    return {
        "id": id_, "org_id": org_id, "subscription_id": subscription_id, "event_id": event_id,
        "event_type": event_type, "seq": seq, "status": DeliveryStatus.PENDING.value, "round": 1, "attempts": 0,
        "next_attempt_at": next_attempt_at, "lease_until": None, "claimed_by": None, "created_at": now,
        "updated_at": now, "last_status_code": 0, "last_error": AttemptError.NONE.value, "last_error_detail": "",
        "test": test,
    }


class SqlWebhooksUnitOfWork(SqlUnitOfWork):
    """application.ports.WebhooksUnitOfWork over SQL: the subscriptions and the activity log on
    the unit's session, the events in the outbox (adapters/events.py), and on SQLite the
    process's one write turn (Database.write_lock), shared with the dispatcher's writes."""

    subscriptions: SubscriptionRepository
    activities: ActivityLog

    def __init__(self, db: Database, *, flush: Flush = no_flush, read_only: bool = False) -> None:
        super().__init__(db.sessions, outbox_table=outbox, flush=flush, write_lock=db.write_lock, read_only=read_only)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.subscriptions = SubscriptionRepository(self.session)
        self.activities = ActivityLog(self.session)
        return self

    async def changed(self, kind: str, subscription: Subscription, *, actor_id: str, now: dt.datetime) -> None:
        await self._write(events.changed(kind, subscription, actor_id=actor_id, now=now))

    async def changed_and_audited(self, kind: str, *, before: Subscription | None, after: Subscription,
                                  actor_id: str, now: dt.datetime, request_id: str = "") -> None:
        await self._write(events.changed(kind, after, actor_id=actor_id, now=now))
        await self._write(events.audit(kind, before=before, after=after, actor_id=actor_id, now=now,
                                       request_id=request_id))

    async def _write(self, event: events.OutgoingEvent) -> None:
        await self.add_event(event.subject, event.payload, event_id=event.event_id)

    async def retention_changed(self, org_id: str, *, before: int | None, after: int | None, default_days: int,
                                actor_id: str, now: dt.datetime, request_id: str = "") -> None:
        await self._write(events.retention_audit(org_id, before=before, after=after, default_days=default_days,
                                                 actor_id=actor_id, now=now, request_id=request_id))

    async def alerted(self, alert: IncomingActivity, *, integration_id: str, url: str,
                      failing_since: dt.datetime | None, now: dt.datetime) -> int:
        [accepted] = await self.activities.ingest([alert], [delivery_body(alert)], now)
        await self._write(events.alert(alert, integration_id=integration_id, url=url, failing_since=failing_since))
        return accepted.deliveries


async def write_event(session: AsyncSession, event: events.OutgoingEvent) -> str:
    """An outbox row in `session`'s transaction, for writers outside a unit of work (the dispatcher)."""
    return await add_event(session, outbox, event.subject, event.payload, event_id=event.event_id)


async def write_alert(session: AsyncSession, alert: IncomingActivity, *, integration_id: str, url: str,
                      failing_since: dt.datetime | None, now: dt.datetime) -> int:
    """An alert in `session`'s transaction: the `webhook.<kind>` activity with its deliveries to
    the organisation's other subscriptions that chose it, and its operational event in the
    outbox. Returns how many deliveries it made."""
    [accepted] = await ActivityLog(session).ingest([alert], [delivery_body(alert)], now)
    await write_event(session, events.alert(alert, integration_id=integration_id, url=url, failing_since=failing_since))
    return accepted.deliveries


async def failing_subscriptions(session: AsyncSession) -> int:
    """How many live subscriptions are Failing (every organisation), for the metric."""
    t = subscriptions
    query = select(func.count()).select_from(t).where(t.c.status == SubscriptionStatus.FAILING.value,
                                                      t.c.deleted_at.is_(None))
    return int((await session.execute(query)).scalar_one())
