"""Every partner request leaves exactly one row, in the right log: a real edge, the session's
nats-server and a real logs service, read back through gRPC as the actors who may (and may not)
read each log.

A request a credential can be attributed to (a known API key, an access token that verifies, a
client identity knows at /oauth/token) is in that organisation's log with its error code; the
others are in the platform log, which only platform operators read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest

from services.contracts.trellis.logs.v1 import logs_pb2 as pb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.edge.adapters.apilog import PLATFORM_PER_SOURCE
from services.edge.entrypoints.main import RunningEdge, bootstrap
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION
from tests.support.settings import Settings
from tests.integration.edge.conftest import (
    Partner,
    ProvisionPartner,
    call,
    fetch_token,
    new_org,
    partner_headers,
    restrict_to,
)
from tests.integration.logs.conftest import LogsRunner
from tests.support.waiting import eventually

Metadata = tuple[tuple[str, str], ...]
StartEdge = Callable[..., Awaitable[RunningEdge]]
UNKNOWN_KEY = "grq_live_" + "0" * 40


@pytest.fixture
async def logs(make_settings: Callable[..., Settings]) -> AsyncIterator[logs_pb2_grpc.LogsStub]:
    runner = LogsRunner(make_settings())
    stub = await runner.start()
    yield stub
    await runner.stop()


@pytest.fixture
def operator(as_actor: Callable[..., Metadata]) -> Metadata:
    """A platform operator: the permission of what every organisation shares, no QA or admin role."""
    return as_actor("pat", new_org(), [PLATFORM_PERMISSION])


def rid(case: str) -> str:
    return f"{case}-{uuid.uuid4().hex[:12]}"


def get(request_id: str, platform: bool) -> pb.GetRequestRequest:
    request = pb.GetRequestRequest(request_id=request_id)
    if platform:
        request.platform = True
    return request


async def logged(logs: logs_pb2_grpc.LogsStub, md: Metadata, request_id: str, *, platform: bool = False) -> pb.RequestRecord:
    """The row of `request_id`, once it has arrived."""
    async def found() -> pb.RequestRecord | None:
        try:
            return await logs.GetRequest(get(request_id, platform), metadata=md)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return None

    return await eventually(found, timeout=20, what=f"the API log row of {request_id}")


async def absent(logs: logs_pb2_grpc.LogsStub, md: Metadata, request_id: str, *, platform: bool = False) -> bool:
    try:
        await logs.GetRequest(get(request_id, platform), metadata=md)
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND
    return False


async def in_org_log(logs: logs_pb2_grpc.LogsStub, partner: Partner, operator: Metadata, request_id: str) -> pb.RequestRecord:
    """The row is the partner organisation's, and only there: not in the platform log."""
    row = await logged(logs, partner.admin, request_id)
    assert (row.org_id, row.integration_id) == (partner.org_id, partner.integration_id)
    assert await absent(logs, operator, request_id, platform=True)
    return row


async def in_platform_log(logs: logs_pb2_grpc.LogsStub, partner: Partner, operator: Metadata, request_id: str) -> pb.RequestRecord:
    """The row is the platform log's, and in no organisation's."""
    row = await logged(logs, operator, request_id, platform=True)
    assert (row.org_id, row.integration_id) == ("", "")
    assert await absent(logs, partner.admin, request_id)
    return row


async def token_call(http: aiohttp.ClientSession, edge: str, request_id: str, client_id: str, secret: str,
                     **headers: str) -> tuple[int, Any]:
    basic = {"Authorization": aiohttp.encode_basic_auth(client_id, secret), "X-Request-ID": request_id, **headers}
    status, _, body = await call(http, "POST", f"{edge}/oauth/token", data={"grant_type": "client_credentials"},
                                 headers=basic)
    return status, body


async def test_a_known_key_without_its_token_and_a_token_without_its_key_are_in_their_organisations_log(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub, operator: Metadata,
    as_actor: Callable[..., Metadata],
) -> None:
    partner = await provision()
    token = await fetch_token(http, edge, partner)
    cases = {
        rid("key-only"): {"X-API-Key": partner.api_key},
        rid("token-only"): {"Authorization": f"Bearer {token}"},
        rid("token-unknown-key"): {"Authorization": f"Bearer {token}", "X-API-Key": UNKNOWN_KEY},
    }
    answers = {}
    for request_id, headers in cases.items():
        status, _, body = await call(http, "GET", f"{edge}/api/lots", headers={**headers, "X-Request-ID": request_id})
        answers[request_id] = (status, body["error"])
    for request_id in cases:
        row = await in_org_log(logs, partner, operator, request_id)
        assert (row.status, row.error_code) == answers[request_id], request_id
        assert (row.method, row.endpoint, row.ip) == ("GET", "/api/lots", "127.0.0.1")
    assert [answers[r] for r in cases] == [(401, "missing_credentials"), (401, "missing_credentials"),
                                           (401, "invalid_api_key")]
    # Another organisation's administrator is told nothing of them.
    stranger = as_actor("mallory", new_org(), [ADMIN_PERMISSION])
    for request_id in cases:
        assert await absent(logs, stranger, request_id)


