"""Access-token use cases: the client-credentials grant, token verification (our own keys and,
in external issuer mode, an external JWKS), the JWKS document, and signing-key rotation.

Private signing keys live sealed in the store; `SigningKeyRing` opens each once per process
(through the TokenSigning port) and caches it by kid. Which key is current, and whether a key
still verifies, is read from the store on every call, so a rotation on one replica is honoured
by all of them at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

from services.identity.application import commands
from services.identity.application.ports import (
    ExternalIssuerPort,
    IdentityUnitOfWork,
    Sign,
    SigningKeys,
    TokenSigning,
    UnitsOfWork,
)
from services.identity.domain.model import (
    OAuthClient,
    SigningKey,
    SigningKeyStatus,
    TokenSettings,
    VerifiedAccess,
    access_token_claims,
    client_secret_matches,
    expiry_of,
    jwks_json,
    narrow_scopes,
    parse_scope,
    published_keys,
    rotation_plan,
)
from services.kit import jwtverify
from services.kit.auth import EDGE_PERMISSION, PLATFORM_PERMISSION, Actor
from services.kit.clock import utcnow
from services.kit.errors import Aborted, InvalidArgument, Unauthenticated, Unavailable
from services.kit.uow import WriteConflict

log = logging.getLogger(__name__)

VERIFYING = (SigningKeyStatus.CURRENT, SigningKeyStatus.PREVIOUS)
# How long a replica keeps signing with the kid it last read as current. Another replica's
# rotation demotes that key to previous, which still verifies; only two rotations within this
# window could make a replica sign with a retired key, so it is kept short.
CURRENT_KID_TTL_SECONDS = 1.0


def invalid_client(client: OAuthClient | None) -> Unauthenticated:
    # One message for unknown client, wrong secret and revoked client: nothing to tell apart. An
    # existing client's integration is named for the edge only (this call needs trellis_edge),
    # so its organisation's API log records the attempt; the partner's answer says none of it.
    owner = {"integration_id": client.integration_id, "org_id": client.org_id} if client is not None else {}
    return Unauthenticated("invalid_client", error="invalid_client", **owner)


class SigningKeyRing:
    """JWT signing keys: creates the first, rotates, and hands out opened keys by kid."""

    def __init__(self, units: UnitsOfWork, signing: TokenSigning, *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._uow = units
        self._signing = signing
        self._clock = clock
        self._signers: dict[str, Sign] = {}
        self._current: tuple[str, float] | None = None
        self._public: dict[str, jwtverify.PublicKey] = {}

    async def _new_key(self) -> tuple[SigningKey, bytes]:
        """A fresh key and its sealed private half."""
        kid = f"sk_{uuid.uuid4().hex}"
        generated = await self._signing.generate(kid)
        key = SigningKey(kid=kid, alg=self._signing.algorithm, public_jwk=generated.public_jwk,
                         status=SigningKeyStatus.CURRENT, created_at=self._clock())
        return key, generated.sealed_private_key

    async def ensure_current(self) -> str:
        """The current kid, creating the first key if there is none (safe when replicas race).

        The current key is opened here, so a wrong key-encryption key stops the start.
        """
        for _ in range(5):
            try:
                async with self._uow() as uow:
                    if await uow.signing_keys.current_kid() is None:
                        key, sealed = await self._new_key()
                        await uow.signing_keys.add_signing_key(key, sealed)
                        await uow.commit()
                        log.info("created the first signing key %s (%s)", key.kid, key.alg)
            except WriteConflict:
                # Another replica created the current key between our read and insert.
                continue
            async with self._uow() as uow:
                kid, _ = await self.current_signer(uow.signing_keys)
            return kid
        raise Aborted("could not establish a current signing key")

    async def rotate(self, uow: IdentityUnitOfWork) -> tuple[SigningKey, str]:
        """Make a new key current in the unit's transaction; returns it and the old current kid."""
        store = uow.signing_keys
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

    async def current_signer(self, store: SigningKeys) -> tuple[str, Sign]:
        """The kid that signs new tokens now, and what signs with its opened private key."""
        remembered = self._current
        if remembered is not None and remembered[1] > time.monotonic():
            kid = remembered[0]
        else:
            found = await store.current_kid()
            if found is None:
                raise Unavailable("no current signing key; identity has not finished starting")
            kid = found
            self._current = (kid, time.monotonic() + CURRENT_KID_TTL_SECONDS)
        signer = self._signers.get(kid)
        if signer is None:
            sealed = await store.sealed_private_key(kid)
            assert sealed is not None
            signer = self._signing.signer(kid, sealed)  # Unavailable when it does not open
            self._signers[kid] = signer
        return kid, signer

    async def verification_key(self, store: SigningKeys, kid: str) -> jwtverify.PublicKey | None:
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


