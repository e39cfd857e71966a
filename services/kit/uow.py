"""The unit of work: one transaction of a use case, the outbox rows it writes, and the wait
for them to be published.

    async with self._uow() as uow:
        integration = await uow.integrations.get(org_id, integration_id)
        ...
        await uow.add_event(subject, payload)    # an outbox row, in this transaction
        await uow.commit()
    await uow.published()                       # where a change must be on the bus before the call returns

Leaving the block without `commit()` rolls back: a read is a unit that never commits.
`commit()` ends a unit's writes; `published()` then waits for the outbox relay to put the
events this unit committed on JetStream (the relay's `flush`), and says whether it did in time.

A write the database refuses for a constraint (a duplicate key, a missing reference) leaves
the block, or `commit()`, as `WriteConflict`: translated once, here, so that no handler imports
SQLAlchemy. Catch it outside the block to say what conflicted.

    TrellisError (services.kit.errors)
    └── Aborted
        └── WriteConflict      a constraint refused this unit's write; retry

`SqlUnitOfWork` (services.kit.sqluow) owns an AsyncSession; each service subclasses it to open
its repositories on that session (`uow.integrations`). `InMemoryUnitOfWork` is the same seam
over dicts for handler tests: blocks work on a copy of the committed tables, and the store
records what was committed, rolled back and waited for. This module imports no database
library, so that application layers can name the protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from services.kit.errors import Aborted
from services.kit.ids import new_id

# What a unit of work awaits for its committed events: the outbox relay's `flush`.
Flush = Callable[[Collection[str]], Awaitable[bool]]


async def no_flush(event_ids: Collection[str]) -> bool:
    """A `Flush` for wiring without a relay: nothing waits."""
    return True


class WriteConflict(Aborted):
    """The database refused this unit's write for a constraint: another request wrote the same
    data first. The transaction was rolled back; retrying may succeed."""


class UnitOfWork(Protocol):
    """What a use case holds for one transaction: commit, rollback, outbox events, the wait
    for them to be published. A service's own port adds its repositories as attributes."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def add_event(self, subject: str, payload: bytes, *, event_id: str | None = None) -> str:
        """An outbox row written in this transaction; returns its event id."""
        ...

    async def commit(self) -> None:
        """Commit what the block wrote; the unit writes nothing more."""
        ...

    async def rollback(self) -> None:
        """Undo what the block wrote so far (leaving the block without commit does it too)."""
        ...

    async def published(self) -> bool:
        """After commit: wait until this unit's events are on the bus; False if not in time
        (the relay keeps retrying). True at once when it committed none."""
        ...


class BaseUnitOfWork:
    """The rules every unit of work keeps, whatever holds the data: entered once, writes only
    inside the block and before commit, uncommitted work rolled back on the way out, and
    `published()` only for what was committed."""

    def __init__(self, *, flush: Flush = no_flush) -> None:
        self._flush = flush
        self._state = "new"  # new -> open -> committed -> closed, or new -> open -> closed
        self._pending: list[str] = []
        self._committed: list[str] = []

    @property
    def event_ids(self) -> Sequence[str]:
        """Ids of the events this unit committed, in the order they were added."""
        return tuple(self._committed)

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a unit of work is used for one block; make a new one")
        await self._begin()
        self._state = "open"
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        committed = self._state == "committed"
        self._state = "closed"
        self._pending.clear()
        try:
            await self._end(committed=committed)
        finally:
            translated = self._translate(exc) if exc is not None else None
        if translated is not None:
            raise translated from exc

    async def add_event(self, subject: str, payload: bytes, *, event_id: str | None = None) -> str:
        self._require("open", "write an event")
        written = await self._write_event(subject, payload, event_id or new_id("evt"))
        self._pending.append(written)
        return written

    async def commit(self) -> None:
        self._require("open", "commit")
        try:
            await self._commit()
        except BaseException as exc:
            translated = self._translate(exc)
            if translated is not None:
                raise translated from exc
            raise
        self._committed += self._pending
        self._pending.clear()
        self._state = "committed"

    async def rollback(self) -> None:
        self._require("open", "roll back")
        await self._rollback()
        self._pending.clear()

    async def published(self) -> bool:
        if self._state in ("new", "open"):
            raise RuntimeError("published() waits for committed events; commit first")
        if not self._committed:
            return True
        return await self._flush(list(self._committed))

    def _require(self, state: str, what: str) -> None:
        if self._state != state:
            where = {"new": "before the block", "committed": "after commit", "closed": "after the block"}[self._state]
            raise RuntimeError(f"cannot {what} {where}")

    # --- what an implementation provides -----------------------------------------------------

    async def _begin(self) -> None:
        raise NotImplementedError

    async def _write_event(self, subject: str, payload: bytes, event_id: str) -> str:
        raise NotImplementedError

    async def _commit(self) -> None:
        raise NotImplementedError

    async def _rollback(self) -> None:
        raise NotImplementedError

    async def _end(self, *, committed: bool) -> None:
        """Leave the block: roll back unless committed, release what `_begin` took."""
        raise NotImplementedError

    def _translate(self, exc: BaseException) -> BaseException | None:
        """Our error for a storage error, or None to let `exc` through as it is."""
        return None


