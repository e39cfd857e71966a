"""Attacks on the edge, each written as a test: forged and doctored tokens, mixed-up credentials,
stale grants, spoofed addresses and identity headers, oversized requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.edge.entrypoints.main import RunningEdge
from services.identity.adapters import signing
from tests.support.settings import Settings
from tests.integration.edge.conftest import Partner, ProvisionPartner, Upstream, call, fetch_token, partner_headers, restrict_to
from tests.support.signing_keys import current_private_key
from tests.support.waiting import eventually

StartEdge = Callable[..., Awaitable[RunningEdge]]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(partner: Partner, settings: Settings, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.token_issuer, "aud": settings.token_audience, "sub": partner.client_id,
        "client_id": partner.client_id, "integration_id": partner.integration_id, "org_id": partner.org_id,
        "scope": "inventory:read inventory:write", "iat": now, "nbf": now, "exp": now + 600, "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
async def forge(make_settings: Callable[..., Settings]) -> Callable[..., Awaitable[str]]:
    """forge(partner, **claim changes) -> a token signed with identity's real current key."""
    settings = make_settings()
    kid, key = await current_private_key(settings)

    async def _forge(partner: Partner, **changes: Any) -> str:
        return signing.sign(claims_for(partner, settings, **changes), key, kid=kid)

    return _forge


async def refused_with(http: aiohttp.ClientSession, edge: str, token: str, partner: Partner, path: str = "/api/lots") -> tuple[str, str]:
    status, _, body = await call(http, "GET", f"{edge}{path}", headers=partner_headers(token, partner))
    assert status == 401, body
    return body["error"], body["message"]


async def test_a_token_forged_with_identitys_key_passes_so_the_forgeries_below_test_one_thing(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, forge: Callable[..., Awaitable[str]]
) -> None:
    partner = await provision()
    status, _, body = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(await forge(partner), partner))
    assert status == 200, body


async def test_alg_none_is_refused(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner,
                                   make_settings: Callable[..., Settings]) -> None:
    partner = await provision()
    kid, _ = await current_private_key(make_settings())
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    token = f"{header}.{b64(json.dumps(claims_for(partner, make_settings())).encode())}."
    assert (await refused_with(http, edge, token, partner))[0] == "invalid_token"


async def test_hs256_signed_with_the_public_key_is_refused(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner,
                                                         make_settings: Callable[..., Settings]) -> None:
    partner = await provision()
    kid, key = await current_private_key(make_settings())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "."
                     + b64(json.dumps(claims_for(partner, make_settings())).encode()))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    code, message = await refused_with(http, edge, f"{signing_input}.{b64(signature)}", partner)
    assert code == "invalid_token" and "algorithm" in message


@pytest.mark.parametrize(("changes", "code", "reason"), [
    ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 4000, "nbf": int(time.time()) - 4000}, "token_expired", "expired"),
    ({"nbf": int(time.time()) + 3600}, "invalid_token", "not yet valid"),
    ({"iss": "https://evil.example"}, "invalid_token", "wrong issuer"),
    ({"aud": "someone-else"}, "invalid_token", "wrong audience"),
    ({"exp": None}, "invalid_token", "missing claim exp"),
])
async def test_doctored_claims_are_refused(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner,
                                           forge: Callable[..., Awaitable[str]], changes: dict[str, Any], code: str, reason: str) -> None:
    partner = await provision()
    got, message = await refused_with(http, edge, await forge(partner, **changes), partner)
    assert got == code and reason in message


TTL = 3600  # TRELLIS_TOKEN_TTL_SECONDS in these tests (the default)


# Each case is a function of the time the test runs, so none expires before it is tried.
@pytest.mark.parametrize(("changes", "reason"), [
    (lambda now: {"iat": now, "nbf": now, "exp": now + 10 * 365 * 86400}, "lifetime is longer than the 3600 s"),
    (lambda now: {"iat": now - TTL, "nbf": now - TTL, "exp": now + 600}, "lifetime is longer than the 3600 s"),
    (lambda now: {"iat": None}, "missing claim iat"),
    (lambda now: {"exp": str(now + 600)}, "exp must be an integer"),
    (lambda now: {"exp": now + 600.5}, "exp must be an integer"),
    (lambda now: {"iat": str(now)}, "iat must be an integer"),
    (lambda now: {"nbf": float(now)}, "nbf must be an integer"),
    (lambda now: {"nbf": False}, "nbf must be an integer"),
])
async def test_a_token_signed_with_our_key_but_outliving_the_token_ttl_or_with_odd_times_is_invalid(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, forge: Callable[..., Awaitable[str]],
    changes: Callable[[int], dict[str, Any]], reason: str,
) -> None:
    partner = await provision()
    got, message = await refused_with(http, edge, await forge(partner, **changes(int(time.time()))), partner)
    assert got == "invalid_token" and reason in message, message


