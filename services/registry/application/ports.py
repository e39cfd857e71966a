"""What the registry's use cases need from the world, as protocols: storage behind a unit of
work (services.kit.uow) with the integrations repository on it, and identity, which holds the
credentials. The adapters implement them (adapters/store.py, adapters/identity_client.py);
handler tests pass in-memory ones (tests/unit/registry/memory.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.kit.auth import Actor
from services.kit.uow import UnitOfWork
from services.registry.domain.model import HistoryEntry, Integration, IntegrationChanged, Status
from services.registry.domain.setup import SetupRequest, SetupRequestChanged, SetupStatus

# --- storage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of a listing, and the token of the next ("" on the last)."""

    integrations: list[Integration]
    next_page_token: str


class Integrations(Protocol):
    """The integrations and their history, in the unit of work's transaction. Every call but
    `lookup` is confined to one organisation: another organisation's integration is NotFound."""

    async def add(self, integration: Integration) -> None: ...

    async def get(self, org_id: str, integration_id: str) -> Integration:
        """The integration, or NotFound when it does not exist in this organisation."""
        ...

    async def lookup(self, integration_id: str) -> Integration:
        """The integration in whichever organisation holds it (the edge's read); NotFound when none does."""
        ...

    async def save(self, integration: Integration, *, expected_version: int, lease: str | None = None) -> None:
        """Write over the row read at `expected_version`, Aborted if it moved on since; with
        `lease`, the row must still be leased to it, and the write ends the lease."""
        ...

    async def claim(self, org_id: str, integration_id: str, *, lease: str, status: Status, now: dt.datetime,
                    stale_before: dt.datetime) -> bool:
        """Lease the integration if it is in `status` and nobody holds a lease that began at or
        after `stale_before`; False when it is not in that state or leased."""
        ...

    async def holds(self, org_id: str, integration_id: str, lease: str) -> bool:
        """Whether the integration is still leased to `lease`."""
        ...

    async def release(self, org_id: str, integration_id: str, lease: str) -> bool:
        """End the lease if `lease` still holds it; False when it did not."""
        ...

    async def count_live(self, org_id: str) -> int:
        """How many of the organisation's integrations are Active or Suspended."""
        ...

    async def lock_org(self, org_id: str) -> None:
        """Serialise limit checks of one organisation across replicas until the unit ends."""
        ...

    async def list_page(self, org_id: str, *, statuses: Sequence[Status] = (), vendor_id: str = "",
                        page_size: int = 0, page_token: str = "") -> Page:
        """One page of the organisation's integrations, newest first."""
        ...

    async def add_history(self, entry: HistoryEntry) -> None: ...

    async def history(self, org_id: str, integration_id: str) -> list[HistoryEntry]:
        """Every change of the integration, oldest first; NotFound outside the organisation."""
        ...


@dataclass(frozen=True)
class SetupPage:
    """One page of setup requests, and the token of the next ("" on the last)."""

    setup_requests: list[SetupRequest]
    next_page_token: str


class SetupRequests(Protocol):
    """Setup requests of pre-built integrations, their history on them, and their sealed secrets.
    `get` is confined to one organisation (another's request is NotFound); `lookup` and
    `list_page` without an organisation serve platform operators."""

    async def add(self, request: SetupRequest, sealed_secrets: bytes | None) -> None:
        """A new request; WriteConflict when its organisation already used its request id."""
        ...

    async def get(self, org_id: str, setup_request_id: str) -> SetupRequest:
        """The request, or NotFound when it does not exist in this organisation."""
        ...

    async def lookup(self, setup_request_id: str) -> SetupRequest:
        """The request in whichever organisation holds it; NotFound when none does."""
        ...

    async def by_request_id(self, org_id: str, request_id: str) -> SetupRequest | None:
        """The organisation's request created with this request id, if any."""
        ...

    async def save(self, request: SetupRequest, *, expected_version: int, erase_secrets: bool = False) -> None:
        """Write over the row read at `expected_version`; Aborted if it moved on since. With
        `erase_secrets`, the sealed blob is deleted in the same write."""
        ...

    async def sealed_secrets(self, setup_request_id: str) -> bytes | None:
        """The request's sealed secrets as stored (None when none were given or they were erased)."""
        ...

    async def list_page(self, org_id: str | None, *, statuses: Sequence[SetupStatus] = (), page_size: int = 0,
                        page_token: str = "") -> SetupPage:
        """One organisation's requests newest first; with `org_id` None, every organisation's,
        oldest first (the platform team's queue)."""
        ...


class RegistryUnitOfWork(UnitOfWork, Protocol):
    """One transaction of a registry use case."""

    @property
    def integrations(self) -> Integrations: ...

    @property
    def setup_requests(self) -> SetupRequests: ...

    async def publish_setup(self, change: SetupRequestChanged) -> None:
        """Tell the audit trail of `change`, in this transaction's outbox."""
        ...

    async def publish(self, change: IntegrationChanged) -> None:
        """Tell the services that follow integrations, and the audit trail, of `change`: its
        events go into the outbox with this transaction, and on the bus after it commits."""
        ...


UnitsOfWork = Callable[[], RegistryUnitOfWork]


class Sealing(Protocol):
    """Seals a value for storage and opens it again (services.kit.crypto.Envelope): AES-256-GCM
    bound to `aad`; opening with another `aad` fails."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, blob: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True)
class RevealedSecrets:
    """A setup request's connection secrets, opened for the platform operator configuring it:
    returned to them, never stored or logged anywhere else. `repr` never shows a value."""

    setup_request: SetupRequest
    secrets: dict[str, str] = field(repr=False)


# --- identity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCredentials:
    """Plain-text credentials from identity: returned to the caller once, never stored here."""

    api_key_prefix: str
    client_id: str
    api_key: str = field(repr=False)
    client_secret: str = field(repr=False)
    token_url: str = ""
    issuer: str = ""
    audience: str = ""
    scopes: tuple[str, ...] = ()
    issued_at: dt.datetime | None = None


@dataclass(frozen=True)
class RegeneratedApiKey:
    api_key_prefix: str
    api_key: str = field(repr=False)


class CredentialsPort(Protocol):
    """What the registry asks of identity, on behalf of the acting administrator."""

    async def issue(self, actor: Actor, integration_id: str, scopes: Sequence[str], request_id: str) -> IssuedCredentials:
        """A new live credential set; the same request id never issues a second one."""
        ...

    async def revoke(self, actor: Actor, integration_id: str, reason: str, request_id: str = "") -> None:
        """Every live credential of the integration stops working at once."""
        ...

    async def regenerate_api_key(self, actor: Actor, integration_id: str, request_id: str = "") -> RegeneratedApiKey:
        """A new API key; the old one stops working at once."""
        ...
