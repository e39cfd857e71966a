"""The floor of a signed, logged delivery with our libraries: the least any implementation
of the spec's delivery path can spend per delivery on one core with nats-py, SQLAlchemy Core on
aiosqlite and aiohttp, measured beside the bare aiohttp POST loop in the same run.

The floor loop does only what every delivery must: fetch the activity from JetStream (a
durable pull consumer, batches of 256) and parse it; store the activity and one delivery row
in one transaction per batch (the service's own tables and indexes, through its migrations);
ack; sign the body (the spec's scheme, our signing code) and POST it with 16 concurrent
requests; store the attempt row and the delivery's outcome in one transaction per batch of
results. It has no claims or leases (it posts what it just stored, so it cannot share work with
a replica or survive its own crash mid-batch), no retries, no schema check, no filters, no span,
no metrics, no recorded exchange, no subscription lookup: what the service adds to it is the
price of those, and the gap between this and the bare loop is what the libraries charge for
the four row writes, the bus and the signature.

    .venv/bin/python -m bench.webhooks.floor [--events 20000]

Prints the bare loop and the floor loop, each with CPU µs per POST or delivery, both on CPU 0,
in one run; `python -m bench.webhooks --throughput-only` gives the service's figure beside the
same bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig

from bench.webhooks.__main__ import (
    BENCH_CPU, SERVICE_CPU, activity, broker_and_receiver, pin, run_bare, until,
)

MAX_SECONDS = 120.0
CONCURRENCY = 16
FETCH_BATCH = 256
SECRET = "whsec_" + "floor" * 8


async def floor_loop(nats_url: str, database: str, url: str, ca: str, count: int) -> dict[str, float]:
    """The loop itself (run in its own process, pinned like the service)."""
    from services.contracts.trellis.events.v1 import events_pb2
    from services.kit.db import create_engine
    from services.webhooks.adapters.store import activities, attempts, deliveries, row_id
    from services.webhooks.domain.model import SignatureScheme, delivery_headers
    from sqlalchemy import bindparam, update

    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("activity.>", durable="floor", stream="ACTIVITY",
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, max_ack_pending=-1))
    context = ssl.create_default_context(cafile=ca)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=CONCURRENCY))
    to_send: asyncio.Queue[tuple[str, str, str, bytes]] = asyncio.Queue()
    results: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    recorded = 0
    set_result = update(deliveries).where(deliveries.c.id == bindparam("b_id")).values(
        status="succeeded", attempts=1, next_attempt_at=None, updated_at=bindparam("b_now"),
        last_status_code=bindparam("b_code"))

    async def consume() -> None:
        taken = 0
        while taken < count:
            try:
                messages = await sub.fetch(FETCH_BATCH, timeout=0.05)
            except nats.errors.TimeoutError:
                continue
            now = dt.datetime.now(dt.timezone.utc)
            activity_rows, delivery_rows, sends = [], [], []
            for seq, msg in enumerate(messages, start=taken):
                event = events_pb2.ActivityEvent.FromString(msg.data)
                body = json.dumps({"id": event.event_id, "type": event.type, "created_at": now.isoformat(),
                                   "data": json.loads(event.data_json)}, separators=(",", ":")).encode()
                delivery_id = row_id("dlv")
                activity_rows.append({"org_id": event.org_id, "event_id": event.event_id, "seq": seq, "type": event.type,
                                      "occurred_at": now, "received_at": now, "sender_type": event.sender_type,
                                      "sender_id": event.sender_id, "body": body, "trace_headers": "{}"})
                delivery_rows.append({"id": delivery_id, "org_id": event.org_id, "subscription_id": "whk_floor",
                                      "event_id": event.event_id, "event_type": event.type, "seq": seq,
                                      "status": "pending", "round": 1, "attempts": 0, "next_attempt_at": now,
                                      "lease_until": None, "claimed_by": None, "created_at": now, "updated_at": now,
                                      "last_status_code": 0, "last_error": "", "last_error_detail": "", "test": False})
                sends.append((delivery_id, event.event_id, event.type, body))
            async with engine.begin() as conn:
                await conn.execute(activities.insert(), activity_rows)
                await conn.execute(deliveries.insert(), delivery_rows)
            for msg in messages:
                await msg.ack()
            for item in sends:
                to_send.put_nowait(item)
            taken += len(messages)

    async def post() -> None:
        while True:
            delivery_id, event_id, event_type, body = await to_send.get()
            started = dt.datetime.now(dt.timezone.utc)
            headers = delivery_headers(SignatureScheme.SPEC, SECRET, event_id=event_id, event_type=event_type,
                                       timestamp=int(time.time()), body=body, user_agent="floor")
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
            results.put_nowait({"id": row_id("att"), "org_id": "org_bench", "delivery_id": delivery_id,
                                "subscription_id": "whk_floor", "event_id": event_id, "event_type": event_type,
                                "round": 1, "attempt": 1, "attempted_at": started, "duration_ms": 1.0,
                                "status_code": response.status, "succeeded": response.status < 300, "error": "",
                                "error_detail": "", "response_body": answer[:2048].decode(errors="replace"),
                                "url": url, "test": False, "sent_by": "floor", "exchange": None})

    async def record() -> None:
        nonlocal recorded
        while recorded < count:
            batch = [await results.get()]
            while not results.empty() and len(batch) < 500:
                batch.append(results.get_nowait())
            now = dt.datetime.now(dt.timezone.utc)
            async with engine.begin() as conn:
                await conn.execute(attempts.insert(), batch)
                await conn.execute(set_result, [{"b_id": row["delivery_id"], "b_now": now, "b_code": row["status_code"]}
                                                for row in batch])
            recorded += len(batch)

    workers = [asyncio.create_task(post()) for _ in range(CONCURRENCY)]
    consumer = asyncio.create_task(consume())
    start, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.wait_for(record(), MAX_SECONDS)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        for task in (*workers, consumer):
            task.cancel()
        await session.close()
        await nc.close()
        await engine.dispose()
    return {"deliveries": recorded, "rate": recorded / seconds, "cpu_us": cpu / recorded * 1e6}


async def run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    from services.kit.db import migrate_async

    pin(os.getpid(), BENCH_CPU)
    nats_server, ca_file, receiver, runner, receiver_port = await broker_and_receiver(root)
    try:
        bare = await run_bare(receiver_port, ca_file, args.events)
        database = root / "floor.db"
        await migrate_async("webhooks", f"sqlite+aiosqlite:///{database}")
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="ACTIVITY", subjects=["activity.>"]))
        receiver.secret = SECRET
        for chunk in range(0, args.events, 1000):
            await asyncio.gather(*(js.publish("activity.lot.created", activity(n, stamp=False))
                                   for n in range(chunk, min(args.events, chunk + 1000))))
        await nc.close()
        child = subprocess.Popen([sys.executable, "-m", "bench.webhooks.floor", "--child", nats_server.url, str(database),
                                  f"https://127.0.0.1:{receiver_port}/hook", str(ca_file), str(args.events)],
                                 stdout=subprocess.PIPE)
        pin(child.pid, SERVICE_CPU)
        out, _ = await asyncio.to_thread(child.communicate, timeout=MAX_SECONDS + 30)
        floor = json.loads(out)
        await until(lambda: receiver.delivered >= args.events)
        return {"bare": bare["rate"], "bare_cpu_us": bare["cpu_us"], "floor": floor["rate"], "floor_cpu_us": floor["cpu_us"],
                "delivered": receiver.delivered, "bad_signatures": receiver.bad_signatures,
                "distinct": len(receiver.event_ids)}
    finally:
        await runner.cleanup()
        nats_server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        nats_url, database, url, ca, count = sys.argv[2:7]
        print(json.dumps(asyncio.run(floor_loop(nats_url, database, url, ca, int(count)))), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks.floor")
    parser.add_argument("--events", type=int, default=20_000, help="events published and delivered (100-50000)")
    args = parser.parse_args()
    args.events = min(max(args.events, 100), 50_000)
    with tempfile.TemporaryDirectory(prefix="trellis-floor-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(f"webhooks floor: {args.events:,} events, one subscription, SQLite, 2 CPUs (loops on CPU {SERVICE_CPU}; "
          f"receiver, nats-server on CPU {BENCH_CPU})")
    print(f"bare aiohttp POST loop                {result['bare']:8,.0f} /s   CPU {result['bare_cpu_us']:6,.0f} µs/POST")
    print(f"floor: fetch, store, ack, sign, POST, record  {result['floor']:8,.0f} /s   "
          f"CPU {result['floor_cpu_us']:6,.0f} µs/delivery   ratio by CPU {result['bare_cpu_us'] / result['floor_cpu_us']:.2f}")
    print(f"signatures verified: {result['delivered'] - result['bad_signatures']:,} of {result['delivered']:,}; "
          f"distinct events {result['distinct']:,}")


if __name__ == "__main__":
    main()
