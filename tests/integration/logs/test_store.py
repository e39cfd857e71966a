"""The logs service's storage on SQLite and PostgreSQL: migrations, idempotent batches,
keyset pages, retention in batches, and the index each filter's query plan uses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.auth import (
    ADMIN_PERMISSION,
    PLATFORM_PERMISSION,
    QA_PERMISSION,
    Actor,
)
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory
from services.kit.errors import NotFound, PermissionDenied
from services.kit.uow import WriteConflict
from services.logs.adapters.store import (
    LogsRepository,
    api_requests,
    metadata,
    units_of_work,
)
from services.logs.application.commands import ExportRequests, GetRequest, QueryRequests, RequestHistogram
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import (
    ApiRequest,
    AuditRecord,
    Cursor,
    RequestFilter,
    StatusFilter,
    append,
    empty_head,
)

T0 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.timezone.utc)
KEY = b"k" * 32


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate_async("logs", database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def repo(database_url: str) -> LogsRepository:
    return LogsRepository(postgres=not is_sqlite(database_url))


def handlers_for(engine: AsyncEngine, repo: LogsRepository, now: dt.datetime = T0) -> LogsHandlers:
    return LogsHandlers(units_of_work(session_factory(engine), repo), KEY, clock=lambda: now)


def request(i: int, *, org: str = "org_a", integration: str = "int_a", status: int = 200, seconds: float | None = None,
            ip: str = "203.0.113.7", error: str = "", endpoint: str | None = None, method: str = "GET") -> ApiRequest:
    return ApiRequest.normalised(
        org_id=org, request_id=f"req_{org}_{i:07d}", timestamp=T0 - dt.timedelta(seconds=i if seconds is None else seconds),
        integration_id=integration, method=method, endpoint=endpoint or f"/lots/{i % 50}", status=status,
        duration_ms=12.5, ip=ip, error_code=error, scope_category="inventory",
    )


async def count(engine: AsyncEngine, org: str | None = None) -> int:
    query = select(func.count()).select_from(api_requests)
    if org is not None:
        query = query.where(api_requests.c.org_id == org)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_migrations_match_the_metadata(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
        )
    assert diff == []


async def test_a_request_id_stored_twice_is_one_row(engine: AsyncEngine, repo: LogsRepository) -> None:
    handlers = handlers_for(engine, repo)
    batch = [request(i) for i in range(20)]
    await handlers.record_requests(batch)
    await handlers.record_requests(batch[5:] + [request(20)])
    assert await count(engine) == 21


async def test_a_request_id_twice_in_one_batch_is_one_row(engine: AsyncEngine, repo: LogsRepository) -> None:
    # One edge message may carry a request id a caller reused; the batch still lands whole.
    handlers = handlers_for(engine, repo)
    await handlers.record_requests([request(1), request(2), request(1)])
    assert await count(engine) == 2


async def test_the_same_request_id_in_two_organisations_is_two_rows(engine: AsyncEngine, repo: LogsRepository) -> None:
    handlers = handlers_for(engine, repo)
    mine, theirs = request(1, org="org_a"), request(1, org="org_b")
    theirs = ApiRequest(**{**theirs.__dict__, "request_id": mine.request_id})
    await handlers.record_requests([mine, theirs])
    actor = Actor("qa", "org_a", frozenset({QA_PERMISSION}))
    assert (await handlers.get_request(actor, GetRequest(mine.request_id))).org_id == "org_a"
    with pytest.raises(NotFound):
        await handlers.get_request(Actor("qa", "org_c", frozenset({QA_PERMISSION})), GetRequest(mine.request_id))


async def test_pages_are_stable_while_new_requests_arrive(engine: AsyncEngine, repo: LogsRepository) -> None:
    handlers = handlers_for(engine, repo)
    # Several requests share a timestamp: the request id breaks the tie.
    await handlers.record_requests([request(i, seconds=i // 3) for i in range(95)])
    actor = Actor("qa", "org_a", frozenset({QA_PERMISSION}))
    seen: list[str] = []
    token = ""
    while True:
        page = await handlers.query_requests(actor, QueryRequests(RequestFilter(), page_size=20, page_token=token))
        seen += [r.request_id for r in page.records]
        if len(seen) == 20:  # newer requests arriving between pages do not shift later pages
            await handlers.record_requests([request(1000 + i, seconds=-10 - i) for i in range(5)])
        if page.next_cursor is None:
            break
        token = page.next_cursor.encode()
    assert len(seen) == len(set(seen)) == 95
    expected = sorted((r.timestamp, r.request_id) for r in (request(i, seconds=i // 3) for i in range(95)))
    assert seen == [rid for _, rid in reversed(expected)]


async def test_retention_deletes_only_old_rows_in_batches(engine: AsyncEngine, repo: LogsRepository) -> None:
    now = T0 + dt.timedelta(days=30)
    handlers = handlers_for(engine, repo, now)
    old = [request(i, seconds=40 * 86400 + i) for i in range(23)]  # 40 days before T0
    recent = [request(100 + i, seconds=i) for i in range(7)]
    old_elsewhere = [request(i, org="org_z", seconds=50 * 86400 + i) for i in range(4)]
    await handlers.record_requests(old + recent + old_elsewhere)

    batches: list[int] = []
    original = repo.delete_requests_before

    async def counting(session, org, cutoff, *, limit):  # type: ignore[no-untyped-def]
        deleted = await original(session, org, cutoff, limit=limit)
        batches.append(deleted)
        return deleted

    repo.delete_requests_before = counting  # type: ignore[method-assign]
    assert await handlers.enforce_retention(60, batch=5) == 27
    assert batches == [5, 5, 5, 5, 3, 4]
    async with engine.connect() as conn:
        left = set((await conn.execute(select(api_requests.c.request_id))).scalars())
    assert left == {r.request_id for r in recent}


async def test_retention_keeps_the_platform_log_within_its_rows_whatever_their_age(
    engine: AsyncEngine, repo: LogsRepository
) -> None:
    handlers = handlers_for(engine, repo)
    # All recent (nothing past the retention days): only the bound applies, and only to the platform log.
    platform = [request(i, org="", integration="", seconds=i) for i in range(40)]
    organisation = [request(i, org="org_a", seconds=i) for i in range(40)]
    await handlers.record_requests(platform + organisation)
    assert await handlers.enforce_retention(365, platform_max_rows=15, batch=10) == 25
    async with engine.connect() as conn:
        left = set((await conn.execute(select(api_requests.c.request_id).where(api_requests.c.org_id == ""))).scalars())
    assert left == {r.request_id for r in platform[:15]}  # the newest 15
    assert await count(engine, "org_a") == 40
    assert await handlers.enforce_retention(365, platform_max_rows=15) == 0


async def test_the_platform_log_keeps_how_many_requests_a_row_stands_for(engine: AsyncEngine, repo: LogsRepository) -> None:
    handlers = handlers_for(engine, repo)
    folded = dataclasses.replace(request(1, org="", integration="", error="invalid_api_key", status=401), repeats=7)
    await handlers.record_requests([folded, request(2, org="", integration="")])
    operator = Actor("pat", "org_p", frozenset({PLATFORM_PERMISSION}))
    page = await handlers.query_requests(operator, QueryRequests(RequestFilter(), platform=True))
    assert sorted((r.request_id, r.repeats) for r in page.records) == [(folded.request_id, 7), (request(2, org="").request_id, 1)]
    assert (await handlers.get_request(operator, GetRequest(folded.request_id, platform=True))).repeats == 7
    with pytest.raises(PermissionDenied):
        await handlers.query_requests(Actor("qa", "org_a", frozenset({QA_PERMISSION, ADMIN_PERMISSION})),
                                      QueryRequests(RequestFilter(), platform=True))


async def test_the_histogram_is_counted_by_the_database_per_bucket_and_integration(engine: AsyncEngine,
                                                                                  repo: LogsRepository) -> None:
    handlers = handlers_for(engine, repo)
    # Two days, one request every 30 s (microseconds included), three integrations; every 25th a
    # 429, every 11th a 503; another organisation's requests and the platform log's beside them.
    rows = [request(i, seconds=30 * i + 0.123456, integration=f"int_{i % 3}",
                    status=429 if i % 25 == 0 else 503 if i % 11 == 0 else 200) for i in range(5760)]
    await handlers.record_requests(rows)
    await handlers.record_requests([request(i, org="org_b") for i in range(50)])
    folded = dataclasses.replace(request(1, org="", integration="", status=401), repeats=7)
    await handlers.record_requests([folded])
    qa = Actor("quinn", "org_a", frozenset({QA_PERMISSION}))

    h = await handlers.request_histogram(qa, RequestHistogram())
    assert h.bucket_seconds == 900 and h.integrations == 3
    assert h.requests == len(rows) == sum(c.requests for c in h.cells)
    expected: dict[tuple[int, str], list[int]] = {}
    for r in rows:
        epoch = int(r.timestamp.timestamp())
        cell = expected.setdefault((epoch - epoch % 900, r.integration_id), [0, 0, 0])
        cell[0] += 1
        cell[1] += r.status >= 400
        cell[2] += r.status == 429
    assert {(int(c.bucket_start.timestamp()), c.integration_id): [c.requests, c.errors, c.limited]
            for c in h.cells} == expected
    assert h.start == min(r.timestamp for r in rows)

    # The grid's filters: a status class and the endpoint substring (checked row by row), a range.
    since, until = T0 - dt.timedelta(hours=6), T0 - dt.timedelta(hours=1)
    errors = await handlers.request_histogram(qa, RequestHistogram(
        RequestFilter(since=since, until=until, status=StatusFilter.parse("5xx"), endpoint="/LOTS/1")))
    want = [r for r in rows if since <= r.timestamp < until and r.status >= 500 and r.endpoint.startswith("/lots/1")]
    assert errors.requests == len(want) > 0 and errors.bucket_seconds == 300
    assert errors.start == since and errors.end == until
    # The platform log counts the requests a row stands for; for operators only.
    operator = Actor("pat", "org_p", frozenset({PLATFORM_PERMISSION}))
    platform = await handlers.request_histogram(operator, RequestHistogram(platform=True))
    assert platform.requests == 7 and platform.cells[0].errors == 7
    with pytest.raises(PermissionDenied):
        await handlers.request_histogram(qa, RequestHistogram(platform=True))


async def test_an_integrations_histogram_and_count_read_only_its_index_on_postgresql(engine: AsyncEngine,
                                                                                   repo: LogsRepository) -> None:
    """Migration 0004: status and repeats are in the integration index, so PostgreSQL answers
    an integration's histogram and count without a table page per row."""
    if not repo.postgres:
        pytest.skip("SQLite has no INCLUDE columns; its index is unchanged")
    handlers = handlers_for(engine, repo)
    await handlers.record_requests([request(i, integration=f"int_{i % 37}", status=429 if i % 9 == 0 else 200)
                                    for i in range(20_000)])
    async with engine.connect() as conn:  # the visibility map an index-only scan needs, and statistics
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE api_requests")
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "api_requests" in statement and ("GROUP BY" in statement or "count(" in statement):
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    qa = Actor("quinn", "org_a", frozenset({QA_PERMISSION}))
    histogram = await handlers.request_histogram(qa, RequestHistogram(RequestFilter(integration_id="int_5")))
    total, pages = await handlers.export_requests(qa, ExportRequests(RequestFilter(integration_id="int_5")))
    await pages.aclose()  # type: ignore[attr-defined]
    event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert histogram.requests == total == len(range(5, 20_000, 37))
    assert [s for s, _ in statements if "GROUP BY" in s] and [s for s, _ in statements if "count(" in s]
    async with engine.connect() as conn:
        # The plan for a big log, on a small one: an index, and then whether the index alone answers.
        await conn.exec_driver_sql("SET enable_seqscan = off")
        await conn.exec_driver_sql("SET enable_bitmapscan = off")
        for statement, parameters in statements:
            plan = "\n".join(r[0] for r in (await conn.exec_driver_sql("EXPLAIN " + statement, parameters)).all())
            assert "Index Only Scan using ix_api_requests_org_integration_ts" in plan, plan


