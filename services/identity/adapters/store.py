"""Identity's tables, the repository that maps their rows to domain objects, and identity's
unit of work over them (application.ports.IdentityUnitOfWork: SqlIdentityUnitOfWork).

Secrets are kept only as SHA-256 hex digests (`key_hash`, `secret_hash`); JWT private keys are
kept sealed by envelope encryption (`signing_keys.private_key`). At most one live API key and
one live client exist per integration, and at most one signing key is current: partial unique
indexes hold those rules even when two replicas race.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any, Self, Unpack

from sqlalchemy import Column, Index, LargeBinary, String, Table, Text, and_, bindparam, exists, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.identity.adapters import events
from services.identity.application.ports import ExternalClient, Issuance
from services.identity.domain.model import (
    ApiKey,
    CredentialStatus,
    NewApiKey,
    NewClient,
    OAuthClient,
    SigningKey,
    SigningKeyStatus,
)
from services.kit.db import UTCDateTime, new_metadata
from services.kit.outbox import outbox_table
from services.kit.sqluow import SqlUnitOfWork
from services.kit.uow import Flush, no_flush

metadata = new_metadata()

_LIVE = text("status = 'active'")
_CURRENT = text("status = 'current'")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("integration_id", String(64), nullable=False, index=True),
    # The first 16 characters, shown in the UI and used to find candidates for a presented key.
    Column("prefix", String(16), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Index("ux_api_keys_live_integration", "integration_id", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE),
)

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("integration_id", String(64), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", Text, nullable=False),  # JSON list
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # When the granted scopes were last set (issuance or a registry `updated` event).
    Column("scopes_updated_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Index("ux_oauth_clients_live_integration", "integration_id", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE),
)

# One row per IssueCredentials request id: what it issued, so a retry can replace exactly that.
issuances = Table(
    "issuances",
    metadata,
    Column("integration_id", String(64), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("api_key_id", String(40), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# External issuer mode: an external client id (e.g. an Auth0 `azp`) bound to an integration.
external_clients = Table(
    "external_clients",
    metadata,
    Column("issuer", String(500), primary_key=True),
    Column("client_id", String(200), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("integration_id", String(64), nullable=False, index=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(10), nullable=False),
    # PKCS#8 PEM sealed by services.kit.crypto.Envelope, bound to signing_keys.private_key:<kid>.
    Column("private_key", LargeBinary, nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ux_signing_keys_one_current", "status", unique=True, sqlite_where=_CURRENT, postgresql_where=_CURRENT),
)

# IntegrationChanged events already applied by the consumer (idempotency by event id).
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("processed_at", UTCDateTime(), nullable=False),
)

outbox = outbox_table(metadata)


# The statements on every partner request's path, built once: building one is as much Python as
# running it (SQLAlchemy still caches each one's compiled form either way).
_LIVE_KEYS_BY_PREFIX = (
    select(api_keys, oauth_clients.c.client_id)
    .select_from(api_keys.outerjoin(oauth_clients, and_(
        oauth_clients.c.integration_id == api_keys.c.integration_id,
        oauth_clients.c.org_id == api_keys.c.org_id,
        oauth_clients.c.status == CredentialStatus.ACTIVE.value,
    )))
    .where(api_keys.c.prefix == bindparam("prefix"), api_keys.c.status == CredentialStatus.ACTIVE.value)
)
_CLIENT_BY_ID = select(oauth_clients).where(oauth_clients.c.client_id == bindparam("client_id"))
_SIGNING_KEY = (
    select(signing_keys.c.kid, signing_keys.c.alg, signing_keys.c.public_jwk, signing_keys.c.status, signing_keys.c.created_at)
    .where(signing_keys.c.kid == bindparam("kid"))
)

# A result row of any columns (Row is generic over its columns' types).
AnyRow = Row[Unpack[tuple[Any, ...]]]


def _api_key(row: AnyRow) -> ApiKey:
    return ApiKey(
        id=row.id, org_id=row.org_id, integration_id=row.integration_id, prefix=row.prefix, key_hash=row.key_hash,
        status=CredentialStatus(row.status), created_at=row.created_at, revoked_at=row.revoked_at,
    )


def _client(row: AnyRow) -> OAuthClient:
    return OAuthClient(
        client_id=row.client_id, org_id=row.org_id, integration_id=row.integration_id, secret_hash=row.secret_hash,
        scopes=tuple(json.loads(row.scopes)), status=CredentialStatus(row.status), created_at=row.created_at,
        scopes_updated_at=row.scopes_updated_at, revoked_at=row.revoked_at,
    )


def _signing_key(row: AnyRow) -> SigningKey:
    return SigningKey(
        kid=row.kid, alg=row.alg, public_jwk=json.loads(row.public_jwk), status=SigningKeyStatus(row.status),
        created_at=row.created_at,
    )


class IdentityStore:
    """Reads and writes identity's rows inside the caller's session (and transaction).

    Queries on org-owned rows filter by org_id, except the lookups a presented credential
    drives (`live_api_keys_by_prefix`, `client_by_id`, `external_client`): there the credential
    names the organisation; and `owner_of`, which tells "another organisation's" from "unknown".
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- ownership -------------------------------------------------------------------------

    async def owner_of(self, integration_id: str) -> str | None:
        """The organisation whose credentials this integration holds, or None if it has none."""
        row = (
            await self.session.execute(
                select(oauth_clients.c.org_id).where(oauth_clients.c.integration_id == integration_id).limit(1)
            )
        ).first()
        return row.org_id if row else None

    # --- API keys --------------------------------------------------------------------------

    async def add_api_key(self, org_id: str, integration_id: str, key: NewApiKey, key_id: str, now: dt.datetime) -> ApiKey:
        stored = ApiKey(
            id=key_id, org_id=org_id, integration_id=integration_id, prefix=key.prefix, key_hash=key.key_hash,
            status=CredentialStatus.ACTIVE, created_at=now, revoked_at=None,
        )
        await self.session.execute(api_keys.insert().values(**{**stored.__dict__, "status": stored.status.value}))
        return stored

    async def latest_api_key(self, org_id: str, integration_id: str) -> ApiKey | None:
        row = (
            await self.session.execute(
                select(api_keys)
                .where(api_keys.c.org_id == org_id, api_keys.c.integration_id == integration_id)
                .order_by(api_keys.c.created_at.desc())
                .limit(1)
            )
        ).first()
        return _api_key(row) if row else None

    async def live_api_keys_by_prefix(self, prefix: str) -> list[tuple[ApiKey, str | None]]:
        """Live keys sharing a presented key's 16-character prefix (usually one), each with its
        integration's live client id: one query, as this is on every partner request's path."""
        rows = await self.session.execute(_LIVE_KEYS_BY_PREFIX, {"prefix": prefix})
        return [(_api_key(r), r.client_id) for r in rows]

    async def revoke_live_api_keys(self, org_id: str, integration_id: str, now: dt.datetime, *, created_before: dt.datetime | None = None) -> list[ApiKey]:
        """Mark the integration's live keys revoked; returns those that were live."""
        rows = await self._revoke_live(api_keys, api_keys.c.id, org_id, integration_id, now, created_before)
        return [_api_key(r) for r in rows]

    # --- OAuth clients ---------------------------------------------------------------------

    async def add_client(self, org_id: str, integration_id: str, client: NewClient, scopes: Iterable[str], now: dt.datetime) -> OAuthClient:
        scopes = tuple(scopes)
        await self.session.execute(
            oauth_clients.insert().values(
                client_id=client.client_id, org_id=org_id, integration_id=integration_id, secret_hash=client.secret_hash,
                scopes=json.dumps(list(scopes)), status=CredentialStatus.ACTIVE.value, created_at=now,
                scopes_updated_at=now, revoked_at=None,
            )
        )
        return OAuthClient(
            client_id=client.client_id, org_id=org_id, integration_id=integration_id, secret_hash=client.secret_hash,
            scopes=scopes, status=CredentialStatus.ACTIVE, created_at=now, scopes_updated_at=now,
        )

    async def client_by_id(self, client_id: str) -> OAuthClient | None:
        """A client by its id, live or not (the caller checks its status and secret)."""
        row = (await self.session.execute(_CLIENT_BY_ID, {"client_id": client_id})).first()
        return _client(row) if row else None

    async def live_client(self, org_id: str, integration_id: str) -> OAuthClient | None:
        row = (
            await self.session.execute(
                select(oauth_clients).where(
                    oauth_clients.c.org_id == org_id,
                    oauth_clients.c.integration_id == integration_id,
                    oauth_clients.c.status == CredentialStatus.ACTIVE.value,
                )
            )
        ).first()
        return _client(row) if row else None

    async def latest_client(self, org_id: str, integration_id: str) -> OAuthClient | None:
        row = (
            await self.session.execute(
                select(oauth_clients)
                .where(oauth_clients.c.org_id == org_id, oauth_clients.c.integration_id == integration_id)
                .order_by(oauth_clients.c.created_at.desc())
                .limit(1)
            )
        ).first()
        return _client(row) if row else None

    async def revoke_live_clients(self, org_id: str, integration_id: str, now: dt.datetime, *, created_before: dt.datetime | None = None) -> list[OAuthClient]:
        """Mark the integration's live OAuth clients revoked; returns those that were live."""
        rows = await self._revoke_live(oauth_clients, oauth_clients.c.client_id, org_id, integration_id, now, created_before)
        return [_client(r) for r in rows]

    async def _revoke_live(self, table: Table, key: Column[str], org_id: str, integration_id: str, now: dt.datetime,
                           created_before: dt.datetime | None) -> list[AnyRow]:
        """The integration's live credentials in `table` (created at or before `created_before`,
        when given), read and then marked revoked at `now`, in the unit's transaction."""
        condition = and_(table.c.org_id == org_id, table.c.integration_id == integration_id,
                         table.c.status == CredentialStatus.ACTIVE.value)
        if created_before is not None:
            condition = and_(condition, table.c.created_at <= created_before)
        live = list(await self.session.execute(select(table).where(condition)))
        if live:
            await self.session.execute(update(table).where(key.in_([row._mapping[key.name] for row in live]))
                                       .values(status=CredentialStatus.REVOKED.value, revoked_at=now))
        return live

    async def set_client_scopes(self, org_id: str, client_id: str, scopes: Iterable[str], at: dt.datetime) -> None:
        await self.session.execute(
            update(oauth_clients)
            .where(oauth_clients.c.org_id == org_id, oauth_clients.c.client_id == client_id)
            .values(scopes=json.dumps(list(scopes)), scopes_updated_at=at)
        )

    # --- issuances (IssueCredentials idempotency) -----------------------------------------

    async def issuance(self, org_id: str, integration_id: str, request_id: str) -> Issuance | None:
        row = (
            await self.session.execute(
                select(issuances).where(
                    issuances.c.org_id == org_id,
                    issuances.c.integration_id == integration_id,
                    issuances.c.request_id == request_id,
                )
            )
        ).first()
        return Issuance(**row._mapping) if row else None

    async def issued_after(self, org_id: str, integration_id: str, when: dt.datetime) -> bool:
        """Whether a later IssueCredentials call superseded one made at `when`."""
        query = select(
            exists().where(
                issuances.c.org_id == org_id,
                issuances.c.integration_id == integration_id,
                issuances.c.created_at > when,
            )
        )
        return bool((await self.session.execute(query)).scalar())

    async def record_issuance(self, issuance: Issuance, *, replace: bool) -> None:
        values = dict(api_key_id=issuance.api_key_id, client_id=issuance.client_id, created_at=issuance.created_at)
        if replace:
            await self.session.execute(
                update(issuances)
                .where(
                    issuances.c.org_id == issuance.org_id,
                    issuances.c.integration_id == issuance.integration_id,
                    issuances.c.request_id == issuance.request_id,
                )
                .values(**values)
            )
        else:
            await self.session.execute(
                issuances.insert().values(
                    integration_id=issuance.integration_id, request_id=issuance.request_id, org_id=issuance.org_id, **values
                )
            )

    # --- external clients -----------------------------------------------------------------

    async def external_client(self, issuer: str, client_id: str) -> ExternalClient | None:
        row = (
            await self.session.execute(
                select(external_clients).where(external_clients.c.issuer == issuer, external_clients.c.client_id == client_id)
            )
        ).first()
        return ExternalClient(**row._mapping) if row else None

    async def add_external_client(self, client: ExternalClient) -> None:
        await self.session.execute(external_clients.insert().values(**client.__dict__))

    async def external_client_ids(self, org_id: str, integration_id: str) -> list[str]:
        rows = await self.session.execute(
            select(external_clients.c.client_id)
            .where(external_clients.c.org_id == org_id, external_clients.c.integration_id == integration_id)
            .order_by(external_clients.c.created_at, external_clients.c.client_id)
        )
        return [r.client_id for r in rows]

    # --- signing keys ---------------------------------------------------------------------

    async def signing_keys(self, statuses: Iterable[SigningKeyStatus]) -> list[SigningKey]:
        rows = await self.session.execute(
            select(signing_keys.c.kid, signing_keys.c.alg, signing_keys.c.public_jwk, signing_keys.c.status, signing_keys.c.created_at)
            .where(signing_keys.c.status.in_([s.value for s in statuses]))
            .order_by(signing_keys.c.created_at)
        )
        return [_signing_key(r) for r in rows]

    async def signing_key(self, kid: str) -> SigningKey | None:
        row = (await self.session.execute(_SIGNING_KEY, {"kid": kid})).first()
        return _signing_key(row) if row else None

    async def current_kid(self) -> str | None:
        row = (
            await self.session.execute(
                select(signing_keys.c.kid).where(signing_keys.c.status == SigningKeyStatus.CURRENT.value)
            )
        ).first()
        return row.kid if row else None

    async def sealed_private_key(self, kid: str) -> bytes | None:
        row = (await self.session.execute(select(signing_keys.c.private_key).where(signing_keys.c.kid == kid))).first()
        return bytes(row.private_key) if row else None

    async def add_signing_key(self, key: SigningKey, sealed_private_key: bytes) -> None:
        await self.session.execute(
            signing_keys.insert().values(
                kid=key.kid, alg=key.alg, private_key=sealed_private_key, public_jwk=json.dumps(dict(key.public_jwk)),
                status=key.status.value, created_at=key.created_at,
            )
        )

    async def set_signing_key_status(self, kid: str, status: SigningKeyStatus) -> None:
        await self.session.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(status=status.value))

    # --- consumer idempotency ---------------------------------------------------------------

    async def mark_processed(self, event_id: str, now: dt.datetime) -> bool:
        """Record `event_id` as applied; False when it already was."""
        seen = (await self.session.execute(select(processed_events.c.event_id).where(processed_events.c.event_id == event_id))).first()
        if seen is not None:
            return False
        await self.session.execute(processed_events.insert().values(event_id=event_id, processed_at=now))
        return True


