"""The unit of work over SQLAlchemy (services.kit.uow says what a unit of work promises):
one AsyncSession per unit, outbox rows written on it, IntegrityError translated once."""

from __future__ import annotations

import asyncio

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit import outbox
from services.kit.uow import BaseUnitOfWork, Flush, WriteConflict, no_flush


class SqlUnitOfWork(BaseUnitOfWork):
    """A unit of work on one AsyncSession of `sessions`, the outbox rows in `outbox` (the
    service's table), `flush` the relay's. `write_lock` (a service's SQLite single writer) is
    held from entering the block to leaving it; `read_only` units take no lock and cannot write
    events or commit. Subclasses open their repositories on `self.session` in `__aenter__`."""

    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, outbox_table: Table | None = None,
                 flush: Flush = no_flush, write_lock: asyncio.Lock | None = None, read_only: bool = False) -> None:
        super().__init__(flush=flush)
        self._sessions = sessions
        self._outbox = outbox_table
        self._lock = None if read_only else write_lock
        self.read_only = read_only

    async def _begin(self) -> None:
        if self._lock is not None:
            await self._lock.acquire()
        self.session = self._sessions()

    async def _write_event(self, subject: str, payload: bytes, event_id: str) -> str:
        if self.read_only:
            raise RuntimeError("a read-only unit of work writes no events")
        if self._outbox is None:
            raise RuntimeError("this unit of work has no outbox table")
        return await outbox.add_event(self.session, self._outbox, subject, payload, event_id=event_id)

    async def _commit(self) -> None:
        if self.read_only:
            raise RuntimeError("a read-only unit of work does not commit")
        try:
            await self.session.commit()
        except BaseException:
            # SQLite keeps the transaction open when COMMIT is refused (a deferred constraint),
            # and the session no longer rolls it back: the pooled connection would carry this
            # unit's writes into the next one that commits.
            try:
                await self.session.rollback()
            except Exception:  # noqa: BLE001 - then the connection goes, and its transaction with it
                await self.session.invalidate()
            raise

    async def _rollback(self) -> None:
        await self.session.rollback()

    async def _end(self, *, committed: bool) -> None:
        try:
            await self.session.close()  # rolls back what was not committed
        finally:
            if self._lock is not None:
                self._lock.release()

    def _translate(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, IntegrityError):
            # Not the statement or its parameters: they may hold what a caller must not see.
            return WriteConflict("another request changed the same data at the same time; retry")
        return None
