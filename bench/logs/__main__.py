"""Logs benchmark: ingest from JetStream beside a bare batched insert of the same rows, and the
latency of each request-log filter on a million rows, on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.logs [--rows 1000000] [--ingest 100000] [--queries 100] [--backend sqlite|postgresql]
                                   [--per-record]

Ingest: `--ingest` ApiRequestLogged records are published to a fresh nats-server's APILOG
stream first, as the edge publishes them: through the edge's own ApiLogPublisher (batches of
up to 500 records, one `apilog.batch` message each); with `--per-record`, one message per
record on `apilog.request` (the path the edge used before batching). Then the logs service's
own consumer (BatchConsumer + LogsHandlers as wired in services.logs.entrypoints.main: fetches of up to
2,000 messages and APILOG_FETCH_BYTES, one INSERT and one commit per fetch, ack after commit)
drains them into a migrated, empty database. The bare insert writes the same decoded rows with
the same repository call, in batches of the size the consumer committed on average, into
another empty database, with no NATS. Query: `--rows` rows are bulk
loaded (sqlite3 executemany / asyncpg COPY), then each filter's first page (50 rows, newest
first) is asked `--queries` times with random values through LogsHandlers.query_requests.
Every loop is bounded by count; the whole run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import nats
from sqlalchemy import text

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.adapters.apilog import ApiLogPublisher
from services.kit.auth import QA_PERMISSION, Actor
from services.kit.bus import ensure_streams
from services.kit.db import create_engine, is_sqlite, migrate_async, session_factory
from services.kit.natsproc import NatsServer
from services.logs.adapters.consumers import (
    APILOG_FETCH_BYTES,
    BatchConsumer,
    decode_requests,
)
from services.logs.adapters.store import LogsRepository, units_of_work
from services.logs.application.commands import QueryRequests
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import ApiRequest, RequestFilter, StatusFilter
from tests.support.postgres import PostgresServer

ORG = "org_bench"
T_END = dt.datetime(2026, 6, 30, tzinfo=dt.timezone.utc)
SPAN_SECONDS = 30 * 86400
INTEGRATIONS = 200
IPS = 2_000
STATUSES = ((200, "", 880), (201, "", 40), (404, "not_found", 30), (429, "rate_limit_exceeded", 30),
            (403, "insufficient_scope", 10), (500, "internal_error", 5), (503, "upstream_unavailable", 5))
CATEGORIES = ("inventory", "orders", "skus", "crm", "sensors", "reports")
BATCH = 2_000


def _status_table() -> list[tuple[int, str]]:
    return [(code, err) for code, err, weight in STATUSES for _ in range(weight)]


def generate(n: int, *, seed: int = 7, org: str = ORG) -> Iterator[tuple]:  # type: ignore[type-arg]
    """`n` rows, newest last: (org, request_id, ts, integration, method, endpoint, status, ms, ip, error, category)."""
    rng = random.Random(seed)
    statuses = _status_table()
    for i in range(n):
        code, err = statuses[rng.randrange(len(statuses))]
        category = CATEGORIES[rng.randrange(len(CATEGORIES))]
        ts = T_END - dt.timedelta(seconds=SPAN_SECONDS * (n - i) / n)
        method = "GET" if rng.random() < 0.8 else "POST"
        yield (org, f"req_{seed}_{i:08d}", ts, f"int_{rng.randrange(INTEGRATIONS):04d}", method,
               f"/{category}/{rng.randrange(100_000)}", code, rng.uniform(2, 200),
               f"10.{rng.randrange(8)}.{rng.randrange(16)}.{rng.randrange(IPS // 128)}", err, category)


def as_request(row: tuple) -> ApiRequest:  # type: ignore[type-arg]
    return ApiRequest(*row)


# --- ingest ---------------------------------------------------------------------------------

def as_event(row: tuple) -> events_pb2.ApiRequestLogged:  # type: ignore[type-arg]
    r = as_request(row)
    event = events_pb2.ApiRequestLogged(
        request_id=r.request_id, org_id=r.org_id, integration_id=r.integration_id, method=r.method,
        endpoint=r.endpoint, status=r.status, duration_ms=r.duration_ms, ip=r.ip, error_code=r.error_code,
        scope_category=r.scope_category)
    event.occurred_at.FromDatetime(r.timestamp)
    return event


async def publish(url: str, rows: list[tuple], *, per_record: bool) -> int:  # type: ignore[type-arg]
    """Publish `rows` as the edge does (or one message per record); returns the messages sent."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    before = (await js.stream_info("APILOG")).state.messages
    if per_record:
        for start in range(0, len(rows), 2_000):
            futures = []
            for row in rows[start:start + 2_000]:
                event = as_event(row)
                futures.append(await js.publish_async("apilog.request", event.SerializeToString(),
                                                      headers={"Nats-Msg-Id": event.request_id}))
            await asyncio.gather(*futures)
    else:
        publisher = ApiLogPublisher(js, max_queue=len(rows))
        await publisher.start()
        for row in rows:
            publisher.record(as_event(row))
        await publisher.close(timeout=600)
        if publisher.published != len(rows):
            raise RuntimeError(f"the publisher sent {publisher.published} of {len(rows)} ({publisher.dropped} dropped)")
    sent = (await js.stream_info("APILOG")).state.messages - before
    await nc.close()
    return sent


