"""SQLite connections go back to the pool without the pool's own ROLLBACK (services/kit/db.py):
a read costs one trip fewer to aiosqlite's thread, and no connection ever comes back out of
the pool inside a transaction its last user left open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import text

from services.kit.db import create_engine, session_factory


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of every function aiosqlite runs on its thread, in order."""
    calls: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.core.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    yield calls


async def test_a_read_makes_one_rollback_not_two(tmp_path: Path, hand_offs: list[str]) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            await session.execute(text("select 1"))  # opens the pooled connection
        hand_offs.clear()
        async with sessions() as session:
            assert (await session.execute(text("select 1"))).scalar_one() == 1
        made = list(hand_offs)
    finally:
        await engine.dispose()
    # The statement's four, and the session's one ROLLBACK (the pool added a second before).
    assert made == ["cursor", "execute", "fetchall", "close", "rollback"]


async def test_no_connection_leaves_the_pool_inside_its_last_users_transaction(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("create table t (id integer primary key)"))

        # A write transaction that fails half-way, a session closed with its write neither
        # committed nor rolled back, and a plain connection left the same way.
        with pytest.raises(RuntimeError):
            async with sessions() as session, session.begin():
                await session.execute(text("insert into t values (1)"))
                raise RuntimeError("the use case failed")
        async with sessions() as session:
            await session.execute(text("insert into t values (2)"))
        async with engine.connect() as conn:
            await conn.execute(text("insert into t values (3)"))

        # The pool has one connection (SQLite's file pool reuses it): none of that is there.
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None and not raw.in_transaction
            assert (await conn.execute(text("select count(*) from t"))).scalar_one() == 0
    finally:
        await engine.dispose()
