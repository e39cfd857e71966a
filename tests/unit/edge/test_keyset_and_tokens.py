"""Signing keys from a JWKS (refetched on an unknown kid, but not more often than allowed) and
local token verification with services.kit.jwtverify."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.edge.adapters.credentials import Issuer, KeySet, Tokens, parse_jwks
from services.edge.domain.errors import EdgeError
from services.kit import jwtverify

ISSUER, AUDIENCE = "https://edge.test", "trellis-api"


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **extra: object) -> dict[str, object]:
    public = key.public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, "use": "sig", **extra}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def test_parse_jwks_keeps_only_usable_signing_keys() -> None:
    document = json.dumps({"keys": [
        jwk(RSA_KEY, "good-rsa", alg="RS256"),
        jwk(EC_KEY, "good-ec"),
        jwk(RSA_KEY, "../../etc/passwd"),
        jwk(RSA_KEY, "wrong-alg", alg="HS256"),
        jwk(RSA_KEY, "encryption", use="enc"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "symmetric"},
        jwk(ec.generate_private_key(ec.SECP384R1()), "p384"),
    ]})
    assert set(parse_jwks(document, "test")) == {"good-rsa", "good-ec"}


async def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    clock = Clock()
    documents = [json.dumps({"keys": [jwk(RSA_KEY, "k1")]})]

    async def fetch() -> str:
        return documents[-1]

    keys = KeySet(fetch, ttl=300, refetch_interval=5, name="test", clock=clock)
    assert await keys.key("k1") is not None and keys.fetches == 1
    assert await keys.key("junk") is None and keys.fetches == 1  # just fetched: not again yet
    clock.now += 5
    for n in range(10):
        assert await keys.key(f"junk{n}") is None
    assert keys.fetches == 2  # the first junk kid refetched; the rest waited out the interval
    documents.append(json.dumps({"keys": [jwk(RSA_KEY, "k1"), jwk(EC_KEY, "k2")]}))
    assert await keys.key("k2") is None  # a real new kid inside the interval waits too...
    keys.invalidate()  # ...unless a rotation event said so
    assert await keys.key("k2") is not None and keys.fetches == 3
    clock.now += 301
    await keys.key("k1")
    assert keys.fetches == 4  # older than the TTL: refreshed


async def test_a_failed_refresh_keeps_the_keys_it_had() -> None:
    clock = Clock()
    answers: list[str | Exception] = [json.dumps({"keys": [jwk(RSA_KEY, "k1")]}), ConnectionError("identity down")]

    async def fetch() -> str:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    keys = KeySet(fetch, ttl=10, refetch_interval=1, name="test", clock=clock)
    assert await keys.key("k1") is not None
    clock.now += 11
    assert await keys.key("k1") is not None


async def test_keys_are_fetched_again_in_the_background_before_the_ttl_runs_out() -> None:
    clock = Clock()
    gate = asyncio.Event()
    documents = [json.dumps({"keys": [jwk(RSA_KEY, "k1")]}), json.dumps({"keys": [jwk(RSA_KEY, "k1"), jwk(EC_KEY, "k2")]})]

    async def fetch() -> str:
        if len(documents) == 1:
            await gate.wait()  # the refresh hangs: requests must not wait for it
        return documents.pop(0)

    keys = KeySet(fetch, ttl=100, refetch_interval=5, name="test", clock=clock)
    assert await keys.key("k1") is not None and keys.fetches == 1
    clock.now += 79
    assert await keys.key("k1") is not None
    await asyncio.sleep(0)
    assert keys.fetches == 1  # young enough: no refresh
    clock.now += 2  # past 80 % of the TTL
    assert await keys.key("k1") is not None  # answered from the keys it has, at once
    await asyncio.sleep(0)
    assert keys.fetches == 2
    assert await keys.key("k1") is not None and keys.fetches == 2  # one refresh at a time
    gate.set()
    while keys._refresh is not None:  # noqa: SLF001 - the background refresh, awaited by the test
        await asyncio.sleep(0)
    assert await keys.key("k2") is not None and keys.fetches == 2  # the refreshed document is in use


def sign(claims: dict[str, object], key: object = RSA_KEY, kid: str = "k1") -> str:
    return jwt.encode(claims, key, algorithm="RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256", headers={"kid": kid})


def own_claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "cl_1", "client_id": "cl_1", "integration_id": "int_1",
                                 "org_id": "org_1", "scope": "orders:read", "iat": now, "exp": now + 600}
    claims.update(changes)
    return claims


def tokens(external_claim: str = "azp") -> Tokens:
    async def own_jwks() -> str:
        return json.dumps({"keys": [jwk(RSA_KEY, "k1")]})

    async def external_jwks() -> str:
        return json.dumps({"keys": [jwk(EC_KEY, "ext1")]})

    own = Issuer(ISSUER, AUDIENCE, KeySet(own_jwks, ttl=60, refetch_interval=5, name="own"))
    external = Issuer("https://tenant.auth0.test/", "https://api", KeySet(external_jwks, ttl=60, refetch_interval=5, name="ext"),
                      external=True, client_id_claim=external_claim)
    return Tokens(own, external=external, ttl=30, token_url="https://edge.test/oauth/token")


async def test_own_tokens_are_verified_locally_and_cached_by_hash() -> None:
    verifier = tokens()
    token = sign(own_claims())
    grant = await verifier.verify(token)
    assert (grant.client_id, grant.integration_id, grant.org_id, grant.scopes) == ("cl_1", "int_1", "org_1", {"orders:read"})
    assert jwtverify.is_safe_kid("k1") and len(verifier.cache) == 1
    assert token not in repr(verifier.cache._entries)  # keyed by hash, never the token
    verifier.forget_client("cl_1")
    assert len(verifier.cache) == 0


# Claims are made when each test runs (not at collection), so a long suite cannot expire them.
@pytest.mark.parametrize(("make_claims", "code"), [
    (lambda: own_claims(client_id="cl_2"), "invalid_token"),   # sub and client_id disagree
    (lambda: own_claims(integration_id=None), "invalid_token"),
    (lambda: own_claims(exp=int(time.time()) - 60), "token_expired"),
    (lambda: own_claims(iat=None), "invalid_token"),
])
async def test_own_tokens_must_name_their_client_and_be_current(make_claims: Callable[[], dict[str, object]], code: str) -> None:
    claims = make_claims()
    with pytest.raises(EdgeError) as caught:
        await tokens().verify(sign({k: v for k, v in claims.items() if v is not None}))
    assert caught.value.code == code


async def test_external_tokens_use_the_external_keys_and_client_claim() -> None:
    now = int(time.time())
    claims = {"iss": "https://tenant.auth0.test/", "aud": "https://api", "sub": "x@clients", "azp": "auth0|abc",
              "iat": now, "exp": now + 600}
    grant = await tokens().verify(sign(claims, EC_KEY, "ext1"))
    assert (grant.client_id, grant.external, grant.scopes) == ("auth0|abc", True, None)
    with pytest.raises(EdgeError) as caught:  # an external token signed with our key's kid is not ours
        await tokens().verify(sign(claims, RSA_KEY, "k1"))
    assert caught.value.code == "invalid_token"
    with pytest.raises(EdgeError):
        await tokens(external_claim="client_id").verify(sign(claims, EC_KEY, "ext1"))
