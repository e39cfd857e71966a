"""Access-token use cases: the client-credentials grant, token verification (our own keys and,
in external issuer mode, an external JWKS), the JWKS document, and signing-key rotation.

Private signing keys live sealed in the store; `SigningKeyRing` opens each once per process
and caches it by kid. Which key is current, and whether a key still verifies, is read from the
store on every call, so a rotation on one replica is honoured by all of them at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.identity.adapters import events, signing
from services.identity.domain.model import (
    OAuthClient,
    SigningKey,
    SigningKeyStatus,
    TokenSettings,
    VerifiedAccess,
    access_token_claims,
    client_secret_matches,
    narrow_scopes,
    parse_scope,
    published_keys,
    rotation_plan,
)
from services.identity.adapters.store import IdentityStore
from services.kit import jwtverify
from services.kit.auth import EDGE_PERMISSION, PLATFORM_PERMISSION, Actor
from services.kit.crypto import DecryptionError, Envelope, aad_for
from services.kit.db import utcnow
from services.kit.errors import Aborted, InvalidArgument, Unauthenticated, Unavailable
from services.kit.outbox import Flush, no_flush, written_event_ids

log = logging.getLogger(__name__)

VERIFYING = (SigningKeyStatus.CURRENT, SigningKeyStatus.PREVIOUS)
# How long a replica keeps signing with the kid it last read as current. Another replica's
# rotation demotes that key to previous, which still verifies; only two rotations within this
# window could make a replica sign with a retired key, so it is kept short.
CURRENT_KID_TTL_SECONDS = 1.0


def private_key_aad(kid: str) -> bytes:
    """Binds a sealed private key to its own row: moved to another kid, it fails to open."""
    return aad_for("signing_keys", "private_key", kid)


def seal_private_key(envelope: Envelope, kid: str, key: signing.PrivateKey) -> bytes:
    return envelope.seal(signing.private_key_pem(key), private_key_aad(kid))


def open_private_key(envelope: Envelope, kid: str, sealed: bytes) -> signing.PrivateKey:
    return signing.load_private_key(envelope.open(sealed, private_key_aad(kid)))


def invalid_client(client: OAuthClient | None) -> Unauthenticated:
    # One message for unknown client, wrong secret and revoked client: nothing to tell apart. An
    # existing client's integration is named for the edge only (this call needs trellis_edge),
    # so its organisation's API log records the attempt; the partner's answer says none of it.
    owner = {"integration_id": client.integration_id, "org_id": client.org_id} if client is not None else {}
    return Unauthenticated("invalid_client", error="invalid_client", **owner)


class SigningKeyRing:
    """JWT signing keys: creates the first, rotates, and hands out opened keys by kid."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], envelope: Envelope, algorithm: str, *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._sessions = sessions
        self._envelope = envelope
        self._algorithm = algorithm
        self._clock = clock
        self._private: dict[str, signing.PrivateKey] = {}
        self._current: tuple[str, float] | None = None
        self._public: dict[str, jwtverify.PublicKey] = {}

    async def _new_key(self) -> tuple[SigningKey, bytes]:
        """A fresh key (generated off the event loop) and its sealed private half."""
        kid = f"sk_{uuid.uuid4().hex}"
        private = await asyncio.to_thread(signing.generate_private_key, self._algorithm)
        key = SigningKey(kid=kid, alg=self._algorithm, public_jwk=signing.public_jwk(private, kid),
                         status=SigningKeyStatus.CURRENT, created_at=self._clock())
        return key, seal_private_key(self._envelope, kid, private)

    async def ensure_current(self) -> str:
        """The current kid, creating the first key if there is none (safe when replicas race).

        The current key is opened here, so a wrong key-encryption key stops the start.
        """
        for _ in range(5):
            try:
                async with self._sessions() as session, session.begin():
                    store = IdentityStore(session)
                    if await store.current_kid() is None:
                        key, sealed = await self._new_key()
                        await store.add_signing_key(key, sealed)
                        log.info("created the first signing key %s (%s)", key.kid, key.alg)
            except IntegrityError:
                # Another replica created the current key between our read and insert.
                continue
            async with self._sessions() as session:
                kid, _ = await self.current_signer(IdentityStore(session))
            return kid
        raise Aborted("could not establish a current signing key")

    async def rotate(self, session: AsyncSession) -> tuple[SigningKey, str]:
        """Make a new key current in the session's transaction; returns it and the old current kid."""
        store = IdentityStore(session)
        new_key, sealed = await self._new_key()
        existing = await store.signing_keys(VERIFYING)
        plan = rotation_plan(existing)
        # Retire first, then demote the current key, so at most one row is ever current.
        for status in (SigningKeyStatus.RETIRED, SigningKeyStatus.PREVIOUS):
            for kid, new_status in plan.items():
                if new_status is status:
                    await store.set_signing_key_status(kid, new_status)
        await store.add_signing_key(new_key, sealed)
        previous = next((k.kid for k in existing if k.status is SigningKeyStatus.CURRENT), "")
        return new_key, previous

    def forget_current(self) -> None:
        """Drop the remembered current kid (after a rotation this process committed)."""
        self._current = None

    async def current_signer(self, store: IdentityStore) -> tuple[str, signing.PrivateKey]:
        """The kid and opened private key that sign new tokens now."""
        remembered = self._current
        if remembered is not None and remembered[1] > time.monotonic():
            kid = remembered[0]
        else:
            found = await store.current_kid()
            if found is None:
                raise Unavailable("no current signing key; identity has not finished starting")
            kid = found
            self._current = (kid, time.monotonic() + CURRENT_KID_TTL_SECONDS)
        key = self._private.get(kid)
        if key is None:
            sealed = await store.sealed_private_key(kid)
            assert sealed is not None
            try:
                key = open_private_key(self._envelope, kid, sealed)
            except DecryptionError as exc:
                log.error("signing key %s does not open: %s", kid, exc)
                raise Unavailable("the current signing key cannot be opened; check TRELLIS_KEK and TRELLIS_KEK_PREVIOUS") from exc
            self._private[kid] = key
        return kid, key

    async def verification_key(self, store: IdentityStore, kid: str) -> jwtverify.PublicKey | None:
        """The public key for `kid` if it is ours and current or previous; None otherwise."""
        record = await store.signing_key(kid)
        if record is None or record.status not in VERIFYING:
            return None
        key = self._public.get(kid)
        if key is None:
            key = jwtverify.public_key_from_jwk(record.public_jwk)
            if jwtverify.algorithm_for(key) != record.alg:
                raise Unavailable(f"signing key {kid} does not match its algorithm {record.alg}")
            self._public[kid] = key
        return key