class SqlIdentityUnitOfWork(SqlUnitOfWork):
    """application.ports.IdentityUnitOfWork over SQL: one IdentityStore on the unit's session
    serves as both repositories, and each event is an outbox row (adapters/events.py)."""

    credentials: IdentityStore
    signing_keys: IdentityStore

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, flush: Flush = no_flush,
                 read_only: bool = False) -> None:
        super().__init__(sessions, outbox_table=outbox, flush=flush, read_only=read_only)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.credentials = self.signing_keys = IdentityStore(self.session)
        return self

    async def _write(self, event: events.OutgoingEvent) -> str:
        return await self.add_event(event.subject, event.payload, event_id=event.event_id)

    async def credentials_changed(
        self, kind: str, *, org_id: str, integration_id: str = "", now: dt.datetime,
        revoked_api_key_hashes: Iterable[str] = (), revoked_client_ids: Iterable[str] = (), kid: str = "",
    ) -> str:
        return await self._write(events.credentials_changed(
            kind, org_id=org_id, integration_id=integration_id, now=now, revoked_api_key_hashes=revoked_api_key_hashes,
            revoked_client_ids=revoked_client_ids, kid=kid,
        ))

    async def audit(
        self, action: str, *, org_id: str, actor_id: str, object_type: str, object_id: str, now: dt.datetime,
        before: Mapping[str, object] | None = None, after: Mapping[str, object] | None = None,
        reason: str = "", request_id: str = "",
    ) -> str:
        return await self._write(events.audit(
            action, org_id=org_id, actor_id=actor_id, object_type=object_type, object_id=object_id, now=now,
            before=before, after=after, reason=reason, request_id=request_id,
        ))