class TokenHandlers:
    """IssueToken, VerifyAccessToken, GetJwks and RotateSigningKey."""

    def __init__(
        self,
        units: UnitsOfWork,
        ring: SigningKeyRing,
        settings: TokenSettings,
        *,
        external: ExternalIssuerPort | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._uow = units
        self._ring = ring
        self._settings = settings
        self._external = external
        self._clock = clock

    async def issue_token(self, actor: Actor, cmd: commands.IssueToken) -> commands.IssuedToken:
        """The client-credentials grant: a signed access token for a live client's secret."""
        actor.require(EDGE_PERMISSION)
        client_id = cmd.client_id
        async with self._uow(read_only=True) as uow:
            client = await uow.credentials.client_by_id(client_id) if 0 < len(client_id) <= 64 else None
            if not client_secret_matches(client, cmd.client_secret):
                raise invalid_client(client)
            assert client is not None
            try:
                scopes = narrow_scopes(client.scopes, cmd.scope)
            except InvalidArgument as exc:
                exc.fields.update(integration_id=client.integration_id, org_id=client.org_id)  # for the edge's log
                raise
            kid, sign = await self._ring.current_signer(uow.signing_keys)
        claims = access_token_claims(client, scopes, self._settings, now=self._clock(), jti=uuid.uuid4().hex)
        return commands.IssuedToken(access_token=sign(claims), expires_in=self._settings.ttl_seconds, scopes=scopes)

    async def verify_access_token(self, actor: Actor, token: str) -> VerifiedAccess:
        """What a token grants, if it is signed by one of our keys (or the external issuer's),
        unexpired, for our audience, and its client is still live."""
        actor.require(EDGE_PERMISSION)
        kid = jwtverify.read_header(token)["kid"]
        async with self._uow(read_only=True) as uow:
            key = await self._ring.verification_key(uow.signing_keys, kid)
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
        async with self._uow(read_only=True) as uow:
            client = await uow.credentials.client_by_id(client_id)
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
            scopes=parse_scope(scope if isinstance(scope, str) else ""), expires_at=expiry_of(claims),
            issuer=str(claims["iss"]), jti=str(claims.get("jti", "")),
        )

    async def _external_token_access(self, claims: dict[str, object]) -> VerifiedAccess:
        """An external token grants what its integration was granted (narrowed by its own
        `scope` claim when it has one), while the integration holds live credentials."""
        assert self._external is not None
        client_id = claims.get(self._external.client_id_claim)
        if not isinstance(client_id, str) or not client_id:
            raise jwtverify.invalid_token(f"missing claim {self._external.client_id_claim}")
        async with self._uow(read_only=True) as uow:
            store = uow.credentials
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
            expires_at=expiry_of(claims), issuer=self._external.issuer, jti=str(claims.get("jti", "")),
        )

    async def jwks(self) -> str:
        """The JWKS document: current key first, then previous."""
        async with self._uow(read_only=True) as uow:
            keys = await uow.signing_keys.signing_keys(VERIFYING)
        return jwks_json(published_keys(keys))

    async def rotate_signing_key(self, actor: Actor, cmd: commands.RotateSigningKey) -> commands.RotatedKey:
        """A new current key; the old current verifies as previous, older previous retires.
        The keys sign every organisation's tokens, so only a platform operator rotates them."""
        actor.require(PLATFORM_PERMISSION)
        try:
            async with self._uow() as uow:
                key, previous = await self._ring.rotate(uow)
                now = self._clock()
                await uow.credentials_changed("signing_key_rotated", org_id=actor.org_id, now=now, kid=key.kid)
                await uow.audit(
                    "signing_key.rotated", org_id=actor.org_id, actor_id=actor.user_id,
                    object_type="signing_key", object_id=key.kid, now=now,
                    before={"current_kid": previous}, after={"current_kid": key.kid, "previous_kid": previous, "alg": key.alg},
                    request_id=cmd.request_id,
                )
                await uow.commit()
        except WriteConflict as exc:
            raise Aborted("another signing-key rotation ran at the same time; retry") from exc
        self._ring.forget_current()
        await uow.published()
        return commands.RotatedKey(kid=key.kid, previous_kid=previous)