async def test_each_filter_reads_its_first_page_from_an_index(engine: AsyncEngine, repo: LogsRepository) -> None:
    rows = []
    for i in range(40_000):
        org = "org_big" if i % 10 else "org_small"
        status = 200 if i % 20 else (429 if i % 40 else 503)
        rows.append(request(
            i, org=org, integration=f"int_{i % 37}", status=status, ip=f"198.51.{i % 200}.{i % 250}",
            error="" if status == 200 else ("rate_limit_exceeded" if status == 429 else "upstream_unavailable"),
            endpoint=f"/{'lots' if i % 2 else 'orders'}/{i % 500}",
        ))
    handlers = handlers_for(engine, repo)
    for start in range(0, len(rows), 2000):
        await handlers.record_requests(rows[start:start + 2000])
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))

    since, until = T0 - dt.timedelta(hours=2), T0 - dt.timedelta(hours=1)
    cases = {
        "ix_api_requests_org_ts": [RequestFilter(), RequestFilter(since=since, until=until),
                                   RequestFilter(status=StatusFilter.parse("error")),
                                   RequestFilter(status=StatusFilter.parse("success")),
                                   RequestFilter(status=StatusFilter.parse("4xx")), RequestFilter(endpoint="lots/1")],
        "ix_api_requests_org_integration_ts": [RequestFilter(integration_id="int_5"),
                                               RequestFilter(integration_id="int_5", since=since, until=until)],
        "ix_api_requests_org_status_ts": [RequestFilter(status=StatusFilter.parse("503"))],
        "ix_api_requests_org_ip_ts": [RequestFilter(ip="198.51.7.7")],
        "ix_api_requests_org_error_ts": [RequestFilter(error_code="upstream_unavailable")],
    }
    for index, filters in cases.items():
        for f in filters:
            plan = await explain(engine, repo, f)
            assert index in plan, f"{f}: expected {index} in\n{plan}"
            if repo.postgres:
                assert "Seq Scan" not in plan and "Sort" not in plan, f"{f}:\n{plan}"
            else:
                assert "SCAN api_requests" not in plan and "TEMP B-TREE" not in plan, f"{f}:\n{plan}"


