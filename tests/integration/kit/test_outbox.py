"""The transactional outbox against a real nats-server, on SQLite and PostgreSQL."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from sqlalchemy import Column, MetaData, String, Table, func, select

from services.kit.bus import connect, ensure_streams
from services.kit.db import create_engine, new_metadata, session_factory
from services.kit.natsproc import NatsServer
from services.kit.outbox import OutboxRelay, add_event, jetstream_publisher, outbox_table, written_event_ids
from services.kit.telemetry import setup_tracing

metadata: MetaData = new_metadata()
things = Table("things", metadata, Column("id", String(40), primary_key=True))
outbox = outbox_table(metadata)


@pytest.fixture
async def env(database_url, nats_server) -> AsyncIterator[dict]:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    nc = await connect(nats_server.url, name="outbox-test")
    js = nc.jetstream()
    await ensure_streams(js)
    yield {"sessions": session_factory(engine), "js": js, "subject": f"trellis.test.{uuid.uuid4().hex}",
           "skip_locked": not database_url.startswith("sqlite")}
    await nc.close()
    await engine.dispose()


async def _count_in_stream(js, subject: str) -> int:
    info = await js.stream_info("TRELLIS", subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def _unsent(sessions) -> int:
    async with sessions() as s:
        return (await s.execute(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))).scalar_one()


async def _commit_change_with_event(sessions, subject: str) -> str:
    async with sessions() as session, session.begin():
        await session.execute(things.insert().values(id=uuid.uuid4().hex))
        return await add_event(session, outbox, subject, b"payload")


def _relay(env, publish=None) -> OutboxRelay:
    return OutboxRelay(env["sessions"], outbox, publish or jetstream_publisher(env["js"]), skip_locked=env["skip_locked"])


async def test_an_event_committed_while_the_relay_is_stopped_is_published_once_on_restart(env):
    event_id = await _commit_change_with_event(env["sessions"], env["subject"])
    assert await _count_in_stream(env["js"], env["subject"]) == 0  # nothing published before the relay runs

    relay = _relay(env)
    assert await relay.drain_once() == 1
    assert await relay.drain_once() == 0
    assert await _count_in_stream(env["js"], env["subject"]) == 1
    assert await _unsent(env["sessions"]) == 0
    msg = await env["js"].get_last_msg("TRELLIS", env["subject"])
    assert msg.headers["Nats-Msg-Id"] == event_id
    assert msg.data == b"payload"


async def test_a_crash_between_publish_and_mark_still_yields_one_message(env):
    event_id = await _commit_change_with_event(env["sessions"], env["subject"])
    publish = jetstream_publisher(env["js"])

    async def publish_then_crash(subject, payload, headers):
        await publish(subject, payload, headers)
        raise ConnectionError("process died before marking the row sent")

    with pytest.raises(ConnectionError):
        await _relay(env, publish_then_crash).drain_once()
    assert await _unsent(env["sessions"]) == 1  # the mark rolled back with the crash

    acks = []

    async def recording(subject, payload, headers):
        ack = await publish(subject, payload, headers)
        acks.append(ack)
        return ack

    assert await _relay(env, recording).drain_once() == 1
    assert acks[0].duplicate is True  # JetStream recognised the same Nats-Msg-Id
    assert await _count_in_stream(env["js"], env["subject"]) == 1
    assert (await env["js"].get_last_msg("TRELLIS", env["subject"])).headers["Nats-Msg-Id"] == event_id


async def test_a_rolled_back_transaction_leaves_no_event(env):
    with pytest.raises(RuntimeError):
        async with env["sessions"]() as session, session.begin():
            await add_event(session, outbox, env["subject"], b"never")
            raise RuntimeError("use case failed")
    assert await _unsent(env["sessions"]) == 0
    assert await _relay(env).drain_once() == 0


async def test_events_are_published_in_write_order(env):
    ids = [await _commit_change_with_event(env["sessions"], env["subject"]) for _ in range(5)]
    await _relay(env).drain_once()
    sub = await env["js"].pull_subscribe(env["subject"], stream="TRELLIS")
    msgs = await sub.fetch(5, timeout=5)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == ids
    await sub.unsubscribe()


async def test_the_trace_context_of_the_writer_travels_in_the_headers(env):
    setup_tracing("outbox-test", processor=SpanProcessor())  # the SDK, so the test's span is a real one
    with trace.get_tracer("test").start_as_current_span("change") as span:
        await _commit_change_with_event(env["sessions"], env["subject"])
        trace_id = format(span.get_span_context().trace_id, "032x")
    await _relay(env).drain_once()
    msg = await env["js"].get_last_msg("TRELLIS", env["subject"])
    assert trace_id in msg.headers["traceparent"]


async def test_the_running_relay_publishes_soon_after_notify(env):
    from tests.support.waiting import eventually

    relay = _relay(env)
    relay._poll = 30.0  # only the notify can wake it in time
    relay.start()
    try:
        await _commit_change_with_event(env["sessions"], env["subject"])
        relay.notify()

        async def published():
            return await _count_in_stream(env["js"], env["subject"]) == 1

        await eventually(published, timeout=5, what="relay to publish after notify")
    finally:
        await relay.stop()


# --- flush: a use case returns only after its events are on the stream ------------------------------


def _idle_relay(env, publish=None) -> OutboxRelay:
    """A running relay that only a notify or a flush wakes in time (its poll is 30 s)."""
    relay = OutboxRelay(env["sessions"], outbox, publish or jetstream_publisher(env["js"]),
                        poll_seconds=30.0, skip_locked=env["skip_locked"])
    relay.start()
    return relay


async def test_flush_returns_only_after_the_event_is_in_the_stream(env):
    relay = _idle_relay(env)
    try:
        event_id = await _commit_change_with_event(env["sessions"], env["subject"])
        assert await relay.flush([event_id]) is True
        # No waiting here: flush itself promised the PubAck and the mark.
        assert await _count_in_stream(env["js"], env["subject"]) == 1
        assert (await env["js"].get_last_msg("TRELLIS", env["subject"])).headers["Nats-Msg-Id"] == event_id
        assert await _unsent(env["sessions"]) == 0
    finally:
        await relay.stop()


async def test_one_drain_answers_every_concurrent_flush(env):
    published: list[str] = []
    publish = jetstream_publisher(env["js"])

    async def recording(subject, payload, headers):
        published.append(headers["Nats-Msg-Id"])
        return await publish(subject, payload, headers)

    relay = _idle_relay(env, recording)
    try:
        ids = [await _commit_change_with_event(env["sessions"], env["subject"]) for _ in range(5)]
        results = await asyncio.gather(*(relay.flush([event_id]) for event_id in ids), relay.flush(ids))
        assert results == [True] * 6
        assert await _count_in_stream(env["js"], env["subject"]) == 5
        assert sorted(published) == sorted(ids)  # each published once, whoever waited for it
    finally:
        await relay.stop()


async def test_flush_of_what_session_wrote_names_exactly_its_events(env):
    async with env["sessions"]() as session, session.begin():
        first = await add_event(session, outbox, env["subject"], b"one")
        second = await add_event(session, outbox, env["subject"], b"two")
    assert written_event_ids(session) == [first, second]
    relay = _idle_relay(env)
    try:
        assert await relay.flush(written_event_ids(session)) is True
        assert await _count_in_stream(env["js"], env["subject"]) == 2
    finally:
        await relay.stop()


async def test_flush_with_nats_unreachable_times_out_in_bounded_time_and_the_row_stays_unsent(env, tmp_path: Path):
    doomed = NatsServer(tmp_path / "nats-doomed").start()
    nc = await connect(doomed.url, name="outbox-unreachable")
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        doomed.stop()  # NATS goes away; the client keeps trying to reconnect
        relay = _idle_relay(env, jetstream_publisher(js, timeout=5.0))
        try:
            event_id = await _commit_change_with_event(env["sessions"], env["subject"])
            started = time.monotonic()
            assert await relay.flush([event_id], timeout=0.5) is False
            assert time.monotonic() - started < 1.5
            assert await _unsent(env["sessions"]) == 1
        finally:
            await relay.stop()
    finally:
        with contextlib.suppress(OSError):  # nats-py flushes into the dead socket on close
            await nc.close()
        doomed.kill()


@pytest.fixture
async def pg_env(postgres, nats_server) -> AsyncIterator[dict]:
    url = postgres.create_database()
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    nc = await connect(nats_server.url, name="outbox-pg-test")
    js = nc.jetstream()
    yield {"sessions": session_factory(engine), "js": js, "subject": f"trellis.test.{uuid.uuid4().hex}", "skip_locked": True}
    await nc.close()
    await engine.dispose()


async def test_flush_finishes_when_another_replicas_relay_publishes_the_row(pg_env):
    env = pg_env
    event_id = await _commit_change_with_event(env["sessions"], env["subject"])
    publish = jetstream_publisher(env["js"])
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow(subject, payload, headers):
        holding.set()
        await release.wait()
        return await publish(subject, payload, headers)

    # The other replica locks the row (FOR UPDATE SKIP LOCKED) and is slow to publish it.
    other = OutboxRelay(env["sessions"], outbox, slow, skip_locked=True)
    other_round = asyncio.create_task(other.drain_once())
    await asyncio.wait_for(holding.wait(), 5)

    ours = _idle_relay(env)
    try:
        flushing = asyncio.create_task(ours.flush([event_id], timeout=5.0))
        assert await ours.drain_once() == 0  # our relay skips the locked row
        assert not flushing.done()
        release.set()
        started = time.monotonic()
        assert await flushing is True
        assert time.monotonic() - started < 2.0
        assert await other_round == 1
        assert await _count_in_stream(env["js"], env["subject"]) == 1
    finally:
        release.set()
        await ours.stop()


async def test_ensure_streams_is_idempotent(nats_server):
    nc = await connect(nats_server.url, name="streams-test")
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_streams(js)
    names = {s.config.name for s in await js.streams_info()}
    assert {"TRELLIS", "ACTIVITY", "APILOG"} <= names
    await nc.close()
