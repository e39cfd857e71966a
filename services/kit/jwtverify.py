"""Verifying JWTs (access tokens) without being talked into another algorithm.

Service-agnostic: identity verifies its own and an external issuer's tokens with it, and the
edge verifies the same tokens locally against identity's JWKS. The algorithm is always derived
from the key (RSA -> RS256, P-256 -> ES256), never from the token's header, so `alg: none` or
HS256 signed with a public key PEM fail. Failures are `Unauthenticated` with
`fields["error"]` either `token_expired` or `invalid_token`, and a reason safe to show.

`exp`, `iat` and `nbf` must be JSON integers: PyJWT alone takes anything `int()` takes (the
string "9999999999", true, 1.7e9), and a caller reading them back could be told another time.
With `max_lifetime` (our own tokens: TRELLIS_TOKEN_TTL_SECONDS), a token whose `exp - iat` is
longer than the issuer ever gives is refused even though its signature is good: a token signed
by a leaked or misused key cannot be made to live for years.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.kit.errors import Unauthenticated

if TYPE_CHECKING:
    from jwt.types import Options

# Claims a token must carry to be considered at all.
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
# Clock skew tolerated between token issuers and verifiers.
LEEWAY_SECONDS = 5
_SAFE_KID = re.compile(r"[A-Za-z0-9_.-]{1,128}")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def invalid_token(reason: str) -> Unauthenticated:
    return Unauthenticated(f"invalid_token: {reason}", error="invalid_token", reason=reason)


def token_expired() -> Unauthenticated:
    return Unauthenticated("token_expired: the access token has expired; request a new one", error="token_expired")


def is_safe_kid(kid: object) -> bool:
    """A `kid` header we are willing to look up: a short URL-safe word, no paths or spaces."""
    return isinstance(kid, str) and bool(_SAFE_KID.fullmatch(kid)) and ".." not in kid


def algorithm_for(key: object) -> str:
    """The only algorithm a key may verify (or sign) with, decided by its type."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """The public key of a signing JWK; refused unless RSA or P-256 and its `alg`, when
    present, is the one its type allows."""
    key = jwt.PyJWK(dict(jwk)).key
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError("a signing JWK must hold an RSA or EC public key")
    alg = algorithm_for(key)
    if jwk.get("alg", alg) != alg:
        raise ValueError(f"JWK alg {jwk.get('alg')!r} does not match its {alg} key")
    return key


def read_header(token: str) -> dict[str, Any]:
    """The unverified header, refused unless it names a safe `kid`."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise invalid_token("malformed token") from exc
    if not is_safe_kid(header.get("kid")):
        raise invalid_token("missing or malformed kid")
    return header


def read_unverified_issuer(token: str) -> str:
    """The `iss` claim before verification: only to choose which keys to try."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise invalid_token("malformed token") from exc
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else ""


def numeric_date_problem(claims: Mapping[str, Any]) -> str | None:
    """Why one of `exp`, `iat`, `nbf` (those present) is not a whole number of seconds, or None."""
    for name in ("exp", "iat", "nbf"):
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], int)):
            return f"{name} must be an integer number of seconds"
    return None


def verify(token: str, key: PublicKey, *, issuer: str, audience: str | None, leeway: float = LEEWAY_SECONDS,
           max_lifetime: float | None = None) -> dict[str, Any]:
    """The claims of `token` if its signature, issuer, audience and times are right.

    `nbf` is honoured when present; `exp`, `iat` and `nbf` must be integers. With `max_lifetime`
    (seconds), `exp - iat` may exceed it by `leeway` at most. Raises Unauthenticated
    `token_expired` for an expired token, `invalid_token` otherwise. `audience=None` skips the
    audience (and does not require it).
    """
    required = [c for c in REQUIRED_CLAIMS if audience or c != "aud"]
    options: Options = {"require": required}
    if not audience:
        options["verify_aud"] = False
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[algorithm_for(key)],
            issuer=issuer,
            audience=audience,
            options=options,
            leeway=leeway,
        )
    except jwt.ExpiredSignatureError as exc:
        raise token_expired() from exc
    except jwt.ImmatureSignatureError as exc:
        raise invalid_token("token not yet valid") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise invalid_token(f"missing claim {exc.claim}") from exc
    except jwt.InvalidIssuerError as exc:
        raise invalid_token("wrong issuer") from exc
    except jwt.InvalidAudienceError as exc:
        raise invalid_token("wrong audience") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise invalid_token("algorithm not allowed for this key") from exc
    except jwt.InvalidSignatureError as exc:
        raise invalid_token("bad signature") from exc
    except (jwt.PyJWTError, ValueError) as exc:
        raise invalid_token("token refused") from exc
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise invalid_token("sub must be a non-empty string")
    problem = numeric_date_problem(claims)
    if problem:
        raise invalid_token(problem)
    if max_lifetime is not None and claims["exp"] - claims["iat"] > max_lifetime + leeway:
        raise invalid_token(f"the token's lifetime is longer than the {max_lifetime:g} s its issuer gives")
    return claims