async def explain(engine: AsyncEngine, repo: LogsRepository, f: RequestFilter) -> str:
    async with engine.connect() as conn:
        # SQLite bounds a row-by-row search by a key found first; any key shows the plan.
        query = repo.page_query("org_big", f, size=50, search_end=Cursor(T0 - dt.timedelta(days=1), ""))
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        prefix = "EXPLAIN " if repo.postgres else "EXPLAIN QUERY PLAN "
        rows = (await conn.exec_driver_sql(prefix + sql)).all()
    return "\n".join(str(row[-1]) for row in rows)


async def test_a_rarely_matching_search_is_bounded_per_page_yet_finds_every_match(engine: AsyncEngine, database_url: str) -> None:
    repo = LogsRepository(postgres=not is_sqlite(database_url), scan_window=10)
    handlers = handlers_for(engine, repo)
    await handlers.record_requests([
        request(i, endpoint="/crm/accounts/4711" if i in (5, 77) else f"/lots/{i}", status=503 if i in (5, 40) else 200)
        for i in range(100)
    ])
    actor = Actor("qa", "org_a", frozenset({QA_PERMISSION}))
    for f, expected in ((RequestFilter(endpoint="ACCOUNTS/4711"), [5, 77]),
                        (RequestFilter(status=StatusFilter.parse("5xx")), [5, 40]),
                        (RequestFilter(endpoint="/crm", status=StatusFilter.parse("error")), [5])):
        found, pages, token = [], 0, ""
        while True:
            page = await handlers.query_requests(actor, QueryRequests(f, page_size=20, page_token=token))
            pages += 1
            assert len(page.records) <= 2
            found += [int(r.request_id.rsplit("_", 1)[1]) for r in page.records]
            if page.next_cursor is None:
                break
            token = page.next_cursor.encode()
        assert found == expected and pages == 11  # ten windows of ten rows, then the end of the log


async def test_a_unit_left_without_commit_writes_nothing_and_a_refused_write_is_a_conflict(
    engine: AsyncEngine, repo: LogsRepository
) -> None:
    units = units_of_work(session_factory(engine), repo)
    async with units() as uow:
        await uow.requests.add_requests([request(1)])
    assert await count(engine) == 0
    record = AuditRecord.normalised(event_id="evt_1", occurred_at=T0, service="registry", org_id="org_a",
                                    actor_id="alice", action="integration.updated", object_type="integration",
                                    object_id="int_a", before_json="{}", after_json="{}", reason="", request_id="")
    entry, _ = append(KEY, empty_head(KEY, "org_a"), record, T0)
    async with units() as uow:
        await uow.audit.add_audit_entries([entry])
        await uow.commit()
    with pytest.raises(WriteConflict):  # the same event again: the unique event id refuses it
        async with units() as uow:
            await uow.requests.add_requests([request(2)])
            await uow.audit.add_audit_entries([dataclasses.replace(entry, seq=2)])
            await uow.commit()
    assert await count(engine) == 0
