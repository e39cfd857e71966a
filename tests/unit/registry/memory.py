"""The registry's ports in memory, for handler tests: the integrations repository and the unit
of work over services.kit.uow's MemoryStore, and identity at the CredentialsPort seam. The SQL
ones are tested on SQLite and PostgreSQL (test_store.py, tests/integration/registry)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from services.kit.auth import Actor
from services.kit.errors import Aborted, InvalidArgument, NotFound, Unavailable
from services.kit.uow import InMemoryUnitOfWork, MemoryStore, WriteConflict
from services.registry.application.ports import IssuedCredentials, Page, RegeneratedApiKey, SetupPage
from services.registry.domain.model import HistoryEntry, Integration, IntegrationChanged, Status
from services.registry.domain.setup import SetupRequest, SetupRequestChanged, SetupStatus, setup_request_not_found


@dataclass
class Row:
    """An integrations row: the integration and its lease, as the SQL table holds them."""

    integration: Integration
    lease: str | None = None
    lease_since: dt.datetime | None = None


class MemoryIntegrations:
    """application.ports.Integrations over the unit's tables; it hands out copies, as a database does."""

    def __init__(self, rows: dict[str, Row], history: dict[str, HistoryEntry], locked: list[str]) -> None:
        self._rows, self._history, self._locked = rows, history, locked

    def _row(self, org_id: str | None, integration_id: str) -> Row:
        row = self._rows.get(integration_id)
        if row is None or (org_id is not None and row.integration.org_id != org_id):
            raise NotFound(f"integration {integration_id} not found", integration_id=integration_id)
        return row

    async def add(self, integration: Integration) -> None:
        if integration.id in self._rows:
            raise WriteConflict("another request changed the same data at the same time; retry")
        self._rows[integration.id] = Row(integration.copy())

    async def get(self, org_id: str, integration_id: str) -> Integration:
        return self._row(org_id, integration_id).integration.copy()

    async def lookup(self, integration_id: str) -> Integration:
        return self._row(None, integration_id).integration.copy()

    async def save(self, integration: Integration, *, expected_version: int, lease: str | None = None) -> None:
        row = self._rows.get(integration.id)
        if (row is None or row.integration.org_id != integration.org_id or row.integration.version != expected_version
                or (lease is not None and row.lease != lease)):
            raise Aborted(f"integration {integration.id} was changed by another request; reload it and retry",
                          integration_id=integration.id)
        row.integration = integration.copy()
        if lease is not None:
            row.lease = row.lease_since = None

    async def claim(self, org_id: str, integration_id: str, *, lease: str, status: Status, now: dt.datetime,
                    stale_before: dt.datetime) -> bool:
        row = self._rows.get(integration_id)
        if row is None or row.integration.org_id != org_id or row.integration.status is not status:
            return False
        if row.lease is not None and row.lease_since is not None and row.lease_since >= stale_before:
            return False
        row.lease, row.lease_since = lease, now
        return True

    async def holds(self, org_id: str, integration_id: str, lease: str) -> bool:
        row = self._rows.get(integration_id)
        return row is not None and row.integration.org_id == org_id and row.lease == lease

    async def release(self, org_id: str, integration_id: str, lease: str) -> bool:
        if not await self.holds(org_id, integration_id, lease):
            return False
        row = self._rows[integration_id]
        row.lease = row.lease_since = None
        return True

    async def count_live(self, org_id: str) -> int:
        return sum(1 for r in self._rows.values() if r.integration.org_id == org_id and r.integration.status.is_live)

    async def lock_org(self, org_id: str) -> None:
        self._locked.append(org_id)

    async def list_page(self, org_id: str, *, statuses: Sequence[Status] = (), vendor_id: str = "",
                        page_size: int = 0, page_token: str = "") -> Page:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", page_size=page_size)
        found = sorted((r.integration.copy() for r in self._rows.values() if r.integration.org_id == org_id
                        and (not statuses or r.integration.status in statuses)
                        and (not vendor_id or r.integration.vendor_id == vendor_id)),
                       key=lambda i: (i.created_at, i.id), reverse=True)
        start = int(page_token or 0)
        size = page_size or 50
        return Page(found[start:start + size], str(start + size) if len(found) > start + size else "")

    async def add_history(self, entry: HistoryEntry) -> None:
        self._history[entry.id] = entry

    async def history(self, org_id: str, integration_id: str) -> list[HistoryEntry]:
        self._row(org_id, integration_id)
        return sorted((e for e in self._history.values() if e.integration_id == integration_id), key=lambda e: (e.at, e.id))


