"""JWT signing for access tokens: key generation, PEM round trips, JWKs, sealing private keys
at rest and signing; `JwtSigning` is the application's TokenSigning port over them.

Verification is not here: identity verifies with services.kit.jwtverify, the same code the
edge uses, so the two can never disagree about which token is good. The algorithm a key signs
with is decided by its type (RSA -> RS256, P-256 -> ES256), as jwtverify decides the one it
verifies with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.identity.application.ports import GeneratedKey, Sign
from services.identity.domain.model import jwks_json
from services.kit.crypto import DecryptionError, Envelope, aad_for
from services.kit.errors import Unavailable
from services.kit.jwtverify import algorithm_for

log = logging.getLogger(__name__)

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


def private_key_aad(kid: str) -> bytes:
    """Binds a sealed private key to its own row: moved to another kid, it fails to open."""
    return aad_for("signing_keys", "private_key", kid)


def seal_private_key(envelope: Envelope, kid: str, key: PrivateKey) -> bytes:
    return envelope.seal(private_key_pem(key), private_key_aad(kid))


def open_private_key(envelope: Envelope, kid: str, sealed: bytes) -> PrivateKey:
    return load_private_key(envelope.open(sealed, private_key_aad(kid)))


class JwtSigning:
    """application.ports.TokenSigning: keys of `algorithm` (RS256: RSA 2048; ES256: P-256), their
    private halves sealed by `envelope` to their kid, tokens signed with PyJWT."""

    def __init__(self, envelope: Envelope, algorithm: str) -> None:
        self._envelope = envelope
        self._algorithm = algorithm

    @property
    def algorithm(self) -> str:
        return self._algorithm

    async def generate(self, kid: str) -> GeneratedKey:
        # RSA key generation takes a while: off the event loop.
        private = await asyncio.to_thread(generate_private_key, self._algorithm)
        return GeneratedKey(public_jwk=public_jwk(private, kid), sealed_private_key=seal_private_key(self._envelope, kid, private))

    def signer(self, kid: str, sealed_private_key: bytes) -> Sign:
        try:
            key = open_private_key(self._envelope, kid, sealed_private_key)
        except DecryptionError as exc:
            log.error("signing key %s does not open: %s", kid, exc)
            raise Unavailable("the current signing key cannot be opened; check TRELLIS_KEK and TRELLIS_KEK_PREVIOUS") from exc

        def sign_claims(claims: Mapping[str, object]) -> str:
            return sign(claims, key, kid=kid)

        return sign_claims


# jwks_json is the domain's, named here too for tests that build a JWKS of their own keys.
__all__ = [
    "SUPPORTED_ALGORITHMS", "JwtSigning", "PrivateKey", "generate_private_key", "jwks_json",
    "load_private_key", "open_private_key", "private_key_aad", "public_jwk", "seal_private_key", "sign",
]
