"""The API log publisher against real nats-servers: many records to a message, each batch stored
once even when re-sent, surviving an outage."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats.errors
import pytest
from nats.js.api import DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.adapters.apilog import ApiLogPublisher
from services.kit.bus import connect, ensure_streams
from services.kit.natsproc import NatsServer
from tests.support.waiting import eventually


def entry(request_id: str) -> events_pb2.ApiRequestLogged:
    return events_pb2.ApiRequestLogged(request_id=request_id, integration_id="int_test", method="GET",
                                       endpoint="/lots", status=200, duration_ms=1.5, ip="203.0.113.9")


async def messages(js, subject: str) -> int:
    info = await js.stream_info("APILOG", subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def stored(js, subject: str) -> list[str]:
    """The request ids of every record stored under `subject`, once per stored copy."""
    n = await messages(js, subject)
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    ids: list[str] = []
    for _ in range(n):
        msg = await sub.next_msg(timeout=5)
        ids += [r.request_id for r in events_pb2.ApiRequestBatch.FromString(msg.data).records]
    await sub.unsubscribe()
    return ids


class LosesFirstAck:
    """The real JetStream context, except that the first publish's ack never reaches the caller."""

    def __init__(self, js) -> None:  # type: ignore[no-untyped-def]
        self._js = js
        self.lost = 0

    async def publish(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        ack = await self._js.publish(*args, **kwargs)
        if not self.lost:
            self.lost += 1
            raise nats.errors.TimeoutError
        return ack

    def __getattr__(self, name: str) -> object:
        return getattr(self._js, name)


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

    await eventually(holds(lambda: publisher.published == 1200), what="1200 records acked")
    assert (publisher.published, publisher.dropped, publisher.queued) == (1200, 0, 0)
    assert sorted(await stored(js, subject)) == sorted(f"{subject}-{i}" for i in range(1200))
    assert await messages(js, subject) == 3  # batches of up to 500 records, one message each
    await publisher.close()


async def test_a_batch_stays_within_its_byte_bound(js, subject):
    publisher = ApiLogPublisher(js, subject=subject, max_bytes=10_000)
    await publisher.start()
    for i in range(60):
        publisher.record(events_pb2.ApiRequestLogged(request_id=f"{subject}-{i}", endpoint="/lots/" + "x" * 1000))
    await publisher.close()
    assert len(await stored(js, subject)) == 60
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    sizes = [len((await sub.next_msg(timeout=5)).data) for _ in range(await messages(js, subject))]
    await sub.unsubscribe()
    assert len(sizes) >= 6 and max(sizes) <= 10_000


async def test_a_burst_of_records_returns_at_once_and_is_all_published(js, subject):
    publisher = ApiLogPublisher(js, subject=subject)
    await publisher.start()
    started = time.perf_counter()
    for i in range(20_000):
        publisher.record(entry(f"{subject}-{i}"))
    assert time.perf_counter() - started < 1.0  # about 2 µs a record; nothing waits on NATS
    assert publisher.queued == 20_000
    await publisher.close(timeout=30)
    assert len(set(await stored(js, subject))) == 20_000
    assert (publisher.published, publisher.dropped) == (20_000, 0)


async def test_close_flushes_what_is_queued(js, subject):
    publisher = ApiLogPublisher(js, subject=subject, flush_interval=10.0)  # only close() will flush
    await publisher.start()
    for i in range(100):
        publisher.record(entry(f"{subject}-{i}"))
    await publisher.close()
    assert len(await stored(js, subject)) == 100
    assert publisher.queued == 0


async def test_a_batch_sent_again_after_a_lost_ack_is_stored_once(js, subject):
    losing = LosesFirstAck(js)
    publisher = ApiLogPublisher(losing, subject=subject)  # type: ignore[arg-type]
    await publisher.start()
    for i in range(10):
        publisher.record(entry(f"{subject}-{i}"))
    await publisher.close()
    assert losing.lost == 1 and (publisher.published, publisher.dropped) == (10, 0)
    assert await messages(js, subject) == 1  # the re-sent batch kept its Nats-Msg-Id
    assert sorted(await stored(js, subject)) == sorted(f"{subject}-{i}" for i in range(10))


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
        ids = await stored(js, subject)
        assert len(ids) == len(set(ids)) == 51  # resends after lost acks were de-duplicated
        assert publisher.dropped == 0
        await publisher.close()
    finally:
        await nc.close()
        server.stop()
