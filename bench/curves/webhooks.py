"""Webhooks as the queue grows: the claim's time and the deliveries per second of the running
service with 1,000, 100,000 and 1,000,000 pending deliveries already in its store.

    .venv/bin/python -m bench.curves.webhooks [--sizes 1000,100000,1000000] [--drain 5000] [--claims 20]
                                              [--backend sqlite|postgresql]

For each size, on a fresh database: `python -m services.webhooks` (CPU 0) makes one subscription
to the bench's HTTPS receiver (bench.webhooks' broker_and_receiver and service_env: CPU 1) and
stops; the size's activities and pending deliveries of that subscription, all due, go straight
into its store with one INSERT ... SELECT each (a recursive CTE on SQLite, generate_series on
PostgreSQL), then ANALYZE. The bench then times, in its own process on the same database with
the service stopped, the service's own queue queries (WorkQueue.claim as the dispatcher calls
it: 500 at most, the default room of 8 x 16 per subscription, in a transaction rolled back, so
each run claims the same rows; next_due; depth, the queue-depth gauge). Then the service starts
again and drains: deliveries/s between the `--warm`-th and the (`--warm` + `--drain`)-th
delivery the receiver verified, and the service's CPU time per delivery over that window. The
1 M step drains the same 5,000 as the others, not the million.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from sqlalchemy import event

from bench.edge.load import cpu_seconds
from bench.webhooks.__main__ import (
    AUDIENCE, BENCH_CPU, ISSUER, ORG, SERVICE_CPU, broker_and_receiver, pin, service_env, wait_serving,
)
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import create_engine, migrate_async, session_factory
from services.webhooks.adapters.dispatcher import BUFFER_ROUNDS, CLAIM_BATCH
from services.webhooks.adapters.queue import WorkQueue
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

PER_SUBSCRIPTION = 16  # the default TRELLIS_WEBHOOKS_CONCURRENCY_PER_SUBSCRIPTION
MAX_PHASE_SECONDS = 240.0
BODY = ('{"id":"%s","type":"lot.created","created_at":"2026-06-30T00:00:00.000Z","organisation_id":"' + ORG
        + '","sender":{"type":"integration","id":"int_bench"},"data":{"lot_id":"L-1","weight_kg":12.5,"room":"Flower 3"}}')

# Rows i = 0 .. n-1: event evt_curve<i>, created (and due) n - i seconds before `start`.
SQLITE_ACTIVITIES = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO activities (org_id, event_id, seq, type, occurred_at, received_at, sender_type, sender_id, body, trace_headers)
SELECT :org, printf('evt_curve%09d', i), :seq + i, 'lot.created',
       strftime('%Y-%m-%d %H:%M:%S', :start + i, 'unixepoch') || '.000000',
       strftime('%Y-%m-%d %H:%M:%S', :start + i, 'unixepoch') || '.000000', 'integration', 'int_bench',
       CAST(replace(:body, '@ID@', printf('evt_curve%09d', i)) AS BLOB), '{}'
FROM n"""
SQLITE_DELIVERIES = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO deliveries (id, org_id, subscription_id, event_id, event_type, seq, status, round, attempts, next_attempt_at,
                        lease_until, claimed_by, created_at, updated_at, last_status_code, last_error,
                        last_error_detail, test)
SELECT printf('dlv_curve%09d', i), :org, :sub, printf('evt_curve%09d', i), 'lot.created', :seq + i, 'pending', 1, 0,
       strftime('%Y-%m-%d %H:%M:%S', :start + i, 'unixepoch') || '.000000', NULL, NULL,
       strftime('%Y-%m-%d %H:%M:%S', :start + i, 'unixepoch') || '.000000',
       strftime('%Y-%m-%d %H:%M:%S', :start + i, 'unixepoch') || '.000000', 0, 'none', '', 0
FROM n"""
PG_ACTIVITIES = """
INSERT INTO activities (org_id, event_id, seq, type, occurred_at, received_at, sender_type, sender_id, body, trace_headers)
SELECT $1::text, 'evt_curve' || lpad(i::text, 9, '0'), $2::bigint + i, 'lot.created', to_timestamp($3::bigint + i),
       to_timestamp($3::bigint + i), 'integration', 'int_bench',
       convert_to(replace($4::text, '@ID@', 'evt_curve' || lpad(i::text, 9, '0')), 'UTF8'), '{}'
FROM generate_series(0, $5::bigint - 1) AS i"""
PG_DELIVERIES = """
INSERT INTO deliveries (id, org_id, subscription_id, event_id, event_type, seq, status, round, attempts, next_attempt_at,
                        lease_until, claimed_by, created_at, updated_at, last_status_code, last_error,
                        last_error_detail, test)
SELECT 'dlv_curve' || lpad(i::text, 9, '0'), $1::text, $5::text, 'evt_curve' || lpad(i::text, 9, '0'), 'lot.created',
       $2::bigint + i, 'pending', 1, 0, to_timestamp($3::bigint + i), NULL, NULL, to_timestamp($3::bigint + i),
       to_timestamp($3::bigint + i), 0, 'none', '', false