async def test_a_token_living_the_token_ttl_give_or_take_the_clock_skew_is_accepted(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, forge: Callable[..., Awaitable[str]]
) -> None:
    partner = await provision()
    issued = int(time.time()) - 10
    token = await forge(partner, iat=issued, nbf=issued, exp=issued + TTL + 3)
    status, _, body = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(token, partner))
    assert status == 200, body


async def test_unknown_kids_are_refused_without_hammering_identity(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, make_settings: Callable[..., Settings]
) -> None:
    partner = await provision()
    stranger = signing.generate_private_key("RS256")
    claims = claims_for(partner, make_settings())
    await fetch_token(http, edge, partner)  # nothing to do with the JWKS; just a warm edge

    async def fetches() -> float:
        async with http.get(f"{edge}/metrics") as response:
            text = await response.text()
        return float(re.search(r"^trellis_edge_jwks_fetches (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]

    before = await fetches()
    for n in range(20):
        token = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": f"sk_junk_{n}"})
        code, message = await refused_with(http, edge, token, partner)
        assert code == "invalid_token" and "unknown signing key" in message
    assert await fetches() - before <= 1


async def test_a_kid_carrying_a_path_is_refused(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner,
                                                make_settings: Callable[..., Settings]) -> None:
    partner = await provision()
    _, key = await current_private_key(make_settings())
    for kid in ("../../etc/passwd", "/etc/passwd", "a b", "x" * 200):
        token = jwt.encode(claims_for(partner, make_settings()), key, algorithm="RS256", headers={"kid": kid})
        code, message = await refused_with(http, edge, token, partner)
        assert code == "invalid_token" and "kid" in message


async def test_integration_as_token_with_integration_bs_key_is_a_mismatch(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner
) -> None:
    a, b = await provision(), await provision()
    token_a = await fetch_token(http, edge, a)
    status, headers, body = await call(http, "GET", f"{edge}/api/lots", headers={"Authorization": f"Bearer {token_a}",
                                                                                 "X-API-Key": b.api_key})
    assert (status, body["error"]) == (401, "credentials_mismatch")
    assert "same integration" in body["message"]


async def test_a_suspended_integrations_unexpired_token_is_refused(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, registry_stub: registry_pb2_grpc.RegistryStub
) -> None:
    partner = await provision()
    token = await fetch_token(http, edge, partner)
    assert (await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(token, partner)))[0] == 200
    await registry_stub.SuspendIntegration(rpb.SuspendIntegrationRequest(integration_id=partner.integration_id, reason="leak"),
                                           metadata=partner.approver)
    assert (await refused_with(http, edge, token, partner))[0] == "integration_inactive"
    # Reactivated (by another administrator) with new credentials: the old ones stay dead.
    await registry_stub.ReactivateIntegration(rpb.ReactivateIntegrationRequest(integration_id=partner.integration_id),
                                              metadata=partner.admin)
    assert (await refused_with(http, edge, token, partner))[0] == "invalid_api_key"


async def test_spoofed_x_forwarded_for_from_an_untrusted_peer_changes_nothing(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream,
    registry_stub: registry_pb2_grpc.RegistryStub
) -> None:
    locked = await provision()
    spoofed = partner_headers(await fetch_token(http, edge, locked), locked, **{"X-Forwarded-For": "192.0.2.7"})
    await restrict_to(registry_stub, locked, "192.0.2.7/32")

    async def refused() -> tuple[int, str] | None:
        status, _, body = await call(http, "GET", f"{edge}/api/lots", headers=spoofed)
        return (status, body["error"]) if status != 200 else None

    assert await eventually(refused, what="the allowlist to reach the edge") == (403, "ip_not_allowed")
    # Nor does the token endpoint believe it.
    basic = {"Authorization": aiohttp.encode_basic_auth(locked.client_id, locked.client_secret), "X-Forwarded-For": "192.0.2.7"}
    status, _, body = await call(http, "POST", f"{edge}/oauth/token", data={"grant_type": "client_credentials"}, headers=basic)
    assert (status, body["error"]) == (403, "ip_not_allowed")

    open_partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, open_partner), open_partner, **{"X-Forwarded-For": "203.0.113.9"})
    assert (await call(http, "GET", f"{edge}/api/lots", headers=headers))[0] == 200
    assert dict((k.lower(), v) for k, v in upstream.last().headers)["x-forwarded-for"] == "127.0.0.1"


