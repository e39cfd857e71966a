"""Transactional outbox: events are rows written in the caller's transaction, and a relay
publishes them to JetStream with `Nats-Msg-Id` = event id, marking each sent after its PubAck.

A crash between publish and mark makes the relay publish the row again; JetStream's
de-duplication window drops the second copy, so every event reaches the stream once.

A use case that promises "takes effect on the next request" awaits `OutboxRelay.flush(ids)`
after its commit (ids from `written_event_ids(session)`): the relay drains at once and wakes
the waiters of the rows it marked sent; rows another replica's relay took (SKIP LOCKED) are
found by a short, backed-off check of `sent_at`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.bus import trace_headers
from services.kit.db import UTCDateTime, utcnow
from services.kit.ids import new_id
# What a use case awaits after its commit (OutboxRelay.flush, or a fake in unit tests), defined
# with the unit of work that awaits it.
from services.kit.uow import Flush as Flush
from services.kit.uow import no_flush as no_flush

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[object]]

DEFAULT_FLUSH_TIMEOUT = 2.0
_SESSION_EVENTS = "trellis.outbox.event_ids"


def outbox_table(metadata: MetaData) -> Table:
    """The `outbox` table in one service's metadata (each service owns its own)."""
    return Table(
        "outbox",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("seq", BigInteger, nullable=False, index=True, autoincrement=False),
        Column("subject", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("sent_at", UTCDateTime(), nullable=True, index=True),
        Column("attempts", Integer, nullable=False, default=0),
    )


_last_seq = 0


def _next_seq() -> int:
    """Nanoseconds, strictly increasing within the process: publish order is write order."""
    global _last_seq
    _last_seq = max(time.time_ns(), _last_seq + 1)
    return _last_seq


async def add_event(session: AsyncSession, table: Table, subject: str, payload: bytes, *, event_id: str | None = None) -> str:
    """Write one event row in the session's transaction; the current trace context goes with it."""
    event_id = event_id or new_id("evt")
    seq = _next_seq()
    await session.execute(
        table.insert().values(
            id=event_id,
            seq=seq,
            subject=subject,
            payload=payload,
            headers=json.dumps(trace_headers()),
            created_at=utcnow(),
            sent_at=None,
            attempts=0,
        )
    )
    session.info.setdefault(_SESSION_EVENTS, []).append(event_id)
    return event_id


def written_event_ids(session: AsyncSession) -> list[str]:
    """Ids of the events `add_event` wrote through this session: what to flush after its commit."""
    return list(session.info.get(_SESSION_EVENTS, ()))


@dataclass(eq=False)
class _Waiter:
    """One `flush` call: the ids it still waits for, and the event set when none is left."""

    remaining: set[str]
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self, event_id: str) -> None:
        self.remaining.discard(event_id)
        if not self.remaining:
            self.done.set()


# A flush that our relay did not answer looks for sent_at after these delays (doubling).
_FIRST_CHECK_SECONDS = 0.05
_MAX_CHECK_SECONDS = 0.5


