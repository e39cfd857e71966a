"""The API log publisher against real nats-servers: batched, de-duplicated, surviving an outage."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.apilog import ApiLogPublisher
from services.kit.bus import connect, ensure_streams
from services.kit.natsproc import NatsServer
from tests.support.waiting import eventually


def entry(request_id: str) -> events_pb2.ApiRequestLogged:
    return events_pb2.ApiRequestLogged(request_id=request_id, integration_id="int_test", method="GET",
                                       endpoint="/lots", status=200, duration_ms=1.5, ip="203.0.113.9")


async def stored(js, subject: str) -> int:
    info = await js.stream_info("APILOG", subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A plain predicate in the shape `eventually` awaits."""
    async def check() -> bool:
        return predicate()
    return check


@pytest.fixture
async def js(nats_server) -> AsyncIterator[object]:
    nc = await connect(nats_server.url, name="apilog-test")
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.close()


@pytest.fixture
def subject() -> str:
    return f"apilog.test.{uuid.uuid4().hex}"


async def test_every_recorded_request_arrives_in_the_stream(js, subject):
    publisher = ApiLogPublisher(js, subject=subject)
    await publisher.start()
    for i in range(1200):
        publisher.record(entry(f"{subject}-{i}"))

    async def all_stored() -> bool:
        return await stored(js, subject) == 1200

    await eventually(all_stored, what="1200 records stored")
    assert (publisher.published, publisher.dropped, publisher.queued) == (1200, 0, 0)
    await publisher.close()


async def test_a_burst_of_records_returns_at_once_and_is_all_published(js, subject):
    publisher = ApiLogPublisher(js, subject=subject)
    await publisher.start()
    started = time.perf_counter()
    for i in range(20_000):
        publisher.record(entry(f"{subject}-{i}"))
    assert time.perf_counter() - started < 1.0  # about 2 µs a record; nothing waits on NATS
    assert publisher.queued == 20_000
    await publisher.close(timeout=30)
    assert await stored(js, subject) == 20_000
    assert (publisher.published, publisher.dropped) == (20_000, 0)


async def test_close_flushes_what_is_queued(js, subject):
    publisher = ApiLogPublisher(js, subject=subject, flush_interval=10.0)  # only close() will flush
    await publisher.start()
    for i in range(100):
        publisher.record(entry(f"{subject}-{i}"))
    await publisher.close()
    assert await stored(js, subject) == 100
    assert publisher.queued == 0


async def test_the_same_request_id_is_stored_once(js, subject):
    publisher = ApiLogPublisher(js, subject=subject)
    await publisher.start()
    for _ in range(3):
        publisher.record(entry(f"{subject}-same"))
    publisher.record(entry(f"{subject}-other"))
    await publisher.close()
    assert await stored(js, subject) == 2


async def test_a_record_the_server_keeps_refusing_is_dropped_and_counted(js):
    # No stream is bound to this subject: the server answers, and refuses, every attempt.
    publisher = ApiLogPublisher(js, subject=f"nostream.{uuid.uuid4().hex}", max_attempts=2)
    await publisher.start()
    publisher.record(entry("refused"))
    await eventually(holds(lambda: publisher.dropped == 1), what="the refused record counted")
    assert (publisher.published, publisher.queued) == (0, 0)
    await publisher.close()


async def test_records_made_while_nats_is_down_are_published_once_when_it_is_back(tmp_path: Path):
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    nc = await connect(server.url, name="apilog-outage-test")
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        subject = f"apilog.outage.{uuid.uuid4().hex}"
        publisher = ApiLogPublisher(js, subject=subject, ack_timeout=0.3, max_backoff=0.3)
        await publisher.start()
        publisher.record(entry("before-outage"))
        await eventually(holds(lambda: publisher.published == 1), what="the first record acked")

        port = server.port
        server.stop()
        await eventually(holds(lambda: not nc.is_connected), what="the client to notice the outage")
        for i in range(50):
            publisher.record(entry(f"during-outage-{i}"))
        await eventually(holds(lambda: publisher.queued == 50), what="records waiting")

        server = NatsServer(tmp_path / "nats", port=port, log_file=tmp_path / "nats.log").start()
        await eventually(holds(lambda: publisher.published == 51), timeout=20, what="records published after the outage")
        assert await stored(js, subject) == 51  # resends after lost acks were de-duplicated
        assert publisher.dropped == 0
        await publisher.close()
    finally:
        await nc.close()
        server.stop()
