"""A partner following the documentation succeeds: a token from /oauth/token (Basic and post),
then a call with both credentials reaches the upstream with the caller's identity and trace
but without the partner's credentials, and one log record per request lands on JetStream."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
from nats.js.api import DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.natsproc import NatsServer
from tests.integration.edge.conftest import (DEFAULT_SCOPES, ProvisionPartner, Upstream, call, fetch_token,
                                             partner_headers)
from tests.support.waiting import eventually

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


class ApiLog:
    """Record batches published on `apilog.batch` from now on."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    def find(self, request_id: str) -> events_pb2.ApiRequestLogged | None:
        for data in self.raw:
            for record in events_pb2.ApiRequestBatch.FromString(data).records:
                if record.request_id == request_id:
                    return record
        return None


@pytest.fixture
async def apilog(nats_server: NatsServer) -> AsyncIterator[ApiLog]:
    log = ApiLog()
    nc = await nats.connect(nats_server.url)

    async def collect(msg: nats.aio.msg.Msg) -> None:
        log.raw.append(msg.data)

    subscription = await nc.jetstream().subscribe("apilog.batch", cb=collect, ordered_consumer=True,
                                                  deliver_policy=DeliverPolicy.NEW)
    yield log
    await subscription.unsubscribe()
    await nc.close()


async def test_partner_gets_a_token_and_calls_through_to_the_upstream(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream, apilog: ApiLog
) -> None:
    partner = await provision()
    token = await fetch_token(http, edge, partner)

    status, headers, body = await call(http, "GET", f"{edge}/api/lots?page=2",
                                       headers=partner_headers(token, partner, **{"X-Request-ID": "partner-req-0001"}))

    assert status == 200, body
    assert body["path"] == "/api/lots" and body["org"] == partner.org_id
    assert headers["x-request-id"] == "partner-req-0001"
    assert headers["x-ratelimit-limit"] == "1000"  # ours, not the upstream's
    assert int(headers["x-ratelimit-remaining"]) == 999
    assert int(headers["x-ratelimit-reset"]) % 60 == 0
    assert "x-upstream-private" not in headers  # named in the upstream's Connection header

    seen = dict((k.lower(), v) for k, v in upstream.last().headers)
    assert upstream.last().query == "page=2"
    assert seen["x-request-id"] == "partner-req-0001"
    assert seen["x-trellis-integration-id"] == partner.integration_id
    assert seen["x-trellis-org-id"] == partner.org_id
    assert seen["x-trellis-client-id"] == partner.client_id
    assert seen["x-trellis-scopes"] == " ".join(sorted(DEFAULT_SCOPES))
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert TRACEPARENT.fullmatch(seen["traceparent"])
    assert "authorization" not in seen and "x-api-key" not in seen

    record = await eventually(lambda: _found(apilog, "partner-req-0001"), what="the API log record")
    assert (record.integration_id, record.org_id, record.method, record.endpoint, record.status) == (
        partner.integration_id, partner.org_id, "GET", "/api/lots", 200)
    assert (record.ip, record.error_code, record.scope_category) == ("127.0.0.1", "", "inventory")
    assert record.duration_ms > 0 and record.occurred_at.seconds > 0
    for data in apilog.raw:  # no record holds a credential
        for secret in (partner.api_key, token, partner.client_secret):
            assert secret.encode() not in data


async def _found(apilog: ApiLog, request_id: str) -> events_pb2.ApiRequestLogged | None:
    return apilog.find(request_id)


async def test_client_secret_post_and_a_narrowed_scope(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision()
    form = {"grant_type": "client_credentials", "client_id": partner.client_id, "client_secret": partner.client_secret,
            "scope": "inventory:read"}
    status, headers, body = await call(http, "POST", f"{edge}/oauth/token", data=form)
    assert status == 200, body
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 3600, "inventory:read")
    assert headers["cache-control"] == "no-store"

    narrowed = partner_headers(body["access_token"], partner)
    status, _, _ = await call(http, "GET", f"{edge}/api/lots", headers=narrowed)
    assert status == 200
    status, _, refused = await call(http, "GET", f"{edge}/api/orders/1", headers=narrowed)
    assert (status, refused["error"]) == (403, "insufficient_scope")
    assert "orders:read" in refused["message"] and "token" in refused["message"]


async def test_bodies_stream_both_ways(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)

    async def chunks() -> AsyncIterator[bytes]:  # sent chunked: no Content-Length up front
        for _ in range(40):
            yield b"y" * 65536

    status, _, body = await call(http, "POST", f"{edge}/api/upload", headers=headers, data=chunks())
    assert (status, body["body_size"]) == (200, 40 * 65536)
    async with http.get(f"{edge}/api/big", headers=headers) as response:
        assert response.status == 200
        assert len(await response.read()) == 64 * 65536


async def test_whoami_is_answered_by_the_edge(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision(scopes=["orders:read"])
    status, headers, body = await call(http, "GET", f"{edge}/v1/whoami",
                                       headers=partner_headers(await fetch_token(http, edge, partner), partner))
    assert status == 200, body
    assert (body["integration_id"], body["org_id"], body["client_id"], body["scopes"]) == (
        partner.integration_id, partner.org_id, partner.client_id, ["orders:read"])
    assert body["request_id"] == headers["x-request-id"]


async def test_an_insane_request_id_is_replaced(edge: str, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(http, "GET", f"{edge}/api/x", headers={"X-Request-ID": "bad id with spaces"})
    assert status == 401
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert body["request_id"] == headers["x-request-id"]
