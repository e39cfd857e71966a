"""Builds a service from what it has, and closes it in reverse, once.

    async def bootstrap(settings: RegistryProcessSettings, *, address: str | None = None) -> RunningService:
        async with ServiceBuilder(NAME, settings, address=address) as build:
            db = build.database()
            bus = await build.nats()
            relay = build.outbox_relay(db, outbox, bus)
            identity = IdentityCredentials(IdentityStub(build.peer(settings.identity_addr)))
            handlers = RegistryHandlers(...)
            return build.serve(lambda server: add_RegistryServicer_to_server(RegistryServicer(handlers), server),
                               [SERVICE_NAME])

Each step registers how to close what it opened on one AsyncExitStack. A step that fails
closes everything opened before it, newest first, and its error is what the caller sees;
`serve()` hands the stack to the RunningService, whose `stop()` closes it the same way after
the server stopped. A close that fails is logged and the others still run. So a `main.py`
states what its service has and nothing about the order of cleanup.

The two HTTP processes (the edge and the console) are built the same way: `listen()` binds
their socket, `on_close()` registers what they open themselves, and `handover()` gives the
stack to their services.kit.httpserve.RunningHttp, which closes it after uvicorn stopped.
They have no database, so SQLAlchemy (and the kit's database code and outbox) is imported by
the steps that use it, not by this module: about 25 MB of RSS the edge and the console do not
carry (tests/unit/kit/test_service_imports.py).
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import grpc
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.kit.auth import ActorVerifier
from services.kit.bus import connect, ensure_streams
from services.kit.grpc_server import create_server
from services.kit.metrics import ServiceMetrics
from services.kit.service import Cleanup, RunningService
from services.kit.settings import KitSettings
from services.kit.telemetry import peer_channel

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from services.kit.outbox import OutboxRelay

log = logging.getLogger(__name__)

Close = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Database:
    """A service's engine and its sessions."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @property
    def sqlite(self) -> bool:
        """SQLite: one writer, no SKIP LOCKED, no advisory locks."""
        from services.kit.db import is_sqlite

        return is_sqlite(self.url)

    @cached_property
    def read_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for units that only read (services.kit.db.read_session_factory)."""
        from services.kit.db import read_session_factory

        return read_session_factory(self.engine)


@dataclass(frozen=True)
class Bus:
    """The process's NATS connection and its JetStream context."""

    nc: NATS
    js: JetStreamContext


class Component(Protocol):
    """Something that runs beside the server: started once, stopped when the service stops."""

    def start(self) -> Awaitable[None] | None: ...

    async def stop(self) -> None: ...


class Consumer(Component, Protocol):
    """A durable JetStream consumer, whose lag /metrics reports."""

    @property
    def stream(self) -> str: ...

    @property
    def durable(self) -> str: ...


C = TypeVar("C", bound=Component)
K = TypeVar("K", bound=Consumer)


