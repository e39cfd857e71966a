"""External issuer mode: an external token issuer (an Auth0 tenant, say) whose tokens identity
also accepts, its keys fetched from its JWKS (application.ports.ExternalIssuerPort)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import jwt

from services.kit import jwtverify
from services.kit.errors import Unavailable
from services.kit.settings import PartnerSettings


@dataclass(frozen=True)
class ExternalIssuer:
    """An external token issuer and the client of its JWKS (cached keys, five-minute lifespan)."""

    issuer: str
    jwks: jwt.PyJWKClient
    audience: str
    client_id_claim: str

    @classmethod
    def from_settings(cls, settings: PartnerSettings) -> ExternalIssuer | None:
        issuer, url = settings.external_issuer, settings.external_jwks_url
        if not (issuer and url):
            return None
        return cls(
            issuer=issuer,
            jwks=jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5),
            audience=settings.external_audience,
            client_id_claim=settings.external_client_id_claim,
        )

    async def public_key(self, kid: str) -> jwtverify.PublicKey:
        try:
            jwk = await asyncio.to_thread(self.jwks.get_signing_key, kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise Unavailable("the external issuer's JWKS cannot be fetched") from exc
        except jwt.PyJWKClientError as exc:
            raise jwtverify.invalid_token("unknown signing key") from exc
        key: jwtverify.PublicKey = jwk.key  # algorithm_for below admits RSA and P-256 keys only
        try:
            jwtverify.algorithm_for(key)
        except ValueError as exc:
            raise jwtverify.invalid_token("unsupported external key type") from exc
        return key
