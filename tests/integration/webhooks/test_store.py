"""Webhooks' storage on SQLite and PostgreSQL: migrations match the tables, and claims of the
work queue never hand one delivery to two replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
import pytest
from sqlalchemy import event, text

from services.kit.errors import NotFound
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory, utcnow
from services.kit.ids import new_id
from services.webhooks.application.ports import Scope, attempt_row
from services.webhooks.domain.model import AttemptError, AttemptExchange, IncomingActivity, Subscription, delivery_body
from services.webhooks.adapters.queue import WorkQueue
from services.webhooks.adapters.store import ActivityLog, SubscriptionRepository, attempts, deliveries, metadata


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


async def test_a_claim_and_the_next_due_time_probe_the_queue_per_subscription_not_scan_it(database_url: str) -> None:
    """With a long queue (20,000 pending deliveries of one subscription, a few of three others),
    the claim's choice of subscriptions and next_due read the due indexes; neither scans every
    pending delivery (PostgreSQL planned both as scans of the whole queue: 0.9 s and 0.8 s at a
    million pending)."""
    await migrate_async("webhooks", database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    now = utcnow()
    subs = [Subscription(id=new_id("whk"), org_id="org_queue", url="https://example.com/h", activity_types=("*",),
                         created_by="t", created_at=now, updated_at=now, secret_created_at=now) for _ in range(4)]
    rows = [dict(id=f"dlv_q{n:04d}{i:06d}", org_id="org_queue", subscription_id=sub.id, event_id=f"evt_q{i:06d}",
                 event_type="lot.created", seq=i, status="pending", round=1, attempts=0,
                 next_attempt_at=now - dt.timedelta(seconds=30_000 - i), lease_until=None, claimed_by=None,
                 created_at=now, updated_at=now, last_status_code=0, last_error="none", last_error_detail="", test=False)
            for n, sub in enumerate(subs) for i in range(20_000 if n == 0 else 5)]
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM deliveries" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    try:
        async with sessions() as session, session.begin():
            for sub in subs:
                await SubscriptionRepository(session).add(sub, b"sealed")
            await session.execute(deliveries.insert(), rows)
        async with sessions() as session, session.begin():
            await session.execute(text("ANALYZE"))
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        queue = WorkQueue(owner="replica", skip_locked=not is_sqlite(database_url))
        async with sessions() as session, session.begin():
            due = await queue.next_due(session)
            jobs, _, _ = await queue.claim(session, utcnow(), limit=10, lease_until=utcnow() + dt.timedelta(minutes=1),
                                           exclude=(), room={}, default_room=100)
            await session.rollback()
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
        assert due == min(r["next_attempt_at"] for r in rows)  # the first row in due order, as min() was
        assert statements, "no statement read the deliveries"
        async with engine.connect() as conn:
            explain = "EXPLAIN QUERY PLAN " if is_sqlite(database_url) else "EXPLAIN "
            plans = ["\n".join(str(r[-1]) for r in (await conn.exec_driver_sql(explain + st, ps)).all())  # type: ignore[arg-type]
                     for st, ps in statements]
    finally:
        await engine.dispose()
    for plan in plans:
        assert "Seq Scan on deliveries" not in plan and "SCAN deliveries" not in plan, plan


async def _log_rows(database_url: str, subscription_id: str, others: Sequence[str], count: int) -> None:
    """`count` attempts of the subscription and as many of each other one, one a second, every
    tenth failed: enough rows that a sort would cost more than the index."""
    engine = create_engine(database_url)
    start = utcnow() - dt.timedelta(seconds=count)
    try:
        async with session_factory(engine)() as session, session.begin():
            rows = [attempt_row(f"att_{sub[-6:]}{n:08d}", org_id="org_log", delivery_id=f"dlv_{sub[-6:]}{n // 5:08d}",
                                subscription_id=sub, event_id=f"evt_{n // 5}", event_type="lot.created", round_=1,
                                attempt=1 + n % 5, attempted_at=start + dt.timedelta(seconds=n), url="https://x.test/h",
                                test=False, status_code=503 if n % 10 == 0 else 200, succeeded=n % 10 != 0,
                                error=AttemptError.HTTP_STATUS if n % 10 == 0 else AttemptError.NONE, error_detail="",
                                response_body="ok", duration_ms=1.0, sent_by="t")
                    for sub in (subscription_id, *others) for n in range(count)]
            await session.execute(attempts.insert(), rows)
            await session.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def test_the_delivery_log_reads_its_index_for_all_and_for_each_outcome(database_url: str) -> None:
    """The console's Delivery Logs (newest 25 of one subscription; its Succeeded and Failed tabs;
    an older page) walk an index of (subscription_id, [succeeded,] attempted_at, id), not a sort."""
    await migrate_async("webhooks", database_url)
    subscription_id = new_id("whk")
    await _log_rows(database_url, subscription_id, [new_id("whk") for _ in range(3)], 3000)
    engine = create_engine(database_url)
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM attempts" in statement and not statement.lstrip().upper().startswith("EXPLAIN"):
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with session_factory(engine)() as session:
            log = ActivityLog(session)
            first, token = await log.list_attempts(Scope("org_log"), subscription_id=subscription_id, succeeded=None,
                                                   event_id="", delivery_id="", size=25, token="")
            older, _ = await log.list_attempts(Scope("org_log"), subscription_id=subscription_id, succeeded=None,
                                               event_id="", delivery_id="", size=25, token=token)
            for succeeded in (True, False):
                found, _ = await log.list_attempts(Scope("org_log"), subscription_id=subscription_id,
                                                   succeeded=succeeded, event_id="", delivery_id="", size=25, token="")
                assert len(found) == 25 and {a.succeeded for a in found} == {succeeded}
        assert [a.attempted_at for a in first + older] == sorted((a.attempted_at for a in first + older), reverse=True)
        assert first[-1].attempted_at > older[0].attempted_at
        assert len(statements) == 4
        plans = []
        async with engine.connect() as conn:
            event.remove(engine.sync_engine, "before_cursor_execute", capture)
            explain = "EXPLAIN QUERY PLAN " if is_sqlite(database_url) else "EXPLAIN "
            for statement, parameters in statements:
                rows = (await conn.exec_driver_sql(explain + statement, parameters)).all()  # type: ignore[arg-type]
                plans.append("\n".join(str(r[-1]) for r in rows))
    finally:
        await engine.dispose()
    # Succeeded (nine rows in ten) may walk either index, filtering as it goes; Failed reads its own.
    expected = [("ix_attempts_subscription_log",)] * 2 + [
        ("ix_attempts_subscription_outcome_log", "ix_attempts_subscription_log"), ("ix_attempts_subscription_outcome_log",)]
    for plan, indexes in zip(plans, expected, strict=True):
        assert any(f"INDEX {index} " in plan or f"using {index} " in plan for index in indexes), plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # no sort of the subscription's rows


async def test_last_attempts_are_the_newest_of_each_subscription_in_one_query(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    now = utcnow()
    ids = [new_id("whk") for _ in range(3)]
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            for n, subscription_id in enumerate([*ids, new_id("whk")]):
                org = "org_log" if n < 3 else "org_other"
                await SubscriptionRepository(session).add(Subscription(
                    id=subscription_id, org_id=org, url="https://example.com/h", activity_types=("*",), created_by="t",
                    created_at=now, updated_at=now, secret_created_at=now), b"sealed")
        await _log_rows(database_url, ids[0], ids[1:2], 40)  # ids[2] has none
        statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        async with session_factory(engine)() as session:
            found = await ActivityLog(session).last_attempts(Scope("org_log"), ids)
            # Another organisation naming these ids finds nothing.
            assert await ActivityLog(session).last_attempts(Scope("org_other"), ids) == []
    finally:
        await engine.dispose()
    assert sorted((a.subscription_id, a.id) for a in found) == sorted(
        [(ids[0], f"att_{ids[0][-6:]}00000039"), (ids[1], f"att_{ids[1][-6:]}00000039")])
    assert len([s for s in statements if "FROM attempts" in s]) == 2  # one per call


async def test_an_attempts_exchange_is_stored_read_alone_and_left_out_of_lists(database_url: str) -> None:
    await migrate_async("webhooks", database_url)
    engine = create_engine(database_url)
    exchange = AttemptExchange((("X-Webhook-Signature", "sha256=ab"), ("X-Api-Key", "[masked]")),
                               (("Content-Type", "text/plain; charset=utf-8"),), "caf\u00e9 \u2603", True, 2)
    sub = new_id("whk")
    try:
        async with session_factory(engine)() as session, session.begin():
            for n, recorded in enumerate((exchange, None)):
                row = attempt_row(f"att_x{sub[-8:]}{n}", org_id="org_x", delivery_id="dlv_x", subscription_id=sub,
                                  event_id="evt_x", event_type="lot.created", round_=1, attempt=n + 1,
                                  attempted_at=utcnow(), url="https://x.test/h", test=False, status_code=200,
                                  succeeded=True, error=AttemptError.NONE, error_detail="", response_body="ok",
                                  duration_ms=1.0, sent_by="t", exchange=recorded)
                await session.execute(attempts.insert().values(**row))
        async with session_factory(engine)() as session:
            log = ActivityLog(session)
            with_details = await log.get_attempt(Scope("org_x"), f"att_x{sub[-8:]}0")
            assert with_details.exchange == exchange
            assert (await log.get_attempt(Scope("org_x"), f"att_x{sub[-8:]}1")).exchange is None
            assert [a.exchange for a in await log.attempts_of(Scope("org_x"), "dlv_x")] == [exchange, None]
            listed, _ = await log.list_attempts(Scope("org_x"), subscription_id=sub, succeeded=None, event_id="",
                                                delivery_id="", size=10, token="")
            assert len(listed) == 2 and all(a.exchange is None for a in listed)
            with pytest.raises(NotFound):
                await log.get_attempt(Scope("org_other"), f"att_x{sub[-8:]}0")
    finally:
        await engine.dispose()


async def test_the_sealed_columns_of_a_subscription_round_trip_and_clear(database_url: str) -> None:
    from services.webhooks.domain.client_tls import ClientCertificate
    from services.webhooks.domain.model import CustomHeaderHint

    await migrate_async("webhooks", database_url)
    engine = create_engine(database_url)
    now = utcnow()
    cert = ClientCertificate("CN=a", "CN=ca", now - dt.timedelta(days=1), now + dt.timedelta(days=30), "ab" * 32)
    subscription = Subscription(id=new_id("whk"), org_id="org_sealed", url="https://example.com/h", activity_types=("*",),
                                created_by="t", created_at=now, updated_at=now, secret_created_at=now,
                                custom_headers=(CustomHeaderHint("X-Api-Key", "…cdef (20 characters)"),),
                                client_certificate=cert)
    try:
        async with session_factory(engine)() as session, session.begin():
            repo = SubscriptionRepository(session)
            await repo.add(subscription, b"secret", sealed_headers=b"headers", sealed_client_tls=b"tls")
        async with session_factory(engine)() as session, session.begin():
            repo = SubscriptionRepository(session)
            got = await repo.get(Scope("org_sealed"), subscription.id)
            assert got.custom_headers == subscription.custom_headers and got.client_certificate == cert
            assert (await repo.sealed_headers(got.id), await repo.sealed_client_tls(got.id)) == (b"headers", b"tls")
            assert await repo.sealed_previous_secret(got.id) == b""
            got.previous_secret_expires_at = now + dt.timedelta(hours=1)
            got.client_certificate, got.custom_headers = None, ()
            await repo.save(got, sealed_previous_secret=b"old", sealed_headers=b"", sealed_client_tls=b"")
        async with session_factory(engine)() as session:
            repo = SubscriptionRepository(session)
            again = await repo.get(Scope("org_sealed"), subscription.id)
            assert again.previous_secret_expires_at == got.previous_secret_expires_at and again.client_certificate is None
            assert (await repo.sealed_headers(again.id), await repo.sealed_client_tls(again.id),
                    await repo.sealed_previous_secret(again.id)) == (b"", b"", b"old")
    finally:
        await engine.dispose()
