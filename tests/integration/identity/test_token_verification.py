"""VerifyAccessToken cannot be confused: forged, expired, misaddressed or foreign-keyed tokens are
refused; rotation keeps earlier tokens valid while the previous key is published."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.identity.adapters import signing
from tests.integration.identity.conftest import Identity, Metadata, issue
from tests.support.signing_keys import current_private_key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


async def verify(identity: Identity, edge: Metadata, token: str) -> pb.VerifyAccessTokenResponse:
    return await identity.stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token), metadata=edge)


async def refused_token(identity: Identity, edge: Metadata, token: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await verify(identity, edge, token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return caught.value.details() or ""


@pytest.fixture
async def genuine(identity: Identity, admin: Metadata, edge: Metadata) -> dict:
    """A genuine token's claims, the real current key, and its kid, to forge variations from."""
    creds = await issue(identity.stub, admin)
    token = await identity.stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge)
    kid, key = await current_private_key(identity.settings)
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    # The genuine token is accepted, so each refusal below is for the one thing changed.
    await verify(identity, edge, token.access_token)
    return {"claims": claims, "kid": kid, "key": key, "token": token.access_token}


def resign(genuine: dict, *, drop: tuple[str, ...] = (), kid: str | None = None, **changes: object) -> str:
    claims = {k: v for k, v in {**genuine["claims"], **changes}.items() if k not in drop}
    return jwt.encode(claims, genuine["key"], algorithm="RS256", headers={"kid": kid or genuine["kid"]})


async def test_alg_none_is_refused(identity: Identity, edge: Metadata, genuine: dict) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": genuine["kid"]}, genuine["claims"]) + "."
    assert (await refused_token(identity, edge, token)).startswith("invalid_token: algorithm not allowed")