async def fresh_handlers(url: str) -> tuple[LogsHandlers, Callable[[], object]]:
    await migrate_async("logs", url)
    engine = create_engine(url)
    return LogsHandlers(units_of_work(session_factory(engine), LogsRepository(postgres=not is_sqlite(url))), b"b" * 32), engine.dispose


async def ingest_rate(nats_url: str, url: str, n: int, durable: str) -> tuple[float, int]:
    """Records per second through the logs consumer, and the records one commit held on average."""
    handlers, dispose = await fresh_handlers(url)
    commits = 0

    async def store(records: Sequence[ApiRequest]) -> None:
        nonlocal commits
        await handlers.record_requests(records)
        commits += 1

    nc = await nats.connect(nats_url)
    consumer = BatchConsumer(nc, subject="apilog.>", stream="APILOG", durable=durable,
                             decode=decode_requests, store=store, batch=BATCH, max_bytes=APILOG_FETCH_BYTES)
    started = time.perf_counter()
    await consumer.start()
    deadline = started + 600
    while consumer.stored < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await nc.close()
    await dispose()  # type: ignore[misc]
    if consumer.stored < n:
        raise RuntimeError(f"only {consumer.stored} of {n} records arrived")
    return n / elapsed, round(n / max(commits, 1))


async def bare_rate(url: str, rows: list[tuple], batch: int) -> float:  # type: ignore[type-arg]
    handlers, dispose = await fresh_handlers(url)
    records = [as_request(r) for r in rows]
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        await handlers.record_requests(records[start:start + batch])
    elapsed = time.perf_counter() - started
    await dispose()  # type: ignore[misc]
    return len(rows) / elapsed


# --- query latency --------------------------------------------------------------------------

