"""Identity's storage port in memory, for handler tests: the credentials and signing-key
repositories and the unit of work over services.kit.uow's MemoryStore. They keep the rules the
SQL tables' unique indexes keep (one live key and one live client per integration, one current
signing key), refusing with WriteConflict as the SQL unit of work does. The SQL ones are tested
on SQLite and PostgreSQL (tests/integration/identity/test_store.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Self

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
from services.kit.uow import InMemoryUnitOfWork, WriteConflict

CONFLICT = "another request changed the same data at the same time; retry"


class MemoryIdentityStore:
    """application.ports.Credentials and SigningKeys over the unit's tables."""

    def __init__(self, tables: Any) -> None:
        self.keys: dict[str, ApiKey] = tables("api_keys")
        self.clients: dict[str, OAuthClient] = tables("oauth_clients")
        self.issuances: dict[tuple[str, str], Issuance] = tables("issuances")
        self.external: dict[tuple[str, str], ExternalClient] = tables("external_clients")
        self.signing: dict[str, tuple[SigningKey, bytes]] = tables("signing_keys")
        self.processed: dict[str, dt.datetime] = tables("processed_events")

    async def owner_of(self, integration_id: str) -> str | None:
        return next((c.org_id for c in self.clients.values() if c.integration_id == integration_id), None)

    async def add_api_key(self, org_id: str, integration_id: str, key: NewApiKey, key_id: str, now: dt.datetime) -> ApiKey:
        if any(k.live and k.integration_id == integration_id or k.key_hash == key.key_hash for k in self.keys.values()):
            raise WriteConflict(CONFLICT)
        stored = ApiKey(id=key_id, org_id=org_id, integration_id=integration_id, prefix=key.prefix, key_hash=key.key_hash,
                        status=CredentialStatus.ACTIVE, created_at=now)
        self.keys[key_id] = stored
        return stored

    async def latest_api_key(self, org_id: str, integration_id: str) -> ApiKey | None:
        mine = [k for k in self.keys.values() if k.org_id == org_id and k.integration_id == integration_id]
        return max(mine, key=lambda k: k.created_at, default=None)

    async def live_api_keys_by_prefix(self, prefix: str) -> list[tuple[ApiKey, str | None]]:
        def live_client(key: ApiKey) -> str | None:
            return next((c.client_id for c in self.clients.values()
                         if c.live and c.integration_id == key.integration_id and c.org_id == key.org_id), None)

        return [(k, live_client(k)) for k in self.keys.values() if k.live and k.prefix == prefix]

    async def revoke_live_api_keys(self, org_id: str, integration_id: str, now: dt.datetime, *,
                                   created_before: dt.datetime | None = None) -> list[ApiKey]:
        live = [k for k in self.keys.values() if k.org_id == org_id and k.integration_id == integration_id and k.live
                and (created_before is None or k.created_at <= created_before)]
        for k in live:
            self.keys[k.id] = dataclasses.replace(k, status=CredentialStatus.REVOKED, revoked_at=now)
        return live

    async def add_client(self, org_id: str, integration_id: str, client: NewClient, scopes: Iterable[str],
                         now: dt.datetime) -> OAuthClient:
        if client.client_id in self.clients or any(c.live and c.integration_id == integration_id for c in self.clients.values()):
            raise WriteConflict(CONFLICT)
        stored = OAuthClient(client_id=client.client_id, org_id=org_id, integration_id=integration_id,
                             secret_hash=client.secret_hash, scopes=tuple(scopes), status=CredentialStatus.ACTIVE,
                             created_at=now, scopes_updated_at=now)
        self.clients[client.client_id] = stored
        return stored

    async def client_by_id(self, client_id: str) -> OAuthClient | None:
        return self.clients.get(client_id)

    async def live_client(self, org_id: str, integration_id: str) -> OAuthClient | None:
        return next((c for c in self.clients.values()
                     if c.org_id == org_id and c.integration_id == integration_id and c.live), None)

    async def latest_client(self, org_id: str, integration_id: str) -> OAuthClient | None:
        mine = [c for c in self.clients.values() if c.org_id == org_id and c.integration_id == integration_id]
        return max(mine, key=lambda c: c.created_at, default=None)

    async def revoke_live_clients(self, org_id: str, integration_id: str, now: dt.datetime, *,
                                  created_before: dt.datetime | None = None) -> list[OAuthClient]:
        live = [c for c in self.clients.values() if c.org_id == org_id and c.integration_id == integration_id and c.live
                and (created_before is None or c.created_at <= created_before)]
        for c in live:
            self.clients[c.client_id] = dataclasses.replace(c, status=CredentialStatus.REVOKED, revoked_at=now)
        return live

    async def set_client_scopes(self, org_id: str, client_id: str, scopes: Iterable[str], at: dt.datetime) -> None:
        client = self.clients[client_id]
        if client.org_id == org_id:
            self.clients[client_id] = dataclasses.replace(client, scopes=tuple(scopes), scopes_updated_at=at)

    async def issuance(self, org_id: str, integration_id: str, request_id: str) -> Issuance | None:
        found = self.issuances.get((integration_id, request_id))
        return found if found is not None and found.org_id == org_id else None

    async def issued_after(self, org_id: str, integration_id: str, when: dt.datetime) -> bool:
        return any(i.org_id == org_id and i.integration_id == integration_id and i.created_at > when
                   for i in self.issuances.values())

    async def record_issuance(self, issuance: Issuance, *, replace: bool) -> None:
        key = (issuance.integration_id, issuance.request_id)
        if not replace and key in self.issuances:
            raise WriteConflict(CONFLICT)
        self.issuances[key] = issuance

    async def external_client(self, issuer: str, client_id: str) -> ExternalClient | None:
        return self.external.get((issuer, client_id))

    async def add_external_client(self, client: ExternalClient) -> None:
        if (client.issuer, client.client_id) in self.external:
            raise WriteConflict(CONFLICT)
        self.external[(client.issuer, client.client_id)] = client

    async def external_client_ids(self, org_id: str, integration_id: str) -> list[str]:
        mine = [c for c in self.external.values() if c.org_id == org_id and c.integration_id == integration_id]
        return [c.client_id for c in sorted(mine, key=lambda c: (c.created_at, c.client_id))]

    async def mark_processed(self, event_id: str, now: dt.datetime) -> bool:
        if event_id in self.processed:
            return False
        self.processed[event_id] = now
        return True

    async def signing_keys(self, statuses: Iterable[SigningKeyStatus]) -> list[SigningKey]:
        wanted = set(statuses)
        return sorted((k for k, _ in self.signing.values() if k.status in wanted), key=lambda k: k.created_at)

    async def signing_key(self, kid: str) -> SigningKey | None:
        found = self.signing.get(kid)
        return found[0] if found else None

    async def current_kid(self) -> str | None:
        return next((k.kid for k, _ in self.signing.values() if k.status is SigningKeyStatus.CURRENT), None)

    async def sealed_private_key(self, kid: str) -> bytes | None:
        found = self.signing.get(kid)
        return found[1] if found else None

    async def add_signing_key(self, key: SigningKey, sealed_private_key: bytes) -> None:
        if key.kid in self.signing or (key.status is SigningKeyStatus.CURRENT and await self.current_kid() is not None):
            raise WriteConflict(CONFLICT)
        self.signing[key.kid] = (key, sealed_private_key)

    async def set_signing_key_status(self, kid: str, status: SigningKeyStatus) -> None:
        key, sealed = self.signing[kid]
        if status is SigningKeyStatus.CURRENT and await self.current_kid() not in (None, kid):
            raise WriteConflict(CONFLICT)
        self.signing[kid] = (dataclasses.replace(key, status=status), sealed)


