"""Actor tokens: who is calling a gRPC method, for which organisation, with which permissions.

Every call carries `authorization: Bearer <jwt>` from the platform's user identity provider,
with `sub` (user id), `org` (organisation id) and `permissions`. The verifier pins the
algorithm to the key's type, and requires issuer, audience and expiry.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.kit.errors import PermissionDenied, Unauthenticated
from services.kit.settingcheck import SettingError
from services.kit.ids import is_request_id

if TYPE_CHECKING:  # the settings (pydantic) are not imported with this module, for the CLI's start
    from services.kit.settings import KitSettings

# PyJWT is imported where tokens are verified or minted, not with this module: the CLI takes
# the permission names from here and signs its own tokens, and a CLI command's start-up time
# is mostly imports (docs/benchmarks.md, "CLI").

ADMIN_PERMISSION = "administration_integrations_access"
QA_PERMISSION = "qa_access"
EDGE_PERMISSION = "trellis_edge"
# Operations on what every organisation shares (the partner-token signing keys): the platform's
# operators, not an organisation's administrators.
PLATFORM_PERMISSION = "trellis_platform_operations"


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


def _with_algorithms(key: object) -> tuple[ec.EllipticCurvePublicKey | rsa.RSAPublicKey, list[str]]:
    """The key as a verification key, with the one algorithm Trellis accepts for its type."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, ["ES256"]
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    raise ValueError(f"unsupported actor key type {type(key).__name__}")


# Verified actor tokens remembered per process (ActorVerifier.verify): how many, and for how long
# at most. A service is called with the same few tokens over and over (the edge's and the
# registry's service tokens, a console user's session), and a signature check is most of what an
# actor costs.
VERIFIED_CACHE_SIZE = 1024
VERIFIED_CACHE_SECONDS = 60.0
# PyJWKClient's key cache (JWKS mode): a key dropped from the JWKS is still honoured this long.
JWKS_LIFESPAN_SECONDS = 300