class OutboxRelay:
    """Publishes unsent outbox rows in order; `notify()` after a commit wakes it at once, and
    `flush(ids)` also waits until those rows are on the stream."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        publish: Publish,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
        skip_locked: bool = False,
        remember_sent: int = 4096,
    ) -> None:
        self._sessions = sessions
        self._table = table
        self._publish = publish
        self._poll = poll_seconds
        self._batch = batch_size
        self._skip_locked = skip_locked
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting: dict[str, list[_Waiter]] = {}
        # Ids this relay marked sent lately, oldest first: a flush that starts just after the
        # relay published its rows (woken by another commit) returns without waiting.
        self._recent: dict[str, None] = {}
        self._remember = remember_sent

    def notify(self) -> None:
        self._wake.set()

    async def flush(self, event_ids: Collection[str], timeout: float = DEFAULT_FLUSH_TIMEOUT) -> bool:
        """Publish now and wait until these committed events are marked sent; True if they all
        were within `timeout`. On timeout it logs and returns False: the relay keeps retrying."""
        waiter = _Waiter({event_id for event_id in event_ids if event_id not in self._recent})
        if not waiter.remaining:
            return True
        if self._task is None:
            log.warning("outbox relay is not running; %d event(s) wait for its next start", len(waiter.remaining))
            return False
        for event_id in waiter.remaining:
            self._waiting.setdefault(event_id, []).append(waiter)
        self.notify()
        loop = asyncio.get_running_loop()
        try:
            if await self._wait(waiter, loop.time() + timeout):
                return True
        except TimeoutError:
            pass
        finally:
            self._forget(waiter)
        log.warning(
            "outbox event(s) %s not published within %.1fs; the relay keeps retrying",
            ", ".join(sorted(waiter.remaining)), timeout,
        )
        return False

    async def _wait(self, waiter: _Waiter, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        delay = _FIRST_CHECK_SECONDS
        while not waiter.done.is_set():
            try:
                async with asyncio.timeout_at(min(loop.time() + delay, deadline)):
                    await waiter.done.wait()
            except TimeoutError:
                if loop.time() >= deadline:
                    return False
                # Another replica's relay may hold these rows (SKIP LOCKED) and publish them.
                async with asyncio.timeout_at(deadline):
                    for event_id in await self._sent_among(waiter.remaining):
                        waiter.sent(event_id)
                delay = min(delay * 2, _MAX_CHECK_SECONDS)
        return True

    async def _sent_among(self, event_ids: Collection[str]) -> list[str]:
        t = self._table
        try:
            async with self._sessions() as session:
                query = select(t.c.id).where(t.c.id.in_(list(event_ids)), t.c.sent_at.is_not(None))
                return list((await session.execute(query)).scalars())
        except Exception:  # noqa: BLE001 - a failed look is retried until the deadline
            log.debug("could not read outbox sent_at", exc_info=True)
            return []

    def _forget(self, waiter: _Waiter) -> None:
        for event_id in waiter.remaining:
            others = [w for w in self._waiting.pop(event_id, ()) if w is not waiter]
            if others:
                self._waiting[event_id] = others

    def _marked_sent(self, event_ids: list[str]) -> None:
        """After the commit that marked these rows sent: remember them, wake their waiters."""
        for event_id in event_ids:
            self._recent[event_id] = None
            for waiter in self._waiting.pop(event_id, ()):
                waiter.sent(event_id)
        while len(self._recent) > self._remember:
            del self._recent[next(iter(self._recent))]

    async def backlog(self) -> tuple[int, dt.datetime | None]:
        """How many events wait unsent, and when the oldest of them was written (the outbox lag
        the service's metrics report)."""
        t = self._table
        async with self._sessions() as session:
            row = (await session.execute(select(func.count(), func.min(t.c.created_at)).where(t.c.sent_at.is_(None)))).one()
        return int(row[0]), row[1]

    async def drain_once(self) -> int:
        """Publish one batch of unsent events; returns how many were published."""
        t = self._table
        sent: list[str] = []
        async with self._sessions() as session, session.begin():
            query = select(t.c.id, t.c.subject, t.c.payload, t.c.headers).where(t.c.sent_at.is_(None)).order_by(t.c.seq).limit(self._batch)
            if self._skip_locked:
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            for row in rows:
                headers = {**json.loads(row.headers), "Nats-Msg-Id": row.id}
                await self._publish(row.subject, row.payload, headers)
                await session.execute(update(t).where(t.c.id == row.id).values(sent_at=utcnow(), attempts=t.c.attempts + 1))
                sent.append(row.id)
        self._marked_sent(sent)
        return len(sent)

    async def run(self) -> None:
        """Loop until cancelled; a failed publish is retried on the next round."""
        # The flag ends the loop even if a library's wait_for swallowed stop()'s cancel.
        while not self._stopping:
            try:
                while await self.drain_once() == self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the relay must outlive a NATS or database outage
                log.warning("outbox relay round failed; retrying", exc_info=True)
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancel that
            # lands as the event is set, and stop() would then wait for this loop forever.
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


def jetstream_publisher(js: JetStreamContext, *, timeout: float = 5.0) -> Publish:
    """A `Publish` that waits for the JetStream PubAck."""

    async def publish(subject: str, payload: bytes, headers: dict[str, str]) -> object:
        return await js.publish(subject, payload, timeout=timeout, headers=headers)

    return publish
