"""Log queries as the request log grows: 1 M and then 10 M rows of one organisation's API
requests on a throwaway PostgreSQL, each of the logs service's own queries timed at each size.

    .venv/bin/python -m bench.curves.logs [--sizes 1000000,10000000] [--queries 30] [--explain]

Each size is generated straight into a migrated database by one INSERT ... SELECT over
generate_series (200 integrations, 30 days ending 2026-06-30, statuses 88 % 200, 4 % 201, 3 %
404, 3 % 429, 1 % 403, 0.5 % 500, 0.5 % 503, six endpoint families; the same mix bench.logs
loads, with the indexes dropped during the insert and built afterwards, then VACUUM ANALYZE);
the 10 M step replaces the 1 M rows over the same 30 days (ten times the traffic, same
retention). Then each query runs `--queries` times with fresh random values through
LogsHandlers (the service's handlers and store, as its gRPC API calls them): first page (50
rows) newest first and filtered by integration, status class, endpoint, a one-day range; the
histogram of one day and of one integration's whole log; the count an export starts with.
A query taking more than a few seconds stops after `--budget` seconds of its loop. `--explain`
prints each query's plan at the last size (auto_explain, ANALYZE on, one run of each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.edge.load import cpu_seconds
from services.kit.auth import QA_PERMISSION, Actor
from services.kit.db import create_engine, migrate_async, session_factory
from services.logs.adapters.store import LogsRepository, units_of_work
from services.logs.application.commands import ExportRequests, QueryRequests, RequestHistogram
from services.logs.application.handlers import LogsHandlers
from services.logs.domain.model import RequestFilter, StatusFilter
from tests.support.postgres import PostgresServer

ORG = "org_bench"
T_END = dt.datetime(2026, 6, 30, tzinfo=dt.timezone.utc)
SPAN_SECONDS = 30 * 86400
INTEGRATIONS = 200
CATEGORIES = ("inventory", "orders", "skus", "crm", "sensors", "reports")

# One statement: a row per i, newest last, its other columns drawn from random() (setseed first).
GENERATE = f"""
INSERT INTO api_requests (org_id, request_id, ts, integration_id, method, endpoint, status, duration_ms, ip,
                          error_code, scope_category)
SELECT '{ORG}', 'req_' || lpad(i::text, 9, '0'),
       TIMESTAMPTZ '{T_END.isoformat()}' - make_interval(secs => {SPAN_SECONDS}::float8 * ($1 - i) / $1),
       'int_' || lpad(floor(r1 * {INTEGRATIONS})::int::text, 4, '0'),
       CASE WHEN r2 < 0.8 THEN 'GET' ELSE 'POST' END,
       '/' || (ARRAY{list(CATEGORIES)})[1 + floor(r3 * 6)::int] || '/' || floor(r4 * 100000)::int,
       s.status, 2 + r2 * 198,
       '10.' || floor(r3 * 8)::int || '.' || floor(r4 * 16)::int || '.' || floor(r1 * 15)::int,
       s.error_code, (ARRAY{list(CATEGORIES)})[1 + floor(r3 * 6)::int]
FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() * 1000 AS rs
      FROM generate_series(1, $1) AS i) g
CROSS JOIN LATERAL (SELECT CASE WHEN rs < 880 THEN 200 WHEN rs < 920 THEN 201 WHEN rs < 950 THEN 404
                                WHEN rs < 980 THEN 429 WHEN rs < 990 THEN 403 WHEN rs < 995 THEN 500 ELSE 503 END
                           AS status) s0
CROSS JOIN LATERAL (SELECT s0.status, CASE s0.status WHEN 404 THEN 'not_found' WHEN 429 THEN 'rate_limit_exceeded'
                           WHEN 403 THEN 'insufficient_scope' WHEN 500 THEN 'internal_error'
                           WHEN 503 THEN 'upstream_unavailable' ELSE '' END AS error_code) s