class ActorVerifier:
    """Verifies actor tokens against a PEM public key or a JWKS URL.

    A token that verified is remembered, keyed by the SHA-256 of the whole token (its
    signature included), until the earlier of its `exp` and VERIFIED_CACHE_SECONDS after it was
    checked, for at most VERIFIED_CACHE_SIZE tokens (least recently used goes first). That
    grants nothing a fresh check would refuse: actor tokens are bearer tokens with no
    revocation list, good until `exp` by their signature alone, so re-checking the same bytes
    with the same key can only give the same answer until then; the remembered entry ends at
    `exp` exactly (without the 30 s leeway a fresh check allows, which then applies as before);
    the PEM key is read once per process; and in JWKS mode a key removed from the JWKS is
    honoured for JWKS_LIFESPAN_SECONDS by PyJWKClient's own cache already, longer than an entry
    lives. Refusals are never remembered: each one is checked again in full.
    """

    def __init__(self, *, issuer: str, audience: str, public_key_pem: bytes | None = None, jwks_url: str = "",
                 clock: Callable[[], float] = time.time, cache_size: int = VERIFIED_CACHE_SIZE,
                 cache_seconds: float = VERIFIED_CACHE_SECONDS) -> None:
        if not public_key_pem and not jwks_url:
            raise ValueError("an actor verifier needs a public key or a JWKS URL")
        import jwt

        self._issuer, self._audience = issuer, audience
        self._key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=JWKS_LIFESPAN_SECONDS) if jwks_url else None
        self._clock = clock
        self._cache_size, self._cache_seconds = cache_size, cache_seconds
        # sha256(token) -> (the actor, the clock reading until which it may be handed out again)
        self._verified: OrderedDict[bytes, tuple[Actor, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: KitSettings) -> "ActorVerifier":
        key_file = settings.actor_public_key_file
        try:
            return cls(
                issuer=settings.actor_issuer,
                audience=settings.actor_audience,
                public_key_pem=Path(key_file).read_bytes() if key_file else None,
                jwks_url=settings.actor_jwks_url,
            )
        except (OSError, ValueError) as exc:  # a file that is missing or not a PEM public key
            raise SettingError("TRELLIS_ACTOR_PUBLIC_KEY_FILE", f"a readable PEM public key file ({exc})",
                               given=key_file or None) from exc

    def verify(self, token: str) -> Actor:
        """The actor of a good token (remembered or checked now); Unauthenticated otherwise."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        remembered = self._verified.get(digest)
        if remembered is not None:
            if now < remembered[1]:
                self._verified.move_to_end(digest)
                return remembered[0]
            del self._verified[digest]
        actor, exp = self._check(token)
        until = min(float(exp), now + self._cache_seconds)
        if self._cache_size > 0 and until > now:
            self._verified[digest] = (actor, until)
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return actor

    def _check(self, token: str) -> tuple[Actor, int]:
        """The actor of `token` and its `exp`, verified in full."""
        # PyJWT loads where tokens are verified or minted, not in every CLI command (bench/cli).
        import jwt

        from services.kit import jwtverify

        try:
            if self._key is not None:
                key, algorithms = _with_algorithms(self._key)
            else:
                assert self._jwks is not None
                signing = self._jwks.get_signing_key_from_jwt(token)
                key, algorithms = _with_algorithms(signing.key)
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
        # PyJWT takes any value int() takes ("9999999999", true); times must be integers. The
        # lifetime is not bounded here: actor tokens come from the platform's identity provider
        # and from service token files (a projected Kubernetes token, the dev overlay's 30-day
        # edge token), whose lifetimes Trellis does not set.
        problem = jwtverify.numeric_date_problem(claims)
        if problem:
            raise Unauthenticated(f"actor token refused: {problem}")
        org = claims.get("org")
        permissions = claims.get("permissions", [])
        if not isinstance(org, str) or not org:
            raise Unauthenticated("actor token has no organisation (org claim)")
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise Unauthenticated("actor token permissions must be a list of strings")
        actor = Actor(user_id=str(claims["sub"]), org_id=org, permissions=frozenset(permissions), token=token)
        return actor, claims["exp"]


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
    import jwt

    # Any other key type is refused by jwt.encode itself, as before this narrowing for the checker.
    key = cast(ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
               serialization.load_pem_private_key(private_key_pem, password=None))
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


# --- service identity ---------------------------------------------------------------------------

# The embedded launcher keeps the local actor key pair here (services/cli/embedded.py).
EMBEDDED_PRIVATE_KEY = Path("secrets") / "actor_private.pem"


class ServiceTokenSource:
    """The bearer token a service presents to its peers, always current.

    Either mints short-lived actor tokens with a local private key (the embedded mode), renewing
    each when a third of its life is left, or reads a token file and re-reads it when the file
    changes (a Kubernetes projected service-account token is swapped in place).
    """

    def __init__(self, *, private_key_pem: bytes | None = None, token_file: str | Path | None = None,
                 issuer: str = "", audience: str = "", user_id: str = "", org_id: str = "",
                 permissions: tuple[str, ...] = (), ttl_seconds: int = 300, clock: Callable[[], float] = time.time) -> None:
        if (private_key_pem is None) == (token_file is None):
            raise ValueError("a service token source needs exactly one of a private key and a token file")
        self._private_key_pem = private_key_pem
        self._file = Path(token_file) if token_file is not None else None
        self._issuer, self._audience = issuer, audience
        self._user_id, self._org_id, self._permissions = user_id, org_id, tuple(permissions)
        self._ttl = ttl_seconds
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0
        self._file_stamp: tuple[int, int, int] | None = None

    @classmethod
    def from_settings(cls, settings: KitSettings, *, user_id: str, org_id: str = "trellis",
                      permissions: tuple[str, ...] = (EDGE_PERMISSION,)) -> "ServiceTokenSource":
        """Embedded mode: mint with `actor_private_key_file` (default: the launcher's local key);
        otherwise: read `service_token_file`, which must be set."""
        token_file = settings.service_token_file
        if token_file:
            return cls(token_file=token_file)
        if settings.mode.value != "embedded":
            raise SettingError("TRELLIS_SERVICE_TOKEN_FILE", "the file of the service's own token outside the embedded mode")
        key_file = settings.actor_private_key_file or str(Path(settings.data_dir) / EMBEDDED_PRIVATE_KEY)
        try:
            pem = Path(key_file).read_bytes()
        except OSError as exc:
            raise SettingError("TRELLIS_ACTOR_PRIVATE_KEY_FILE", f"a readable local actor private key ({exc})",
                               given=key_file) from exc
        return cls(private_key_pem=pem, issuer=settings.actor_issuer, audience=settings.actor_audience,
                   user_id=user_id, org_id=org_id, permissions=permissions)

    def token(self) -> str:
        """The current token (minted or re-read when due)."""
        if self._file is not None:
            return self._read_file(self._file)
        now = self._clock()
        if now >= self._renew_at:
            assert self._private_key_pem is not None
            self._token = mint_actor_token(
                self._private_key_pem, issuer=self._issuer, audience=self._audience, user_id=self._user_id,
                org_id=self._org_id, permissions=self._permissions, ttl_seconds=self._ttl,
            )
            self._renew_at = now + self._ttl * 2 / 3
        return self._token

    def metadata(self, request_id: str = "") -> tuple[tuple[str, str], ...]:
        """gRPC call metadata carrying the token (and the request id when given and sendable)."""
        md: list[tuple[str, str]] = [("authorization", f"Bearer {self.token()}")]
        if request_id and is_request_id(request_id):
            md.append(("x-request-id", request_id))
        return tuple(md)

    def _read_file(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError as exc:
            raise Unauthenticated(f"the service token file {path} cannot be read: {exc}") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._file_stamp:
            self._token = path.read_text().strip()
            self._file_stamp = stamp
        return self._token
