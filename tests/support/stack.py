"""The production shape of Trellis on one machine, for end-to-end tests: a NATS JetStream
cluster (streams with 3 replicas), one PostgreSQL database per service, and every service as
its own OS process in production mode (`python -m services.<name>`, TRELLIS_* environment),
with as many edge and webhooks replicas as asked; plus the example upstream behind the edge.

`Stack.start()` migrates, starts everything at once and waits until each process is ready;
`stop()` ends every process (and the cluster), whatever state the test left them in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as wpb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, mint_actor_token
from services.kit.db import migrate_async
from services.kit.settings import SERVICES
from tests.support.natscluster import NatsCluster
from tests.support.postgres import PostgresServer
from tests.support.ports import free_ports
from tests.support.processes import (
    ChildProcess,
    base_environment,
    stop_all,
    tail,
)

Metadata = tuple[tuple[str, str], ...]
ROUTE_PREFIX = "/v1/inventory"


@dataclass(frozen=True)
class ActorKeys:
    """The key pair actor tokens are signed and verified with, and what tokens must name."""

    private_pem: bytes
    public_file: Path
    issuer: str
    audience: str

    def metadata(self, user: str, org: str, permissions: list[str] | None = None) -> Metadata:
        token = mint_actor_token(self.private_pem, issuer=self.issuer, audience=self.audience, user_id=user, org_id=org,
                                 permissions=[ADMIN_PERMISSION] if permissions is None else permissions, ttl_seconds=900)
        return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Partner:
    """One Active integration and what its partner sends on every request."""

    org_id: str
    integration_id: str
    api_key: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", "X-API-Key": self.api_key}


@dataclass
class Stack:
    root: Path
    postgres: PostgresServer
    actors: ActorKeys
    ca_file: Path             # receivers' certificates chain to this CA (webhooks' CA bundle)
    edges: int = 2
    webhooks: int = 2
    cluster: NatsCluster = field(init=False)
    children: dict[str, ChildProcess] = field(default_factory=dict)
    database_urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_dir = self.root / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.cluster = NatsCluster(self.root / "nats")

    # --- processes ------------------------------------------------------------------------------

    def of(self, service: str) -> list[ChildProcess]:
        """The processes of one service (its replicas), in start order."""
        return [c for label, c in self.children.items() if label.split("-")[0] == service]

    def address(self, service: str) -> str:
        return self.of(service)[0].address

    async def start(self) -> Stack:
        self.cluster.start()
        await self.cluster.ready()
        urls = self.database_urls = {name: self.postgres.create_database(name) for name in SERVICES}
        for name, url in urls.items():  # one at a time: Alembic's context is process-global
            await migrate_async(name, url)
        ports = iter(free_ports(5 + self.edges + 2 * self.webhooks + 3))
        single = {name: f"127.0.0.1:{next(ports)}" for name in ("identity", "registry", "logs")}
        upstream = f"127.0.0.1:{next(ports)}"
        edge_addresses = [f"127.0.0.1:{next(ports)}" for _ in range(self.edges)]
        webhooks_addresses = [f"127.0.0.1:{next(ports)}" for _ in range(self.webhooks)]
        env = self._environment(urls, single, webhooks_addresses[0])
        # The address partners reach the edges at (a load balancer would be in front): identity
        # signs and every edge verifies the issuer derived from it, whatever port each listens on.
        env["TRELLIS_EDGE_PUBLIC_URL"] = f"http://{edge_addresses[0]}"

        host, _, port = upstream.rpartition(":")
        self._add(ChildProcess("upstream", [sys.executable, "-m", "examples.upstream", "--host", host, "--port", port],
                               base_environment() | {"PYTHONUNBUFFERED": "1"}, upstream, self.logs_dir / "upstream.log",
                               probe="tcp"))
        # Each gRPC service also serves /metrics, by default on its port + 1000; free ports instead.
        for name, address in single.items():
            self._add(ChildProcess.service(name, name, env | {f"TRELLIS_{name.upper()}_ADDR": address,
                                                              f"TRELLIS_{name.upper()}_METRICS_ADDR": f"127.0.0.1:{next(ports)}"},
                                           address, self.logs_dir))
        for n, address in enumerate(webhooks_addresses, 1):
            self._add(ChildProcess.service("webhooks", f"webhooks-{n}", env | {
                "TRELLIS_WEBHOOKS_ADDR": address, "TRELLIS_WEBHOOKS_METRICS_ADDR": f"127.0.0.1:{next(ports)}"},
                address, self.logs_dir))
        edge_env = env | self._edge_environment(upstream)
        for n, address in enumerate(edge_addresses, 1):
            self._add(ChildProcess.service("edge", f"edge-{n}", edge_env | {"TRELLIS_EDGE_ADDR": address}, address,
                                           self.logs_dir, probe="http"))
        # All at once, as a Kubernetes rollout of a fresh cluster does: while the new replicated
        # streams and consumers elect their leaders (about 2 s here) JetStream answers nothing,
        # and every process waits for that (services.kit.bus.while_electing) instead of failing.
        for child in self.children.values():
            child.start()
        await asyncio.gather(*(child.wait_ready() for child in self.children.values()))
        return self

    def _add(self, child: ChildProcess) -> None:
        self.children[child.label] = child

    def _environment(self, databases: dict[str, str], single: dict[str, str], webhooks: str) -> dict[str, str]:
        """Production mode: real secrets, PostgreSQL per service, the cluster, 3 stream replicas."""
        env = base_environment()
        env.update({
            "TRELLIS_MODE": "production",
            "TRELLIS_DATA_DIR": str(self.root / "data"),
            "TRELLIS_NATS_URL": self.cluster.url,
            "TRELLIS_NATS_STREAM_REPLICAS": "3",
            "TRELLIS_ACTOR_ISSUER": self.actors.issuer,
            "TRELLIS_ACTOR_AUDIENCE": self.actors.audience,
            "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(self.actors.public_file),
            "TRELLIS_KEK": base64.b64encode(os.urandom(32)).decode(),
            "TRELLIS_AUDIT_HMAC_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TRELLIS_IDENTITY_ADDR": single["identity"],
            "TRELLIS_REGISTRY_ADDR": single["registry"],
            "TRELLIS_LOGS_ADDR": single["logs"],
            "TRELLIS_WEBHOOKS_ADDR": webhooks,
            "TRELLIS_OUTBOX_POLL_SECONDS": "0.2",
            # Receivers on loopback with a test CA; claims and unacked activities of a replica
            # that dies come back within seconds (defaults: 30 s), so the test stays short.
            "TRELLIS_WEBHOOKS_CA_BUNDLE": str(self.ca_file),
            "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS": json.dumps(["127.0.0.0/8"]),
            "TRELLIS_WEBHOOKS_RETRY_SCHEDULE_SECONDS": json.dumps([0.5, 1.0, 2.0, 4.0]),
            "TRELLIS_WEBHOOKS_TIMEOUT_SECONDS": "5",
            "TRELLIS_WEBHOOKS_LEASE_SECONDS": "4",
            "TRELLIS_WEBHOOKS_CONSUMER_ACK_WAIT_SECONDS": "4",
            "TRELLIS_WEBHOOKS_POLL_SECONDS": "0.5",
            "TRELLIS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        })
        env.update({f"TRELLIS_{name.upper()}_DATABASE_URL": url for name, url in databases.items()})
        return env

    def _edge_environment(self, upstream: str) -> dict[str, str]:
        routes = self.root / "routes.toml"
        routes.write_text(f'[[route]]\nprefix = "{ROUTE_PREFIX}"\nupstream = "http://{upstream}"\nscope = "inventory"\n')
        # The edge's own service identity, as a Kubernetes projected token would give it.
        token_file = self.root / "edge.token"
        token_file.write_text(mint_actor_token(self.actors.private_pem, issuer=self.actors.issuer,
                                               audience=self.actors.audience, user_id="service:edge", org_id="trellis",
                                               permissions=[EDGE_PERMISSION], ttl_seconds=3600))
        return {
            "TRELLIS_EDGE_ROUTES_FILE": str(routes),
            "TRELLIS_SERVICE_TOKEN_FILE": str(token_file),
            # Refuse rather than allow while the shared counters cannot be reached, so the
            # global limit holds through a nats-server's death too (the default allows).
            "TRELLIS_EDGE_RATE_LIMIT_FAIL_OPEN": "false",
        }

    def stop(self) -> None:
        """Every process, then the cluster; SIGKILL for whatever does not stop within 10 s."""
        stop_all(list(self.children.values()))
        self.cluster.stop()

    def logs(self, lines: int = 40) -> str:
        """The tail of every process's log (for a failure report)."""
        parts = [tail(child.log_file, lines) for child in self.children.values()]
        return "\n".join(parts + [self.cluster.logs(lines)])

    # --- provisioning ---------------------------------------------------------------------------

    async def provision(self, *, rate_limit_per_minute: int) -> Partner:
        """An organisation with one Active integration, created by one administrator and approved
        and activated by another, and an access token from an edge's /oauth/token."""
        org = f"org_{uuid.uuid4().hex[:12]}"
        alice, bob = self.actors.metadata("usr_alice", org), self.actors.metadata("usr_bob", org)
        async with grpc.aio.insecure_channel(self.address("registry")) as channel:
            registry = registry_pb2_grpc.RegistryStub(channel)
            created = await registry.CreateIntegration(rpb.CreateIntegrationRequest(
                vendor_id="sap", name="Scale-out partner", owner="usr_alice", description="scale-out e2e test",
                scopes=["inventory:read"], rate_limit_per_minute=rate_limit_per_minute), metadata=alice, timeout=15)
            await registry.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob,
                                              timeout=15)
            activated = await registry.ActivateIntegration(
                rpb.ActivateIntegrationRequest(integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob,
                timeout=15)
        credentials = activated.credentials
        edge = self.of("edge")[0].address
        async with aiohttp.ClientSession(trust_env=False) as session:
            basic = base64.b64encode(f"{credentials.client_id}:{credentials.client_secret}".encode()).decode()
            async with session.post(f"http://{edge}/oauth/token", data={"grant_type": "client_credentials"},
                                    headers={"Authorization": f"Basic {basic}"},
                                    timeout=aiohttp.ClientTimeout(total=15)) as answer:
                assert answer.status == 200, await answer.text()
                token = (await answer.json())["access_token"]
        return Partner(org, created.id, credentials.api_key, token)

    async def subscribe(self, org: str, url: str, types: list[str]) -> str:
        """A webhook subscription of `org` to `types` at `url`; its id."""
        async with grpc.aio.insecure_channel(self.address("webhooks")) as channel:
            created = await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(
                wpb.CreateSubscriptionRequest(url=url, activity_types=types, description="scale-out e2e receiver"),
                metadata=self.actors.metadata("usr_alice", org), timeout=15)
        return created.subscription.id

