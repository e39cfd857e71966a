"""Actor tokens: who is calling a gRPC method, for which organisation, with which permissions.

Every call carries `authorization: Bearer <jwt>` from the platform's user identity provider,
with `sub` (user id), `org` (organisation id) and `permissions`. The verifier pins the
algorithm to the key's type, and requires issuer, audience and expiry.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.kit.errors import PermissionDenied, Unauthenticated

ADMIN_PERMISSION = "administration_integrations_access"
QA_PERMISSION = "qa_access"
EDGE_PERMISSION = "trellis_edge"


@dataclass(frozen=True)
class Actor:
    """The verified caller of one request."""

    user_id: str
    org_id: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    # The raw token, forwarded when this service calls a peer on the actor's behalf.
    token: str = field(default="", repr=False, compare=False)

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(f"this action needs the {permission} permission", permission=permission)


_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("trellis_actor", default=None)


def current_actor() -> Actor:
    """The actor of the request being served; Unauthenticated outside a request."""
    actor = _current.get()
    if actor is None:
        raise Unauthenticated("no actor token on this call")
    return actor


def bind_actor(actor: Actor | None) -> contextvars.Token[Actor | None]:
    return _current.set(actor)


def reset_actor(token: contextvars.Token[Actor | None]) -> None:
    _current.reset(token)


def _algorithms_for(key: object) -> list[str]:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ["ES256"]
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256"]
    raise ValueError(f"unsupported actor key type {type(key).__name__}")


class ActorVerifier:
    """Verifies actor tokens against a PEM public key or a JWKS URL."""

    def __init__(self, *, issuer: str, audience: str, public_key_pem: bytes | None = None, jwks_url: str = "") -> None:
        if not public_key_pem and not jwks_url:
            raise ValueError("an actor verifier needs a public key or a JWKS URL")
        self._issuer, self._audience = issuer, audience
        self._key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None

    @classmethod
    def from_settings(cls, settings: "object") -> "ActorVerifier":
        pem = Path(settings.actor_public_key_file).read_bytes() if settings.actor_public_key_file else None  # type: ignore[attr-defined]
        return cls(
            issuer=settings.actor_issuer,  # type: ignore[attr-defined]
            audience=settings.actor_audience,  # type: ignore[attr-defined]
            public_key_pem=pem,
            jwks_url=settings.actor_jwks_url,  # type: ignore[attr-defined]
        )

    def verify(self, token: str) -> Actor:
        try:
            if self._key is not None:
                key, algorithms = self._key, _algorithms_for(self._key)
            else:
                assert self._jwks is not None
                signing = self._jwks.get_signing_key_from_jwt(token)
                key, algorithms = signing.key, _algorithms_for(signing.key)
            claims = jwt.decode(
                token,
                key=key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("actor token expired") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthenticated(f"actor token refused: {exc}") from exc
        org = claims.get("org")
        permissions = claims.get("permissions", [])
        if not isinstance(org, str) or not org:
            raise Unauthenticated("actor token has no organisation (org claim)")
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise Unauthenticated("actor token permissions must be a list of strings")
        return Actor(user_id=str(claims["sub"]), org_id=org, permissions=frozenset(permissions), token=token)


def generate_actor_key() -> tuple[bytes, bytes]:
    """A new P-256 key pair as (private PEM, public PEM), for the embedded mode."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def mint_actor_token(
    private_key_pem: bytes,
    *,
    issuer: str,
    audience: str,
    user_id: str,
    org_id: str,
    permissions: list[str] | tuple[str, ...],
    ttl_seconds: int = 900,
) -> str:
    """An actor token signed with a local key (embedded mode and tests)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    now = dt.datetime.now(dt.timezone.utc)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": user_id,
        "org": org_id,
        "permissions": list(permissions),
        "iat": now,
        "exp": now + dt.timedelta(seconds=ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=algorithm)
