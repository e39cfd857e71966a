"""A real HTTPS webhook receiver on loopback for the tests: aiohttp with a certificate from a
`trustme` CA, recording every request as it arrived (raw body bytes, headers, time)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp import web
from multidict import CIMultiDict

# The names the test CA's server certificate is valid for.
CERT_NAMES = ("localhost", "127.0.0.1", "::1", "hooks.example.test", "other.example.test")


@dataclass(frozen=True)
class Tls:
    """A test CA, its PEM bundle on disk (the webhooks CA-bundle setting), and server contexts."""

    ca: trustme.CA
    ca_file: Path
    server: ssl.SSLContext

    @classmethod
    def make(cls, directory: Path) -> "Tls":
        ca = trustme.CA()
        ca_file = directory / "test-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*CERT_NAMES).configure_cert(server)
        return cls(ca, ca_file, server)

    def untrusted_server(self) -> ssl.SSLContext:
        """A server context whose certificate chains to a CA nobody trusts."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert(*CERT_NAMES).configure_cert(context)
        return context


@dataclass(frozen=True)
class Received:
    at: float                 # time.monotonic() on arrival
    method: str
    path: str
    host: str                 # the Host header
    headers: CIMultiDict[str]
    body: bytes


Answer = tuple[int, str]
Behaviour = Callable[[Received], Awaitable[Answer] | Answer]


@dataclass
class Receiver:
    """Answers 200 unless told otherwise: `statuses` are used first, in order, then `behaviour`;
    every answer carries `answer_headers`."""

    ssl_context: ssl.SSLContext | None
    host: str = "127.0.0.1"
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    behaviour: Behaviour | None = None
    answer_headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        name = host or self.host
        if ":" in name:
            name = f"[{name}]"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{name}:{self.port}{path}"

    def hang(self) -> None:
        """Every later request waits until `release()` (or the client gives up)."""
        async def hanging(_: Received) -> Answer:
            await self._release.wait()
            return 200, "late"

        self.behaviour = hanging

    def release(self) -> None:
        self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = Received(time.monotonic(), request.method, request.path, request.headers.get("Host", ""),
                          CIMultiDict(request.headers), body)
        self.received.append(record)
        self._arrived.set()
        if self.statuses:
            status, text = self.statuses.pop(0), "scripted"
        elif self.behaviour is not None:
            answer = self.behaviour(record)
            status, text = await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[misc]
        else:
            status, text = 200, "ok"
        headers = {**self.answer_headers, **({"Location": self.url("/elsewhere")} if 300 <= status < 400 else {})}
        return web.Response(status=status, text=text, headers=headers)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` requests, once they have all arrived."""
        deadline = time.monotonic() + timeout
        while True:
            self._arrived.clear()
            if len(self.received) >= count:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"receiver got {len(self.received)} requests, expected {count} within {timeout}s")
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        return self.received[:count]
