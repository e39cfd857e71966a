"""Two edge processes (`python -m services.edge`) share identity, registry and NATS. After both
have warm caches, a change made through the registry is refused on the very next request on
each of them: the change's event drops the cached state on every replica."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import nats
import pytest
from nats.js.api import DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.identity.adapters import signing
from services.kit.auth import PLATFORM_PERMISSION
from tests.support.settings import Settings
from tests.integration.edge.conftest import ProvisionPartner, call, fetch_token, partner_headers
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[3]
SERVING = re.compile(r"edge serving on \S+:(\d+)")


@dataclass
class EdgeProcess:
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"


def edge_environment(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update({
        "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(data_dir), "TRELLIS_NATS_URL": settings.nats_url,
        "TRELLIS_IDENTITY_ADDR": settings.identity_addr, "TRELLIS_REGISTRY_ADDR": settings.registry_addr,
        "TRELLIS_ACTOR_ISSUER": settings.actor_issuer, "TRELLIS_ACTOR_AUDIENCE": settings.actor_audience,
        "TRELLIS_ACTOR_PRIVATE_KEY_FILE": settings.actor_private_key_file,
        "TRELLIS_EDGE_ROUTES_FILE": settings.edge_routes_file, "TRELLIS_EDGE_ADDR": "127.0.0.1:0",
        # Edges on ports of their own verify the issuer identity (in this process) signs with.
        "TRELLIS_TOKEN_ISSUER": settings.token_issuer, "TRELLIS_EDGE_PUBLIC_URL": settings.edge_public_url,
        "TRELLIS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
    })
    return env


SpawnEdges = Callable[[int], Awaitable[list[EdgeProcess]]]


@pytest.fixture
def spawn_edges(edge_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[SpawnEdges]:
    """await spawn_edges(n) -> n edge processes, each serving on its own port."""
    started: list[EdgeProcess] = []

    async def _spawn(count: int) -> list[EdgeProcess]:
        settings = edge_settings()
        edges = []
        for n in range(count):
            log = tmp_path / f"edge-{len(started)}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "services.edge"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                           env=edge_environment(settings, tmp_path / f"edge-data-{n}"), stdin=subprocess.DEVNULL)
            edge = EdgeProcess(process, log)
            started.append(edge)
            edges.append(edge)
        for edge in edges:
            await eventually(lambda edge=edge: _serving(edge), timeout=30, what="an edge process to serve")
        return edges

    yield _spawn
    for edge in started:
        if edge.process.poll() is None:
            edge.process.send_signal(signal.SIGTERM)
    for edge in started:
        try:
            edge.process.wait(15)
        except subprocess.TimeoutExpired:
            edge.process.kill()
            edge.process.wait()


async def _serving(edge: EdgeProcess) -> bool:
    assert edge.process.poll() is None, f"edge exited {edge.process.returncode}:\n{edge.tail()}"
    found = SERVING.search(edge.log.read_text(errors="replace"))
    if found:
        edge.url = f"http://127.0.0.1:{found.group(1)}"
    return bool(found)


async def warm(http: aiohttp.ClientSession, edges: list[EdgeProcess], headers: dict[str, str], path: str = "/api/lots") -> None:
    for edge in edges:
        status, _, body = await call(http, "GET", f"{edge.url}{path}", headers=headers)
        assert status == 200, (body, edge.tail())


async def refused_everywhere(http: aiohttp.ClientSession, edges: list[EdgeProcess], headers: dict[str, str],
                             status: int, code: str, method: str = "GET", path: str = "/api/lots") -> None:
    # The other replica first: it heard of the change only through NATS.
    for edge in reversed(edges):
        got, _, body = await call(http, method, f"{edge.url}{path}", headers=headers, json={} if method != "GET" else None)
        assert (got, (body or {}).get("error")) == (status, code), (edge.url, body)


async def not_near_a_minute_boundary() -> bool:
    # 25 s of room for provisioning, a token, two requests and the change on a loaded machine
    # (10 s was not always enough under a full parallel suite).
    return time.time() % 60 < 35


async def test_suspension_is_seen_by_every_replica_at_once(
    spawn_edges: SpawnEdges, http: aiohttp.ClientSession, provision: ProvisionPartner,
    registry_stub: registry_pb2_grpc.RegistryStub,
) -> None:
    edges = await spawn_edges(2)
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edges[0].url, partner), partner)
    await warm(http, edges, headers)
    await registry_stub.SuspendIntegration(rpb.SuspendIntegrationRequest(integration_id=partner.integration_id, reason="incident"),
                                           metadata=partner.approver)
    await refused_everywhere(http, edges, headers, 401, "integration_inactive")


async def test_key_regeneration_scope_removal_allowlist_and_rate_limit_reach_every_replica(
    spawn_edges: SpawnEdges, http: aiohttp.ClientSession, provision: ProvisionPartner,
    registry_stub: registry_pb2_grpc.RegistryStub,
) -> None:
    edges = await spawn_edges(2)
    update = registry_stub.UpdateIntegration

    # Regenerate the API key: the old key is refused everywhere, the new one works everywhere.
    partner = await provision()
    token = await fetch_token(http, edges[0].url, partner)
    await warm(http, edges, partner_headers(token, partner))
    regenerated = await registry_stub.RegenerateApiKey(rpb.RegenerateApiKeyRequest(integration_id=partner.integration_id),
                                                       metadata=partner.admin)
    await refused_everywhere(http, edges, partner_headers(token, partner), 401, "invalid_api_key")
    await warm(http, edges, {"Authorization": f"Bearer {token}", "X-API-Key": regenerated.api_key})

    # Remove a scope: a token issued with it is refused the scope everywhere.
    partner = await provision(scopes=["inventory:read", "inventory:write"])
    headers = partner_headers(await fetch_token(http, edges[0].url, partner), partner)
    await warm(http, edges, headers)
    await update(rpb.UpdateIntegrationRequest(integration_id=partner.integration_id, update_mask=["scopes"],
                                              scopes=["inventory:write"]), metadata=partner.admin)
    await refused_everywhere(http, edges, headers, 403, "insufficient_scope")

    # Set an allowlist that leaves out loopback.
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edges[0].url, partner), partner)
    await warm(http, edges, headers)
    await update(rpb.UpdateIntegrationRequest(integration_id=partner.integration_id, update_mask=["ip_allowlist"],
                                              ip_allowlist=["192.0.2.0/24"]), metadata=partner.admin)
    await refused_everywhere(http, edges, headers, 403, "ip_not_allowed")

    # Lower the rate limit below what this minute has already used (2 requests).
    await eventually(not_near_a_minute_boundary, timeout=30, what="a minute with room for the test")
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edges[0].url, partner), partner)
    await warm(http, edges, headers)
    await update(rpb.UpdateIntegrationRequest(integration_id=partner.integration_id, update_mask=["rate_limit_per_minute"],
                                              rate_limit_per_minute=2), metadata=partner.admin)
    await refused_everywhere(http, edges, headers, 429, "rate_limit_exceeded")


@pytest.fixture
async def apilog_subscription(make_settings: Callable[..., Settings]) -> AsyncIterator[list[bytes]]:
    received: list[bytes] = []
    nc = await nats.connect(make_settings().nats_url)

    async def collect(msg: nats.aio.msg.Msg) -> None:
        received.append(msg.data)

    sub = await nc.jetstream().subscribe("apilog.batch", cb=collect, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    yield received
    await sub.unsubscribe()
    await nc.close()


async def test_sigterm_finishes_cleanly_and_flushes_the_api_log(
    spawn_edges: SpawnEdges, http: aiohttp.ClientSession, provision: ProvisionPartner,
    apilog_subscription: list[bytes],
) -> None:
    (edge,) = await spawn_edges(1)
    partner = await provision()
    headers = partner_headers(await fetch_token(http, edge.url, partner), partner)
    request_ids = [f"sigterm-{n}-{partner.integration_id}" for n in range(20)]
    for request_id in request_ids:
        assert (await call(http, "GET", f"{edge.url}/api/lots", headers={**headers, "X-Request-ID": request_id}))[0] == 200
    edge.process.send_signal(signal.SIGTERM)

    async def stopped() -> bool:
        return edge.process.poll() is not None

    await eventually(stopped, timeout=15, what="the edge to exit")
    assert edge.process.returncode == 0, edge.tail()

    async def all_logged() -> bool:
        seen = {record.request_id for data in apilog_subscription
                for record in events_pb2.ApiRequestBatch.FromString(data).records}
        return set(request_ids) <= seen

    await eventually(all_logged, timeout=10, what="every request's log record")


async def test_a_rotated_signing_key_is_trusted_at_once_even_right_after_junk_kids(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, identity_stub: identity_pb2_grpc.IdentityStub,
    as_actor: Callable[..., tuple[tuple[str, str], ...]],
) -> None:
    partner = await provision()
    old = await fetch_token(http, edge, partner)
    assert (await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(old, partner)))[0] == 200
    junk = jwt.encode({"sub": "x"}, signing.generate_private_key("RS256"), algorithm="RS256", headers={"kid": "sk_junk"})
    assert (await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(junk, partner)))[0] == 401  # JWKS refetched now

    operator = as_actor("usr_operator", partner.org_id, [PLATFORM_PERMISSION])
    rotated = await identity_stub.RotateSigningKey(identity_pb2.RotateSigningKeyRequest(), metadata=operator)
    new = await fetch_token(http, edge, partner)
    assert jwt.get_unverified_header(new)["kid"] == rotated.kid
    # Within the refetch interval the junk kid started, yet the rotation event let the new key in.
    assert (await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(new, partner)))[0] == 200
    assert (await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(old, partner)))[0] == 200  # previous key still verifies
