"""Identity's rules, in plain Python: how partner credentials look, how they are checked, which
scopes a token may carry, and how signing keys move through their lifecycle.

Nothing here touches the network or a database; the adapters do, for the application's handlers.

Secrets (API keys, client secrets) exist in plain text only inside the `New*` values handed
back once to the caller; everything kept is a SHA-256 hex digest. High-entropy random secrets
need no slow password hash: SHA-256 of 256 random bits cannot be brute-forced.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from services.kit.errors import InvalidArgument

# The spec shows the first 16 characters of a key in the UI; the store indexes them.
API_KEY_PREFIX_LENGTH = 16
# token_urlsafe(32): 32 random bytes, 43 characters of the URL-safe base64 alphabet.
API_KEY_RANDOM_BYTES = 32
CLIENT_SECRET_RANDOM_BYTES = 32
CLIENT_ID_PREFIX = "trc_"
# Compared against when no candidate exists, so an unknown key costs the same work.
_DUMMY_HASH = hashlib.sha256(b"trellis-no-such-credential").hexdigest()
_SCOPE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
MAX_SCOPES = 100


class CredentialStatus(str, Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


class SigningKeyStatus(str, Enum):
    """current signs new tokens; previous still verifies them; retired does neither."""

    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a high-entropy secret: the only form in which one is kept."""
    return hashlib.sha256(secret.encode()).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())


# --- API keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewApiKey:
    """A key just generated: `plaintext` is shown once and then forgotten."""

    plaintext: str = field(repr=False)
    prefix: str
    key_hash: str


def generate_api_key(prefix: str) -> NewApiKey:
    """`prefix` + 43 characters of cryptographically random URL-safe text (256 bits)."""
    plaintext = prefix + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)
    return NewApiKey(plaintext=plaintext, prefix=api_key_prefix_of(plaintext), key_hash=hash_secret(plaintext))


def api_key_prefix_of(api_key: str) -> str:
    return api_key[:API_KEY_PREFIX_LENGTH]


def looks_like_api_key(api_key: str, prefix: str) -> bool:
    """Cheap shape check before any lookup: right prefix, sane length, URL-safe alphabet."""
    return (
        api_key.startswith(prefix)
        and API_KEY_PREFIX_LENGTH < len(api_key) <= 256
        and re.fullmatch(r"[A-Za-z0-9_-]+", api_key) is not None
    )


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its id, owner, the visible prefix and the hash, never the key."""

    id: str
    org_id: str
    integration_id: str
    prefix: str
    key_hash: str
    status: CredentialStatus
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def live(self) -> bool:
        return self.status is CredentialStatus.ACTIVE


def match_api_key(presented: str, candidates: Iterable[ApiKey]) -> ApiKey | None:
    """The candidate whose hash equals the presented key's, compared in constant time.

    Every candidate is compared (no early exit), and with no candidate at all one dummy
    comparison is made, so the work done does not depend on where or whether a match is.
    """
    presented_hash = hash_secret(presented)
    found: ApiKey | None = None
    compared = 0
    for candidate in candidates:
        compared += 1
        if digests_equal(candidate.key_hash, presented_hash) and found is None:
            found = candidate
    if compared == 0:
        digests_equal(_DUMMY_HASH, presented_hash)
    return found


# --- OAuth clients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewClient:
    """A client just created: `secret` is shown once and then forgotten."""

    client_id: str
    secret: str = field(repr=False)
    secret_hash: str


def generate_client() -> NewClient:
    """A client id (`trc_` + 128 random bits in hex) and a 256-bit secret."""
    secret = secrets.token_urlsafe(CLIENT_SECRET_RANDOM_BYTES)
    return NewClient(client_id=CLIENT_ID_PREFIX + secrets.token_hex(16), secret=secret, secret_hash=hash_secret(secret))


@dataclass(frozen=True)
class OAuthClient:
    """A stored client-credentials client of one integration."""

    client_id: str
    org_id: str
    integration_id: str
    secret_hash: str = field(repr=False)
    scopes: tuple[str, ...]
    status: CredentialStatus
    created_at: dt.datetime
    scopes_updated_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def live(self) -> bool:
        return self.status is CredentialStatus.ACTIVE


def client_secret_matches(client: OAuthClient | None, presented_secret: str) -> bool:
    """True when `client` exists, is live and the secret's hash matches, in constant time.

    An unknown client is compared against a dummy hash so that it costs what a wrong secret costs.
    """
    presented_hash = hash_secret(presented_secret)
    stored = client.secret_hash if client is not None else _DUMMY_HASH
    matches = digests_equal(stored, presented_hash)
    return matches and client is not None and client.live


# --- scopes ----------------------------------------------------------------------------------


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes as given by the registry: each a single token (no spaces), no duplicates kept."""
    result: list[str] = []
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise InvalidArgument(f"invalid scope {scope!r}: scopes are single words such as inventory:read", scope=scope)
        if scope not in result:
            result.append(scope)
    if len(result) > MAX_SCOPES:
        raise InvalidArgument(f"at most {MAX_SCOPES} scopes may be granted")
    return tuple(result)


