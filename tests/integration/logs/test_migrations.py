"""Upgrading a logs database that already holds requests keeps them, and afterwards a request id
sent again at another time is a second row (migration 0002), and every row stands for one
request (migration 0003), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, insert, select

from services.kit.db import create_engine, migrate_async
from services.logs.adapters.store import api_requests

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def row(request_id: str, ts: dt.datetime) -> dict[str, object]:
    return {"org_id": "org_m", "request_id": request_id, "ts": ts, "integration_id": "int_1", "method": "GET",
            "endpoint": "/orders", "status": 200, "duration_ms": 1.5, "ip": "203.0.113.9", "error_code": "",
            "scope_category": "orders"}


async def test_the_key_change_keeps_existing_requests(database_url: str) -> None:
    await migrate_async("logs", database_url, "0001")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(api_requests), [row("r1", T0), row("r2", T0 + dt.timedelta(seconds=1))])
        await migrate_async("logs", database_url)
        async with engine.begin() as conn:
            await conn.execute(insert(api_requests), [row("r1", T0 + dt.timedelta(minutes=5))])
            count = (await conn.execute(select(func.count()).select_from(api_requests))).scalar_one()
            r1 = (await conn.execute(select(api_requests.c.ts).where(api_requests.c.request_id == "r1")
                                     .order_by(api_requests.c.ts))).scalars().all()
    finally:
        await engine.dispose()
    assert count == 3
    assert r1 == [T0, T0 + dt.timedelta(minutes=5)]



async def test_rows_from_before_the_repeats_column_each_stand_for_one_request(database_url: str) -> None:
    await migrate_async("logs", database_url, "0002")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:  # the insert names no `repeats`: the 0002 table has none
            await conn.execute(insert(api_requests), [row("r1", T0), {**row("unattributed", T0), "org_id": ""}])
        await migrate_async("logs", database_url)
        async with engine.connect() as conn:
            repeats = (await conn.execute(select(api_requests.c.org_id, api_requests.c.repeats)
                                          .order_by(api_requests.c.org_id))).all()
    finally:
        await engine.dispose()
    assert repeats == [("", 1), ("org_m", 1)]
