"""SqlUnitOfWork on SQLite and PostgreSQL: rows and outbox events commit together or not at
all, a constraint the database refuses is WriteConflict (in the block and at commit), the
single-writer lock, read-only units, and `published()` waiting for the real relay and nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Self

import pytest
from sqlalchemy import Column, ForeignKey, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.bus import connect, ensure_streams
from services.kit.db import create_engine, is_sqlite, new_metadata, session_factory
from services.kit.errors import Aborted
from services.kit.outbox import OutboxRelay, jetstream_publisher, outbox_table
from services.kit.sqluow import SqlUnitOfWork
from services.kit.uow import WriteConflict

metadata: MetaData = new_metadata()
things = Table("things", metadata, Column("id", String(40), primary_key=True), Column("name", String(80), unique=True))
# Checked at COMMIT on both backends: a unit can be refused when it commits, not only mid-block.
labels = Table("labels", metadata, Column("id", String(40), primary_key=True),
               Column("thing_id", String(40), ForeignKey("things.id", deferrable=True, initially="DEFERRED"), nullable=False))
outbox = outbox_table(metadata)


class ThingsUnitOfWork(SqlUnitOfWork):
    """A service's unit of work: its repository opened on the session."""

    things: "ThingRepository"

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.things = ThingRepository(self.session)
        return self


@dataclass
class ThingRepository:
    session: AsyncSession

    async def add(self, thing_id: str, name: str) -> None:
        await self.session.execute(things.insert().values(id=thing_id, name=name))

    async def label(self, thing_id: str) -> None:
        await self.session.execute(labels.insert().values(id=uuid.uuid4().hex, thing_id=thing_id))


@dataclass
class Db:
    sessions: async_sessionmaker[AsyncSession]
    url: str
    flushed: list[list[str]]

    def unit(self, **kw: object) -> ThingsUnitOfWork:
        async def flush(ids: object) -> bool:
            self.flushed.append(list(ids))  # type: ignore[call-overload]
            return True

        return ThingsUnitOfWork(self.sessions, outbox_table=outbox, flush=flush, **kw)  # type: ignore[arg-type]

    async def names(self) -> list[str]:
        async with self.sessions() as s:
            return sorted((await s.execute(select(things.c.name))).scalars())

    async def outbox_rows(self) -> list[tuple[str, str, bytes]]:
        async with self.sessions() as s:
            rows = (await s.execute(select(outbox.c.id, outbox.c.subject, outbox.c.payload).order_by(outbox.c.seq))).all()
        return [(r.id, r.subject, r.payload) for r in rows]

    async def label_count(self) -> int:
        async with self.sessions() as s:
            return len((await s.execute(select(labels.c.id))).all())


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Db]:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield Db(session_factory(engine), database_url, [])
    await engine.dispose()


async def test_rows_and_events_commit_together(db: Db) -> None:
    async with db.unit() as uow:
        await uow.things.add("t1", "first")
        event_id = await uow.add_event("trellis.test.added", b"first added")
        await uow.commit()
    assert await db.names() == ["first"]
    assert await db.outbox_rows() == [(event_id, "trellis.test.added", b"first added")]
    assert uow.event_ids == (event_id,)


@pytest.mark.parametrize("leave", ["without commit", "by an error", "after rollback"])
async def test_a_unit_that_does_not_commit_leaves_nothing(db: Db, leave: str) -> None:
    with pytest.raises(KeyError) if leave == "by an error" else contextlib.nullcontext():
        async with db.unit() as uow:
            await uow.things.add("t1", "first")
            await uow.add_event("trellis.test.added", b"x")
            if leave == "by an error":
                raise KeyError("the use case failed")
            if leave == "after rollback":
                await uow.rollback()
    assert await db.names() == []
    assert await db.outbox_rows() == []
    assert await uow.published() is True and db.flushed == []  # nothing committed: nothing to wait for


