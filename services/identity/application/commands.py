"""What callers ask identity to do, one command per use case, and what they get back.

`request_id` ties a change to the caller's request in the audit trail; for IssueCredentials it
is also the idempotency key, so a retry never leaves two live sets. Plain-text secrets appear
only in the results returned once (`IssuedCredentials`, `RegeneratedKey`), never in a repr.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# --- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssueCredentials:
    integration_id: str
    scopes: tuple[str, ...]
    request_id: str = ""


@dataclass(frozen=True)
class RevokeCredentials:
    integration_id: str
    reason: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class RegenerateApiKey:
    integration_id: str
    request_id: str = ""


@dataclass(frozen=True)
class RegisterExternalClient:
    integration_id: str
    client_id: str
    request_id: str = ""


@dataclass(frozen=True)
class ApplyIntegrationChange:
    """An IntegrationChanged event from the registry, as identity needs it."""

    event_id: str
    kind: str
    org_id: str
    integration_id: str
    scopes: tuple[str, ...]
    occurred_at: dt.datetime
    actor_id: str = ""


@dataclass(frozen=True)
class IssueToken:
    """The client-credentials grant: a client's id and secret, and the scopes asked for ("" all)."""

    client_id: str
    client_secret: str = field(repr=False)
    scope: str = ""


@dataclass(frozen=True)
class RotateSigningKey:
    request_id: str = ""


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCredentials:
    """Plain-text credentials, returned once by IssueCredentials."""

    api_key: str = field(repr=False)
    api_key_prefix: str
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str
    issuer: str
    audience: str
    scopes: tuple[str, ...]
    issued_at: dt.datetime


@dataclass(frozen=True)
class RegeneratedKey:
    api_key: str = field(repr=False)
    api_key_prefix: str


@dataclass(frozen=True)
class CredentialInfo:
    integration_id: str
    api_key_prefix: str
    client_id: str
    live: bool
    issued_at: dt.datetime
    api_key_created_at: dt.datetime | None
    external_client_ids: tuple[str, ...]


@dataclass(frozen=True)
class VerifiedApiKey:
    integration_id: str
    org_id: str
    api_key_prefix: str
    client_ids: tuple[str, ...]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class RotatedKey:
    """The new current kid and the one it replaced ("" when there was none)."""

    kid: str
    previous_kid: str
