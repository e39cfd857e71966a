"""Async SQLAlchemy 2 engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and the
Alembic runner every service's migrations go through.

Alembic is imported only by the functions that migrate: it brings Mako and Pygments with it,
about 11 MB of every process's RSS, and a running service never migrates (the launcher and
`trellis migrate` do; tests/unit/kit/test_service_imports.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import DateTime, MetaData, event, exc
from sqlalchemy.engine import Connection, CursorResult, Result
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator

from services.kit.clock import utcnow as utcnow  # here too, for the code that has always found it here

if TYPE_CHECKING:
    from alembic.config import Config

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """Metadata with a naming convention, so migrations name constraints the same everywhere."""
    return MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 10.0
# Prepared statements Python's sqlite3 keeps per connection (its default is 128). Every length
# of an `IN (…)` list is a statement of its own, and one of a few hundred parameters holds tens
# of kilobytes in SQLite: with 128 of them a connection held 8 MB more after 400 lengths, and the
# webhooks service grew by 13 MB of SQLite memory in a 10-minute soak, past 150 MB of RSS
# (docs/benchmarks.md, "Memory (issue 16)"). The hot statements are few; 32 keeps them.
SQLITE_CACHED_STATEMENTS = 32


def ping_when_idle(engine: AsyncEngine, idle_seconds: float = PING_IDLE_SECONDS) -> None:
    """Ping a pooled connection at checkout only when it sat unused for `idle_seconds`; one
    that does not answer is replaced (DisconnectionError: the pool takes another).

    SQLAlchemy's `pool_pre_ping` pings at every checkout, and with asyncpg a ping is three round
    trips (BEGIN, `;`, ROLLBACK): more than the one read on identity's hot paths. A connection in
    steady use has just answered; the one left is a server that went away within the last
    `idle_seconds` while a connection was in use, where the first statement fails as a
    disconnect, as any statement in flight at that moment does, and SQLAlchemy then drops every
    connection the pool held before it.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _stamp(_dbapi_conn: Any, record: Any) -> None:
        record.info["trellis_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("trellis_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new (it just connected) or in steady use
        try:
            engine.sync_engine.dialect.do_ping(dbapi_conn)
        except Exception as error:  # noqa: BLE001 - any failure: take another connection
            raise exc.DisconnectionError(f"pooled connection did not answer a ping: {error}") from error


def create_engine(url: str, *, echo: bool = False, ping_idle_seconds: float = PING_IDLE_SECONDS) -> AsyncEngine:
    """An engine for one service's database; SQLite gets WAL and a busy timeout, PostgreSQL
    a pool whose idle connections are pinged before use (ping_when_idle)."""
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The pool's reset on return (a ROLLBACK) stays, though a read's session has just rolled
        # back and it costs one of the read's six trips to aiosqlite's thread: a COMMIT that
        # SQLite refuses (a deferred constraint) leaves the transaction open on the connection,
        # and only that reset ends it (tests/integration/kit/test_uow.py).
        engine = create_async_engine(url, echo=echo,
                                     connect_args={"timeout": 30, "cached_statements": SQLITE_CACHED_STATEMENTS})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10)
    ping_when_idle(engine, ping_idle_seconds)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for units that only read. On PostgreSQL their connections are in autocommit:
    no BEGIN and no ROLLBACK round trip around a read (under READ COMMITTED, the default, each
    statement of a transaction takes its own snapshot anyway, so a unit's reads see what they
    would have seen). SQLite gets the ordinary sessions: there a read opens no transaction, and
    switching a connection's isolation level costs two trips to the driver's thread."""
    if engine.dialect.name == "sqlite":
        return session_factory(engine)
    return async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


def alembic_config(service: str, url: str) -> Config:
    """Alembic configuration for `services/<service>/migrations`, pointed at `url`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", f"services.{service}:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(service: str, url: str, revision: str = "head") -> None:
    """Upgrade one service's database to `revision` (blocking; runs its own event loop)."""
    from alembic import command

    command.upgrade(alembic_config(service, url), revision)


async def migrate_async(service: str, url: str, revision: str = "head") -> None:
    """`migrate` from inside a running event loop."""
    await asyncio.to_thread(migrate, service, url, revision)


def run_migrations_env(target_metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py`: online migrations on an async engine."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None, "sqlalchemy.url must be set by alembic_config()"

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(do_run)
                await conn.commit()
        finally:
            await engine.dispose()

    asyncio.run(run())


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE, DELETE or INSERT matched: its result is a CursorResult, which the
    session's execute() types as any statement's Result."""
    return int(cast("CursorResult[Any]", result).rowcount or 0)
