"""Retention of the delivery log on SQLite and PostgreSQL: finished deliveries, their attempts
and activities older than the organisation's retention go in bounded batches, pending ones and
the events they send stay, an organisation's override is kept; and on PostgreSQL a long
retention run never stalls the deliveries of a real service working on the same database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import nats
import pytest
from sqlalchemy import func, select

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory, utcnow
from services.kit.ids import new_id
from services.webhooks.adapters.store import (
    Database, SqlWebhooksUnitOfWork, SubscriptionRepository, _new_delivery, activities, attempts, deliveries,
)
from services.webhooks.application.handlers import Retention
from services.webhooks.application.ports import Scope, attempt_row
from services.webhooks.domain.model import AttemptError, DeliveryStatus, Subscription
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Received, Receiver
from tests.support.waiting import eventually


async def _seed(db: Database, org: str, subscription_id: str, count: int, created_at: dt.datetime, *,
                status: DeliveryStatus = DeliveryStatus.SUCCEEDED, chunk: int = 5000) -> list[str]:
    """`count` deliveries (one attempt each unless pending) and their activities, as if received at `created_at`."""
    ids = []
    seq0 = int(created_at.timestamp() * 1_000_000_000)
    for start in range(0, count, chunk):
        a_rows, d_rows, t_rows = [], [], []
        for n in range(start, min(count, start + chunk)):
            event_id = f"evt_{uuid.uuid4().hex}"
            body = json.dumps({"id": event_id, "type": "lot.created", "data": {"n": n}}).encode()
            a_rows.append({"org_id": org, "event_id": event_id, "seq": seq0 + n, "type": "lot.created",
                           "occurred_at": created_at, "received_at": created_at, "sender_type": "system",
                           "sender_id": "", "body": body, "trace_headers": "{}"})
            row = _new_delivery(f"dlv_{uuid.uuid4().hex[:24]}", org, subscription_id, event_id, "lot.created", seq0 + n,
                                created_at, next_attempt_at=created_at if status is DeliveryStatus.PENDING else None)
            row["status"] = status.value
            d_rows.append(row)
            ids.append(str(row["id"]))
            if status is not DeliveryStatus.PENDING:
                t_rows.append(attempt_row(f"att_{uuid.uuid4().hex[:24]}", org_id=org, delivery_id=str(row["id"]),
                                          subscription_id=subscription_id, event_id=event_id, event_type="lot.created",
                                          round_=1, attempt=1, attempted_at=created_at, url="https://x.test/h",
                                          test=False, status_code=200, succeeded=True, error=AttemptError.NONE,
                                          error_detail="", response_body="ok", duration_ms=1.0, sent_by="seed"))
        async with db.write() as session:
            await session.execute(activities.insert(), a_rows)
            await session.execute(deliveries.insert(), d_rows)
            if t_rows:
                await session.execute(attempts.insert(), t_rows)
    return ids


@contextlib.asynccontextmanager
async def _store(database_url: str) -> AsyncIterator[tuple[Database, Callable[..., SqlWebhooksUnitOfWork]]]:
    """The webhooks store on `database_url` (already migrated) and units of work over it."""
    engine = create_engine(database_url)
    db = Database(session_factory(engine), serialize_writes=is_sqlite(database_url))

    def units(*, read_only: bool = False) -> SqlWebhooksUnitOfWork:
        return SqlWebhooksUnitOfWork(db, read_only=read_only)

    try:
        yield db, units
    finally:
        await engine.dispose()


async def _subscription(db: Database, org: str) -> str:
    now = utcnow()
    subscription = Subscription(id=new_id("whk"), org_id=org, url="https://x.test/h", activity_types=("lot.created",),
                                created_by="u", created_at=now, updated_at=now, secret_created_at=now)
    async with db.write() as session:
        await SubscriptionRepository(session).add(subscription, b"sealed")
    return subscription.id


async def _count(db: Database, table, org: str) -> int:  # type: ignore[no-untyped-def]
    async with db.read() as session:
        return int((await session.execute(select(func.count()).select_from(table).where(table.c.org_id == org))).scalar_one())


async def test_retention_deletes_what_expired_keeps_what_is_pending_and_honours_an_override(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    async with _store(database_url) as (db, units):
        now = utcnow()
        old, kept = now - dt.timedelta(days=40), f"org_kept_{uuid.uuid4().hex[:6]}"
        org = f"org_old_{uuid.uuid4().hex[:6]}"
        sub = await _subscription(db, org)
        await _seed(db, org, sub, 2300, old)
        await _seed(db, org, sub, 20, old, status=DeliveryStatus.FAILED)
        [pending] = await _seed(db, org, sub, 1, old, status=DeliveryStatus.PENDING)
        recent = await _seed(db, org, sub, 10, now - dt.timedelta(days=2))
        await _seed(db, kept, "whk_b", 5, old)
        async with units() as uow:
            await uow.activities.set_retention_override(kept, 60, actor_id="u", now=now)
            await uow.commit()

        deleted = await Retention(units, default_days=30).enforce(batch=500)
        assert deleted == 3 * 2320  # deliveries, attempts and activities of the expired ones

        async with db.read() as session:
            left = set((await session.execute(select(deliveries.c.id).where(deliveries.c.org_id == org))).scalars())
        assert left == {pending, *recent}
        assert (await _count(db, activities, org), await _count(db, attempts, org)) == (11, 10)
        assert [await _count(db, t, kept) for t in (deliveries, attempts, activities)] == [5, 5, 5]
        async with units(read_only=True) as uow:  # the pending one's page still finds its body
            delivery = await uow.activities.get_delivery(Scope(org), pending)
            sent = await uow.activities.sent_body(delivery, 1024)
        assert sent.size > 0
        async with db.write() as session:  # were its event gone all the same, the page would show no body, not fail
            await session.execute(activities.delete().where(activities.c.org_id == org,
                                                            activities.c.event_id == delivery.event_id))
        async with units(read_only=True) as uow:
            assert (await uow.activities.sent_body(delivery, 1024)).size == 0
        assert await Retention(units, default_days=30).enforce() == 0  # nothing more to do


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_long_retention_run_never_stalls_deliveries_on_postgresql(
        start_webhooks: Callable[..., Awaitable[Webhooks]], database_url: str, receiver: Receiver) -> None:
    """Retention deletes 60,000 expired rows from the tables the dispatcher claims from and
    records into, while a real service delivers: every delivery arrives within a bound."""
    webhooks = await start_webhooks(webhooks_database_url=database_url)
    async with _store(database_url) as (db, units):
        expired = f"org_expired_{uuid.uuid4().hex[:6]}"
        await _seed(db, expired, "whk_gone", 20_000, utcnow() - dt.timedelta(days=45))
        await _seed(db, webhooks.org, "whk_gone", 2_000, utcnow() - dt.timedelta(days=45))
        created = await webhooks.subscribe(receiver.url())
        arrived: dict[str, float] = {}

        def record(got: Received) -> tuple[int, str]:
            arrived[json.loads(got.body)["id"]] = time.monotonic()
            return 200, "ok"

        receiver.behaviour = record
        retention = asyncio.create_task(Retention(units, default_days=30).enforce(batch=1000))
        published: dict[str, float] = {}
        during = 0
        while not retention.done() or len(published) < 20:
            during += not retention.done()
            sent_at = time.monotonic()
            published[(await webhooks.publish(data_json='{"during": "retention"}')).event_id] = sent_at
            await asyncio.sleep(0.02)  # a steady trickle of events while retention runs
        deleted = await retention
        assert deleted == 3 * 22_000
        assert during >= 5, "retention was over before the deliveries began: nothing was measured"
        await eventually(lambda: _all_arrived(arrived, published), timeout=20, what="every delivery")
        latencies = sorted(arrived[e] - published[e] for e in published)
        print(f"retention: {during} events published during it; delivery latency max {latencies[-1]:.3f} s")
        assert latencies[-1] < 3.0, f"a delivery waited {latencies[-1]:.2f} s during retention"
        assert [await _count(db, t, expired) for t in (deliveries, attempts, activities)] == [0, 0, 0]
        assert len(await webhooks.deliveries(created.subscription.id)) == len(published)


async def _all_arrived(arrived: dict[str, float], published: dict[str, float]) -> bool:
    return set(published) <= set(arrived)


async def test_an_organisations_retention_is_set_audited_and_seen_by_it_alone(webhooks: Webhooks) -> None:
    nc = await nats.connect(webhooks.settings.nats_url)
    audited: list[events_pb2.AuditEvent] = []

    async def on_audit(msg) -> None:  # type: ignore[no-untyped-def]
        audited.append(events_pb2.AuditEvent.FromString(msg.data))

    await nc.subscribe("trellis.audit.webhooks.retention.>", cb=on_audit)
    try:
        shown = await webhooks.stub.GetRetention(pb.GetRetentionRequest(), metadata=webhooks.admin)
        assert (shown.days, shown.overridden, shown.default_days) == (30, False, 30)
        set_ = await webhooks.stub.SetRetention(pb.SetRetentionRequest(days=90), metadata=webhooks.admin)
        assert (set_.days, set_.overridden) == (90, True)
        [event] = await eventually(lambda: _audits(audited), what="the audit record")
        assert (event.org_id, event.action, event.object_id) == (webhooks.org, "retention.set", webhooks.org)
        assert json.loads(event.before_json) == {"days": 30, "overridden": False}
        assert json.loads(event.after_json) == {"days": 90, "overridden": True}
    finally:
        await nc.close()
    other = webhooks.as_actor("admin", f"org_{uuid.uuid4().hex[:12]}")
    assert (await webhooks.stub.GetRetention(pb.GetRetentionRequest(), metadata=other)).days == 30
    for days in (-1, 3651):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await webhooks.stub.SetRetention(pb.SetRetentionRequest(days=days), metadata=webhooks.admin)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "days" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await webhooks.stub.SetRetention(pb.SetRetentionRequest(days=7),
                                         metadata=webhooks.as_actor("viewer", webhooks.org, permissions=[]))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await webhooks.stub.GetRetention(pb.GetRetentionRequest(), metadata=webhooks.admin)).days == 90


async def _audits(audited: list) -> list | None:  # type: ignore[type-arg]
    return audited or None


async def test_retention_erases_the_previous_secret_of_an_overlap_that_ended(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    async with _store(database_url) as (db, units):
        now = utcnow()
        org = f"org_overlap_{uuid.uuid4().hex[:6]}"
        ended, running = await _subscription(db, org), await _subscription(db, org)
        for subscription_id, ends in ((ended, now - dt.timedelta(minutes=1)), (running, now + dt.timedelta(hours=1))):
            async with units() as uow:
                subscription = await uow.subscriptions.get(Scope(org), subscription_id)
                subscription.previous_secret_expires_at = ends
                await uow.subscriptions.save(subscription, sealed_previous_secret=b"sealed-old")
                await uow.commit()
        await Retention(units, default_days=30).enforce()
        async with units(read_only=True) as uow:
            assert await uow.subscriptions.sealed_previous_secret(ended) == b""
            assert (await uow.subscriptions.get(Scope(org), ended)).previous_secret_expires_at is None
            assert await uow.subscriptions.sealed_previous_secret(running) == b"sealed-old"  # still signing
            assert (await uow.subscriptions.get(Scope(org), running)).previous_secret_expires_at is not None