async def test_requests_no_credential_attributes_are_in_the_platform_log_only(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub, operator: Metadata,
) -> None:
    partner = await provision()  # an organisation whose log must not get any of these
    cases = {
        rid("nothing"): ({}, (401, "missing_credentials")),
        rid("unknown-key"): ({"X-API-Key": UNKNOWN_KEY, "Authorization": "Bearer not-a-jwt"}, (401, "invalid_api_key")),
        rid("unknown-key-alone"): ({"X-API-Key": UNKNOWN_KEY}, (401, "missing_credentials")),
        rid("bad-token-alone"): ({"Authorization": "Bearer not-a-jwt"}, (401, "missing_credentials")),
    }
    for request_id, (headers, answer) in cases.items():
        status, _, body = await call(http, "GET", f"{edge}/api/lots", headers={**headers, "X-Request-ID": request_id})
        assert (status, body["error"]) == answer, request_id
    for request_id, (_, answer) in cases.items():
        row = await in_platform_log(logs, partner, operator, request_id)
        assert (row.status, row.error_code, row.repeats) == (*answer, 1), request_id
        assert (row.method, row.endpoint, row.ip) == ("GET", "/api/lots", "127.0.0.1")


async def test_every_token_endpoint_call_is_logged_in_its_clients_organisation_or_the_platform_log(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub, operator: Metadata,
) -> None:
    partner = await provision()
    issued, wrong, unknown = rid("issued"), rid("wrong-secret"), rid("unknown-client")
    status, body = await token_call(http, edge, issued, partner.client_id, partner.client_secret)
    assert status == 200 and body["access_token"]
    assert (await token_call(http, edge, wrong, partner.client_id, "not-the-secret"))[0] == 401
    assert (await token_call(http, edge, unknown, "cli_" + "0" * 32, "whatever"))[0] == 401
    status, _, _ = await call(http, "GET", f"{edge}/oauth/token", headers={"X-Request-ID": (get := rid("get"))})
    assert status == 405
    basic = {"Authorization": aiohttp.encode_basic_auth(partner.client_id, partner.client_secret),
             "X-Request-ID": (scoped := rid("scope"))}
    status, _, body = await call(http, "POST", f"{edge}/oauth/token", headers=basic,
                                 data={"grant_type": "client_credentials", "scope": "payroll:read"})
    assert (status, body["error"]) == (400, "invalid_scope")

    row = await in_org_log(logs, partner, operator, issued)
    assert (row.method, row.endpoint, row.status, row.error_code) == ("POST", "/oauth/token", 200, "")
    row = await in_org_log(logs, partner, operator, wrong)
    assert (row.endpoint, row.status, row.error_code) == ("/oauth/token", 401, "invalid_client")
    row = await in_platform_log(logs, partner, operator, unknown)
    assert (row.endpoint, row.status, row.error_code) == ("/oauth/token", 401, "invalid_client")
    row = await in_platform_log(logs, partner, operator, get)
    assert (row.method, row.status, row.error_code) == ("GET", 405, "method_not_allowed")
    row = await in_org_log(logs, partner, operator, scoped)
    assert (row.status, row.error_code) == (400, "invalid_scope")


async def test_the_token_endpoint_applies_the_ip_allowlist_and_logs_the_refusal(
    start_edge: StartEdge, http: aiohttp.ClientSession, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub,
    operator: Metadata, registry_stub: registry_pb2_grpc.RegistryStub,
) -> None:
    edge = f"http://127.0.0.1:{(await start_edge(edge_trusted_proxies=['127.0.0.1/32'])).port}"
    partner = await provision(ip_allowlist=["192.0.2.0/24"])
    refused, allowed = rid("outside"), rid("inside")
    status, body = await token_call(http, edge, refused, partner.client_id, partner.client_secret,
                                    **{"X-Forwarded-For": "198.51.100.7"})
    assert (status, body["error"]) == (403, "ip_not_allowed")
    assert "198.51.100.7" in body["error_description"] and "allowlist" in body["error_description"]
    assert "access_token" not in body
    status, body = await token_call(http, edge, allowed, partner.client_id, partner.client_secret,
                                    **{"X-Forwarded-For": "192.0.2.9"})
    assert status == 200 and body["access_token"]

    row = await in_org_log(logs, partner, operator, refused)
    assert (row.endpoint, row.status, row.error_code, row.ip) == ("/oauth/token", 403, "ip_not_allowed", "198.51.100.7")
    row = await in_org_log(logs, partner, operator, allowed)
    assert (row.status, row.error_code, row.ip) == (200, "", "192.0.2.9")

    # An allowlist set later applies to the next token too (the edge hears of the change).
    await restrict_to(registry_stub, partner, "203.0.113.0/24")

    async def refused_now() -> bool:
        status, _ = await token_call(http, edge, rid("later"), partner.client_id, partner.client_secret,
                                     **{"X-Forwarded-For": "192.0.2.9"})
        return status == 403

    await eventually(refused_now, what="the new allowlist to reach the token endpoint")


