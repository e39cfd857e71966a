"""Nothing is lost and work is shared, with webhooks as real processes: SIGKILL in the middle
of a burst and a restart on SQLite; two replicas on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import nats
import pytest
from sqlalchemy import func, select

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.db import create_engine, migrate_async
from tests.support.settings import Settings
from services.webhooks.adapters.store import attempts, deliveries
from tests.integration.webhooks.conftest import webhook_settings
from tests.integration.webhooks.processes import WebhooksProcess
from tests.integration.webhooks.receiver import Receiver, Received, Tls
from tests.support.ports import free_port
from tests.support.waiting import eventually


@pytest.fixture
async def processes() -> AsyncIterator[list[WebhooksProcess]]:
    started: list[WebhooksProcess] = []
    yield started
    for process in started:
        await process.stop()


async def _publish(settings: Settings, org: str, count: int) -> list[str]:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    ids = []
    try:
        for n in range(count):
            event = events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=org,
                                             sender_type="user", sender_id="u_1", data_json=json.dumps({"n": n}))
            await js.publish("activity.lot.created", event.SerializeToString())
            ids.append(event.event_id)
    finally:
        await nc.close()
    return ids


async def _subscribe(address: str, metadata: tuple[tuple[str, str], ...], url: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(
            pb.CreateSubscriptionRequest(url=url, activity_types=["lot.created"]), metadata=metadata)


def _distinct(received: list[Received]) -> set[str]:
    return {r.headers["X-Webhook-Id"] for r in received}


async def test_sigkill_in_a_burst_loses_nothing(make_settings: Callable[..., Settings], tls: Tls, as_actor, tmp_path: Path,
                                                processes: list[WebhooksProcess]) -> None:
    settings = webhook_settings(make_settings, tls, webhooks_concurrency_per_subscription=4,
                                webhooks_consumer_ack_wait_seconds=2.0)
    await migrate_async("webhooks", settings.database_url("webhooks"))
    org = f"org_{uuid.uuid4().hex[:12]}"

    async def slowish(_: Received) -> tuple[int, str]:
        await asyncio.sleep(0.02)
        return 200, "ok"

    receiver = await Receiver(tls.server, behaviour=slowish).start()
    try:
        port = free_port()
        first = await WebhooksProcess(settings, port, tmp_path / "webhooks.log").start()
        processes.append(first)
        await _subscribe(first.address, as_actor("admin", org), receiver.url())
        published = await _publish(settings, org, 300)
        await eventually(lambda: _at_least(receiver, 60), timeout=20)
        first.kill()
        assert len(_distinct(receiver.received)) < 300, "the burst was over before the kill"
        published += await _publish(settings, org, 100)  # while no replica runs

        second = await WebhooksProcess(settings, port, tmp_path / "webhooks.log").start()
        processes.append(second)
        await eventually(lambda: _all_of(receiver, published), timeout=60, interval=0.2)
    finally:
        await receiver.stop()
    by_id: dict[str, set[bytes]] = {}
    for r in receiver.received:
        by_id.setdefault(r.headers["X-Webhook-Id"], set()).add(r.body)
    assert set(by_id) == set(published)  # every event, and nothing else
    assert all(len(bodies) == 1 for bodies in by_id.values())  # a duplicate is the same event, byte for byte
    for event_id, bodies in by_id.items():
        assert json.loads(next(iter(bodies)))["id"] == event_id


async def _at_least(receiver: Receiver, count: int) -> bool:
    return len(_distinct(receiver.received)) >= count


async def _all_of(receiver: Receiver, ids: list[str]) -> bool:
    return _distinct(receiver.received) >= set(ids)


async def test_two_replicas_on_postgresql_share_the_work(make_settings: Callable[..., Settings], tls: Tls, as_actor,
                                                          postgres, tmp_path: Path, processes: list[WebhooksProcess]) -> None:
    url = postgres.create_database()
    settings = webhook_settings(make_settings, tls, webhooks_database_url=url, webhooks_concurrency_per_subscription=4)
    await migrate_async("webhooks", url)
    org = f"org_{uuid.uuid4().hex[:12]}"

    async def slowish(_: Received) -> tuple[int, str]:
        await asyncio.sleep(0.01)
        return 200, "ok"

    receiver = await Receiver(tls.server, behaviour=slowish).start()
    try:
        replicas = [await WebhooksProcess(settings, free_port(), tmp_path / f"webhooks-{n}.log").start() for n in range(2)]
        processes.extend(replicas)
        await _subscribe(replicas[0].address, as_actor("admin", org), receiver.url())
        published = await _publish(settings, org, 400)
        await eventually(lambda: _all_of(receiver, published), timeout=60, interval=0.2)
    finally:
        await receiver.stop()
    assert Counter(r.headers["X-Webhook-Id"] for r in receiver.received) == Counter(published)  # each exactly once

    # A replica records an attempt after its POST was answered: the receiver can hold every
    # event a moment before the last results are written.
    engine = create_engine(url)
    statuses: dict[str, int] = {}
    per_replica: dict[str, int] = {}

    async def all_recorded() -> bool:
        nonlocal statuses, per_replica
        async with engine.connect() as conn:
            per_replica = dict((await conn.execute(select(attempts.c.sent_by, func.count()).group_by(attempts.c.sent_by))).all())
            statuses = dict((await conn.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status))).all())
        return statuses == {"succeeded": 400}

    try:
        await eventually(all_recorded, timeout=30, interval=0.2)
    finally:
        await engine.dispose()
    assert statuses == {"succeeded": 400}
    assert len(per_replica) == 2 and all(n > 0 for n in per_replica.values()), per_replica
    assert sum(per_replica.values()) == 400
