"""The two partner credentials: API keys (identity says which integration a key belongs to;
cached by the key's SHA-256) and access tokens (verified here, against identity's JWKS or an
external issuer's, and cached by the token's SHA-256 until they expire).

Nothing here keeps a credential in plain text beyond the call that verifies it: caches are
keyed by hashes, and no key or token is ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.edge.adapters.cache import TtlCache
from services.edge.adapters.peers import Peers
from services.edge.domain.errors import EdgeError, RevokedKey, unauthorized
from services.edge.domain.model import ApiKeyInfo, TokenGrant
from services.kit import errors, jwtverify

log = logging.getLogger(__name__)

# How long an unknown key is remembered as unknown, so a stream of junk keys asks identity once each.
UNKNOWN_KEY_SECONDS = 5.0
# How long a key that identity announced as revoked is remembered with its integration, so its
# holder can be told why (the integration is suspended, or the key was replaced).
REVOKED_KEY_SECONDS = 24 * 3600.0


def digest(secret: str) -> str:
    """SHA-256 hex of a credential, as identity stores an API key's hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def unavailable(what: str) -> EdgeError:
    return EdgeError("service_unavailable", f"cannot verify {what} right now; retry shortly",
                     headers=((b"retry-after", b"1"),))


class ApiKeys:
    """API key -> integration, asking identity on a miss."""

    def __init__(self, peers: Peers, *, ttl: float) -> None:
        self._peers = peers
        self.cache: TtlCache[str, ApiKeyInfo] = TtlCache(ttl)
        self._unknown: TtlCache[str, bool] = TtlCache(min(ttl, UNKNOWN_KEY_SECONDS), max_entries=10_000)
        self._revoked: TtlCache[str, str] = TtlCache(REVOKED_KEY_SECONDS, max_entries=100_000)

    async def verify(self, api_key: str, request_id: str = "") -> ApiKeyInfo:
        """The key's integration; RevokedKey for a key announced as revoked, invalid_api_key
        for any other key identity does not accept."""
        key_hash = digest(api_key)
        revoked_from = self._revoked.get(key_hash)
        if revoked_from is not None:
            raise RevokedKey(revoked_from)
        if self._unknown.get(key_hash):
            raise self.invalid()
        try:
            return await self.cache.get_or_load(key_hash, lambda: self._load(api_key, key_hash, request_id))
        except (errors.Unauthenticated, errors.InvalidArgument, errors.NotFound) as exc:
            self._unknown.put(key_hash, True)
            raise self.invalid() from exc
        except errors.PermissionDenied as exc:
            log.error("identity refused the edge's service token: %s", exc)
            raise unavailable("the API key") from exc
        except errors.TrellisError as exc:
            raise unavailable("the API key") from exc

    async def _load(self, api_key: str, key_hash: str, request_id: str) -> tuple[ApiKeyInfo, tuple[object, ...], None]:
        info = await self._peers.verify_api_key(api_key, key_hash, request_id)
        return info, (("integration", info.integration_id),), None

    @staticmethod
    def invalid() -> EdgeError:
        return unauthorized("invalid_api_key", "the X-API-Key is not a valid key: it may be mistyped, "
                            "regenerated or revoked; use your integration's current key", token_error=False)

    def forget(self, key_hash: str) -> None:
        self.cache.drop(key_hash)

    def revoked(self, key_hash: str, integration_id: str) -> None:
        """Identity announced that this key stopped working."""
        self.cache.drop(key_hash)
        if integration_id:
            self._revoked.put(key_hash, integration_id)

    def forget_integration(self, integration_id: str) -> None:
        self.cache.drop_tag(("integration", integration_id))
        self._unknown.clear()


# A JWKS document older than this share of its TTL is fetched again in the background.
REFRESH_AHEAD = 0.8