def parse_scope(scope: str) -> tuple[str, ...]:
    """An OAuth `scope` parameter (space separated) as a tuple, order kept, duplicates dropped."""
    return tuple(dict.fromkeys(scope.split()))


def narrow_scopes(granted: Iterable[str], requested: str) -> tuple[str, ...]:
    """The scopes a token carries: all granted ones, or the requested subset of them.

    Asking for a scope that was not granted is `invalid_scope` (RFC 6749 section 5.2).
    """
    granted = tuple(granted)
    wanted = parse_scope(requested)
    if not wanted:
        return granted
    missing = [s for s in wanted if s not in granted]
    if missing:
        raise InvalidArgument(
            f"invalid_scope: not granted to this client: {' '.join(missing)}", error="invalid_scope"
        )
    return wanted


# --- access tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSettings:
    issuer: str
    audience: str
    ttl_seconds: int


def access_token_claims(client: OAuthClient, scopes: Iterable[str], settings: TokenSettings, *, now: dt.datetime, jti: str) -> dict[str, object]:
    """The claims of a client-credentials access token for `client`."""
    issued = int(now.timestamp())
    return {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": client.client_id,
        "client_id": client.client_id,
        "integration_id": client.integration_id,
        "org_id": client.org_id,
        "scope": " ".join(scopes),
        "iat": issued,
        "nbf": issued,
        "exp": issued + settings.ttl_seconds,
        "jti": jti,
    }


@dataclass(frozen=True)
class VerifiedAccess:
    """What a verified access token says: who may act, for which integration, with which scopes."""

    integration_id: str
    org_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: dt.datetime
    issuer: str
    jti: str


# --- signing keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A stored JWT signing key; the private half stays sealed in the store."""

    kid: str
    alg: str
    public_jwk: Mapping[str, object]
    status: SigningKeyStatus
    created_at: dt.datetime


def rotation_plan(keys: Iterable[SigningKey]) -> dict[str, SigningKeyStatus]:
    """New statuses for existing keys when a new key becomes current.

    The current key becomes previous (tokens it signed stay valid until they expire); the
    previous one retires. Retired keys stay retired.
    """
    plan: dict[str, SigningKeyStatus] = {}
    for key in keys:
        if key.status is SigningKeyStatus.CURRENT:
            plan[key.kid] = SigningKeyStatus.PREVIOUS
        elif key.status is SigningKeyStatus.PREVIOUS:
            plan[key.kid] = SigningKeyStatus.RETIRED
    return plan


def published_keys(keys: Iterable[SigningKey]) -> list[SigningKey]:
    """The keys a JWKS lists: current first, then previous."""
    order = {SigningKeyStatus.CURRENT: 0, SigningKeyStatus.PREVIOUS: 1}
    return sorted((k for k in keys if k.status in order), key=lambda k: (order[k.status], k.kid))


def jwks_json(keys: Iterable[SigningKey]) -> str:
    """A JWKS document listing `keys` (the caller picks current and previous)."""
    return json.dumps({"keys": [dict(k.public_jwk) for k in keys]}, separators=(",", ":"))


def expiry_of(claims: Mapping[str, Any]) -> dt.datetime:
    """When a verified token's `exp` claim says it expires."""
    return dt.datetime.fromtimestamp(int(claims["exp"]), tz=dt.timezone.utc)
