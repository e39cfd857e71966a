"""The registry's tables, the repository that maps their rows to domain objects, and the
registry's unit of work over them (application.ports.RegistryUnitOfWork, SqlRegistryUnitOfWork).

Every query is filtered by organisation (another organisation's integration is NotFound),
except `lookup`, which serves the edge: a trusted service that serves partners of every org.
Changes use optimistic concurrency: an update names the version it read, and a row that moved
on since then is Aborted.

Activation and reactivation also take a lease on the row (`pending_operation`,
`pending_since`) before they call identity, so only one of them per integration is in flight:
identity replaces an integration's live credentials on every issue, so two in flight would
leave the loser's compensation revoking the winner's credentials.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from typing import Self

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.db import UTCDateTime, new_metadata, rowcount
from services.kit.errors import Aborted, InvalidArgument, NotFound
from services.kit.outbox import Flush, no_flush, outbox_table
from services.kit.sqluow import SqlUnitOfWork
from services.registry.adapters import events
from services.registry.application.ports import Page, SetupPage
from services.registry.domain.model import HistoryEntry, Integration, IntegrationChanged, Status
from services.registry.domain.setup import (
    SetupRequest,
    SetupRequestChanged,
    SetupStatus,
    SetupStep,
    setup_request_not_found,
)

metadata = new_metadata()

integrations = Table(
    "integrations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(200), nullable=False, index=True),
    Column("vendor_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("rate_limit_per_minute", Integer, nullable=False),
    Column("daily_quota", BigInteger, nullable=False),
    Column("ip_allowlist", JSON, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("approved_by", String(200), nullable=False),
    Column("suspended_by", String(200), nullable=False),
    Column("suspension_reason", Text, nullable=False),
    Column("api_key_prefix", String(32), nullable=False),
    Column("client_id", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("activated_at", UTCDateTime(), nullable=True),
    Column("credentials_issued_at", UTCDateTime(), nullable=True),
    Column("version", BigInteger, nullable=False),
    # The lease of an activation or reactivation in flight: its request id and when it began.
    Column("pending_operation", String(128), nullable=True),
    Column("pending_since", UTCDateTime(), nullable=True),
    # Listing: one organisation's integrations by status, newest first.
    Index("ix_integrations_org_status", "org_id", "status"),
    Index("ix_integrations_org_created", "org_id", "created_at", "id"),
)

lifecycle_history = Table(
    "lifecycle_history",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(200), nullable=False),
    Column("integration_id", String(40), nullable=False),
    Column("action", String(40), nullable=False),
    Column("actor_id", String(200), nullable=False),
    Column("from_status", String(20), nullable=True),
    Column("to_status", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("before_json", Text, nullable=False),
    Column("after_json", Text, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Index("ix_lifecycle_history_org_integration", "org_id", "integration_id", "at"),
)

# Setup requests of pre-built integrations (domain/setup.py). The secret connection details
# are one JSON object sealed by services.kit.crypto.Envelope, bound to
# setup_requests.sealed_secrets:<id>, never in plain text, and set to NULL when the request becomes
# Configured or Declined; `history` holds the steps, oldest first.
setup_requests = Table(
    "setup_requests",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(200), nullable=False),
    Column("prebuilt_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("connection", JSON, nullable=False),
    Column("secrets_given", JSON, nullable=False),
    Column("sealed_secrets", LargeBinary, nullable=True),
    Column("contact_email", String(254), nullable=False),
    Column("notes", Text, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("handled_by", String(200), nullable=False),
    Column("decline_reason", Text, nullable=False),
    Column("configured_note", Text, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("history", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("version", BigInteger, nullable=False),
    # A retried create (the same request id in the same organisation) finds the first.
    UniqueConstraint("org_id", "request_id", name="uq_setup_requests_org_id_request_id"),
    # An organisation's requests newest first; the platform team's queue oldest first.
    Index("ix_setup_requests_org_created", "org_id", "created_at", "id"),
    Index("ix_setup_requests_created", "created_at", "id"),
)

outbox = outbox_table(metadata)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


_COLUMNS = (
    "id", "org_id", "vendor_id", "name", "description", "owner", "scopes", "rate_limit_per_minute",
    "daily_quota", "ip_allowlist", "requested_by", "approved_by", "suspended_by", "suspension_reason",
    "api_key_prefix", "client_id", "created_at", "updated_at", "activated_at", "credentials_issued_at", "version",
)


def _row(integration: Integration) -> dict[str, object]:
    values: dict[str, object] = {name: getattr(integration, name) for name in _COLUMNS}
    values["status"] = integration.status.value
    values["scopes"] = list(integration.scopes)
    values["ip_allowlist"] = list(integration.ip_allowlist)
    return values


def _integration(row: RowMapping) -> Integration:
    values = {name: row[name] for name in _COLUMNS}
    values["scopes"] = list(values["scopes"] or [])
    values["ip_allowlist"] = list(values["ip_allowlist"] or [])
    return Integration(status=Status(row["status"]), **values)


def _encode_token(created_at: dt.datetime, integration_id: str) -> str:
    raw = json.dumps({"c": created_at.isoformat(), "i": integration_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        created_at = dt.datetime.fromisoformat(data["c"])
        integration_id = data["i"]
        if created_at.tzinfo is None or not isinstance(integration_id, str):
            raise ValueError("bad token fields")
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token is not one this service returned") from exc
    return created_at, integration_id


class IntegrationRepository:
    """Reads and writes integrations and their history in one session's transaction (the unit
    of work's): application.ports.Integrations over SQL."""

    def __init__(self, session: AsyncSession, *, postgres: bool) -> None:
        self._session = session
        self._postgres = postgres

    async def add(self, integration: Integration) -> None:
        await self._session.execute(integrations.insert().values(**_row(integration)))

    async def get(self, org_id: str, integration_id: str) -> Integration:
        """The integration, or NotFound when it does not exist in this organisation."""
        row = (
            await self._session.execute(
                select(integrations).where(integrations.c.org_id == org_id, integrations.c.id == integration_id)
            )
        ).mappings().first()
        if row is None:
            raise NotFound(f"integration {integration_id} not found", integration_id=integration_id)
        return _integration(row)

    async def lookup(self, integration_id: str) -> Integration:
        """The integration in whichever organisation holds it (the edge's read: one primary-key
        lookup); NotFound when no organisation has it."""
        row = (await self._session.execute(select(integrations).where(integrations.c.id == integration_id))).mappings().first()
        if row is None:
            raise NotFound(f"integration {integration_id} not found", integration_id=integration_id)
        return _integration(row)

    async def save(self, integration: Integration, *, expected_version: int, lease: str | None = None) -> None:
        """Write `integration` over the row read at `expected_version`; Aborted if it moved on since.
        With `lease`, the row must still be leased to it, and the write ends the lease."""
        values = _row(integration)
        for key in ("id", "org_id", "created_at", "requested_by"):
            values.pop(key)
        query = update(integrations).where(
            integrations.c.org_id == integration.org_id,
            integrations.c.id == integration.id,
            integrations.c.version == expected_version,
        )
        if lease is not None:
            query = query.where(integrations.c.pending_operation == lease)
            values.update(pending_operation=None, pending_since=None)
        result = await self._session.execute(query.values(**values))
        if rowcount(result) != 1:
            raise Aborted(
                f"integration {integration.id} was changed by another request; reload it and retry",
                integration_id=integration.id,
            )

    async def claim(
        self, org_id: str, integration_id: str, *, lease: str, status: Status, now: dt.datetime,
        stale_before: dt.datetime,
    ) -> bool:
        """Lease the integration to `lease` if it is in `status` and nobody holds a lease that
        began at or after `stale_before`; False when it is not in that state or leased."""
        t = integrations
        result = await self._session.execute(
            update(t)
            .where(
                t.c.org_id == org_id,
                t.c.id == integration_id,
                t.c.status == status.value,
                or_(t.c.pending_operation.is_(None), t.c.pending_since < stale_before),
            )
            .values(pending_operation=lease, pending_since=now)
        )
        return rowcount(result) == 1

    async def holds(self, org_id: str, integration_id: str, lease: str) -> bool:
        """Whether the integration is still leased to `lease`."""
        t = integrations
        held = await self._session.execute(
            select(t.c.id).where(t.c.org_id == org_id, t.c.id == integration_id, t.c.pending_operation == lease)
        )
        return held.first() is not None

    async def release(self, org_id: str, integration_id: str, lease: str) -> bool:
        """End the lease if `lease` still holds it; False when it did not (a stale lease was taken over)."""
        t = integrations
        result = await self._session.execute(
            update(t)
            .where(t.c.org_id == org_id, t.c.id == integration_id, t.c.pending_operation == lease)
            .values(pending_operation=None, pending_since=None)
        )
        return rowcount(result) == 1

    async def count_live(self, org_id: str) -> int:
        """How many of the organisation's integrations are Active or Suspended."""
        live = [s.value for s in Status if s.is_live]
        return int(
            (
                await self._session.execute(
                    select(func.count())
                    .select_from(integrations)
                    .where(integrations.c.org_id == org_id, integrations.c.status.in_(live))
                )
            ).scalar_one()
        )

    async def lock_org(self, org_id: str) -> None:
        """Serialise limit checks of one organisation across replicas (PostgreSQL; SQLite has one writer)."""
        if self._postgres:
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"trellis.registry.org:{org_id}"}
            )

    async def list_page(
        self,
        org_id: str,
        *,
        statuses: Sequence[Status] = (),
        vendor_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page:
        """One page of the organisation's integrations, newest first."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", page_size=page_size)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        t = integrations
        query = select(t).where(t.c.org_id == org_id)
        if statuses:
            query = query.where(t.c.status.in_([s.value for s in statuses]))
        if vendor_id:
            query = query.where(t.c.vendor_id == vendor_id)
        if page_token:
            created_at, last_id = _decode_token(page_token)
            query = query.where(or_(t.c.created_at < created_at, and_(t.c.created_at == created_at, t.c.id < last_id)))
        query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(size + 1)
        rows = (await self._session.execute(query)).mappings().all()
        found = [_integration(r) for r in rows[:size]]
        token = _encode_token(found[-1].created_at, found[-1].id) if len(rows) > size else ""
        return Page(found, token)

    async def add_history(self, entry: HistoryEntry) -> None:
        await self._session.execute(
            lifecycle_history.insert().values(
                id=entry.id,
                org_id=entry.org_id,
                integration_id=entry.integration_id,
                action=entry.action,
                actor_id=entry.actor_id,
                from_status=entry.from_status.value if entry.from_status else None,
                to_status=entry.to_status.value,
                reason=entry.reason,
                before_json=entry.before_json,
                after_json=entry.after_json,
                at=entry.at,
            )
        )

    async def history(self, org_id: str, integration_id: str) -> list[HistoryEntry]:
        """Every change of the integration, oldest first; NotFound outside the organisation."""
        await self.get(org_id, integration_id)
        h = lifecycle_history
        rows = (
            await self._session.execute(
                select(h).where(h.c.org_id == org_id, h.c.integration_id == integration_id).order_by(h.c.at, h.c.id)
            )
        ).mappings().all()
        return [
            HistoryEntry(
                id=r["id"],
                org_id=r["org_id"],
                integration_id=r["integration_id"],
                action=r["action"],
                actor_id=r["actor_id"],
                from_status=Status(r["from_status"]) if r["from_status"] else None,
                to_status=Status(r["to_status"]),
                reason=r["reason"],
                before_json=r["before_json"],
                after_json=r["after_json"],
                at=r["at"],
            )
            for r in rows
        ]


_SETUP_COLUMNS = (
    "id", "org_id", "prebuilt_id", "contact_email", "notes", "requested_by", "handled_by", "decline_reason",
    "configured_note", "request_id", "created_at", "updated_at", "version",
)


def _step_json(step: SetupStep) -> dict[str, object]:
    return {"action": step.action, "actor_id": step.actor_id,
            "from_status": step.from_status.value if step.from_status else None,
            "to_status": step.to_status.value, "note": step.note, "at": step.at.isoformat()}


def _step(data: dict[str, object]) -> SetupStep:
    return SetupStep(
        action=str(data["action"]), actor_id=str(data["actor_id"]),
        from_status=SetupStatus(str(data["from_status"])) if data["from_status"] else None,
        to_status=SetupStatus(str(data["to_status"])), note=str(data["note"]),
        at=dt.datetime.fromisoformat(str(data["at"])),
    )


def _setup_row(request: SetupRequest) -> dict[str, object]:
    values: dict[str, object] = {name: getattr(request, name) for name in _SETUP_COLUMNS}
    values.update(status=request.status.value, connection=dict(request.connection),
                  secrets_given=list(request.secrets_given), history=[_step_json(s) for s in request.history])
    return values


def _setup_request(row: RowMapping) -> SetupRequest:
    values = {name: row[name] for name in _SETUP_COLUMNS}
    return SetupRequest(
        status=SetupStatus(row["status"]), connection=dict(row["connection"] or {}),
        secrets_given=list(row["secrets_given"] or []), history=[_step(s) for s in row["history"] or []], **values,
    )


class SetupRequestRepository:
    """application.ports.SetupRequests over SQL, in one session's transaction (the unit of work's)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, request: SetupRequest, sealed_secrets: bytes | None) -> None:
        await self._session.execute(setup_requests.insert().values(**_setup_row(request), sealed_secrets=sealed_secrets))

    async def _one(self, *where: ColumnElement[bool]) -> SetupRequest | None:
        row = (await self._session.execute(select(setup_requests).where(*where))).mappings().first()
        return _setup_request(row) if row is not None else None

    async def get(self, org_id: str, setup_request_id: str) -> SetupRequest:
        t = setup_requests
        found = await self._one(t.c.org_id == org_id, t.c.id == setup_request_id)
        if found is None:
            raise setup_request_not_found(setup_request_id)
        return found

    async def lookup(self, setup_request_id: str) -> SetupRequest:
        found = await self._one(setup_requests.c.id == setup_request_id)
        if found is None:
            raise setup_request_not_found(setup_request_id)
        return found

    async def by_request_id(self, org_id: str, request_id: str) -> SetupRequest | None:
        t = setup_requests
        return await self._one(t.c.org_id == org_id, t.c.request_id == request_id)

    async def save(self, request: SetupRequest, *, expected_version: int, erase_secrets: bool = False) -> None:
        values = _setup_row(request)
        for key in ("id", "org_id", "prebuilt_id", "created_at", "requested_by", "request_id"):
            values.pop(key)
        if erase_secrets:
            values["sealed_secrets"] = None
        t = setup_requests
        result = await self._session.execute(
            update(t).where(t.c.org_id == request.org_id, t.c.id == request.id, t.c.version == expected_version)
            .values(**values)
        )
        if rowcount(result) != 1:
            raise Aborted(f"setup request {request.id} was changed by another request; reload it and retry",
                          setup_request_id=request.id)

    async def sealed_secrets(self, setup_request_id: str) -> bytes | None:
        t = setup_requests
        sealed = (await self._session.execute(select(t.c.sealed_secrets).where(t.c.id == setup_request_id))).scalar()
        return bytes(sealed) if sealed is not None else None

    async def list_page(self, org_id: str | None, *, statuses: Sequence[SetupStatus] = (), page_size: int = 0,
                        page_token: str = "") -> SetupPage:
        """One organisation's requests newest first; every organisation's (org_id None) oldest first."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", page_size=page_size)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        t = setup_requests
        query = select(t)
        if org_id is not None:
            query = query.where(t.c.org_id == org_id)
        if statuses:
            query = query.where(t.c.status.in_([s.value for s in statuses]))
        newest_first = org_id is not None
        if page_token:
            created_at, last_id = _decode_token(page_token)
            if newest_first:
                query = query.where(or_(t.c.created_at < created_at, and_(t.c.created_at == created_at, t.c.id < last_id)))
            else:
                query = query.where(or_(t.c.created_at > created_at, and_(t.c.created_at == created_at, t.c.id > last_id)))
        order = (t.c.created_at.desc(), t.c.id.desc()) if newest_first else (t.c.created_at.asc(), t.c.id.asc())
        rows = (await self._session.execute(query.order_by(*order).limit(size + 1))).mappings().all()
        found = [_setup_request(r) for r in rows[:size]]
        token = _encode_token(found[-1].created_at, found[-1].id) if len(rows) > size else ""
        return SetupPage(found, token)


class SqlRegistryUnitOfWork(SqlUnitOfWork):
    """application.ports.RegistryUnitOfWork over SQL: the integrations repository on the unit's
    session, and each published change as its two outbox rows (adapters/events.py)."""

    integrations: IntegrationRepository
    setup_requests: SetupRequestRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, postgres: bool, flush: Flush = no_flush) -> None:
        super().__init__(sessions, outbox_table=outbox, flush=flush)
        self._postgres = postgres

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.integrations = IntegrationRepository(self.session, postgres=self._postgres)
        self.setup_requests = SetupRequestRepository(self.session)
        return self

    async def publish(self, change: IntegrationChanged) -> None:
        for event in events.of_change(change):
            await self.add_event(event.subject, event.payload, event_id=event.event_id)

    async def publish_setup(self, change: SetupRequestChanged) -> None:
        event = events.setup_audit_event(change)
        await self.add_event(event.subject, event.payload, event_id=event.event_id)
