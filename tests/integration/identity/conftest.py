"""Identity under test: real gRPC servers on port 0 over real channels, the session's
nats-server, SQLite under the test's tmp_path."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.identity.entrypoints.main import bootstrap
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, PLATFORM_PERMISSION
from services.kit.db import migrate_async
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.support.services import channel_to

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Identity:
    service: RunningService
    stub: identity_pb2_grpc.IdentityStub
    settings: Settings


@pytest.fixture
async def start_identity(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[Identity]]]:
    """start_identity(durable=None, **settings) -> a running identity and a stub to it."""
    started: list[tuple[RunningService, object]] = []

    async def _start(durable: str | None = None, **overrides: object) -> Identity:
        settings = make_settings(**overrides)
        await migrate_async("identity", settings.database_url("identity"))
        service = await (await bootstrap(settings, address="127.0.0.1:0", consumer_durable=durable or "identity")).start()
        channel = channel_to(service)
        started.append((service, channel))
        return Identity(service, identity_pb2_grpc.IdentityStub(channel), settings)

    yield _start
    for service, channel in reversed(started):
        await channel.close()  # type: ignore[attr-defined]
        await service.stop(0)


@pytest.fixture
async def identity(start_identity: Callable[..., Awaitable[Identity]]) -> Identity:
    return await start_identity()


@pytest.fixture
def org() -> str:
    return f"org_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(as_actor: Callable[..., Metadata], org: str) -> Metadata:
    return as_actor(f"usr_{uuid.uuid4().hex[:8]}", org, [ADMIN_PERMISSION])


@pytest.fixture
def operator(as_actor: Callable[..., Metadata], org: str) -> Metadata:
    """A platform operator: rotates the signing keys every organisation's tokens share."""
    return as_actor(f"usr_{uuid.uuid4().hex[:8]}", org, [PLATFORM_PERMISSION])


@pytest.fixture
def edge(as_actor: Callable[..., Metadata]) -> Metadata:
    """The edge's service identity: EDGE_PERMISSION, in an organisation of its own."""
    return as_actor("svc_edge", "org_trellis_edge", [EDGE_PERMISSION])


def new_integration_id() -> str:
    return f"int_{uuid.uuid4().hex}"


async def issue(stub: identity_pb2_grpc.IdentityStub, admin: Metadata, integration_id: str | None = None,
                scopes: tuple[str, ...] = ("inventory:read", "orders:write"), request_id: str = "") -> pb.Credentials:
    response = await stub.IssueCredentials(
        pb.IssueCredentialsRequest(integration_id=integration_id or new_integration_id(), scopes=list(scopes),
                                   request_id=request_id or uuid.uuid4().hex),
        metadata=admin,
    )
    return response.credentials
