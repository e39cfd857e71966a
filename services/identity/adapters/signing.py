"""JWT signing for access tokens: key generation, PEM round trips, JWKs and signing.

Verification is not here: identity verifies with services.kit.jwtverify, the same code the
edge uses, so the two can never disagree about which token is good. The algorithm a key signs
with is decided by its type (RSA -> RS256, P-256 -> ES256), as jwtverify decides the one it
verifies with.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.identity.domain.model import SigningKey
from services.kit.jwtverify import algorithm_for

SUPPORTED_ALGORITHMS = ("RS256", "ES256")
RSA_KEY_BITS = 2048

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


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


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public half of `key` as a JWK with kid, alg and use=sig."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        params = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        params = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**params, "kid": kid, "alg": algorithm_for(public), "use": "sig"}


def sign(claims: Mapping[str, object], key: PrivateKey, *, kid: str) -> str:
    """A compact JWS of `claims`, `kid` in the header, algorithm from the key's type."""
    return jwt.encode(dict(claims), key, algorithm=algorithm_for(key), headers={"kid": kid, "typ": "JWT"})


def jwks_json(keys: Iterable[SigningKey]) -> str:
    """A JWKS document listing `keys` (the caller picks current and previous)."""
    return json.dumps({"keys": [dict(k.public_jwk) for k in keys]}, separators=(",", ":"))


def expiry_of(claims: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(claims["exp"]), tz=dt.timezone.utc)
