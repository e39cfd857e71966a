"""Shared fixtures: a real nats-server with JetStream, a real PostgreSQL (started on first use),
actor tokens signed by a key made for this session, and settings pointing at them."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.natsproc import NatsServer
from tests.support.settings import Settings
from tests.support.postgres import PostgresServer

ACTOR_ISSUER = "trellis-tests"
ACTOR_AUDIENCE = "trellis"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def nats_server(session_dir: Path) -> Iterator[NatsServer]:
    server = NatsServer(session_dir / "nats", log_file=session_dir / "nats.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One empty database per test, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture(scope="session")
def actor_keys(session_dir: Path) -> tuple[bytes, Path]:
    private_pem, public_pem = generate_actor_key()
    public_file = session_dir / "actor_public.pem"
    public_file.write_bytes(public_pem)
    return private_pem, public_file


@pytest.fixture(scope="session")
def mint(actor_keys: tuple[bytes, Path]) -> Callable[..., str]:
    """mint(user, org, permissions=[admin]) -> actor token for that user."""
    private_pem, _ = actor_keys

    def _mint(user: str, org: str, permissions: list[str] | None = None, **kw: object) -> str:
        return mint_actor_token(
            private_pem, issuer=ACTOR_ISSUER, audience=ACTOR_AUDIENCE, user_id=user, org_id=org,
            permissions=[ADMIN_PERMISSION] if permissions is None else permissions, **kw,  # type: ignore[arg-type]
        )

    return _mint


@pytest.fixture
def as_actor(mint: Callable[..., str]) -> Callable[..., tuple[tuple[str, str], ...]]:
    """as_actor(user, org, permissions=None) -> gRPC call metadata carrying that actor's token."""

    def _md(user: str, org: str, permissions: list[str] | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint(user, org, permissions)}"),)

    return _md


@pytest.fixture
def make_settings(tmp_path: Path, actor_keys: tuple[bytes, Path], nats_server: NatsServer) -> Callable[..., Settings]:
    """Settings for services under test: real NATS, SQLite under tmp_path unless overridden."""
    _, public_file = actor_keys
    kek = base64.b64encode(secrets.token_bytes(32)).decode()

    def _make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "mode": "embedded",
            "data_dir": tmp_path / "data",
            "nats_url": nats_server.url,
            "actor_issuer": ACTOR_ISSUER,
            "actor_audience": ACTOR_AUDIENCE,
            "actor_public_key_file": str(public_file),
            "kek": kek,
            "outbox_poll_seconds": 0.2,
            **overrides,
        }
        return Settings(**values)  # type: ignore[arg-type]

    return _make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that take the postgresql parameter or fixture are marked, so `-m "not postgres"` skips them.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "postgres" in getattr(item, "fixturenames", ()) or (callspec and "postgresql" in callspec.id):
            item.add_marker(pytest.mark.postgres)


os.environ.setdefault("TRELLIS_LOG_LEVEL", "WARNING")


# --- running services ------------------------------------------------------------------------
# `identity_service` and `registry_service` are real gRPC servers on port 0 with SQLite, the
# session's nats-server, and the outbox relay running. Stubs talk to them over real channels.

from services.contracts.trellis.identity.v1 import identity_pb2_grpc  # noqa: E402
from services.contracts.trellis.registry.v1 import registry_pb2_grpc  # noqa: E402
from services.kit.service import RunningService  # noqa: E402
from tests.support.services import channel_to, start_service  # noqa: E402


@pytest.fixture
async def identity_service(make_settings: Callable[..., Settings]) -> AsyncIterator[RunningService]:
    service = await start_service("identity", make_settings())
    yield service
    await service.stop(0)


@pytest.fixture
async def registry_service(make_settings: Callable[..., Settings], identity_service: RunningService) -> AsyncIterator[RunningService]:
    service = await start_service("registry", make_settings(identity_addr=f"127.0.0.1:{identity_service.port}"))
    yield service
    await service.stop(0)


@pytest.fixture
async def identity_stub(identity_service: RunningService) -> AsyncIterator[identity_pb2_grpc.IdentityStub]:
    async with channel_to(identity_service) as channel:
        yield identity_pb2_grpc.IdentityStub(channel)


@pytest.fixture
async def registry_stub(registry_service: RunningService) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
    async with channel_to(registry_service) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)
