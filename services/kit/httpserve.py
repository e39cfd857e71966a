"""What the two HTTP processes (the edge and the console) share: a uvicorn server that leaves
signals to its owner, the listening socket, and the start/stop/serve-until-signalled life of a
bootstrapped server with what was opened for it (NATS, channels, the metrics listener)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import uvicorn

from services.kit.service import Cleanup

log = logging.getLogger(__name__)


class QuietServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: its RunningHttp decides when to stop,
    so what the process opened is closed after the last request, before it exits."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(address: str, *, nodelay: bool = True) -> socket.socket:
    """A socket bound to host:port (port 0: any free one), inheritable, not yet listening.

    nodelay: say the socket is TCP (IPPROTO_TCP), so asyncio turns Nagle's algorithm off on its
    connections (TCP_NODELAY); with protocol 0 it leaves it on."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP if nodelay else 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.set_inheritable(True)
    return sock


def closer(sock: socket.socket) -> Cleanup:
    async def close() -> None:
        sock.close()

    return close


@dataclass(kw_only=True)
class RunningHttp:
    """A bootstrapped HTTP server: start() runs `starts` then serves on `sock`; stop() stops
    serving (requests in flight finish), then runs `stops` newest first, each whatever the
    others do."""

    name: str
    server: uvicorn.Server
    sock: socket.socket
    port: int
    starts: list[Callable[[], Awaitable[object]]] = field(default_factory=list)  # what they return is unused
    stops: list[Cleanup] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def start(self) -> RunningHttp:
        for start in self.starts:
            await start()
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                await self.task
                raise RuntimeError(f"the {self.name} server stopped while starting")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.server.should_exit = True
            await self.task
            self.task = None
        for stop in reversed(self.stops):
            try:
                await stop()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.warning("cleanup failed while stopping the %s", self.name, exc_info=True)

    async def serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        assert self.task is not None
        await asyncio.wait([self.task, loop.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        log.info("%s shutting down", self.name)
        await self.stop()
