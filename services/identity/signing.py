"""JWT signing and verification for access tokens: key generation, JWKs, and a verifier that
cannot be talked into another algorithm.

The algorithm used to verify is always derived from the key (RSA -> RS256, P-256 -> ES256),
never from the token's header, so `alg: none` or HS256 signed with a public key PEM fail.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.identity.domain import SigningKey, is_safe_kid
from services.kit.errors import Unauthenticated

SUPPORTED_ALGORITHMS = ("RS256", "ES256")
RSA_KEY_BITS = 2048
# Claims a token must carry to be considered at all.
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# Clock skew tolerated between identity replicas and external issuers.
LEEWAY_SECONDS = 5

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def invalid_token(reason: str) -> Unauthenticated:
    return Unauthenticated(f"invalid_token: {reason}", error="invalid_token")


def token_expired() -> Unauthenticated:
    return Unauthenticated("token_expired: the access token has expired; request a new one", error="token_expired")


def generate_private_key(alg: str) -> PrivateKey:
    """A new key for `alg`: RSA 2048 for RS256, P-256 for ES256."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {', '.join(SUPPORTED_ALGORITHMS)}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def algorithm_for(key: object) -> str:
    """The only algorithm a key may verify (or sign) with, decided by its type."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public half of `key` as a JWK with kid, alg and use=sig."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        params = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        params = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**params, "kid": kid, "alg": algorithm_for(public), "use": "sig"}


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    key = jwt.PyJWK(dict(jwk)).key
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError("a signing JWK must hold an RSA or EC public key")
    return key


def sign(claims: Mapping[str, object], key: PrivateKey, *, kid: str) -> str:
    """A compact JWS of `claims`, `kid` in the header, algorithm from the key's type."""
    return jwt.encode(dict(claims), key, algorithm=algorithm_for(key), headers={"kid": kid, "typ": "JWT"})


def jwks_json(keys: Iterable[SigningKey]) -> str:
    """A JWKS document listing `keys` (the caller picks current and previous)."""
    return json.dumps({"keys": [dict(k.public_jwk) for k in keys]}, separators=(",", ":"))


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


def verify(token: str, key: PublicKey, *, issuer: str, audience: str | None, leeway: float = LEEWAY_SECONDS) -> dict[str, Any]:
    """The claims of `token` if its signature, issuer, audience and times are right.

    Raises Unauthenticated `token_expired` for an expired token, `invalid_token` otherwise.
    """
    options: dict[str, Any] = {"require": list(REQUIRED_CLAIMS) if audience else [c for c in REQUIRED_CLAIMS if c != "aud"]}
    if not audience:
        options["verify_aud"] = False
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[algorithm_for(key)],
            issuer=issuer,
            audience=audience,
            options=options,  # type: ignore[arg-type]
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
    return claims


def expiry_of(claims: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(claims["exp"]), tz=dt.timezone.utc)
