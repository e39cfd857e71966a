"""What identity's use cases need from the world, as protocols: storage behind a unit of work
(services.kit.uow) with the credentials and signing-key repositories on it and the outbox
events it writes; the cryptography of signing keys; an external issuer's JWKS. The adapters
implement them (adapters/store.py, adapters/signing.py, adapters/external_issuer.py); handler
tests pass in-memory ones (tests/unit/identity/memory.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from services.identity.domain.model import ApiKey, NewApiKey, NewClient, OAuthClient, SigningKey, SigningKeyStatus
from services.kit.jwtverify import PublicKey
from services.kit.uow import UnitOfWork

# --- storage -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuance:
    """What one IssueCredentials request id issued, so a retry can replace exactly that."""

    integration_id: str
    request_id: str
    org_id: str
    api_key_id: str
    client_id: str
    created_at: dt.datetime


@dataclass(frozen=True)
class ExternalClient:
    """An external issuer's client id bound to an integration (external issuer mode)."""

    issuer: str
    client_id: str
    org_id: str
    integration_id: str
    created_at: dt.datetime


class Credentials(Protocol):
    """API keys, OAuth clients, issuances, external clients and applied events, in the unit of
    work's transaction. Org-owned rows are read within one organisation, except the lookups a
    presented credential drives (`live_api_keys_by_prefix`, `client_by_id`, `external_client`)
    and `owner_of`, which tells "another organisation's" from "unknown"."""

    async def owner_of(self, integration_id: str) -> str | None:
        """The organisation whose credentials this integration holds, or None if it has none."""
        ...

    async def add_api_key(self, org_id: str, integration_id: str, key: NewApiKey, key_id: str,
                          now: dt.datetime) -> ApiKey: ...

    async def latest_api_key(self, org_id: str, integration_id: str) -> ApiKey | None: ...

    async def live_api_keys_by_prefix(self, prefix: str) -> list[tuple[ApiKey, str | None]]:
        """Live keys sharing a presented key's prefix, each with its integration's live client id."""
        ...

    async def revoke_live_api_keys(self, org_id: str, integration_id: str, now: dt.datetime, *,
                                   created_before: dt.datetime | None = None) -> list[ApiKey]:
        """Mark the integration's live keys revoked; returns those that were live."""
        ...

    async def add_client(self, org_id: str, integration_id: str, client: NewClient, scopes: Iterable[str],
                         now: dt.datetime) -> OAuthClient: ...

    async def client_by_id(self, client_id: str) -> OAuthClient | None:
        """A client by its id, live or not (the caller checks its status and secret)."""
        ...

    async def live_client(self, org_id: str, integration_id: str) -> OAuthClient | None: ...

    async def latest_client(self, org_id: str, integration_id: str) -> OAuthClient | None: ...

    async def revoke_live_clients(self, org_id: str, integration_id: str, now: dt.datetime, *,
                                  created_before: dt.datetime | None = None) -> list[OAuthClient]: ...

    async def set_client_scopes(self, org_id: str, client_id: str, scopes: Iterable[str], at: dt.datetime) -> None: ...

    async def issuance(self, org_id: str, integration_id: str, request_id: str) -> Issuance | None: ...

    async def issued_after(self, org_id: str, integration_id: str, when: dt.datetime) -> bool:
        """Whether a later IssueCredentials call superseded one made at `when`."""
        ...

    async def record_issuance(self, issuance: Issuance, *, replace: bool) -> None: ...

    async def external_client(self, issuer: str, client_id: str) -> ExternalClient | None: ...

    async def add_external_client(self, client: ExternalClient) -> None: ...

    async def external_client_ids(self, org_id: str, integration_id: str) -> list[str]: ...

    async def mark_processed(self, event_id: str, now: dt.datetime) -> bool:
        """Record `event_id` as applied; False when it already was."""
        ...


class SigningKeys(Protocol):
    """The JWT signing keys, their private halves sealed; at most one is current."""

    async def signing_keys(self, statuses: Iterable[SigningKeyStatus]) -> list[SigningKey]: ...

    async def signing_key(self, kid: str) -> SigningKey | None: ...

    async def current_kid(self) -> str | None: ...

    async def sealed_private_key(self, kid: str) -> bytes | None: ...

    async def add_signing_key(self, key: SigningKey, sealed_private_key: bytes) -> None: ...

    async def set_signing_key_status(self, kid: str, status: SigningKeyStatus) -> None: ...


class IdentityUnitOfWork(UnitOfWork, Protocol):
    """One transaction of an identity use case, and the events it publishes with it. Neither
    event ever carries a plain-text secret."""

    @property
    def credentials(self) -> Credentials: ...

    @property
    def signing_keys(self) -> SigningKeys: ...

    async def credentials_changed(
        self, kind: str, *, org_id: str, integration_id: str = "", now: dt.datetime,
        revoked_api_key_hashes: Iterable[str] = (), revoked_client_ids: Iterable[str] = (), kid: str = "",
    ) -> str:
        """`trellis.credentials.<kind>` (issued, revoked, api_key_regenerated, signing_key_rotated):
        which key hashes and client ids stopped working, for the edge replicas' caches."""
        ...

    async def audit(
        self, action: str, *, org_id: str, actor_id: str, object_type: str, object_id: str, now: dt.datetime,
        before: Mapping[str, object] | None = None, after: Mapping[str, object] | None = None,
        reason: str = "", request_id: str = "",
    ) -> str:
        """`trellis.audit.identity.<action>`; `before`/`after` must hold no secret."""
        ...


class UnitsOfWork(Protocol):
    """A new unit of work; a `read_only` one cannot write events or commit, and may read on a
    connection that opens no transaction (services.kit.db.read_session_factory)."""

    def __call__(self, *, read_only: bool = False) -> IdentityUnitOfWork: ...


# --- signing keys' cryptography ------------------------------------------------------------------

# Signs one token's claims with an opened private key, its kid in the header: a compact JWS.
Sign = Callable[[Mapping[str, object]], str]


@dataclass(frozen=True)
class GeneratedKey:
    """A key pair just made: its public JWK (kid, alg, use=sig) and its private half sealed to its kid."""

    public_jwk: Mapping[str, object]
    sealed_private_key: bytes


class TokenSigning(Protocol):
    """Makes signing keys and opens them to sign (adapters/signing.py: RS256 or ES256, private
    halves sealed by the kit's envelope encryption, bound to their kid)."""

    @property
    def algorithm(self) -> str:
        """The algorithm new keys sign with."""
        ...

    async def generate(self, kid: str) -> GeneratedKey:
        """A new key pair named `kid` (made off the event loop)."""
        ...

    def signer(self, kid: str, sealed_private_key: bytes) -> Sign:
        """What signs with the key sealed for `kid`; Unavailable when it does not open (a wrong
        key-encryption key, or a sealed key moved to another row)."""
        ...


# --- external issuer mode ------------------------------------------------------------------------


class ExternalIssuerPort(Protocol):
    """An external token issuer (an Auth0 tenant, say) whose tokens identity also accepts."""

    @property
    def issuer(self) -> str: ...

    @property
    def audience(self) -> str: ...

    @property
    def client_id_claim(self) -> str: ...

    async def public_key(self, kid: str) -> PublicKey:
        """The issuer's key for `kid` from its JWKS; invalid_token when it has none, Unavailable
        when the JWKS cannot be fetched."""
        ...