"""


async def generate(dsn: str, rows: int) -> dict[str, float]:
    """Replace the request log with `rows` generated rows; seconds per phase."""
    conn = await asyncpg.connect(dsn)
    took: dict[str, float] = {}
    try:
        await conn.execute("SET maintenance_work_mem = '2GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        await conn.execute("TRUNCATE api_requests")
        indexes = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'api_requests' "
                                   "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'api_requests'::regclass)")
        for ix in indexes:
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        pkey = await conn.fetchrow("SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
                                   "WHERE conrelid = 'api_requests'::regclass AND contype = 'p'")
        await conn.execute(f'ALTER TABLE api_requests DROP CONSTRAINT "{pkey["conname"]}"')
        started = time.perf_counter()
        await conn.execute("SELECT setseed(0.7)")
        await conn.execute(GENERATE, rows, timeout=3600)
        took["insert"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute(f'ALTER TABLE api_requests ADD CONSTRAINT "{pkey["conname"]}" {pkey["def"]}', timeout=3600)
        for ix in indexes:
            await conn.execute(ix["indexdef"], timeout=3600)
        took["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE api_requests", timeout=3600)
        took["vacuum analyze"] = time.perf_counter() - started
        took["MB"] = await conn.fetchval("SELECT pg_total_relation_size('api_requests')") / 1e6
    finally:
        await conn.close()
    return took


Query = Callable[[LogsHandlers, Actor, random.Random], Awaitable[Any]]


def _day(rng: random.Random) -> tuple[dt.datetime, dt.datetime]:
    start = T_END - dt.timedelta(seconds=rng.uniform(86400, SPAN_SECONDS))
    return start, start + dt.timedelta(days=1)


def _integration(rng: random.Random) -> str:
    return f"int_{rng.randrange(INTEGRATIONS):04d}"


def _page(make: Callable[[random.Random], RequestFilter]) -> Query:
    async def run(h: LogsHandlers, actor: Actor, rng: random.Random) -> Any:
        return await h.query_requests(actor, QueryRequests(make(rng), page_size=50))
    return run


def _histogram(make: Callable[[random.Random], RequestFilter]) -> Query:
    async def run(h: LogsHandlers, actor: Actor, rng: random.Random) -> Any:
        return await h.request_histogram(actor, RequestHistogram(make(rng)))
    return run


def _count(make: Callable[[random.Random], RequestFilter]) -> Query:
    async def run(h: LogsHandlers, actor: Actor, rng: random.Random) -> Any:
        total, pages = await h.export_requests(actor, ExportRequests(make(rng)))
        await pages.aclose()  # type: ignore[attr-defined]
        return total
    return run


def _one_day(rng: random.Random) -> RequestFilter:
    since, until = _day(rng)
    return RequestFilter(since=since, until=until)


QUERIES: dict[str, Query] = {
    "page: newest first": _page(lambda rng: RequestFilter()),
    "page: integration": _page(lambda rng: RequestFilter(integration_id=_integration(rng))),
    "page: status 4xx (7 %)": _page(lambda rng: RequestFilter(status=StatusFilter.parse("4xx"))),
    "page: status 5xx (1 %)": _page(lambda rng: RequestFilter(status=StatusFilter.parse("5xx"))),
    "page: status 503 (0.5 %)": _page(lambda rng: RequestFilter(status=StatusFilter.parse("503"))),
    "page: endpoint substring": _page(lambda rng: RequestFilter(endpoint=rng.choice(CATEGORIES))),
    "page: endpoint exact path": _page(
        lambda rng: RequestFilter(endpoint=f"/{rng.choice(CATEGORIES)}/{rng.randrange(100_000)}")),
    "page: one day": _page(_one_day),
    "histogram: one day": _histogram(_one_day),
    "histogram: integration, 30 days": _histogram(lambda rng: RequestFilter(integration_id=_integration(rng))),
    "count: integration, 30 days": _count(lambda rng: RequestFilter(integration_id=_integration(rng))),
    "count: one day": _count(_one_day),
}


async def backend_cpu(monitor: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL backend serving the bench's database (not `monitor`)."""
    pids = await monitor.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()")
    out = {}
    for row in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            out[row["pid"]] = cpu_seconds(row["pid"])
    return out


Timed = tuple[float, float, int, float, float]  # p50 ms, p95 ms, runs, server CPU ms/run, bench CPU ms/run


async def latencies(url: str, dsn: str, queries: int, budget: float) -> dict[str, Timed]:
    """Per query: p50 and p95 wall ms, the runs, and CPU ms per run of PostgreSQL's backends and
    of this process (the handlers, SQLAlchemy, asyncpg): CPU depends less on the machine's load."""
    monitor = await asyncpg.connect(dsn)
    engine = create_engine(url)
    handlers = LogsHandlers(units_of_work(session_factory(engine), LogsRepository(postgres=True)), b"b" * 32)
    actor = Actor("bench", ORG, frozenset({QA_PERMISSION}))
    out = {}
    try:
        for name, query in QUERIES.items():
            rng = random.Random(11)
            await query(handlers, actor, rng)  # warm-up: the pool, the plan, the pages it reads
            times: list[float] = []
            deadline = time.perf_counter() + budget
            server, own = await backend_cpu(monitor), time.process_time()
            while len(times) < queries and time.perf_counter() < deadline:
                started = time.perf_counter()
                await query(handlers, actor, rng)
                times.append((time.perf_counter() - started) * 1000)
            own = time.process_time() - own
            after = await backend_cpu(monitor)
            server_s = sum(cpu - server.get(pid, 0.0) for pid, cpu in after.items())
            times.sort()
            out[name] = (statistics.median(times), times[max(0, int(len(times) * 0.95 + 0.5) - 1)], len(times),
                         server_s / len(times) * 1000, own / len(times) * 1000)
            print(f"  {name}: p50 {out[name][0]:.1f} ms over {len(times)}", file=sys.stderr, flush=True)
    finally:
        await engine.dispose()
        await monitor.close()
    return out