class ServiceBuilder:
    """Opens a service's parts in the order its `bootstrap` asks for them (see the module's
    docstring); `async with` closes them in reverse if the block fails before `serve()`."""

    def __init__(self, name: str, settings: KitSettings, *, address: str | None = None) -> None:
        self.name = name
        self.settings = settings
        self._address = address
        self._metrics: ServiceMetrics | None = None
        self._stack = AsyncExitStack()
        self._served = False

    @property
    def address(self) -> str:
        """Where the gRPC server binds: the one given, else `<bind host>:<the service's port>`."""
        return self._address or f"{self.settings.bind_host}:{self.settings.listen_port(self.name)}"

    @property
    def metrics(self) -> ServiceMetrics:
        """The gRPC service's metrics (calls, outbox, consumers), made when first asked for."""
        if self._metrics is None:
            self._metrics = ServiceMetrics(self.name)
        return self._metrics

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._served:
            # A step failed (or the block served nothing): nothing of this may outlive it.
            await self._stack.aclose()

    def on_close(self, close: Close, what: str) -> None:
        """Run `close()` when the service stops, or when a later step fails: after everything
        opened after this call was closed."""

        async def guarded() -> None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - keep closing the rest; the caller sees the first failure
                log.warning("closing the %s of %s failed", what, self.name, exc_info=True)

        self._stack.push_async_callback(guarded)

    def database(self) -> Database:
        """The service's engine (`<name>_database_url`; migrations are not run here)."""
        from services.kit.db import create_engine, session_factory

        url = self.settings.database_url(self.name)
        engine = create_engine(url, echo=self.settings.database_echo)
        self.on_close(engine.dispose, "database engine")
        return Database(url, engine, session_factory(engine))

    async def nats(self) -> Bus:
        """A NATS connection, and the streams Trellis uses, created or brought up to date."""
        nc = await connect(self.settings.nats_url, name=f"trellis-{self.name}")
        self.on_close(lambda: _close_nats(nc), "NATS connection")
        js = nc.jetstream()
        await ensure_streams(js, replicas=self.settings.nats_stream_replicas)
        return Bus(nc, js)

    def outbox_relay(self, db: Database, table: Table, bus: Bus) -> OutboxRelay:
        """The relay publishing `table`'s rows to JetStream, running; its backlog in /metrics."""
        from services.kit.outbox import OutboxRelay, jetstream_publisher

        relay = OutboxRelay(db.sessions, table, jetstream_publisher(bus.js),
                            poll_seconds=self.settings.outbox_poll_seconds, skip_locked=not db.sqlite)
        relay.start()
        self.on_close(relay.stop, "outbox relay")
        self.metrics.watch_outbox(relay)
        return relay

    def peer(self, address: str) -> grpc.aio.Channel:
        """A traced channel to a peer service."""
        channel = peer_channel(address)
        self.on_close(channel.close, f"channel to {address}")
        return channel

    async def start(self, component: C, what: str) -> C:
        """`component`, started now and stopped when the service stops."""
        started = component.start()
        if inspect.isawaitable(started):
            await started
        self.on_close(component.stop, what)
        return component

    async def consumer(self, consumer: K, bus: Bus) -> K:
        """A durable consumer, started now and stopped when the service stops; its lag in /metrics."""
        await self.start(consumer, f"consumer {consumer.durable}")
        self.metrics.watch_consumer(bus.js, consumer.stream, consumer.durable)
        return consumer

    def listen(self, address: str, *, nodelay: bool = True) -> socket.socket:
        """A socket bound to `address` (`bind`), closed when the service stops."""
        sock = bind(address, nodelay=nodelay)
        self.on_close(closer(sock), "listening socket")
        return sock

    def handover(self) -> Cleanup:
        """Everything opened so far, as one close for the server's handle to run after the server
        stopped; the builder no longer closes it when its block ends."""
        self._served = True
        return self._stack.pop_all().aclose

    def serve(self, register: Callable[[grpc.aio.Server], None], service_names: Iterable[str], *,
              public_methods: Iterable[str] = ()) -> RunningService:
        """The gRPC server bound to the builder's address (health, reflection, the kit's
        interceptors, call metrics), not yet started; the RunningService closes the rest."""
        names = list(service_names)
        metrics_address = self.settings.metrics_address(self.name, self.address)
        server, port, health = create_server(
            self.address, register=register, service_names=names, verifier=ActorVerifier.from_settings(self.settings),
            public_methods=public_methods, metrics=self.metrics,
        )
        return RunningService(self.name, server, port, health, names, cleanups=[self.handover()],
                              metrics=self.metrics, metrics_address=metrics_address)


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
    """Closes `sock`, as a cleanup."""

    async def close() -> None:
        sock.close()

    return close


async def _close_nats(nc: NATS) -> None:
    """Drain (what was published is flushed, subscriptions end), or close when draining cannot
    run (the connection is down or reconnecting)."""
    try:
        await nc.drain()
    except Exception:  # noqa: BLE001 - closing is what matters now
        log.debug("NATS drain failed; closing", exc_info=True)
        await nc.close()
