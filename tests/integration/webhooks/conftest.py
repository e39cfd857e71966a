"""Webhooks under test: the real service on port 0 over a real gRPC channel, the session's
nats-server, SQLite under the test's tmp_path (or PostgreSQL where a test asks), and real HTTPS
receivers on loopback whose certificates chain to a `trustme` CA given as the CA bundle."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.db import migrate_async
from services.kit.service import RunningService
from tests.support.settings import Settings
from services.webhooks.entrypoints.main import bootstrap
from services.webhooks.adapters.sender import system_lookup
from tests.integration.webhooks.receiver import Receiver, Tls
from tests.support.services import channel_to

Metadata = tuple[tuple[str, str], ...]

# Shrunken retry schedule: attempt 2 0.2 s after attempt 1, then 0.4 s, 0.6 s, 0.8 s.
FAST_SCHEDULE = [0.2, 0.4, 0.6, 0.8]
LOOPBACK = ["127.0.0.0/8", "::1/128"]


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def start_receiver(tls: Tls) -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """start_receiver(trusted=True, host="127.0.0.1") -> a running HTTPS receiver."""
    started: list[Receiver] = []

    async def _start(*, trusted: bool = True, host: str = "127.0.0.1", plain_http: bool = False) -> Receiver:
        context = None if plain_http else (tls.server if trusted else tls.untrusted_server())
        receiver = await Receiver(context, host=host).start()
        started.append(receiver)
        return receiver

    yield _start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def receiver(start_receiver: Callable[..., Awaitable[Receiver]]) -> Receiver:
    return await start_receiver()


@dataclass
class Webhooks:
    service: RunningService
    stub: webhooks_pb2_grpc.WebhooksStub
    settings: Settings
    org: str
    admin: Metadata
    as_actor: Callable[..., Metadata]
    lookups: list[str] = field(default_factory=list)

    async def subscribe(self, url: str, types: list[str] | None = None, *, scheme: int = pb.SIGNATURE_SCHEME_SPEC,
                        description: str = "", metadata: Metadata | None = None, **fields: object) -> pb.CreateSubscriptionResponse:
        return await self.stub.CreateSubscription(pb.CreateSubscriptionRequest(
            url=url, activity_types=types or ["lot.created"], signature_scheme=scheme, description=description, **fields,
        ), metadata=metadata or self.admin)

    async def publish(self, type_: str = "lot.created", data_json: str = '{"lot_id": "L-1"}', *, event_id: str = "",
                      metadata: Metadata | None = None) -> pb.PublishActivityResponse:
        return await self.stub.PublishActivity(pb.PublishActivityRequest(type=type_, data_json=data_json, event_id=event_id),
                                               metadata=metadata or self.admin)

    async def attempts(self, subscription_id: str, **fields: object) -> list[pb.Attempt]:
        response = await self.stub.ListAttempts(pb.ListAttemptsRequest(subscription_id=subscription_id, page_size=500, **fields),
                                                metadata=self.admin)
        return list(reversed(response.attempts))  # oldest first

    async def deliveries(self, subscription_id: str, **fields: object) -> list[pb.Delivery]:
        response = await self.stub.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=subscription_id, page_size=500, **fields),
                                                  metadata=self.admin)
        return list(response.deliveries)

    async def subscription(self, subscription_id: str) -> pb.Subscription:
        return await self.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=subscription_id), metadata=self.admin)


def webhook_settings(make_settings: Callable[..., Settings], tls: Tls, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "webhooks_ca_bundle": str(tls.ca_file),
        "webhooks_allowed_private_networks": LOOPBACK,
        "webhooks_retry_schedule_seconds": FAST_SCHEDULE,
        "webhooks_timeout_seconds": 2.0,
        "webhooks_poll_seconds": 0.5,
        "webhooks_consumer_name": f"webhooks-{uuid.uuid4().hex[:12]}",
        # No registry unless a test starts one: port 1 refuses at once (UNAVAILABLE), where the
        # default port might reach some other registry running on this machine.
        "registry_addr": "127.0.0.1:1",
        **overrides,
    }
    return make_settings(**values)


@pytest.fixture
async def start_webhooks(
    make_settings: Callable[..., Settings], tls: Tls, as_actor: Callable[..., Metadata],
) -> AsyncIterator[Callable[..., Awaitable[Webhooks]]]:
    """start_webhooks(dns=None, **settings) -> a running webhooks service and an admin's stub.

    `dns` maps test host names to addresses, as a dict or a function of the host name (None:
    ask the system); every answer still passes the SSRF check."""
    started: list[tuple[RunningService, grpc.aio.Channel]] = []

    async def _start(dns: dict[str, list[str]] | Callable[[str], list[str] | None] | None = None, org: str | None = None,
                     **overrides: object) -> Webhooks:
        settings = webhook_settings(make_settings, tls, **overrides)
        await migrate_async("webhooks", settings.database_url("webhooks"))
        lookups: list[str] = []

        async def lookup(host: str, port: int) -> list[tuple[int, str]]:
            lookups.append(host)
            answer = dns(host) if callable(dns) else (dns or {}).get(host)
            if answer is not None:
                return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in answer]
            return await system_lookup(host, port)

        service = await (await bootstrap(settings, address="127.0.0.1:0", replay_history=False, lookup=lookup)).start()
        channel = channel_to(service)
        started.append((service, channel))
        org_id = org or f"org_{uuid.uuid4().hex[:12]}"
        return Webhooks(service, webhooks_pb2_grpc.WebhooksStub(channel), settings, org_id, as_actor("admin", org_id),
                        as_actor, lookups)

    yield _start
    for service, channel in reversed(started):
        await channel.close()
        await service.stop(0)


@pytest.fixture
async def webhooks(start_webhooks: Callable[..., Awaitable[Webhooks]]) -> Webhooks:
    return await start_webhooks()


@pytest.fixture
def ca_file(tls: Tls) -> Path:
    return tls.ca_file
