"""The edge under test: real identity and registry (gRPC on port 0), the session's nats-server,
a real upstream on loopback, and the edge app served by a real uvicorn server on port 0 in this
process (tests/integration/edge/test_freshness.py runs two as subprocesses)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import SpanProcessor

from examples.upstream.app import make_app as make_example_upstream
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.edge.entrypoints.main import RunningEdge, bootstrap
from services.kit.service import RunningService
from tests.support.settings import Settings
from services.kit.telemetry import setup_tracing

Metadata = tuple[tuple[str, str], ...]
DEFAULT_SCOPES = ("inventory:read", "inventory:write", "orders:read", "reports:read", "reports:execute")


def new_org() -> str:
    return f"org_{uuid.uuid4().hex[:12]}"


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body_size: int


@dataclass
class Upstream:
    """A real HTTP server on loopback that records what reaches it."""

    url: str
    seen: list[Recorded] = field(default_factory=list)

    def last(self) -> Recorded:
        assert self.seen, "the upstream received nothing"
        return self.seen[-1]


def _recording_app(upstream: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        upstream.seen.append(Recorded(request.method, request.raw_path.split("?")[0], request.query_string,
                                      [(k.decode(), v.decode()) for k, v in request.raw_headers], size))
        return web.json_response({"path": request.path, "body_size": size, "org": request.headers.get("X-Trellis-Org-Id")},
                                 headers={"Connection": "keep-alive, X-Upstream-Private", "X-Upstream-Private": "1",
                                          "X-RateLimit-Limit": "999999"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "database_down"}, status=503)

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 65536)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/api/slow", slow)
    app.router.add_route("*", "/api/broken", broken)
    app.router.add_route("GET", "/api/big", big)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream(url="")
    runner, recorder.url = await serve(_recording_app(recorder))
    yield recorder
    await runner.cleanup()


@pytest.fixture
async def example_upstream() -> AsyncIterator[str]:
    runner, url = await serve(make_example_upstream())
    yield url
    await runner.cleanup()


def write_routes(path: Path, upstream: str, example: str) -> Path:
    path.write_text(f"""
[[route]]
prefix = "/api"
upstream = "{upstream}"
scope = "inventory"

[[route]]
prefix = "/api/orders"
upstream = "{upstream}"
scope = "orders"

[[route]]
prefix = "/api/reports"
upstream = "{upstream}"
scope = "reports"
methods = {{ POST = "reports:execute" }}

[[route]]
prefix = "/dead"
upstream = "http://127.0.0.1:{closed_port()}"
scope = "inventory"

[[route]]
prefix = "/v1/inventory"
upstream = "{example}"
scope = "inventory"

[[route]]
prefix = "/v1/whoami"
builtin = "whoami"
""")
    return path


@pytest.fixture
def actor_private_key_file(actor_keys: tuple[bytes, Path], tmp_path: Path) -> Path:
    path = tmp_path / "actor_private.pem"
    path.write_bytes(actor_keys[0])
    return path


@pytest.fixture
def edge_settings(make_settings: Callable[..., Settings], identity_service: RunningService, registry_service: RunningService,
                  upstream: Upstream, example_upstream: str, actor_private_key_file: Path, tmp_path: Path) -> Callable[..., Settings]:
    """edge_settings(**overrides) -> settings for an edge in front of this test's services."""
    routes = write_routes(tmp_path / "routes.toml", upstream.url, example_upstream)

    def _settings(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "identity_addr": f"127.0.0.1:{identity_service.port}",
            "registry_addr": f"127.0.0.1:{registry_service.port}",
            "actor_private_key_file": str(actor_private_key_file),
            "edge_routes_file": str(routes),
            "edge_upstream_timeout_seconds": 1.0,
            **overrides,
        }
        return make_settings(**values)

    return _settings


@pytest.fixture
async def start_edge(edge_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[RunningEdge]]]:
    """start_edge(**settings) -> a running edge on 127.0.0.1:<port>."""
    # The SDK provider (spans recorded, sent nowhere), so the edge starts traces of its own.
    setup_tracing("edge-tests", processor=SpanProcessor())
    running: list[RunningEdge] = []

    async def _start(**overrides: Any) -> RunningEdge:
        edge = await (await bootstrap(edge_settings(**overrides), address="127.0.0.1:0")).start()
        running.append(edge)
        return edge

    yield _start
    for edge in reversed(running):
        await edge.stop()


@pytest.fixture
async def edge(start_edge: Callable[..., Awaitable[RunningEdge]]) -> str:
    """The base URL of a running edge with default settings."""
    return f"http://127.0.0.1:{(await start_edge()).port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Partner:
    """An Active integration and the credentials its partner was handed."""

    integration_id: str
    org_id: str
    api_key: str
    client_id: str
    client_secret: str
    admin: Metadata
    approver: Metadata


ProvisionPartner = Callable[..., Awaitable[Partner]]


@pytest.fixture
def provision(registry_stub: registry_pb2_grpc.RegistryStub, as_actor: Callable[..., Metadata]) -> ProvisionPartner:
    """provision(org=None, scopes=DEFAULT_SCOPES, rate_limit_per_minute=1000, **create fields) -> Partner."""

    async def _provision(org: str | None = None, **fields: Any) -> Partner:
        org = org or new_org()
        alice, bob = as_actor("alice", org), as_actor("bob", org)
        values: dict[str, Any] = {"vendor_id": "sap", "name": "SAP sync", "owner": "alice", "description": "edge tests",
                                  "scopes": list(DEFAULT_SCOPES), "rate_limit_per_minute": 1000, **fields}
        created = await registry_stub.CreateIntegration(rpb.CreateIntegrationRequest(**values), metadata=alice)
        await registry_stub.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
        activated = await registry_stub.ActivateIntegration(
            rpb.ActivateIntegrationRequest(integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob)
        creds = activated.credentials
        return Partner(created.id, org, creds.api_key, creds.client_id, creds.client_secret, alice, bob)

    return _provision


async def fetch_token(http: aiohttp.ClientSession, edge: str, partner: Partner, scope: str = "", **headers: str) -> str:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    basic = {"Authorization": aiohttp.encode_basic_auth(partner.client_id, partner.client_secret), **headers}
    async with http.post(f"{edge}/oauth/token", data=form, headers=basic) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["access_token"])


async def restrict_to(registry_stub: registry_pb2_grpc.RegistryStub, partner: Partner, *networks: str) -> None:
    """Set the integration's IP allowlist (after its partner fetched a token from 127.0.0.1, which
    the token endpoint refuses once the allowlist leaves it out)."""
    await registry_stub.UpdateIntegration(rpb.UpdateIntegrationRequest(
        integration_id=partner.integration_id, update_mask=["ip_allowlist"], ip_allowlist=list(networks)),
        metadata=partner.admin)


def partner_headers(token: str, partner: Partner, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-API-Key": partner.api_key, **extra}


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any], Any]:
    """(status, headers, JSON body or None) of one request."""
    async with http.request(method, url, **kw) as response:
        text = await response.read()
        try:
            body = await response.json(content_type=None) if text else None
        except ValueError:
            body = None
        return response.status, {k.lower(): v for k, v in response.headers.items()}, body