FROM generate_series(0, $4::bigint - 1) AS i"""


def generate(url: str, subscription_id: str, n: int) -> float:
    """`n` activities and their pending, due deliveries of one subscription; seconds taken."""
    started = time.perf_counter()
    start, seq = int(time.time()) - n - 60, time.time_ns() - 10**12
    body = BODY % "@ID@"
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.split("///", 1)[1])
        db.execute("PRAGMA synchronous=OFF")
        params = {"last": n - 1, "org": ORG, "sub": subscription_id, "start": start, "seq": seq, "body": body}
        db.execute(SQLITE_ACTIVITIES, params)
        db.execute(SQLITE_DELIVERIES, params)
        db.commit()
        db.execute("ANALYZE")
        db.close()
    else:
        async def pg() -> None:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            try:
                await conn.execute(PG_ACTIVITIES, ORG, seq, start, body, n, timeout=1800)
                await conn.execute(PG_DELIVERIES, ORG, seq, start, n, subscription_id, timeout=1800)
                await conn.execute("VACUUM ANALYZE activities", timeout=1800)
                await conn.execute("VACUUM ANALYZE deliveries", timeout=1800)
            finally:
                await conn.close()
        asyncio.run(pg())
    return time.perf_counter() - started


async def plans(engine: Any, sessions: Any, queue: WorkQueue, postgres: bool) -> dict[str, list[str]]:
    """The plan of each statement the claim and next_due run (captured as the driver gets
    them, then explained with the same parameters: EXPLAIN ANALYZE on PostgreSQL, EXPLAIN
    QUERY PLAN on SQLite), in a transaction rolled back."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            captured.append((statement, parameters))

    out: dict[str, list[str]] = {}
    for name in ("claim", "next_due"):
        captured.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", capture)
        async with sessions() as session:
            await session.begin()
            now = dt.datetime.now(dt.timezone.utc)
            if name == "claim":
                await queue.claim(session, now, limit=CLAIM_BATCH, lease_until=now + dt.timedelta(seconds=30),
                                  exclude=(), room={}, default_room=BUFFER_ROUNDS * PER_SUBSCRIPTION)
            else:
                await queue.next_due(session)
            event.remove(engine.sync_engine, "before_cursor_execute", capture)
            lines: list[str] = []
            for statement, parameters in list(captured):
                how = "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " if postgres else "EXPLAIN QUERY PLAN "
                conn = await session.connection()
                took = []
                for _ in range(3):  # the statement alone, best of three
                    started = time.perf_counter()
                    await conn.exec_driver_sql(statement, parameters)
                    took.append((time.perf_counter() - started) * 1000)
                result = await conn.exec_driver_sql(how + statement, parameters)
                lines.append(f"[{min(took):.2f} ms] " + " ".join(statement.split())[:160] + " ...")
                lines += [("    " + " ".join(str(c) for c in (row[-1:] if not postgres else row)))[:220] for row in result]
            await session.rollback()
        out[name] = lines
    return out


