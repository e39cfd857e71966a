"""The console under test: real identity and registry (gRPC on port 0, SQLite), the session's
nats-server, and the console served by a real uvicorn server on port 0 in this process, in the
embedded mode with the local sign-in. A test that asks for `webhooks_service` or `logs_service`
gets those real services behind the console too (tests/support/console_services.py); without
them the console's address for them refuses at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from services.console.entrypoints.main import RunningConsole, bootstrap
from services.kit.bus import ensure_streams
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.integration.webhooks.receiver import Receiver, Tls
from tests.support.console import ConsoleUser
from tests.support.console_services import UNREACHABLE, start_logs, start_webhooks


@pytest.fixture
def actor_private_key_file(actor_keys: tuple[bytes, Path], tmp_path: Path) -> Path:
    path = tmp_path / "actor_private.pem"
    path.write_bytes(actor_keys[0])
    return path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls.make(tmp_path_factory.mktemp("console-tls"))


@pytest.fixture
async def webhooks_service(make_settings: Callable[..., Settings], tls: Tls,
                           registry_service: RunningService) -> AsyncIterator[RunningService]:
    service = await start_webhooks(make_settings, tls, registry_addr=f"127.0.0.1:{registry_service.port}")
    yield service
    await service.stop(0)


@pytest.fixture
async def logs_service(make_settings: Callable[..., Settings]) -> AsyncIterator[RunningService]:
    service = await start_logs(make_settings)
    yield service
    await service.stop(0)


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:  # type: ignore[no-untyped-def]
    """JetStream, to publish what the edge and the other services would (API log records)."""
    nc = await nats.connect(nats_server.url)
    context = nc.jetstream()
    await ensure_streams(context)
    yield context
    await nc.close()


@pytest.fixture
async def start_receiver(tls: Tls) -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """start_receiver() -> a running HTTPS receiver whose certificate the webhooks service trusts."""
    started: list[Receiver] = []

    async def _start() -> Receiver:
        started.append(await Receiver(tls.server).start())
        return started[-1]

    yield _start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
def console_settings(make_settings: Callable[..., Settings], identity_service: RunningService,
                     registry_service: RunningService, actor_private_key_file: Path,
                     request: pytest.FixtureRequest) -> Callable[..., Settings]:
    def address(fixture: str) -> str:
        if fixture not in request.fixturenames:
            return UNREACHABLE
        return f"127.0.0.1:{request.getfixturevalue(fixture).port}"

    peers = {"webhooks_addr": address("webhooks_service"), "logs_addr": address("logs_service")}

    def _settings(**overrides: Any) -> Settings:
        return make_settings(**{
            "identity_addr": f"127.0.0.1:{identity_service.port}",
            "registry_addr": f"127.0.0.1:{registry_service.port}",
            **peers,
            "actor_private_key_file": str(actor_private_key_file),
            **overrides,
        })

    return _settings


@pytest.fixture
async def start_console(console_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[RunningConsole]]]:
    running: list[RunningConsole] = []

    async def _start(**overrides: Any) -> RunningConsole:
        console = await (await bootstrap(console_settings(**overrides), address="127.0.0.1:0")).start()
        running.append(console)
        return console

    yield _start
    for console in reversed(running):
        await console.stop()


@pytest.fixture
async def console_url(start_console: Callable[..., Awaitable[RunningConsole]]) -> str:
    return f"http://127.0.0.1:{(await start_console()).port}"


@pytest.fixture
async def browser(console_url: str) -> AsyncIterator[Callable[[], ConsoleUser]]:
    """browser() -> a new person's browser (own cookies) on the console."""
    users: list[ConsoleUser] = []

    def _new() -> ConsoleUser:
        users.append(ConsoleUser(console_url))
        return users[-1]

    yield _new
    for user in users:
        await user.close()
