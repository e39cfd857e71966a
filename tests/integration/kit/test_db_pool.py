"""PostgreSQL pools (services.kit.db.create_engine): a connection in steady use is handed out
without a ping, one idle past the threshold is pinged and replaced when its server side is
gone; and read sessions (read_session_factory) open no transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.db import create_engine, read_session_factory, session_factory
from tests.support.waiting import eventually


@pytest.fixture
def pg_url(postgres) -> str:
    return postgres.create_database("pool")


def count_pings(engine: AsyncEngine) -> list[int]:
    dialect = engine.sync_engine.dialect
    pings = [0]
    original = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        pings[0] += 1
        return original(dbapi_connection)

    dialect.do_ping = do_ping  # type: ignore[method-assign]
    return pings


async def backend_pid(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as session:
        return int((await session.execute(text("select pg_backend_pid()"))).scalar_one())


async def terminate(postgres, url: str, pid: int) -> None:
    """Ends the server side of the pooled connection `pid`, and waits until it is gone."""
    conn = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, database=url.rsplit("/", 1)[1])
    try:
        assert await conn.fetchval("select pg_terminate_backend($1)", pid)

        async def gone() -> bool:
            return not await conn.fetchval("select count(*) from pg_stat_activity where pid = $1", pid)

        await eventually(gone, what=f"backend {pid} to exit")
    finally:
        await conn.close()


@pytest.fixture
async def engines(pg_url) -> AsyncIterator[list[AsyncEngine]]:
    made: list[AsyncEngine] = []
    yield made
    for engine in made:
        await engine.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(pg_url, engines):
    engine = create_engine(pg_url)
    engines.append(engine)
    pings = count_pings(engine)
    for _ in range(20):
        await backend_pid(engine)
    assert pings[0] == 0


async def test_an_idle_connection_is_pinged_and_replaced_when_its_server_side_is_gone(postgres, pg_url, engines):
    engine = create_engine(pg_url, ping_idle_seconds=0.0)
    engines.append(engine)
    pings = count_pings(engine)
    first = await backend_pid(engine)
    await terminate(postgres, pg_url, first)
    second = await backend_pid(engine)  # the ping failed: another connection, no error
    assert second != first and pings[0] >= 1


async def test_without_the_ping_the_first_statement_on_a_dead_connection_fails_then_the_pool_recovers(
        postgres, pg_url, engines):
    # What ping_when_idle accepts within its threshold, shown: one statement fails as a
    # disconnect, and the pool hands out a working connection next.
    engine = create_engine(pg_url, ping_idle_seconds=3600.0)
    engines.append(engine)
    first = await backend_pid(engine)
    await terminate(postgres, pg_url, first)
    with pytest.raises(DBAPIError) as failed:
        await backend_pid(engine)
    assert failed.value.connection_invalidated
    assert await backend_pid(engine) != first


async def test_read_sessions_open_no_transaction_on_postgresql(postgres, pg_url, engines):
    engine = create_engine(pg_url)
    engines.append(engine)
    watcher = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user,
                                    database=pg_url.rsplit("/", 1)[1])
    try:
        async def state(pid: int) -> str:
            return str(await watcher.fetchval("select state from pg_stat_activity where pid = $1", pid))

        for factory, expected in ((read_session_factory(engine), "idle"), (session_factory(engine), "idle in transaction")):
            async with factory() as session:
                pid = int((await session.execute(text("select pg_backend_pid()"))).scalar_one())
                # still inside the unit: an ordinary session holds its transaction open
                assert await state(pid) == expected
    finally:
        await watcher.close()