class MemoryIdentityUnitOfWork(InMemoryUnitOfWork):
    """application.ports.IdentityUnitOfWork in memory; its events are the real messages
    (adapters/events.py), recorded in the MemoryStore as the outbox would hold them."""

    credentials: MemoryIdentityStore
    signing_keys: MemoryIdentityStore

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.credentials = self.signing_keys = MemoryIdentityStore(self.table)
        return self

    async def credentials_changed(
        self, kind: str, *, org_id: str, integration_id: str = "", now: dt.datetime,
        revoked_api_key_hashes: Iterable[str] = (), revoked_client_ids: Iterable[str] = (), kid: str = "",
    ) -> str:
        event = events.credentials_changed(kind, org_id=org_id, integration_id=integration_id, now=now,
                                           revoked_api_key_hashes=revoked_api_key_hashes,
                                           revoked_client_ids=revoked_client_ids, kid=kid)
        return await self.add_event(event.subject, event.payload, event_id=event.event_id)

    async def audit(
        self, action: str, *, org_id: str, actor_id: str, object_type: str, object_id: str, now: dt.datetime,
        before: Mapping[str, object] | None = None, after: Mapping[str, object] | None = None,
        reason: str = "", request_id: str = "",
    ) -> str:
        event = events.audit(action, org_id=org_id, actor_id=actor_id, object_type=object_type, object_id=object_id,
                             now=now, before=before, after=after, reason=reason, request_id=request_id)
        return await self.add_event(event.subject, event.payload, event_id=event.event_id)