async def test_x_forwarded_for_is_read_from_the_right_behind_a_trusted_proxy(
    start_edge: StartEdge, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream
) -> None:
    edge = f"http://127.0.0.1:{(await start_edge(edge_trusted_proxies=['127.0.0.1/32'])).port}"
    partner = await provision(ip_allowlist=["192.0.2.7/32"])
    token = await fetch_token(http, edge, partner, **{"X-Forwarded-For": "198.51.100.1, 192.0.2.7"})
    ok = partner_headers(token, partner, **{"X-Forwarded-For": "198.51.100.1, 192.0.2.7"})
    assert (await call(http, "GET", f"{edge}/api/lots", headers=ok))[0] == 200
    assert dict((k.lower(), v) for k, v in upstream.last().headers)["x-forwarded-for"] == "192.0.2.7, 127.0.0.1"
    # The rightmost untrusted address is the client, whatever was written to its left.
    spoofed = partner_headers(token, partner, **{"X-Forwarded-For": "192.0.2.7, 198.51.100.1"})
    status, _, body = await call(http, "GET", f"{edge}/api/lots", headers=spoofed)
    assert (status, body["error"]) == (403, "ip_not_allowed")


async def test_a_revoked_scope_is_refused_on_the_next_call_even_with_an_older_token(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, registry_stub: registry_pb2_grpc.RegistryStub
) -> None:
    partner = await provision(scopes=["inventory:read", "inventory:write"])
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    assert (await call(http, "POST", f"{edge}/api/lots", headers=headers, json={}))[0] == 200
    await registry_stub.UpdateIntegration(rpb.UpdateIntegrationRequest(
        integration_id=partner.integration_id, update_mask=["scopes"], scopes=["inventory:read"]), metadata=partner.admin)
    status, _, body = await call(http, "POST", f"{edge}/api/lots", headers=headers, json={})
    assert (status, body["error"]) == (403, "insufficient_scope")
    assert "inventory:write" in body["message"] and "not been granted" in body["message"]
    assert (await call(http, "GET", f"{edge}/api/lots", headers=headers))[0] == 200


async def test_client_identity_headers_are_replaced_and_other_orgs_ids_reach_nothing(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream
) -> None:
    a, b = await provision(), await provision()
    b_headers = partner_headers(await fetch_token(http, edge, b), b)
    status, _, created = await call(http, "POST", f"{edge}/v1/inventory/lots", headers=b_headers, json={"name": "B's lot", "quantity": 5})
    assert status == 201, created
    b_lot = created["lot"]["id"]

    forged = {"X-Trellis-Org-Id": b.org_id, "X-Trellis-Integration-Id": b.integration_id, "X-Trellis-Scopes": "crm:write"}
    a_headers = partner_headers(await fetch_token(http, edge, a), a, **forged)
    status, _, body = await call(http, "GET", f"{edge}/v1/inventory/lots/{b_lot}", headers=a_headers)
    assert status == 404, body  # the example upstream looked in A's organisation only
    status, _, listed = await call(http, "GET", f"{edge}/v1/inventory/lots?org_id={b.org_id}", headers=a_headers)
    assert status == 200 and listed["org_id"] == a.org_id
    assert b_lot not in {lot["id"] for lot in listed["lots"]}
    assert listed["caller"]["X-Trellis-Org-Id"] == a.org_id
    assert listed["caller"]["X-Trellis-Integration-Id"] == a.integration_id
    assert "crm:write" not in listed["caller"]["X-Trellis-Scopes"]

    await call(http, "GET", f"{edge}/api/x", headers=a_headers)
    seen = [(k.lower(), v) for k, v in upstream.last().headers]
    assert [v for k, v in seen if k == "x-trellis-org-id"] == [a.org_id]  # one value, A's


async def test_oversized_headers_and_body_are_refused_before_the_upstream(
    start_edge: StartEdge, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream
) -> None:
    edge = f"http://127.0.0.1:{(await start_edge(edge_max_body_bytes=4096)).port}"
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    before = len(upstream.seen)
    big_headers = {**headers, **{f"X-Pad-{n}": "p" * 1000 for n in range(20)}}
    assert (await call(http, "GET", f"{edge}/api/lots", headers=big_headers))[0] == 431
    assert (await call(http, "PUT", f"{edge}/api/lots/1", headers=headers, data=b"b" * 100_000))[0] == 413
    assert len(upstream.seen) == before
