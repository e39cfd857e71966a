"""ServiceBuilder with real parts (SQLite, the session's nats-server, a JetStream consumer, a
gRPC server on a real port): a failing step closes what was opened, newest first, and the
step's error is what the caller sees; a built service serves, and its stop closes the same way."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.msg import Msg
from sqlalchemy import event

from services.kit.builder import Bus, ServiceBuilder
from services.kit.consumer import PullLoop
from services.kit.db import new_metadata
from services.kit.outbox import outbox_table
from tests.support.settings import Settings

metadata = new_metadata()
outbox = outbox_table(metadata)
SERVICE = "trellis.test.Built"


class RecordingConsumer:
    """A real durable pull consumer on the TRELLIS stream that notes when it stops."""

    stream = "TRELLIS"

    def __init__(self, bus: Bus, closed: list[str]) -> None:
        self.durable = f"builder-{uuid.uuid4().hex[:12]}"
        self._loop = PullLoop(bus.js, subject=f"trellis.test.{self.durable}", stream=self.stream, durable=self.durable, batch=1)
        self._closed = closed

    async def start(self) -> None:
        async def ignore(messages: list[Msg]) -> None:
            for message in messages:
                await message.ack()

        await self._loop.start(ignore)

    async def stop(self) -> None:
        await self._loop.stop()
        self._closed.append("consumer stopped")


def tasks_named(*names: str) -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name() in names and not t.done()]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on: binding the gRPC server there fails."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def marker(closed: list[str], name: str) -> Callable[[], Any]:
    async def close() -> None:
        closed.append(name)

    return close


async def build_everything(build: ServiceBuilder, closed: list[str]) -> dict[str, Any]:
    """Every kind of part, each followed by a marker, so the order of closing shows."""
    db = build.database()
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    event.listen(db.engine.sync_engine, "engine_disposed", lambda _engine: closed.append("engine disposed"))
    build.on_close(marker(closed, "after database"), "marker")
    bus = await build.nats()
    build.on_close(marker(closed, "after nats"), "marker")
    relay = build.outbox_relay(db, outbox, bus)
    build.on_close(marker(closed, "after relay"), "marker")
    channel = build.peer("127.0.0.1:1")
    build.on_close(marker(closed, "after peer"), "marker")
    consumer = await build.consumer(RecordingConsumer(bus, closed), bus)
    build.on_close(marker(closed, "after consumer"), "marker")
    return {"db": db, "bus": bus, "relay": relay, "channel": channel, "consumer": consumer}


REVERSE = ["after consumer", "consumer stopped", "after peer", "after relay", "after nats", "after database", "engine disposed"]


def assert_all_closed(parts: dict[str, Any]) -> None:
    assert parts["bus"].nc.is_closed
    assert parts["channel"].get_state() is grpc.ChannelConnectivity.SHUTDOWN
    assert tasks_named("outbox-relay", f"consumer-{parts['consumer'].durable}") == []


async def test_a_step_that_fails_closes_what_was_opened_newest_first(make_settings: Callable[..., Settings],
                                                                      taken_port: int) -> None:
    closed: list[str] = []
    parts: dict[str, Any] = {}
    with pytest.raises((OSError, RuntimeError)) as caught:
        async with ServiceBuilder("registry", make_settings(), address=f"127.0.0.1:{taken_port}") as build:
            parts = await build_everything(build, closed)
            assert tasks_named("outbox-relay", f"consumer-{parts['consumer'].durable}")  # running until the failure
            build.serve(lambda server: None, [SERVICE])  # the port is taken: this step fails
    assert "bind" in str(caught.value).lower()
    assert closed == REVERSE
    assert_all_closed(parts)


async def test_a_close_that_fails_is_logged_and_the_rest_still_close(make_settings: Callable[..., Settings],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []

    async def broken_close() -> None:
        raise ConnectionResetError("peer went away")

    with pytest.raises(KeyError, match="the step after"):
        async with ServiceBuilder("registry", make_settings(), address="127.0.0.1:0") as build:
            parts = await build_everything(build, closed)
            build.on_close(broken_close, "flaky part")
            raise KeyError("the step after")
    assert closed == REVERSE
    assert_all_closed(parts)
    assert "closing the flaky part of registry failed" in caplog.text


async def test_a_built_service_serves_and_its_stop_closes_everything_after_the_server(
    make_settings: Callable[..., Settings],
) -> None:
    closed: list[str] = []
    async with ServiceBuilder("registry", make_settings(), address="127.0.0.1:0") as build:
        parts = await build_everything(build, closed)
        service = build.serve(lambda server: None, [SERVICE])
    assert closed == []  # the service owns its parts now
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{service.metrics_port}/metrics") as page:
            text = await page.text()
        assert "trellis_outbox_unsent_events 0.0" in text
        assert f'trellis_consumer_pending_messages{{consumer="{parts["consumer"].durable}",stream="TRELLIS"}}' in text
    finally:
        await service.stop(0)
    assert closed == REVERSE
    assert_all_closed(parts)


async def test_a_block_that_serves_nothing_leaves_nothing_open(make_settings: Callable[..., Settings]) -> None:
    closed: list[str] = []
    async with ServiceBuilder("registry", make_settings(), address="127.0.0.1:0") as build:
        parts = await build_everything(build, closed)
    assert closed == REVERSE
    assert_all_closed(parts)



async def test_an_http_service_binds_its_socket_and_its_handle_closes_everything_after_serving(
    make_settings: Callable[..., Settings],
) -> None:
    """The edge's and the console's way: listen(), then handover() gives the stack to their
    RunningHttp; a failure before handover closes the socket with the rest."""
    closed: list[str] = []
    with pytest.raises(KeyError, match="route table"):
        async with ServiceBuilder("edge", make_settings()) as build:
            bus = await build.nats()
            sock = build.listen("127.0.0.1:0")
            build.on_close(marker(closed, "after socket"), "marker")
            raise KeyError("route table")
    assert closed == ["after socket"] and sock.fileno() == -1 and bus.nc.is_closed

    async with ServiceBuilder("edge", make_settings()) as build:
        bus = await build.nats()
        sock = build.listen("127.0.0.1:0")
        build.on_close(marker(closed, "after socket"), "marker")
        close = build.handover()
    assert sock.fileno() != -1 and bus.nc.is_connected  # the handle owns them now
    sock.listen()
    with socket.create_connection(sock.getsockname()[:2], timeout=5):
        pass  # bound where it says, and open
    await close()
    assert closed == ["after socket", "after socket"] and sock.fileno() == -1 and bus.nc.is_closed