# --- in memory, for handler tests ----------------------------------------------------------


@dataclass(frozen=True)
class OutboxEvent:
    """One outbox event as InMemoryUnitOfWork records it."""

    event_id: str
    subject: str
    payload: bytes


@dataclass
class MemoryStore:
    """What in-memory units of work share: the committed tables (any name -> dict), the events
    committed in order, the event ids each `published()` waited for, how many commits and how
    many rollbacks there were (a unit left without commit, a read too, is one)."""

    tables: dict[str, dict[Any, Any]] = field(default_factory=dict)
    events: list[OutboxEvent] = field(default_factory=list)
    published: list[list[str]] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0
    # The next commit raises this instead (a conflict or an outage, in a handler test).
    fail_next_commit: BaseException | None = None

    def table(self, name: str) -> dict[Any, Any]:
        return self.tables.setdefault(name, {})


class InMemoryUnitOfWork(BaseUnitOfWork):
    """A unit of work over a MemoryStore. Inside the block, `self.tables` is a deep copy of the
    committed tables: commit copies it into the store, a rollback (or leaving without commit)
    puts the committed rows back, so a handler's failed unit leaves nothing behind, as a
    rolled-back transaction would. Subclasses open their repositories on `self.table(name)` in
    `__aenter__`; repositories hand out copies of what they hold, as a database does."""

    tables: dict[str, dict[Any, Any]]

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(flush=self._record_flush)
        self.store = store
        self._events: list[OutboxEvent] = []

    def table(self, name: str) -> dict[Any, Any]:
        return self.tables.setdefault(name, {})

    async def _record_flush(self, event_ids: Collection[str]) -> bool:
        self.store.published.append(list(event_ids))
        return True

    async def _begin(self) -> None:
        self.tables = copy.deepcopy(self.store.tables)
        self._events = []

    async def _write_event(self, subject: str, payload: bytes, event_id: str) -> str:
        self._events.append(OutboxEvent(event_id, subject, payload))
        return event_id

    async def _commit(self) -> None:
        if self.store.fail_next_commit is not None:
            failure, self.store.fail_next_commit = self.store.fail_next_commit, None
            raise failure
        self.store.tables = copy.deepcopy(self.tables)
        self.store.events += self._events
        self.store.commits += 1
        self._events = []

    async def _rollback(self) -> None:
        self.store.rollbacks += 1
        self._restore()

    async def _end(self, *, committed: bool) -> None:
        if not committed:
            self.store.rollbacks += 1
            self._restore()

    def _restore(self) -> None:
        """The committed tables again, in the dicts the repositories hold."""
        committed = copy.deepcopy(self.store.tables)
        for name, rows in self.tables.items():
            rows.clear()
            rows.update(committed.pop(name, {}))
        self.tables.update(committed)
        self._events = []
