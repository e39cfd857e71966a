"""Transactional outbox: events are rows written in the caller's transaction, and a relay
publishes them to JetStream with `Nats-Msg-Id` = event id, marking each sent after its PubAck.

A crash between publish and mark makes the relay publish the row again; JetStream's
de-duplication window drops the second copy, so every event reaches the stream once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.bus import trace_headers
from services.kit.db import UTCDateTime, utcnow
from services.kit.ids import new_id

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[object]]


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
    return event_id


class OutboxRelay:
    """Publishes unsent outbox rows in order; `notify()` after a commit wakes it at once."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        publish: Publish,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
        skip_locked: bool = False,
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

    def notify(self) -> None:
        self._wake.set()

    async def drain_once(self) -> int:
        """Publish one batch of unsent events; returns how many were published."""
        t = self._table
        async with self._sessions() as session, session.begin():
            query = select(t.c.id, t.c.subject, t.c.payload, t.c.headers).where(t.c.sent_at.is_(None)).order_by(t.c.seq).limit(self._batch)
            if self._skip_locked:
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            sent = 0
            for row in rows:
                headers = {**json.loads(row.headers), "Nats-Msg-Id": row.id}
                await self._publish(row.subject, row.payload, headers)
                await session.execute(update(t).where(t.c.id == row.id).values(sent_at=utcnow(), attempts=t.c.attempts + 1))
                sent += 1
            return sent

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


def jetstream_publisher(js: object, *, timeout: float = 5.0) -> Publish:
    """A `Publish` that waits for the JetStream PubAck."""

    async def publish(subject: str, payload: bytes, headers: dict[str, str]) -> object:
        return await js.publish(subject, payload, timeout=timeout, headers=headers)  # type: ignore[attr-defined]

    return publish
