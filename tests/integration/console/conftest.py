"""The console under test: real identity and registry (gRPC on port 0, SQLite), the session's
nats-server, and the console served by a real uvicorn server on port 0 in this process, in the
embedded mode with the local sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.console.main import RunningConsole, bootstrap
from services.kit.service import RunningService
from services.kit.settings import Settings
from tests.support.console import ConsoleUser


@pytest.fixture
def actor_private_key_file(actor_keys: tuple[bytes, Path], tmp_path: Path) -> Path:
    path = tmp_path / "actor_private.pem"
    path.write_bytes(actor_keys[0])
    return path


@pytest.fixture
def console_settings(make_settings: Callable[..., Settings], identity_service: RunningService,
                     registry_service: RunningService, actor_private_key_file: Path) -> Callable[..., Settings]:
    def _settings(**overrides: Any) -> Settings:
        return make_settings(**{
            "identity_addr": f"127.0.0.1:{identity_service.port}",
            "registry_addr": f"127.0.0.1:{registry_service.port}",
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