class KeySet:
    """Signing keys by kid from one JWKS document, refreshed when older than `ttl` (in the
    background from `REFRESH_AHEAD` of it) and on an unknown kid, but fetched at most once per
    `refetch_interval` (junk kids cannot hammer the source). A failed refresh keeps the keys it had."""

    def __init__(self, fetch: Callable[[], Awaitable[str]], *, ttl: float, refetch_interval: float,
                 name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._interval = refetch_interval
        self._name = name
        self._clock = clock
        self._keys: dict[str, jwtverify.PublicKey] = {}
        self._document = ""
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._refresh: asyncio.Task[None] | None = None
        self.fetches = 0

    def invalidate(self) -> None:
        """Refetch on next use, without waiting out the refetch interval (a key was rotated)."""
        self._fetched_at = self._attempted_at = float("-inf")

    async def key(self, kid: str) -> jwtverify.PublicKey | None:
        now = self._clock()
        if now - self._fetched_at > self._ttl or (kid not in self._keys and now - self._attempted_at >= self._interval):
            await self._refreshed()
        elif (now - self._fetched_at > self._ttl * REFRESH_AHEAD and self._refresh is None
              and now - self._attempted_at >= self._interval):  # a failed refresh is retried once per interval
            # Fetched again in the background before the TTL runs out, so no request waits for it.
            self._refresh = asyncio.get_running_loop().create_task(self._load())
        return self._keys.get(kid)

    async def document(self) -> str:
        """The JWKS document as last fetched (refetched when older than the TTL)."""
        if self._clock() - self._fetched_at > self._ttl:
            await self._refreshed()
        if not self._document:
            raise unavailable("the signing keys")
        return self._document

    async def _refreshed(self) -> None:
        if self._refresh is None:
            self._refresh = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(self._refresh)

    async def _load(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            document = await self._fetch()
            keys = parse_jwks(document, self._name)
        except Exception as exc:  # noqa: BLE001 - a failed refresh keeps the keys we had
            log.warning("could not refresh the %s JWKS: %s", self._name, exc)
            return
        finally:
            self._refresh = None
        self._keys, self._document, self._fetched_at = keys, document, self._clock()


def parse_jwks(document: str, name: str) -> dict[str, jwtverify.PublicKey]:
    """The usable signing keys of a JWKS document by kid; unusable entries are skipped."""
    keys: dict[str, jwtverify.PublicKey] = {}
    for jwk in json.loads(document).get("keys", []):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if not isinstance(kid, str) or not jwtverify.is_safe_kid(kid) or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[kid] = jwtverify.public_key_from_jwk(jwk)
        except Exception as exc:  # noqa: BLE001 - one bad entry must not hide the others
            log.warning("skipping JWK %s of the %s JWKS: %s", kid, name, exc)
    return keys


@dataclass(frozen=True)
class Issuer:
    """Whose tokens are accepted and how they are checked."""

    issuer: str
    audience: str | None
    keys: KeySet
    external: bool = False
    client_id_claim: str = "client_id"
    # The longest lifetime (exp - iat, seconds) its tokens have: identity's token TTL for our
    # own; None (no bound) for an external issuer, whose lifetimes we do not set.
    max_lifetime: float | None = None


class Tokens:
    """Bearer token -> TokenGrant, verified locally and cached until expiry (bounded by the TTL)."""

    def __init__(self, own: Issuer, *, external: Issuer | None = None, ttl: float, token_url: str = "") -> None:
        self.own = own
        self.external = external
        self.cache: TtlCache[str, TokenGrant] = TtlCache(ttl)
        self._token_url = token_url

    async def verify(self, token: str) -> TokenGrant:
        try:
            return await self.cache.get_or_load(digest(token), lambda: self._load(token))
        except errors.Unauthenticated as exc:
            code = "token_expired" if exc.fields.get("error") == "token_expired" else "invalid_token"
            raise unauthorized(code, self._message(code, str(exc.fields.get("reason", "")))) from exc

    async def _load(self, token: str) -> tuple[TokenGrant, tuple[object, ...], float]:
        """A verified grant, cached until the token expires (or the TTL, re-verified ahead of it)."""
        grant = await self._verify(token)
        remaining = grant.expires_at - time.time()
        tags = (("client", grant.client_id), ("integration", grant.integration_id))
        return grant, tags, time.monotonic() + remaining

    def _message(self, code: str, reason: str) -> str:
        where = f" from {self._token_url}" if self._token_url else ""
        if code == "token_expired":
            return f"the access token has expired; request a new one{where}"
        return f"the access token was refused ({reason or 'invalid'}); request a new one{where} and send it unchanged"

    async def _verify(self, token: str) -> TokenGrant:
        kid = jwtverify.read_header(token)["kid"]
        source = self.own
        if self.external is not None and jwtverify.read_unverified_issuer(token) == self.external.issuer:
            source = self.external
        key = await source.keys.key(kid)
        if key is None:
            raise jwtverify.invalid_token("unknown signing key")
        claims = jwtverify.verify(token, key, issuer=source.issuer, audience=source.audience,
                                  max_lifetime=source.max_lifetime)
        return grant_of(claims, source)

    def forget_client(self, client_id: str) -> None:
        self.cache.drop_tag(("client", client_id))

    def forget_integration(self, integration_id: str) -> None:
        self.cache.drop_tag(("integration", integration_id))


def grant_of(claims: dict[str, Any], source: Issuer) -> TokenGrant:
    """What verified claims grant. Our tokens name client (sub = client_id), integration and
    organisation; an external token's client is in `client_id_claim` and its scopes, when it
    has a `scope` claim, narrow the integration's."""
    scope = claims.get("scope")
    if source.external:
        client_id = claims.get(source.client_id_claim)
        if not isinstance(client_id, str) or not client_id:
            raise jwtverify.invalid_token(f"missing claim {source.client_id_claim}")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else None
        return TokenGrant(client_id=client_id, integration_id="", org_id="", scopes=scopes,
                          expires_at=float(claims["exp"]), issuer=source.issuer, external=True)
    client_id, integration_id, org_id = claims.get("client_id"), claims.get("integration_id"), claims.get("org_id")
    if client_id != claims["sub"] or not all(isinstance(v, str) and v for v in (client_id, integration_id, org_id)):
        raise jwtverify.invalid_token("the token does not name its client, integration and organisation")
    return TokenGrant(client_id=str(client_id), integration_id=str(integration_id), org_id=str(org_id),
                      scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
                      expires_at=float(claims["exp"]), issuer=source.issuer)
