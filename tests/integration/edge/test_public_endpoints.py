"""The edge's own endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document and
the rendered reference page."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import aiohttp

from services.edge.domain.errors import CODES
from services.edge.entrypoints.main import RunningEdge
from tests.integration.edge.conftest import ProvisionPartner, call, closed_port, fetch_token, partner_headers

StartEdge = Callable[..., Awaitable[RunningEdge]]


async def test_health_and_readiness(start_edge: StartEdge, http: aiohttp.ClientSession) -> None:
    edge = f"http://127.0.0.1:{(await start_edge()).port}"
    assert (await call(http, "GET", f"{edge}/healthz"))[0] == 200
    status, _, body = await call(http, "GET", f"{edge}/readyz")
    assert (status, body["checks"]) == (200, {"identity": True, "registry": True, "nats": True})

    blind = f"http://127.0.0.1:{(await start_edge(registry_addr=f'127.0.0.1:{closed_port()}')).port}"
    status, _, body = await call(http, "GET", f"{blind}/readyz")
    assert (status, body["status"], body["checks"]["registry"]) == (503, "not ready", False)
    assert (await call(http, "GET", f"{blind}/healthz"))[0] == 200


async def test_metrics_count_requests_refusals_and_the_api_log(edge: str, http: aiohttp.ClientSession,
                                                              provision: ProvisionPartner) -> None:
    partner = await provision(rate_limit_per_minute=1)
    headers = partner_headers(await fetch_token(http, edge, partner), partner)
    await call(http, "GET", f"{edge}/api/lots", headers={"X-API-Key": partner.api_key})
    statuses = {(await call(http, "GET", f"{edge}/api/lots", headers=headers))[0] for _ in range(3)}
    assert 429 in statuses

    async with http.get(f"{edge}/metrics") as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert re.search(r'^trellis_edge_requests_total\{method="GET",route="/api",status="429"\} [1-9]', text, re.M)
    assert re.search(r'^trellis_edge_request_duration_seconds_bucket\{le="0.005",route="/api"\}', text, re.M)
    assert re.search(r'^trellis_edge_auth_failures_total\{code="missing_credentials"\} 1.0$', text, re.M)
    assert re.search(r'^trellis_edge_rate_limited_total\{code="rate_limit_exceeded"\} [1-9]', text, re.M)
    assert re.search(r"^trellis_edge_apilog_dropped 0.0$", text, re.M)


async def test_metrics_move_off_the_partner_port_when_given_an_address_of_their_own(
        start_edge: StartEdge, http: aiohttp.ClientSession) -> None:
    edge = await start_edge(edge_metrics_addr="127.0.0.1:0")
    base = f"http://127.0.0.1:{edge.port}"
    assert (await call(http, "GET", f"{base}/healthz"))[0] == 200
    assert edge.metrics_server is not None and edge.metrics_server.port
    async with http.get(f"http://127.0.0.1:{edge.metrics_server.port}/metrics") as response:
        assert response.status == 200
        assert re.search(r'^trellis_edge_requests_total\{method="GET",route="/healthz",status="200"\} 1.0$',
                         await response.text(), re.M)
    status, _, body = await call(http, "GET", f"{base}/metrics")  # now a partner path like any other
    assert status == 401 and body["error"] == "missing_credentials"


async def test_openapi_describes_auth_errors_limits_and_routes(edge: str, http: aiohttp.ClientSession) -> None:
    status, _, spec = await call(http, "GET", f"{edge}/openapi.json")
    assert status == 200 and spec["openapi"] == "3.1.0"
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKeyAuth"] == {**schemes["apiKeyAuth"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert set(spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]) == set(CODES)
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"} <= set(spec["components"]["headers"])
    assert "application/x-www-form-urlencoded" in spec["paths"]["/oauth/token"]["post"]["requestBody"]["content"]
    for prefix in ("/api", "/api/orders", "/api/reports", "/dead", "/v1/inventory", "/v1/whoami"):
        assert prefix in spec["paths"] and f"{prefix}/{{path}}" in spec["paths"]
    assert spec["paths"]["/api/reports"]["post"]["x-required-scope"] == "reports:execute"
    assert spec["paths"]["/api/orders"]["get"]["x-required-scope"] == "orders:read"
    assert spec["paths"]["/api"]["get"]["security"] == [{"bearerAuth": [], "apiKeyAuth": []}]


async def test_the_reference_page_is_self_contained(edge: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{edge}/docs") as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
        page = await response.text()
    assert "<script" not in page and "<link" not in page and 'src="' not in page
    for code in CODES:
        assert f"<code>{code}</code>" in page
    for text in ("/api/reports", "reports:execute", "X-RateLimit-Reset", "X-API-Key", "/oauth/token"):
        assert text in page
