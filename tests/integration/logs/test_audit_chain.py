"""The audit trail's tamper evidence on SQLite and PostgreSQL: rows edited, deleted, inserted
and truncated straight in the database are each named by VerifyAudit."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.auth import ADMIN_PERMISSION, Actor
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory
from services.kit.errors import InvalidArgument
from services.logs.adapters.store import LogsRepository, units_of_work
from services.logs.application.commands import QueryAudit, VerifyAudit
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import AuditRecord, Problem

T0 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.timezone.utc)
KEY = b"a" * 32
ORG = "org_audit"
ACTOR = Actor("auditor", ORG, frozenset({ADMIN_PERMISSION}))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_async("logs", database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def handlers(engine: AsyncEngine, database_url: str) -> LogsHandlers:
    return LogsHandlers(units_of_work(session_factory(engine), LogsRepository(postgres=not is_sqlite(database_url))), KEY,
                        clock=lambda: T0 + dt.timedelta(minutes=5))


def record(i: int, org: str = ORG, action: str = "integration.updated") -> AuditRecord:
    return AuditRecord.normalised(
        event_id=f"evt_{org}_{i}", occurred_at=T0 + dt.timedelta(seconds=i), service="registry", org_id=org,
        actor_id="alice" if i % 2 else "bob", action=action, object_type="integration", object_id=f"int_{i % 2}",
        before_json='{"scopes": ["orders:read"]}', after_json='{"scopes": ["orders:read", "crm:read"]}',
        reason="quarterly change", request_id=f"req_{i}",
    )


async def six_entries(handlers: LogsHandlers) -> None:
    assert await handlers.record_audit([record(i) for i in range(1, 7)]) == 6


async def sql(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def test_an_untouched_chain_verifies(handlers: LogsHandlers) -> None:
    await six_entries(handlers)
    result = await handlers.verify_audit(ACTOR)
    assert result.finding is None and result.verified == 6
    assert (result.head.count, result.head.last_seq) == (6, 6)


async def test_each_event_is_stored_once_in_the_order_it_arrived(handlers: LogsHandlers) -> None:
    await six_entries(handlers)
    assert await handlers.record_audit([record(3), record(7), record(7), record(2), record(8)]) == 2
    entries, _ = await handlers.query_audit(ACTOR, QueryAudit(page_size=50))
    assert [e.event_id for e in reversed(entries)] == [f"evt_{ORG}_{i}" for i in range(1, 9)]
    assert [e.seq for e in reversed(entries)] == list(range(1, 9))
    assert (await handlers.verify_audit(ACTOR)).finding is None


async def test_audit_query_filters_by_object_actor_action_and_time(handlers: LogsHandlers) -> None:
    await six_entries(handlers)
    await handlers.record_audit([record(7, action="credentials.revoked")])
    by_object, _ = await handlers.query_audit(ACTOR, QueryAudit(object_id="int_1"))
    assert [e.seq for e in by_object] == [7, 5, 3, 1]
    by_actor, _ = await handlers.query_audit(ACTOR, QueryAudit(actor_id="bob"))
    assert [e.seq for e in by_actor] == [6, 4, 2]
    by_action, _ = await handlers.query_audit(ACTOR, QueryAudit(action="credentials.revoked"))
    assert [e.event_id for e in by_action] == [f"evt_{ORG}_7"]
    window, _ = await handlers.query_audit(ACTOR, QueryAudit(since=T0 + dt.timedelta(seconds=2),
                                                             until=T0 + dt.timedelta(seconds=4)))
    assert [e.seq for e in window] == [3, 2]
    first, token = await handlers.query_audit(ACTOR, QueryAudit(page_size=4))
    rest, last = await handlers.query_audit(ACTOR, QueryAudit(page_size=4, page_token=token))
    assert [e.seq for e in first + rest] == [7, 6, 5, 4, 3, 2, 1] and last == ""
    others, _ = await handlers.query_audit(dataclasses.replace(ACTOR, org_id="org_other"), QueryAudit())
    assert others == []


async def test_an_edited_entry_is_named_altered(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    await sql(engine, f"UPDATE audit_entries SET after_json = '{{\"scopes\": []}}' WHERE org_id = '{ORG}' AND seq = 3")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None
    assert (finding.problem, finding.seq, finding.event_id) == (Problem.ALTERED, 3, f"evt_{ORG}_3")


async def test_an_entry_whose_mac_was_replaced_is_named_altered(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    await sql(engine, f"UPDATE audit_entries SET mac = '{'0' * 64}' WHERE org_id = '{ORG}' AND seq = 6")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.ALTERED, 6)


async def test_a_deleted_entry_is_named_removed(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    await sql(engine, f"DELETE FROM audit_entries WHERE org_id = '{ORG}' AND seq = 4")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.REMOVED, 4)


async def test_a_deleted_entry_is_named_even_when_the_rest_were_renumbered(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    await sql(engine,
              f"DELETE FROM audit_entries WHERE org_id = '{ORG}' AND seq = 2",
              f"UPDATE audit_entries SET seq = seq + 1000 WHERE org_id = '{ORG}' AND seq > 2",
              f"UPDATE audit_entries SET seq = seq - 1001 WHERE org_id = '{ORG}' AND seq > 1000")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.REMOVED, 2)


async def test_an_inserted_entry_is_named_inserted(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    forged = (f"INSERT INTO audit_entries (org_id, seq, event_id, occurred_at, recorded_at, service, actor_id, action, "
              f"object_type, object_id, before_json, after_json, reason, request_id, mac) SELECT org_id, 3, 'evt_forged', "
              f"occurred_at, recorded_at, service, 'mallory', action, object_type, object_id, before_json, after_json, "
              f"reason, request_id, mac FROM audit_entries WHERE org_id = '{ORG}' AND seq = 1003")
    await sql(engine,
              f"UPDATE audit_entries SET seq = seq + 1000 WHERE org_id = '{ORG}' AND seq >= 3",
              forged,
              f"UPDATE audit_entries SET seq = seq - 999 WHERE org_id = '{ORG}' AND seq > 1000")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None
    assert (finding.problem, finding.seq, finding.event_id) == (Problem.INSERTED, 3, "evt_forged")


async def test_an_entry_appended_past_the_head_is_named_inserted(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    await sql(engine,
              f"INSERT INTO audit_entries (org_id, seq, event_id, occurred_at, recorded_at, service, actor_id, action, "
              f"object_type, object_id, before_json, after_json, reason, request_id, mac) SELECT org_id, 7, 'evt_tail', "
              f"occurred_at, recorded_at, service, actor_id, action, object_type, object_id, before_json, after_json, "
              f"reason, request_id, mac FROM audit_entries WHERE org_id = '{ORG}' AND seq = 6")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.INSERTED, 7)


async def test_a_cut_tail_is_named_removed_by_the_head(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    await sql(engine, f"DELETE FROM audit_entries WHERE org_id = '{ORG}' AND seq > 4")
    finding = (await handlers.verify_audit(ACTOR)).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.REMOVED, 5)


async def test_a_truncation_that_also_rewrote_the_head_is_caught_by_a_checkpoint(handlers: LogsHandlers, engine: AsyncEngine) -> None:
    await six_entries(handlers)
    checkpoint = await handlers.checkpoint(ACTOR)
    assert (checkpoint.count, checkpoint.last_seq) == (6, 6)
    await sql(engine,
              f"DELETE FROM audit_entries WHERE org_id = '{ORG}' AND seq > 4",
              f"UPDATE audit_chains SET count = 4, last_seq = 4, head_mac = (SELECT mac FROM audit_entries "
              f"WHERE org_id = '{ORG}' AND seq = 4) WHERE org_id = '{ORG}'")
    assert (await handlers.verify_audit(ACTOR)).finding is None  # consistent in the database alone
    finding = (await handlers.verify_audit(ACTOR, VerifyAudit(checkpoint))).finding
    assert finding is not None and (finding.problem, finding.seq) == (Problem.TRUNCATED, 5)


async def test_entries_after_a_checkpoint_still_verify_against_it(handlers: LogsHandlers) -> None:
    await six_entries(handlers)
    checkpoint = await handlers.checkpoint(ACTOR)
    await handlers.record_audit([record(i) for i in range(7, 10)])
    result = await handlers.verify_audit(ACTOR, VerifyAudit(checkpoint))
    assert result.finding is None and result.verified == 9


async def test_a_forged_checkpoint_is_refused(handlers: LogsHandlers) -> None:
    await six_entries(handlers)
    checkpoint = await handlers.checkpoint(ACTOR)
    with pytest.raises(InvalidArgument):
        await handlers.verify_audit(ACTOR, VerifyAudit(dataclasses.replace(checkpoint, last_seq=3, count=3)))


async def test_concurrent_writers_keep_one_unbroken_chain(engine: AsyncEngine, database_url: str) -> None:
    # Two "replicas" (separate repositories and pools) appending to the same chains at once.
    second = create_engine(database_url)
    try:
        writers = [
            LogsHandlers(units_of_work(session_factory(e), LogsRepository(postgres=not is_sqlite(database_url))), KEY)
            for e in (engine, second)
        ]
        batches = [[record(b * 10 + i, org=org) for i in range(10)] for b in range(6) for org in (ORG, "org_audit_2")]
        await asyncio.gather(*(writers[n % 2].record_audit(batch) for n, batch in enumerate(batches)))
        for org in (ORG, "org_audit_2"):
            result = await writers[0].verify_audit(dataclasses.replace(ACTOR, org_id=org))
            assert result.finding is None and result.verified == 60
    finally:
        await second.dispose()