@dataclass(frozen=True)
class ExternalIssuer:
    """An external token issuer (an Auth0 tenant, say) whose tokens identity also accepts."""

    issuer: str
    jwks: jwt.PyJWKClient
    audience: str
    client_id_claim: str

    @classmethod
    def from_settings(cls, settings: object) -> "ExternalIssuer | None":
        issuer, url = settings.external_issuer, settings.external_jwks_url  # type: ignore[attr-defined]
        if not (issuer and url):
            return None
        return cls(
            issuer=issuer,
            jwks=jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5),
            audience=settings.external_audience,  # type: ignore[attr-defined]
            client_id_claim=settings.external_client_id_claim,  # type: ignore[attr-defined]
        )

    async def public_key(self, kid: str) -> jwtverify.PublicKey:
        try:
            jwk = await asyncio.to_thread(self.jwks.get_signing_key, kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise Unavailable("the external issuer's JWKS cannot be fetched") from exc
        except jwt.PyJWKClientError as exc:
            raise jwtverify.invalid_token("unknown signing key") from exc
        try:
            jwtverify.algorithm_for(jwk.key)
        except ValueError as exc:
            raise jwtverify.invalid_token("unsupported external key type") from exc
        return jwk.key  # type: ignore[no-any-return]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scopes: tuple[str, ...]


class TokenHandlers:
    """IssueToken, VerifyAccessToken, GetJwks and RotateSigningKey."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ring: SigningKeyRing,
        settings: TokenSettings,
        *,
        external: ExternalIssuer | None = None,
        flush: Flush = no_flush,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._ring = ring
        self._settings = settings
        self._external = external
        self._flush = flush
        self._clock = clock

    async def issue_token(self, actor: Actor, client_id: str, client_secret: str, scope: str = "") -> IssuedToken:
        """The client-credentials grant: a signed access token for a live client's secret."""
        actor.require(EDGE_PERMISSION)
        async with self._sessions() as session:
            store = IdentityStore(session)
            client = await store.client_by_id(client_id) if 0 < len(client_id) <= 64 else None
            if not client_secret_matches(client, client_secret):
                raise invalid_client(client)
            assert client is not None
            try:
                scopes = narrow_scopes(client.scopes, scope)
            except InvalidArgument as exc:
                exc.fields.update(integration_id=client.integration_id, org_id=client.org_id)  # for the edge's log
                raise
            kid, key = await self._ring.current_signer(store)
        claims = access_token_claims(client, scopes, self._settings, now=self._clock(), jti=uuid.uuid4().hex)
        token = signing.sign(claims, key, kid=kid)
        return IssuedToken(access_token=token, expires_in=self._settings.ttl_seconds, scopes=scopes)

    async def verify_access_token(self, actor: Actor, token: str) -> VerifiedAccess:
        """What a token grants, if it is signed by one of our keys (or the external issuer's),
        unexpired, for our audience, and its client is still live."""
        actor.require(EDGE_PERMISSION)
        kid = jwtverify.read_header(token)["kid"]
        async with self._sessions() as session:
            key = await self._ring.verification_key(IdentityStore(session), kid)
        if key is not None:
            claims = jwtverify.verify(token, key, issuer=self._settings.issuer, audience=self._settings.audience,
                                      max_lifetime=self._settings.ttl_seconds)
            return await self._own_token_access(claims)
        if self._external is not None and jwtverify.read_unverified_issuer(token) == self._external.issuer:
            external_key = await self._external.public_key(kid)
            claims = jwtverify.verify(token, external_key, issuer=self._external.issuer, audience=self._external.audience or None)
            return await self._external_token_access(claims)
        raise jwtverify.invalid_token("unknown signing key")

    async def _own_token_access(self, claims: dict[str, object]) -> VerifiedAccess:
        client_id = claims.get("client_id")
        if client_id != claims["sub"] or not isinstance(client_id, str):
            raise jwtverify.invalid_token("client_id does not match sub")
        async with self._sessions() as session:
            client = await IdentityStore(session).client_by_id(client_id)
        if (
            client is None
            or not client.live
            or client.integration_id != claims.get("integration_id")
            or client.org_id != claims.get("org_id")
        ):
            raise jwtverify.invalid_token("the token's client is no longer valid")
        scope = claims.get("scope", "")
        return VerifiedAccess(
            integration_id=client.integration_id, org_id=client.org_id, client_id=client_id,
            scopes=parse_scope(scope if isinstance(scope, str) else ""), expires_at=signing.expiry_of(claims),
            issuer=str(claims["iss"]), jti=str(claims.get("jti", "")),
        )

    async def _external_token_access(self, claims: dict[str, object]) -> VerifiedAccess:
        """An external token grants what its integration was granted (narrowed by its own
        `scope` claim when it has one), while the integration holds live credentials."""
        assert self._external is not None
        client_id = claims.get(self._external.client_id_claim)
        if not isinstance(client_id, str) or not client_id:
            raise jwtverify.invalid_token(f"missing claim {self._external.client_id_claim}")
        async with self._sessions() as session:
            store = IdentityStore(session)
            binding = await store.external_client(self._external.issuer, client_id)
            live = await store.live_client(binding.org_id, binding.integration_id) if binding else None
        if binding is None:
            raise jwtverify.invalid_token("the token's client is not registered to an integration")
        if live is None:
            raise jwtverify.invalid_token("the integration has no live credentials")
        scope = claims.get("scope")
        scopes = live.scopes if not isinstance(scope, str) else tuple(s for s in parse_scope(scope) if s in live.scopes)
        return VerifiedAccess(
            integration_id=binding.integration_id, org_id=binding.org_id, client_id=client_id, scopes=scopes,
            expires_at=signing.expiry_of(claims), issuer=self._external.issuer, jti=str(claims.get("jti", "")),
        )

    async def jwks(self) -> str:
        """The JWKS document: current key first, then previous."""
        async with self._sessions() as session:
            keys = await IdentityStore(session).signing_keys(VERIFYING)
        return signing.jwks_json(published_keys(keys))

    async def rotate_signing_key(self, actor: Actor, request_id: str = "") -> tuple[str, str]:
        """A new current key; the old current verifies as previous, older previous retires.
        The keys sign every organisation's tokens, so only a platform operator rotates them."""
        actor.require(PLATFORM_PERMISSION)
        try:
            async with self._sessions() as session, session.begin():
                key, previous = await self._ring.rotate(session)
                now = self._clock()
                await events.credentials_changed(session, "signing_key_rotated", org_id=actor.org_id, now=now, kid=key.kid)
                await events.audit(
                    session, "signing_key.rotated", org_id=actor.org_id, actor_id=actor.user_id,
                    object_type="signing_key", object_id=key.kid, now=now,
                    before={"current_kid": previous}, after={"current_kid": key.kid, "previous_kid": previous, "alg": key.alg},
                    request_id=request_id,
                )
        except IntegrityError as exc:
            raise Aborted("another signing-key rotation ran at the same time; retry") from exc
        self._ring.forget_current()
        await self._flush(written_event_ids(session))
        return key.kid, previous
