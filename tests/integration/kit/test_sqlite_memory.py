"""A SQLite connection's prepared statements stay bounded however many distinct statements a
service sends (docs/benchmarks.md, "Memory (issue 16)"): each length of an `IN (…)` list is a
statement of its own, and Python's sqlite3 keeps 128 a connection unless told otherwise."""

from __future__ import annotations

import ctypes
from pathlib import Path

from sqlalchemy import column, select, table, text

from services.kit.db import SQLITE_CACHED_STATEMENTS, create_engine

MB = 1024 * 1024


def sqlite_memory_used() -> int:
    """SQLite's own count of the bytes it has allocated in this process (the library _sqlite3 loaded)."""
    library = ctypes.CDLL("libsqlite3.so.0")
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


async def test_a_connection_keeps_a_bounded_number_of_distinct_statements(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'statements.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER)"))
        t = table("t", column("id"), column("a"))
        async with engine.connect() as connection:
            await connection.execute(select(t.c.a).where(t.c.id.in_(["warm"])))
            before = sqlite_memory_used()
            for n in range(1, 401):
                await connection.execute(select(t.c.a).where(t.c.id.in_([f"id{i}" for i in range(n)])))
            grown = sqlite_memory_used() - before
    finally:
        await engine.dispose()
    # With sqlite3's default of 128 statements this grows by about 8 MB; with 32, about 2.
    assert SQLITE_CACHED_STATEMENTS <= 32
    assert grown < 4 * MB, f"SQLite memory grew by {grown / MB:.1f} MB over 400 distinct statements"