async def queue_times(url: str, claims: int, postgres: bool) -> dict[str, Any]:
    """ms per run (p50, p95) of the service's queue queries, with the service stopped."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    queue = WorkQueue(owner="bench-curves", skip_locked=postgres)
    out: dict[str, Any] = {}
    try:
        for name in ("claim", "next_due", "depth"):
            times: list[float] = []
            got = 0
            for n in range(claims + 1):
                async with sessions() as session:
                    await session.begin()
                    started = time.perf_counter()
                    now = dt.datetime.now(dt.timezone.utc)
                    if name == "claim":
                        jobs, _, _ = await queue.claim(session, now, limit=CLAIM_BATCH,
                                                       lease_until=now + dt.timedelta(seconds=30), exclude=(),
                                                       room={}, default_room=BUFFER_ROUNDS * PER_SUBSCRIPTION)
                        got = len(jobs)
                    elif name == "next_due":
                        await queue.next_due(session)
                    else:
                        got = await queue.depth(session)
                    took = (time.perf_counter() - started) * 1000
                    await session.rollback()
                if n:  # the first is a warm-up
                    times.append(took)
            times.sort()
            out[name] = (statistics.median(times), times[max(0, int(len(times) * 0.95 + 0.5) - 1)])
            out[f"{name}_rows"] = got
        out["plans"] = await plans(engine, sessions, queue, postgres)
    finally:
        await engine.dispose()
    return out


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def one_size(n: int, args: argparse.Namespace, root: Path, pg: PostgresServer | None) -> dict[str, Any]:
    root.mkdir(parents=True)
    nats_server, ca_file, receiver, runner, receiver_port = await broker_and_receiver(root)
    actor_private, actor_public = generate_actor_key()
    (root / "actor.pem").write_bytes(actor_public)
    url = pg.create_database("curves_webhooks") if pg else f"sqlite+aiosqlite:///{root / 'data' / 'webhooks.db'}"
    (root / "data").mkdir(exist_ok=True)
    await migrate_async("webhooks", url)
    port = free_port()
    env = {**service_env(root, nats_server.url, port, ca_file), "TRELLIS_WEBHOOKS_DATABASE_URL": url}
    log = (root / "webhooks.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-m", "services.webhooks"], env=env, stdout=log, stderr=log)
        pin(child.pid, SERVICE_CPU)
        return child

    out: dict[str, Any] = {"size": n}
    service = start()
    try:
        await wait_serving(f"127.0.0.1:{port}")
        token = mint_actor_token(actor_private, issuer=ISSUER, audience=AUDIENCE, user_id="usr_bench", org_id=ORG,
                                 permissions=[ADMIN_PERMISSION], ttl_seconds=3600)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            created = await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(pb.CreateSubscriptionRequest(
                url=f"https://127.0.0.1:{receiver_port}/hook", activity_types=["lot.created"]),
                metadata=(("authorization", f"Bearer {token}"),))
        receiver.secret = created.signing_secret
        await asyncio.to_thread(_stop, service)
        print(f"  {n:,}: generating…", file=sys.stderr, flush=True)
        out["generate_s"] = await asyncio.to_thread(generate, url, created.subscription.id, n)
        out.update(await queue_times(url, args.claims, pg is not None))
        print(f"  {n:,}: claim p50 {out['claim'][0]:.1f} ms; draining…", file=sys.stderr, flush=True)
        warm, drain = min(args.warm, n // 10), min(args.drain, n - min(args.warm, n // 10))
        service = start()
        deadline = time.monotonic() + MAX_PHASE_SECONDS
        while receiver.delivered < warm and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        began, cpu0 = time.perf_counter(), cpu_seconds(service.pid)
        while receiver.delivered < warm + drain and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        ended, cpu1 = time.perf_counter(), cpu_seconds(service.pid)
        done = receiver.delivered - warm
        out.update(drained=done, rate=done / (ended - began), cpu_us=(cpu1 - cpu0) / max(done, 1) * 1e6,
                   bad=receiver.bad_signatures, load=" ".join(Path("/proc/loadavg").read_text().split()[:3]))
        if done < drain:
            out["timeout"] = True
    finally:
        await asyncio.to_thread(_stop, service)
        log.close()
        await runner.cleanup()
        nats_server.stop()
    return out


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    pin(os.getpid(), BENCH_CPU)
    pg = PostgresServer().start() if args.backend == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory(prefix="trellis-bench-curves-webhooks-") as tmp:
            return [await one_size(n, args, Path(tmp) / str(n), pg) for n in args.sizes]
    finally:
        if pg is not None:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.curves.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000", help="pending deliveries at each step")
    parser.add_argument("--drain", type=int, default=5_000, help="deliveries timed while draining (default 5,000)")
    parser.add_argument("--warm", type=int, default=500, help="deliveries before the drain is timed (default 500)")
    parser.add_argument("--claims", type=int, default=20, help="timed runs of each queue query (default 20)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    args.sizes = [min(max(int(s), 100), 2_000_000) for s in args.sizes.split(",")]
    args.drain = min(max(args.drain, 100), 50_000)
    args.claims = min(max(args.claims, 1), 200)
    rows = asyncio.run(run(args))
    print(f"\nwebhooks by pending deliveries ({args.backend}): one subscription holds them all, all due; queue "
          f"queries timed in the bench process with the service stopped ({args.claims} runs after a warm-up, "
          f"p50 / p95 ms); then the service (CPU {SERVICE_CPU}) drains {args.drain:,} after {args.warm} to the "
          f"HTTPS receiver (CPU {BENCH_CPU})\n")
    print("| pending | generated in | claim p50 / p95 ms (rows claimed) | next_due p50 / p95 ms | depth p50 / p95 ms "
          "| deliveries/s | CPU µs/delivery | load average |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['size']:,} | {r['generate_s']:.0f} s | {r['claim'][0]:.1f} / {r['claim'][1]:.1f} "
              f"({r['claim_rows']} rows) | {r['next_due'][0]:.2f} / {r['next_due'][1]:.2f} "
              f"| {r['depth'][0]:.1f} / {r['depth'][1]:.1f} | {r['rate']:,.0f}"
              f"{' (TIMED OUT: ' + str(r['drained']) + ')' if r.get('timeout') else ''} | {r['cpu_us']:,.0f} "
              f"| {r['load']} |")
    for r in rows:
        if r.get("bad"):
            print(f"{r['size']:,}: {r['bad']} deliveries with a bad signature")
    last = rows[-1]
    for name, lines in last.get("plans", {}).items():
        print(f"\nplans of {name}'s statements at {last['size']:,} pending ({args.backend}):")
        print("\n".join("    " + line for line in lines))

if __name__ == "__main__":
    main()
