"""The store applies a subscription's filter when an activity arrives, on SQLite and PostgreSQL:
an event the filter passes is a pending delivery, due now; one it does not pass is a Filtered
delivery with no due time, so no claim of the work queue ever takes it; and the filter is saved
and read back with the subscription."""

from __future__ import annotations

import datetime as dt

from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory, utcnow
from services.kit.ids import new_id
from services.webhooks.adapters.queue import WorkQueue
from services.webhooks.adapters.store import ActivityLog, SubscriptionRepository
from services.webhooks.application.ports import Scope
from services.webhooks.domain.model import DeliveryStatus, IncomingActivity, Subscription, delivery_body


async def test_ingest_records_what_a_filter_does_not_pass_as_filtered_and_never_claims_it(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    now, org = utcnow(), f"org_{new_id('t')[-8:]}"

    def subscription(expression: str) -> Subscription:
        return Subscription(id=new_id("whk"), org_id=org, url="https://example.com/h", activity_types=("lot.created",),
                            created_by="t", created_at=now, updated_at=now, secret_created_at=now, filter=expression)

    north, everything = subscription("data.facility_id == 'fac_north'"), subscription("")
    try:
        async with sessions() as session, session.begin():
            for s in (north, everything):
                await SubscriptionRepository(session).add(s, b"sealed")
            batch = [IncomingActivity(event_id=new_id("evt"), type="lot.created", org_id=org, occurred_at=now,
                                      sender_type="user", sender_id="u", data={"facility_id": facility})
                     for facility in ("fac_north", "fac_south", "fac_south")]
            accepted = await ActivityLog(session).ingest(batch, [delivery_body(a) for a in batch], now, lambda: new_id("dlv"))
        assert [(a.deliveries, a.filtered) for a in accepted] == [(2, 0), (1, 1), (1, 1)]

        async with sessions() as session:
            assert (await SubscriptionRepository(session).get(Scope(org), north.id)).filter == north.filter
            log = ActivityLog(session)
            found, _ = await log.list_deliveries(Scope(org), subscription_id=north.id, statuses=[DeliveryStatus.FILTERED],
                                                 event_id="", size=50, token="")
            assert sorted(d.event_id for d in found) == sorted(a.event_id for a in batch[1:])
            assert all(d.next_attempt_at is None and d.attempts == 0 and "filter" in d.last_error_detail for d in found)

        queue = WorkQueue(owner="replica-f", skip_locked=not is_sqlite(database_url))
        async with sessions() as session, session.begin():
            jobs, _, _ = await queue.claim(session, utcnow() + dt.timedelta(seconds=1), limit=50,
                                           lease_until=utcnow() + dt.timedelta(minutes=1), exclude=(), room={},
                                           default_room=100)
        claimed = {(j.subscription_id, j.event_id) for j in jobs if j.subscription_id in (north.id, everything.id)}
        assert claimed == {(north.id, batch[0].event_id)} | {(everything.id, a.event_id) for a in batch}
    finally:
        await engine.dispose()
