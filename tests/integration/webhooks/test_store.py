"""Webhooks' storage on SQLite and PostgreSQL: migrations match the tables, and claims of the
work queue never hand one delivery to two replicas."""

from __future__ import annotations

import asyncio
import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory, utcnow
from services.kit.ids import new_id
from services.webhooks.domain.model import IncomingActivity, Subscription, delivery_body
from services.webhooks.adapters.queue import WorkQueue
from services.webhooks.adapters.store import ActivityLog, SubscriptionRepository, metadata


async def test_migrations_match_the_metadata(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata))
    finally:
        await engine.dispose()
    assert diff == []


async def test_concurrent_claims_never_take_one_delivery_twice(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    now = utcnow()
    try:
        async with sessions() as session, session.begin():
            subscription = Subscription(id=new_id("whk"), org_id="org_claims", url="https://example.com/h",
                                        activity_types=("*",), created_by="t", created_at=now, updated_at=now,
                                        secret_created_at=now)
            await SubscriptionRepository(session).add(subscription, b"sealed")
            batch = [IncomingActivity(event_id=new_id("evt"), type="lot.created", org_id="org_claims", occurred_at=now,
                                      sender_type="user", sender_id="u", data={"n": n}) for n in range(60)]
            await ActivityLog(session).ingest(batch, [delivery_body(a) for a in batch], now, lambda: new_id("dlv"))

        queues = [WorkQueue(owner=f"replica-{n}", skip_locked=not is_sqlite(database_url)) for n in range(3)]

        async def claim_all(queue: WorkQueue) -> list[str]:
            taken: list[str] = []
            for _ in range(10):
                async with sessions() as session, session.begin():
                    jobs, _, _ = await queue.claim(session, utcnow(), limit=7, lease_until=utcnow() + dt.timedelta(minutes=1),
                                                exclude=(), room={}, default_room=100)
                taken += [j.delivery_id for j in jobs]
            return taken

        claimed = await asyncio.gather(*(claim_all(q) for q in queues))
        everything = [d for part in claimed for d in part]
        assert len(everything) == len(set(everything)) == 60
    finally:
        await engine.dispose()
