"""The suite behind a real headless Chromium: identity, registry, webhooks, logs and the edge
(with the example upstream behind it) on real ports, the console in the embedded mode, HTTPS
receivers with a test CA, and people with browser contexts of their own
(tests/support/browser.py). One Chromium for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from examples.upstream.app import make_app as make_example_upstream
from services.console.entrypoints.main import RunningConsole, bootstrap as console_bootstrap
from services.edge.entrypoints.main import RunningEdge, bootstrap as edge_bootstrap
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.integration.webhooks.receiver import Receiver, Tls
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS, Person
from tests.support.console_services import start_logs, start_webhooks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium (make test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def actor_private_key_file(actor_keys: tuple[bytes, Path], tmp_path: Path) -> Path:
    path = tmp_path / "actor_private.pem"
    path.write_bytes(actor_keys[0])
    return path


@pytest.fixture
async def example_upstream() -> AsyncIterator[str]:
    runner = web.AppRunner(make_example_upstream(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls.make(tmp_path_factory.mktemp("browser-tls"))


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
async def start_receiver(tls: Tls) -> AsyncIterator[Callable[[], Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def _start() -> Receiver:
        started.append(await Receiver(tls.server).start())
        return started[-1]

    yield _start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
def suite_settings(make_settings: Callable[..., Settings], identity_service: RunningService,
                   registry_service: RunningService, webhooks_service: RunningService, logs_service: RunningService,
                   actor_private_key_file: Path, example_upstream: str, tmp_path: Path) -> Settings:
    routes = tmp_path / "routes.toml"
    routes.write_text(f'[[route]]\nprefix = "/v1/inventory"\nupstream = "{example_upstream}"\nscope = "inventory"\n')
    return make_settings(identity_addr=f"127.0.0.1:{identity_service.port}",
                         registry_addr=f"127.0.0.1:{registry_service.port}",
                         webhooks_addr=f"127.0.0.1:{webhooks_service.port}", logs_addr=f"127.0.0.1:{logs_service.port}",
                         actor_private_key_file=str(actor_private_key_file), edge_routes_file=str(routes))


@pytest.fixture
async def edge_url(suite_settings: Settings) -> AsyncIterator[str]:
    edge: RunningEdge = await (await edge_bootstrap(suite_settings, address="127.0.0.1:0")).start()
    yield f"http://127.0.0.1:{edge.port}"
    await edge.stop()


@pytest.fixture
async def console_url(suite_settings: Settings) -> AsyncIterator[str]:
    console: RunningConsole = await (await console_bootstrap(suite_settings, address="127.0.0.1:0")).start()
    yield f"http://127.0.0.1:{console.port}"
    await console.stop()


class People:
    def __init__(self, browser: Browser, base_url: str) -> None:
        self._browser, self._base_url = browser, base_url
        self.everyone: list[Person] = []

    async def person(self, name: str, **kw: Any) -> Person:
        self.everyone.append(await Person.open(self._browser, name, self._base_url, **kw))
        return self.everyone[-1]


@pytest.fixture
async def people(chromium: Browser, console_url: str, request: pytest.FixtureRequest) -> AsyncIterator[People]:
    """people.person("alice") -> alice at a browser of her own, on the console."""
    crowd = People(chromium, console_url)
    yield crowd
    if request.node.stash.get(FAILED, False):
        for person in crowd.everyone:
            path = await person.screenshot_failure(request.node.name)
            print(f"screenshot of {person.name}'s page: {path}")
    for person in crowd.everyone:
        await person.context.close()