class MemorySetupRequests:
    """application.ports.SetupRequests over the unit's tables: rows are (request, sealed blob)."""

    def __init__(self, rows: dict[str, tuple[SetupRequest, bytes | None]]) -> None:
        self._rows = rows

    async def add(self, request: SetupRequest, sealed_secrets: bytes | None) -> None:
        if request.id in self._rows or any(r.org_id == request.org_id and r.request_id == request.request_id
                                           for r, _ in self._rows.values()):
            raise WriteConflict("another request changed the same data at the same time; retry")
        self._rows[request.id] = (request.copy(), sealed_secrets)

    async def get(self, org_id: str, setup_request_id: str) -> SetupRequest:
        found = self._rows.get(setup_request_id)
        if found is None or found[0].org_id != org_id:
            raise setup_request_not_found(setup_request_id)
        return found[0].copy()

    async def lookup(self, setup_request_id: str) -> SetupRequest:
        found = self._rows.get(setup_request_id)
        if found is None:
            raise setup_request_not_found(setup_request_id)
        return found[0].copy()

    async def by_request_id(self, org_id: str, request_id: str) -> SetupRequest | None:
        return next((r.copy() for r, _ in self._rows.values() if r.org_id == org_id and r.request_id == request_id), None)

    async def save(self, request: SetupRequest, *, expected_version: int, erase_secrets: bool = False) -> None:
        found = self._rows.get(request.id)
        if found is None or found[0].version != expected_version:
            raise Aborted(f"setup request {request.id} was changed by another request", setup_request_id=request.id)
        self._rows[request.id] = (request.copy(), None if erase_secrets else found[1])

    async def sealed_secrets(self, setup_request_id: str) -> bytes | None:
        found = self._rows.get(setup_request_id)
        return found[1] if found is not None else None

    async def list_page(self, org_id: str | None, *, statuses: Sequence[SetupStatus] = (), page_size: int = 0,
                        page_token: str = "") -> SetupPage:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", page_size=page_size)
        found = sorted((r.copy() for r, _ in self._rows.values() if (org_id is None or r.org_id == org_id)
                        and (not statuses or r.status in statuses)),
                       key=lambda r: (r.created_at, r.id), reverse=org_id is not None)
        start = int(page_token or 0)
        size = min(page_size or 50, 500)
        return SetupPage(found[start:start + size], str(start + size) if len(found) > start + size else "")


def sealed_secrets(store: MemoryStore, setup_request_id: str) -> bytes | None:
    """The sealed blob the store holds for a setup request."""
    sealed: bytes | None = store.tables["setup_requests"][setup_request_id][1]
    return sealed


class MemoryRegistryUnitOfWork(InMemoryUnitOfWork):
    """application.ports.RegistryUnitOfWork in memory. A published change is one outbox event
    (so `published()` waits for its id) and is kept, by that id, in the "published" table;
    `org_locks` lists the organisations whose limit checks a unit serialised."""

    integrations: MemoryIntegrations
    setup_requests: MemorySetupRequests

    def __init__(self, store: MemoryStore, *, org_locks: list[str] | None = None) -> None:
        super().__init__(store)
        self.org_locks = [] if org_locks is None else org_locks  # each organisation lock_org took

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.integrations = MemoryIntegrations(self.table("integrations"), self.table("history"), self.org_locks)
        self.setup_requests = MemorySetupRequests(self.table("setup_requests"))
        return self

    async def publish(self, change: IntegrationChanged) -> None:
        event_id = await self.add_event(f"trellis.integration.{change.kind}", b"")
        self.table("published")[event_id] = change

    async def publish_setup(self, change: SetupRequestChanged) -> None:
        event_id = await self.add_event(f"trellis.audit.registry.setup_request.{change.kind}", b"")
        self.table("published_setup")[event_id] = change


def published_setup(store: MemoryStore) -> list[SetupRequestChanged]:
    """Every committed setup request change, in the order published."""
    return list(store.tables.get("published_setup", {}).values())


def published(store: MemoryStore) -> list[IntegrationChanged]:
    """Every committed change, in the order published."""
    return list(store.tables.get("published", {}).values())


def history(store: MemoryStore, integration_id: str) -> list[str]:
    entries = sorted((e for e in store.tables.get("history", {}).values() if e.integration_id == integration_id),
                     key=lambda e: (e.at, e.id))
    return [e.action for e in entries]


@dataclass
class FakeIdentity:
    """Identity at the CredentialsPort seam: random keys, which are live, whether it is down;
    `during_issue` runs while an issue is in flight (another request's turn)."""

    live: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    during_issue: Callable[[str], Awaitable[None]] | None = None
    seen_at_revoke: list[Any] = field(default_factory=list)
    on_revoke: Callable[[], Any] | None = None

    async def issue(self, actor: Actor, integration_id: str, scopes: Sequence[str], request_id: str) -> IssuedCredentials:
        self.calls.append(("issue", integration_id))
        if self.down:
            raise Unavailable("identity down")
        key = "grq_live_" + secrets.token_urlsafe(32)
        self.live[integration_id] = key
        if self.during_issue is not None:
            hook, self.during_issue = self.during_issue, None
            await hook(integration_id)
        return IssuedCredentials(api_key_prefix=key[:16], client_id=f"cli_{integration_id}", api_key=key,
                                 client_secret=secrets.token_urlsafe(32), scopes=tuple(scopes))

    async def revoke(self, actor: Actor, integration_id: str, reason: str, request_id: str = "") -> None:
        self.calls.append(("revoke", integration_id))
        if self.on_revoke is not None:
            self.seen_at_revoke.append(self.on_revoke())
        if self.down:
            raise Unavailable("identity down")
        self.live.pop(integration_id, None)

    async def regenerate_api_key(self, actor: Actor, integration_id: str, request_id: str = "") -> RegeneratedApiKey:
        self.calls.append(("regenerate", integration_id))
        key = "grq_live_" + secrets.token_urlsafe(32)
        self.live[integration_id] = key
        return RegeneratedApiKey(api_key_prefix=key[:16], api_key=key)
