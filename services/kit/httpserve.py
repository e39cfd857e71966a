"""What the two HTTP processes (the edge and the console) share: a uvicorn server that leaves
signals to its owner, and the start/stop/serve-until-signalled life of a bootstrapped server with
what was opened for it (NATS, channels, the socket, the metrics listener: a ServiceBuilder's
stack, services.kit.builder, bound with `ServiceBuilder.listen`)."""

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