async def explain(pg: PostgresServer, url: str, dsn: str) -> dict[str, list[str]]:
    """Each query's plan, run once with auto_explain (ANALYZE) on a fresh engine."""
    database = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(dsn)
    log = pg.dir / "log"
    settings = {"session_preload_libraries": "auto_explain", "auto_explain.log_min_duration": "0",
                "auto_explain.log_analyze": "on", "auto_explain.log_buffers": "on",
                "auto_explain.log_timing": "off"}
    for key, value in settings.items():
        await conn.execute(f'ALTER DATABASE "{database}" SET {key} = \'{value}\'')
    plans: dict[str, list[str]] = {}
    engine = create_engine(url)
    handlers = LogsHandlers(units_of_work(session_factory(engine), LogsRepository(postgres=True)), b"b" * 32)
    actor = Actor("bench", ORG, frozenset({QA_PERMISSION}))
    try:
        for name, query in QUERIES.items():
            start = log.stat().st_size
            await query(handlers, actor, random.Random(11))
            await asyncio.sleep(0.2)
            with log.open() as f:
                f.seek(start)
                text = f.read()
            # One block per statement; the integration-names lookup after each page is left out.
            blocks = [b for b in re.split(r"\n(?=\S.*duration: )", text)
                      if "plan:" in b and "SELECT integrations." not in b and re.search(r"Scan|Aggregate", b)]
            plans[name] = [line[:200] for b in blocks for line in b.splitlines()
                           if re.search(r"Scan|Sort|Limit|Aggregate|Query Text|Filter|Index Cond|Rows Removed"
                                        r"|duration", line)]
    finally:
        await engine.dispose()
        for key in settings:
            await conn.execute(f'ALTER DATABASE "{database}" RESET {key}')
        await conn.close()
    return plans


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def run(args: argparse.Namespace) -> None:
    pg = PostgresServer().start()
    try:
        url = pg.create_database("curves_logs")
        dsn = url.replace("postgresql+asyncpg", "postgresql")
        await migrate_async("logs", url)
        results: dict[int, dict[str, Timed]] = {}
        made: dict[int, dict[str, float]] = {}
        loads: dict[int, str] = {}
        plans: dict[str, list[str]] = {}
        for n in args.sizes:
            print(f"generating {n:,} rows…", file=sys.stderr, flush=True)
            made[n] = await generate(dsn, n)
            print(f"  {made[n]}", file=sys.stderr, flush=True)
            results[n] = await latencies(url, dsn, args.queries, args.budget)
            loads[n] = loadavg()
            if args.explain and n == args.sizes[-1]:
                plans = await explain(pg, url, dsn)
    finally:
        pg.stop()
    sizes = args.sizes
    print(f"\nlog queries by log size, PostgreSQL (throwaway, fsync off), one organisation, {INTEGRATIONS} integrations "
          f"over 30 days; through LogsHandlers; up to {args.queries} runs of each after a warm-up, "
          f"p50 / p95 in ms\n")
    for n in sizes:
        m = made[n]
        print(f"{n:,} rows: insert {m['insert']:.0f} s, indexes {m['indexes']:.0f} s, VACUUM ANALYZE "
              f"{m['vacuum analyze']:.0f} s, table + indexes {m['MB']:,.0f} MB; load average after its queries {loads[n]}")
    print("\n| query | " + " | ".join(f"{n / 1e6:g} M rows: p50 / p95 ms, CPU ms (PostgreSQL + bench)" for n in sizes)
          + (f" | p50 {sizes[-1] // sizes[0]}x rows / {sizes[0] / 1e6:g} M | PostgreSQL CPU {sizes[-1] // sizes[0]}x / "
             f"{sizes[0] / 1e6:g} M |" if len(sizes) > 1 else " |"))
    print("|---|" + "---:|" * (len(sizes) + 2 * (len(sizes) > 1)))
    for name in QUERIES:
        cells = [f"{r[0]:.1f} / {r[1]:.1f}, {r[3]:.1f} + {r[4]:.1f}" + ("" if r[2] >= args.queries else f" ({r[2]} runs)")
                 for n in sizes for r in (results[n][name],)]
        first, last = results[sizes[0]][name], results[sizes[-1]][name]
        ratio = (f" | {last[0] / first[0]:.1f} | {last[3] / first[3]:.1f}" if first[3] else f" | {last[0] / first[0]:.1f} | -") \
            if len(sizes) > 1 else ""
        print(f"| {name} | " + " | ".join(cells) + ratio + " |")
    for name, lines in plans.items():
        print(f"\nplan of '{name}' at {sizes[-1]:,} rows (auto_explain, ANALYZE):")
        print("\n".join("    " + re.sub(r"^.*?(LOG|DETAIL):\s*", "", line) for line in lines[:40]))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.curves.logs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="rows at each step, comma separated")
    parser.add_argument("--queries", type=int, default=30, help="runs of each query at each size (default 30)")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds at most for one query's runs (default 15)")
    parser.add_argument("--explain", action="store_true", help="print each query's plan at the last size")
    args = parser.parse_args()
    args.sizes = [min(int(s), 20_000_000) for s in args.sizes.split(",")]
    args.queries = min(max(args.queries, 1), 1000)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