async def test_hs256_signed_with_the_public_key_pem_is_refused(identity: Identity, edge: Metadata, genuine: dict) -> None:
    public_pem = genuine["key"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = unsigned({"alg": "HS256", "typ": "JWT", "kid": genuine["kid"]}, genuine["claims"])
    token = body + "." + b64(hmac.new(public_pem, body.encode(), hashlib.sha256).digest())
    assert (await refused_token(identity, edge, token)).startswith("invalid_token: algorithm not allowed")


async def test_expired_token_is_token_expired(identity: Identity, edge: Metadata, genuine: dict) -> None:
    now = int(time.time())
    details = await refused_token(identity, edge, resign(genuine, iat=now - 7200, nbf=now - 7200, exp=now - 3600))
    assert details.startswith("token_expired")


async def test_token_not_yet_valid_is_refused(identity: Identity, edge: Metadata, genuine: dict) -> None:
    details = await refused_token(identity, edge, resign(genuine, nbf=int(time.time()) + 600))
    assert details.startswith("invalid_token: token not yet valid")


@pytest.mark.parametrize("claim,value,reason", [("iss", "https://evil.example", "wrong issuer"), ("aud", "another-api", "wrong audience")])
async def test_token_for_another_issuer_or_audience_is_refused(identity: Identity, edge: Metadata, genuine: dict,
                                                               claim: str, value: str, reason: str) -> None:
    assert (await refused_token(identity, edge, resign(genuine, **{claim: value}))).startswith(f"invalid_token: {reason}")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub"])
async def test_token_missing_a_required_claim_is_refused(identity: Identity, edge: Metadata, genuine: dict, claim: str) -> None:
    assert (await refused_token(identity, edge, resign(genuine, drop=(claim,)))).startswith(f"invalid_token: missing claim {claim}")


@pytest.mark.parametrize("changes,reason", [
    ({"exp_after_iat": 10 * 365 * 86400}, "the token's lifetime is longer than"),
    ({"exp": "9999999999"}, "exp must be an integer"),
    ({"iat": 1.5}, "iat must be an integer"),
    ({"nbf": "0"}, "nbf must be an integer"),
])
async def test_our_own_signature_does_not_save_a_token_outliving_the_ttl_or_with_odd_times(
        identity: Identity, edge: Metadata, genuine: dict, changes: dict, reason: str) -> None:
    if "exp_after_iat" in changes:
        changes = {"exp": genuine["claims"]["iat"] + changes["exp_after_iat"]}
    assert (await refused_token(identity, edge, resign(genuine, **changes))).startswith(f"invalid_token: {reason}")


@pytest.mark.parametrize("kid", ["sk_" + "0" * 32, "../../x", "../../../etc/passwd", None])
async def test_unknown_path_like_or_missing_kid_is_refused(identity: Identity, edge: Metadata, genuine: dict, kid: str | None) -> None:
    headers = {"kid": kid} if kid is not None else None
    token = jwt.encode(genuine["claims"], genuine["key"], algorithm="RS256", headers=headers)
    assert (await refused_token(identity, edge, token)).startswith("invalid_token")


async def test_token_signed_by_another_key_under_our_kid_is_refused(identity: Identity, edge: Metadata, genuine: dict) -> None:
    impostor = {**genuine, "key": signing.generate_private_key("RS256")}
    assert (await refused_token(identity, edge, resign(impostor))).startswith("invalid_token: bad signature")


async def test_token_with_claims_edited_after_signing_is_refused(identity: Identity, edge: Metadata, genuine: dict) -> None:
    header, _, signature = genuine["token"].split(".")
    claims = {**genuine["claims"], "scope": "inventory:read orders:write finance:write"}
    assert (await refused_token(identity, edge, f"{header}.{b64(json.dumps(claims).encode())}.{signature}")).startswith("invalid_token")


async def test_garbage_is_refused(identity: Identity, edge: Metadata) -> None:
    for token in ("", "not-a-jwt", "a.b.c", "...."):
        assert (await refused_token(identity, edge, token)).startswith("invalid_token")


async def test_rotation_keeps_earlier_tokens_valid_and_signs_new_ones_with_the_new_key(
    identity: Identity, admin: Metadata, operator: Metadata, edge: Metadata
) -> None:
    stub = identity.stub
    creds = await issue(stub, admin)
    grant = pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret)
    before = (await stub.IssueToken(grant, metadata=edge)).access_token
    old_kid = jwt.get_unverified_header(before)["kid"]

    rotated = await stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=operator)
    assert rotated.previous_kid == old_kid and rotated.kid != old_kid

    jwks = json.loads((await stub.GetJwks(pb.GetJwksRequest())).jwks_json)
    assert [k["kid"] for k in jwks["keys"]] == [rotated.kid, old_kid]
    await verify(identity, edge, before)
    after = (await stub.IssueToken(grant, metadata=edge)).access_token
    assert jwt.get_unverified_header(after)["kid"] == rotated.kid
    await verify(identity, edge, after)
    # The published JWKS alone verifies both tokens (what an edge does locally).
    for token in (before, after):
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=identity.settings.token_audience)

    # A second rotation retires the first key: its tokens stop verifying.
    second = await stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=operator)
    jwks = json.loads((await stub.GetJwks(pb.GetJwksRequest())).jwks_json)
    assert [k["kid"] for k in jwks["keys"]] == [second.kid, rotated.kid]
    assert (await refused_token(identity, edge, before)).startswith("invalid_token: unknown signing key")
    await verify(identity, edge, after)


async def test_es256_signing_is_supported(start_identity, admin: Metadata, edge: Metadata) -> None:
    identity = await start_identity(token_algorithm="ES256")
    creds = await issue(identity.stub, admin)
    token = await identity.stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge)
    assert jwt.get_unverified_header(token.access_token)["alg"] == "ES256"
    jwks = json.loads((await identity.stub.GetJwks(pb.GetJwksRequest())).jwks_json)
    assert jwks["keys"][0]["kty"] == "EC" and jwks["keys"][0]["alg"] == "ES256"
    assert (await verify(identity, edge, token.access_token)).client_id == creds.client_id