async def test_upstream_failures_each_have_their_code_in_the_organisations_log(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub, operator: Metadata,
) -> None:
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    cases = {
        rid("unreachable"): ("/dead/lots", (502, "upstream_unavailable")),
        rid("timeout"): ("/api/slow", (504, "upstream_unavailable")),
        rid("answered-503"): ("/api/broken", (503, "upstream_error")),
        rid("fine"): ("/api/lots", (200, "")),
    }
    for request_id, (path, (status, _)) in cases.items():
        answered, _, body = await call(http, "GET", f"{edge}{path}", headers={**headers, "X-Request-ID": request_id})
        assert answered == status, (path, body)
    broken = next(r for r in cases if r.startswith("answered-503"))
    _, _, body = await call(http, "GET", f"{edge}/api/broken", headers=headers)
    assert body == {"error": "database_down"}  # the service's own answer reaches the partner unchanged
    for request_id, (path, answer) in cases.items():
        row = await in_org_log(logs, partner, operator, request_id)
        assert (row.status, row.error_code) == answer, path
    assert (await logged(logs, partner.admin, broken)).scope_category == "inventory"


async def test_only_platform_operators_read_the_platform_log(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub, operator: Metadata,
) -> None:
    partner = await provision()
    probe = rid("probe")
    await call(http, "GET", f"{edge}/api/lots", headers={"X-API-Key": UNKNOWN_KEY, "X-Request-ID": probe})
    await logged(logs, operator, probe, platform=True)
    page = await logs.QueryRequests(pb.QueryRequestsRequest(platform=True, error_code="missing_credentials",
                                                            endpoint="/api/lots"), metadata=operator)
    assert probe in {r.request_id for r in page.records}

    for reader in (partner.admin, partner.approver):  # the organisation's administrators
        for rpc in (logs.QueryRequests(pb.QueryRequestsRequest(platform=True), metadata=reader),
                    logs.GetRequest(pb.GetRequestRequest(request_id=probe, platform=True), metadata=reader)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await rpc
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        export = logs.ExportRequests(pb.ExportRequestsRequest(platform=True), metadata=reader)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in export:
                pass
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # An operator's own organisation's log is another thing: the permission reads only the platform's.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await logs.QueryRequests(pb.QueryRequestsRequest(), metadata=operator)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_flood_of_unknown_keys_from_one_address_is_a_few_rows_and_one_that_counts_the_rest(
    edge_settings: Callable[..., Settings], http: aiohttp.ClientSession, provision: ProvisionPartner,
    logs: logs_pb2_grpc.LogsStub, operator: Metadata,
) -> None:
    # An edge of its own (no other test's requests count against its budget), stopped here.
    running = await (await bootstrap(edge_settings(), address="127.0.0.1:0")).start()
    try:
        edge = f"http://127.0.0.1:{running.port}"
        partner = await provision()
        flood = [rid(f"flood{i:02d}") for i in range(PLATFORM_PER_SOURCE + 20)]
        for request_id in flood:
            status, _, body = await call(http, "GET", f"{edge}/api/lots", headers={
                "X-API-Key": f"grq_live_{uuid.uuid4().hex}", "Authorization": "Bearer x", "X-Request-ID": request_id})
            assert (status, body["error"]) == (401, "invalid_api_key")  # the answer is the same for every one
        for request_id in flood[:PLATFORM_PER_SOURCE]:
            assert (await in_platform_log(logs, partner, operator, request_id)).repeats == 1
    finally:
        await running.stop()  # ends the window: the rest are stood for by one row, sent before the edge exits

    last = await in_platform_log(logs, partner, operator, flood[-1])
    assert (last.status, last.error_code, last.ip, last.repeats) == (401, "invalid_api_key", "127.0.0.1", 20)
    for request_id in flood[PLATFORM_PER_SOURCE:-1]:
        assert await absent(logs, operator, request_id, platform=True)


async def test_the_http_layers_own_answers_reach_the_platform_log_through_the_app(
    start_edge: StartEdge, provision: ProvisionPartner, logs: logs_pb2_grpc.LogsStub, operator: Metadata,
) -> None:
    # How the server layer records a request it answered itself (malformed HTTP, say): no
    # credential was read, so it is the platform log's, under the same budget.
    running = await start_edge()
    partner = await provision()
    request_id = rid("malformed")
    running.app.record_unattributed(request_id=request_id, method="BREW", path="/api/lots", status=400,
                                    client_ip="192.0.2.44", error_code="invalid_request", duration_ms=0.5)
    row = await in_platform_log(logs, partner, operator, request_id)
    assert (row.method, row.endpoint, row.status, row.ip, row.error_code) == ("OTHER", "/api/lots", 400, "192.0.2.44",
                                                                            "invalid_request")
