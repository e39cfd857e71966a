"""InMemoryUnitOfWork, the seam handler tests use: it keeps the rules SqlUnitOfWork keeps
(tests/integration/kit/test_uow.py) over plain dicts, so a handler test sees what a real
transaction would let it see."""

from __future__ import annotations

from typing import Any, Self

import pytest

from services.kit.uow import InMemoryUnitOfWork, MemoryStore, OutboxEvent, WriteConflict


class NotesUnitOfWork(InMemoryUnitOfWork):
    notes: dict[str, Any]

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.notes = self.table("notes")
        return self


async def test_commit_makes_the_rows_and_events_the_stores() -> None:
    store = MemoryStore()
    async with NotesUnitOfWork(store) as uow:
        uow.notes["n1"] = {"text": "first"}
        event_id = await uow.add_event("trellis.note.added", b"n1")
        assert store.tables == {} and store.events == []  # nothing is seen before commit
        await uow.commit()
    assert store.tables == {"notes": {"n1": {"text": "first"}}}
    assert store.events == [OutboxEvent(event_id, "trellis.note.added", b"n1")]
    assert (store.commits, store.rollbacks) == (1, 0)


async def test_a_unit_left_without_commit_puts_the_committed_rows_back() -> None:
    store = MemoryStore(tables={"notes": {"n1": {"text": "kept"}}})
    with pytest.raises(KeyError):
        async with NotesUnitOfWork(store) as uow:
            uow.notes["n1"]["text"] = "changed"
            uow.notes["n2"] = {"text": "new"}
            await uow.add_event("trellis.note.changed", b"n1")
            raise KeyError("the use case failed")
    assert store.tables == {"notes": {"n1": {"text": "kept"}}}
    assert uow.notes == {"n1": {"text": "kept"}}  # the dict a repository would hold, restored
    assert store.events == [] and (store.commits, store.rollbacks) == (0, 1)


async def test_rollback_in_the_block_restores_and_the_unit_goes_on() -> None:
    store = MemoryStore()
    async with NotesUnitOfWork(store) as uow:
        uow.notes["n1"] = {"text": "dropped"}
        await uow.add_event("trellis.note.added", b"dropped")
        await uow.rollback()
        assert uow.notes == {}
        uow.notes["n2"] = {"text": "kept"}
        kept = await uow.add_event("trellis.note.added", b"kept")
        await uow.commit()
    assert store.tables == {"notes": {"n2": {"text": "kept"}}}
    assert [e.event_id for e in store.events] == [kept] == list(uow.event_ids)


async def test_a_failing_commit_commits_nothing() -> None:
    store = MemoryStore(fail_next_commit=WriteConflict("raced"))
    with pytest.raises(WriteConflict):
        async with NotesUnitOfWork(store) as uow:
            uow.notes["n1"] = {"text": "lost"}
            await uow.add_event("trellis.note.added", b"lost")
            await uow.commit()
    assert store.tables.get("notes", {}) == {} and store.events == []
    assert store.fail_next_commit is None  # only the next commit fails


async def test_published_records_what_each_committed_unit_waited_for() -> None:
    store = MemoryStore()
    async with NotesUnitOfWork(store) as uow:
        first = await uow.add_event("trellis.note.added", b"1")
        with pytest.raises(RuntimeError, match="commit first"):
            await uow.published()
        await uow.commit()
    assert await uow.published() is True
    async with NotesUnitOfWork(store) as reading:
        assert reading.notes == {}
    assert await reading.published() is True
    assert store.published == [[first]]  # a unit with nothing committed waits for nothing
    assert (store.commits, store.rollbacks) == (1, 1)  # a read ends as a rollback


async def test_changes_after_commit_do_not_reach_the_store() -> None:
    store = MemoryStore()
    async with NotesUnitOfWork(store) as uow:
        uow.notes["n1"] = {"text": "committed"}
        await uow.commit()
        uow.notes["n1"]["text"] = "after commit"
        with pytest.raises(RuntimeError, match="after commit"):
            await uow.add_event("trellis.note.changed", b"n1")
    assert store.tables == {"notes": {"n1": {"text": "committed"}}}