def _sqlite_ts(ts: dt.datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f")  # what SQLAlchemy's SQLite DateTime stores


async def bulk_load(url: str, n: int) -> None:
    await migrate_async("logs", url)
    rows = generate(n)
    if is_sqlite(url):
        db = sqlite3.connect(url.split("///", 1)[1])
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='api_requests' "
                             "AND sql IS NOT NULL").fetchall()
        for name, _ in indexes:
            db.execute(f"DROP INDEX {name}")
        # `repeats` (migration 0003) takes its default, 1, as in the PostgreSQL COPY below.
        db.executemany("INSERT INTO api_requests (org_id, request_id, ts, integration_id, method, endpoint, status, "
                       "duration_ms, ip, error_code, scope_category) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       ((*r[:2], _sqlite_ts(r[2]), *r[3:]) for r in rows))
        for _, sql in indexes:
            db.execute(sql)
        db.execute("ANALYZE")
        db.commit()
        db.close()
        return
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    await conn.copy_records_to_table(
        "api_requests", records=list(rows),
        columns=["org_id", "request_id", "ts", "integration_id", "method", "endpoint", "status", "duration_ms", "ip",
                 "error_code", "scope_category"])
    await conn.execute("VACUUM ANALYZE api_requests")
    await conn.close()


def filters(rng: random.Random) -> dict[str, Callable[[], RequestFilter]]:
    def day() -> RequestFilter:
        start = T_END - dt.timedelta(seconds=rng.uniform(86400, SPAN_SECONDS))
        return RequestFilter(since=start, until=start + dt.timedelta(days=1))

    return {
        "none (newest first)": lambda: RequestFilter(),
        "integration": lambda: RequestFilter(integration_id=f"int_{rng.randrange(INTEGRATIONS):04d}"),
        "date range (1 day)": day,
        "status success": lambda: RequestFilter(status=StatusFilter.parse("success")),
        "status error": lambda: RequestFilter(status=StatusFilter.parse("error")),
        "status 4xx": lambda: RequestFilter(status=StatusFilter.parse("4xx")),
        "status 5xx (1%)": lambda: RequestFilter(status=StatusFilter.parse("5xx")),
        "status 503 (0.5%)": lambda: RequestFilter(status=StatusFilter.parse("503")),
        "endpoint substring": lambda: RequestFilter(endpoint=rng.choice(CATEGORIES)),
        "endpoint exact path": lambda: RequestFilter(endpoint=f"/{rng.choice(CATEGORIES)}/{rng.randrange(100_000)}"),
        "ip": lambda: RequestFilter(ip=f"10.{rng.randrange(8)}.{rng.randrange(16)}.{rng.randrange(IPS // 128)}"),
        "error code": lambda: RequestFilter(error_code=rng.choice(["rate_limit_exceeded", "upstream_unavailable"])),
        "integration + error": lambda: RequestFilter(integration_id=f"int_{rng.randrange(INTEGRATIONS):04d}",
                                                     status=StatusFilter.parse("error")),
    }


async def query_latencies(url: str, queries: int) -> dict[str, tuple[float, float]]:
    engine = create_engine(url)
    handlers = LogsHandlers(units_of_work(session_factory(engine), LogsRepository(postgres=not is_sqlite(url))), b"b" * 32)
    actor = Actor("bench", ORG, frozenset({QA_PERMISSION}))
    rng = random.Random(11)
    results = {}
    async with engine.connect() as conn:  # warm the pool and the caches
        await conn.execute(text("SELECT count(*) FROM api_requests"))
    for name, make in filters(rng).items():
        times = []
        for _ in range(queries):
            f = make()
            started = time.perf_counter()
            await handlers.query_requests(actor, QueryRequests(f, page_size=50))
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        results[name] = (statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)])
    await engine.dispose()
    return results


# --- the run --------------------------------------------------------------------------------

async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="trellis-bench-logs-"))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    pg = PostgresServer().start() if "postgresql" in backends else None
    server = NatsServer(workdir / "nats").start()
    try:
        def url_for(backend: str, name: str) -> str:
            if backend == "sqlite":
                return f"sqlite+aiosqlite:///{workdir / name}.db"
            assert pg is not None
            return pg.create_database(name)

        ingest_rows = list(generate(args.ingest, seed=3))
        how = "one message per record" if args.per_record else "batched by ApiLogPublisher"
        print(f"publishing {args.ingest:,} records to JetStream, {how}…", file=sys.stderr)
        messages = await publish(server.url, ingest_rows, per_record=args.per_record)
        print(f"\n## ingest (records/s): {args.ingest:,} records in {messages:,} messages ({how})\n\n"
              "| backend | from JetStream | bare batched insert | ratio | records per commit |\n|---|---:|---:|---:|---:|")
        for backend in backends:
            rate, per_commit = await ingest_rate(server.url, url_for(backend, "ingest"), args.ingest,
                                                 f"bench-{backend}")
            bare = await bare_rate(url_for(backend, "bare"), ingest_rows, per_commit)
            print(f"| {backend} | {rate:,.0f} | {bare:,.0f} | {rate / bare:.2f} | {per_commit:,} |", flush=True)

        for backend in backends if args.rows else []:
            url = url_for(backend, "query")
            started = time.perf_counter()
            print(f"loading {args.rows:,} rows into {backend}…", file=sys.stderr)
            await bulk_load(url, args.rows)
            print(f"loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            results = await query_latencies(url, args.queries)
            print(f"\n## {backend}: first page (50 rows) on {args.rows:,} rows, {args.queries} queries each\n")
            print("| filter | p50 ms | p95 ms |\n|---|---:|---:|")
            for name, (p50, p95) in results.items():
                print(f"| {name} | {p50:.1f} | {p95:.1f} |", flush=True)
    finally:
        server.stop()
        if pg is not None:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.logs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the query latencies (default 1,000,000; 0 skips them)")
    parser.add_argument("--ingest", type=int, default=100_000, help="records for the ingest rates (default 100,000)")
    parser.add_argument("--queries", type=int, default=100, help="queries per filter (default 100)")
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--per-record", action="store_true",
                        help="publish one message per record on apilog.request (the unbatched path, for comparison)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
