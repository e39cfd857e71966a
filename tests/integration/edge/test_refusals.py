"""Every refusal has its documented code and status, and a message that says why and what to do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.edge.entrypoints.main import RunningEdge
from tests.integration.edge.conftest import ProvisionPartner, Upstream, call, fetch_token, partner_headers, restrict_to
from tests.support.waiting import eventually

StartEdge = Callable[..., Awaitable[RunningEdge]]


async def not_near_a_minute_boundary() -> bool:
    return time.time() % 60 < 50


async def test_each_missing_credential_is_named(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision()
    token = await fetch_token(http, edge, partner)
    cases = {
        "no headers": ({}, ["Authorization: Bearer", "X-API-Key"]),
        "token only": ({"Authorization": f"Bearer {token}"}, ["X-API-Key"]),
        "key only": ({"X-API-Key": partner.api_key}, ["Authorization: Bearer"]),
        "basic instead of bearer": ({"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": partner.api_key}, ["Authorization: Bearer"]),
    }
    for case, (headers, named) in cases.items():
        status, answer_headers, body = await call(http, "GET", f"{edge}/api/lots", headers=headers)
        assert (status, body["error"]) == (401, "missing_credentials"), case
        assert all(name in body["message"] for name in named), (case, body["message"])
        assert answer_headers["www-authenticate"].startswith("Bearer")
        assert body["request_id"] == answer_headers["x-request-id"]
        assert "x-ratelimit-limit" not in answer_headers  # refused before the rate limit


async def test_unknown_api_key_and_garbage_token(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision()
    token = await fetch_token(http, edge, partner)
    status, _, body = await call(http, "GET", f"{edge}/api/lots",
                                 headers={"Authorization": f"Bearer {token}", "X-API-Key": "grq_live_" + "x" * 40})
    assert (status, body["error"]) == (401, "invalid_api_key")
    assert "regenerated" in body["message"]

    status, headers, body = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers("not-a-jwt", partner))
    assert (status, body["error"]) == (401, "invalid_token")
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "/oauth/token" in body["message"]


async def test_suspended_integration_is_inactive(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, registry_stub: registry_pb2_grpc.RegistryStub
) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    assert (await call(http, "GET", f"{edge}/api/lots", headers=headers))[0] == 200  # caches warm

    await registry_stub.SuspendIntegration(rpb.SuspendIntegrationRequest(integration_id=partner.integration_id,
                                                                         reason="incident"), metadata=partner.approver)
    status, answer_headers, body = await call(http, "GET", f"{edge}/api/lots", headers=headers)
    assert (status, body["error"]) == (401, "integration_inactive")
    assert "suspended" in body["message"]
    # A new token would not help: the challenge names no token error (RFC 6750 section 3.1).
    assert answer_headers["www-authenticate"] == 'Bearer realm="trellis"'


async def test_ip_outside_the_allowlist(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner,
                                       registry_stub: registry_pb2_grpc.RegistryStub) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    await restrict_to(registry_stub, partner, "192.0.2.0/24")

    async def refused() -> tuple[int, dict[str, Any]] | None:
        status, _, body = await call(http, "GET", f"{edge}/api/lots", headers=headers)
        return (status, body) if status != 200 else None

    status, body = await eventually(refused, what="the allowlist to reach the edge")
    assert (status, body["error"]) == (403, "ip_not_allowed")
    assert "127.0.0.1" in body["message"] and "allowlist" in body["message"]

    allowed = await provision(ip_allowlist=["192.0.2.0/24", "127.0.0.0/8"])
    status, _, _ = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(await fetch_token(http, edge, allowed), allowed))
    assert status == 200


async def test_rate_limit_exceeded_with_retry_after(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision(rate_limit_per_minute=3)
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    await eventually(not_near_a_minute_boundary, timeout=15, what="a minute with room for the test")
    remaining = [(await call(http, "GET", f"{edge}/api/lots", headers=headers))[1]["x-ratelimit-remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]

    status, answer_headers, body = await call(http, "GET", f"{edge}/api/lots", headers=headers)
    assert (status, body["error"]) == (429, "rate_limit_exceeded")
    reset = int(answer_headers["x-ratelimit-reset"])
    assert (answer_headers["x-ratelimit-limit"], answer_headers["x-ratelimit-remaining"]) == ("3", "0")
    assert 1 <= int(answer_headers["retry-after"]) <= 60 and reset > time.time()
    assert str(reset) in body["message"]


async def test_daily_quota_exceeded(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision(daily_quota=2)
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    assert [(await call(http, "GET", f"{edge}/api/lots", headers=headers))[0] for _ in range(2)] == [200, 200]
    status, answer_headers, body = await call(http, "GET", f"{edge}/api/lots", headers=headers)
    assert (status, body["error"]) == (429, "quota_exceeded")
    assert int(answer_headers["retry-after"]) >= 1


async def test_insufficient_scope_names_the_scope(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision(scopes=["inventory:read", "reports:read"])
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    cases = [("POST", "/api/lots", "inventory:write"), ("GET", "/api/orders/7", "orders:read"),
             ("POST", "/api/reports/run", "reports:execute")]
    for method, path, scope in cases:
        status, answer_headers, body = await call(http, method, f"{edge}{path}", headers=headers, json={})
        assert (status, body["error"]) == (403, "insufficient_scope"), path
        assert scope in body["message"] and "administrator" in body["message"]
        assert f'scope="{scope}"' in answer_headers["www-authenticate"]
        assert answer_headers["x-ratelimit-limit"] == "1000"  # after the rate limit: its headers are there
    assert (await call(http, "GET", f"{edge}/api/reports/1", headers=headers))[0] == 200


async def test_unknown_path_is_not_found_and_dot_segments_are_refused(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner
) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    status, answer_headers, body = await call(http, "GET", f"{edge}/nowhere", headers=headers)
    assert (status, body["error"]) == (404, "not_found")
    assert "x-request-id" in answer_headers
    status, _, body = await call(http, "GET", f"{edge}/api/..%2Forders", headers=headers)
    assert (status, body["error"]) == (400, "invalid_request")
    status, _, _ = await call(http, "GET", f"{edge}/apiary", headers=headers)  # prefixes match whole segments
    assert status == 404


async def test_upstream_refused_is_502_and_slow_is_504(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    status, _, body = await call(http, "GET", f"{edge}/dead/lots", headers=headers)
    assert (status, body["error"]) == (502, "upstream_unavailable")
    started = time.monotonic()
    status, answer_headers, body = await call(http, "GET", f"{edge}/api/slow", headers=headers)
    assert (status, body["error"]) == (504, "upstream_unavailable")
    assert time.monotonic() - started < 2.5  # the edge's timeout (1 s here), not the upstream's 3 s
    assert answer_headers["x-ratelimit-limit"] == "1000"


async def test_oversized_body_by_length_and_while_streaming(
    start_edge: StartEdge, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream
) -> None:
    edge = f"http://127.0.0.1:{(await start_edge(edge_max_body_bytes=1000)).port}"
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    before = len(upstream.seen)

    status, _, body = await call(http, "POST", f"{edge}/api/lots", headers=headers, data=b"z" * 2000)
    assert (status, body["error"]) == (413, "payload_too_large")

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"z" * 500

    status, _, body = await call(http, "POST", f"{edge}/api/lots", headers=headers, data=chunked())
    assert (status, body["error"]) == (413, "payload_too_large")
    assert (await call(http, "POST", f"{edge}/api/lots", headers=headers, data=b"z" * 1000))[0] == 200
    # No oversized body was ever handed to the upstream whole.
    assert upstream.last().body_size == 1000 and all(r.body_size <= 1000 for r in upstream.seen[before:])


async def test_oversized_headers_are_431(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner, **{"X-Filler": "f" * 20_000})
    status, answer_headers, body = await call(http, "GET", f"{edge}/api/lots", headers=headers)
    assert (status, body["error"]) == (431, "request_headers_too_large")
    assert "x-request-id" in answer_headers


async def test_wrong_method_on_a_public_endpoint(edge: str, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(http, "GET", f"{edge}/oauth/token")
    assert (status, body["error"], headers["allow"]) == (405, "method_not_allowed", "POST")