async def test_a_duplicate_key_in_the_block_is_a_write_conflict_and_rolls_back(db: Db) -> None:
    async with db.unit() as uow:
        await uow.things.add("t1", "taken")
        await uow.commit()
    with pytest.raises(WriteConflict) as caught:
        async with db.unit() as uow:
            await uow.things.add("t2", "other")
            await uow.add_event("trellis.test.added", b"x")
            await uow.things.add("t3", "taken")  # the unique name
    assert isinstance(caught.value, Aborted)
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert "taken" not in str(caught.value) and "INSERT" not in str(caught.value)  # no statement, no parameters
    assert await db.names() == ["taken"]
    assert await db.outbox_rows() == []  # the conflicting unit's event is gone with it


async def test_a_constraint_checked_at_commit_is_a_write_conflict_too(db: Db) -> None:
    with pytest.raises(WriteConflict) as caught:
        async with db.unit() as uow:
            await uow.things.add("t1", "labelled")
            await uow.things.label("no-such-thing")  # deferred: refused when the unit commits
            await uow.commit()
    assert isinstance(caught.value.__cause__, IntegrityError)
    # Read through the pool: on SQLite the refused COMMIT left the transaction open on that
    # connection until the unit rolled it back, so a later unit would have seen (and committed) it.
    assert await db.names() == [] and await db.label_count() == 0
    assert await uow.published() is True and db.flushed == []  # nothing was committed


async def test_published_waits_for_the_events_this_unit_committed(db: Db) -> None:
    async with db.unit() as uow:
        first = await uow.add_event("trellis.test.a", b"a")
        second = await uow.add_event("trellis.test.b", b"b")
        with pytest.raises(RuntimeError, match="commit first"):
            await uow.published()
        await uow.commit()
        with pytest.raises(RuntimeError, match="cannot write an event after commit"):
            await uow.add_event("trellis.test.c", b"c")
    assert await uow.published() is True
    assert db.flushed == [[first, second]]


async def test_a_unit_is_for_one_block(db: Db) -> None:
    uow = db.unit()
    with pytest.raises(RuntimeError, match="before the block"):
        await uow.commit()
    async with uow:
        pass
    with pytest.raises(RuntimeError, match="one block"):
        async with uow:
            pass


async def test_a_read_only_unit_writes_nothing(db: Db) -> None:
    async with db.unit(read_only=True) as uow:
        assert await db.names() == []
        with pytest.raises(RuntimeError, match="read-only"):
            await uow.add_event("trellis.test.a", b"a")
        with pytest.raises(RuntimeError, match="read-only"):
            await uow.commit()
    assert await db.outbox_rows() == []


async def test_writers_sharing_a_lock_take_turns_and_readers_do_not_wait(db: Db) -> None:
    lock = asyncio.Lock()
    second_entered = asyncio.Event()

    async def second_writer() -> None:
        async with db.unit(write_lock=lock) as uow:
            second_entered.set()
            await uow.things.add("t2", "second")
            await uow.commit()

    async with db.unit(write_lock=lock) as first:
        task = asyncio.create_task(second_writer())
        for _ in range(20):  # let the second writer run as far as it can
            await asyncio.sleep(0)
        assert not second_entered.is_set() and lock.locked()
        async with db.unit(write_lock=lock, read_only=True) as reader:  # a reader takes no turn
            assert reader.read_only
        await first.things.add("t1", "first")
        await first.commit()
    await asyncio.wait_for(task, timeout=10)
    assert await db.names() == ["first", "second"]
    assert not lock.locked()


async def test_published_returns_when_the_relay_has_put_the_events_on_the_stream(db: Db, nats_server) -> None:  # type: ignore[no-untyped-def]
    nc = await connect(nats_server.url, name="uow-test")
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(db.sessions, outbox, jetstream_publisher(js), poll_seconds=30, skip_locked=not is_sqlite(db.url))
    relay.start()
    subject = f"trellis.test.{uuid.uuid4().hex}"
    try:
        async with ThingsUnitOfWork(db.sessions, outbox_table=outbox, flush=relay.flush) as uow:
            await uow.things.add("t1", "published")
            event_id = await uow.add_event(subject, b"on the bus")
            await uow.commit()
        assert await uow.published() is True
        # Not the relay's next poll (30 s away): the message is there as published() returns.
        message = await js.get_last_msg("TRELLIS", subject)
        assert (message.data, message.headers["Nats-Msg-Id"]) == (b"on the bus", event_id)
    finally:
        await relay.stop()
        await nc.close()
