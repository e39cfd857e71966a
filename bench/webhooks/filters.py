"""The cost of a subscription filter per delivery: deliveries/s of one HTTPS subscription
without a filter and with one, in the same run against the same webhooks process, and the
in-process cost of one evaluation.

Set up as bench.webhooks (webhooks as its own process, SQLite, its own nats-server, pinned to
CPU 0; the receiver verifying every signature, the publisher and nats-server on CPU 1). The
rounds alternate (none, filter, none, filter) so that warming up and the growing database
favour neither. The filter passes every event, so both rounds deliver the same; what differs is
its evaluation (and the document it reads) at ingest. A third figure shows a filter that
passes half: what it saves when it filters.

    .venv/bin/python -m bench.webhooks.filters [--events 5000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path

import grpc
import nats

from bench.webhooks.__main__ import (
    AUDIENCE, BENCH_CPU, ISSUER, ORG, SERVICE_CPU, broker_and_receiver, logged_attempts, pin, service_env, until,
    wait_serving,
)
from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate_async
from services.webhooks.domain.filters import verdict
from tests.support.ports import free_port

PASSES_ALL = "data.room == 'Flower 3' && data.quantity > `1` && contains(['fac_north', 'fac_south'], data.facility_id)"
PASSES_HALF = "data.facility_id == 'fac_north'"


def activity(n: int) -> bytes:
    data = {"lot_id": f"L-{n}", "facility_id": "fac_north" if n % 2 == 0 else "fac_south", "quantity": 12.5,
            "unit": "kg", "room": "Flower 3"}
    return events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=ORG,
                                    sender_type="integration", sender_id="int_bench", data_json=json.dumps(data)).SerializeToString()


def evaluation_us(expression: str) -> float:
    document = {"id": "evt_1", "type": "lot.created", "created_at": "2026-01-01T00:00:00.000Z", "organisation_id": ORG,
                "sender": {"type": "integration", "id": "int_bench"},
                "data": {"lot_id": "L-1", "facility_id": "fac_north", "quantity": 12.5, "unit": "kg", "room": "Flower 3"}}
    verdict(expression, document)
    count = 20_000
    return timeit.timeit(lambda: verdict(expression, document), number=count) / count * 1e6


async def run(args: argparse.Namespace, root: Path) -> dict[str, object]:
    pin(os.getpid(), BENCH_CPU)
    nats_server, ca_file, receiver, runner, receiver_port = await broker_and_receiver(root)
    service: subprocess.Popen[bytes] | None = None
    rates: dict[str, list[float]] = {"none": [], "filter": [], "half": []}
    try:
        actor_private, actor_public = generate_actor_key()
        (root / "actor.pem").write_bytes(actor_public)
        database = root / "data" / "webhooks.db"
        await migrate_async("webhooks", f"sqlite+aiosqlite:///{database}")
        port = free_port()
        env = service_env(root, nats_server.url, port, ca_file)
        service = subprocess.Popen([sys.executable, "-m", "services.webhooks"], env=env)
        pin(service.pid, SERVICE_CPU)
        await wait_serving(f"127.0.0.1:{port}")
        token = mint_actor_token(actor_private, issuer=ISSUER, audience=AUDIENCE, user_id="usr_bench", org_id=ORG,
                                 permissions=[ADMIN_PERMISSION], ttl_seconds=3600)
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = webhooks_pb2_grpc.WebhooksStub(channel)
            created = await stub.CreateSubscription(pb.CreateSubscriptionRequest(
                url=f"https://127.0.0.1:{receiver_port}/hook", activity_types=["lot.created"]), metadata=metadata)
            receiver.secret = created.signing_secret
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            logged = 0
            try:
                async def round_(label: str, expression: str) -> None:
                    nonlocal logged
                    await stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
                        subscription_id=created.subscription.id, update_mask=["filter"], filter=expression), metadata=metadata)
                    expected = args.events if label != "half" else args.events // 2
                    payloads = [activity(n) for n in range(args.events)]
                    before = receiver.delivered
                    start = time.perf_counter()
                    for chunk in range(0, len(payloads), 1000):
                        await asyncio.gather(*(js.publish("activity.lot.created", p) for p in payloads[chunk:chunk + 1000]))
                    await until(lambda: receiver.delivered >= before + expected)
                    logged += expected
                    await until(lambda: logged_attempts(database) >= logged, interval=0.05)
                    rates[label].append(args.events / (time.perf_counter() - start))

                await round_("none", "")  # warm-up, not counted
                rates["none"].clear()
                for _ in range(args.rounds):
                    await round_("none", "")
                    await round_("filter", PASSES_ALL)
                await round_("half", PASSES_HALF)
            finally:
                await nc.close()
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(service.wait, 15)
            except subprocess.TimeoutExpired:
                service.kill()
        await runner.cleanup()
        nats_server.stop()
    return {"rates": rates, "bad_signatures": receiver.bad_signatures, "delivered": receiver.delivered}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks.filters", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000, help="events per round (max 50000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds without and with the filter, alternating")
    args = parser.parse_args()
    args.events = min(max(args.events, 100), 50_000)
    args.rounds = min(max(args.rounds, 1), 10)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-filters-") as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    rates: dict[str, list[float]] = r["rates"]  # type: ignore[assignment]
    none, with_filter = sum(rates["none"]) / len(rates["none"]), sum(rates["filter"]) / len(rates["filter"])
    print(f"webhook filters: {args.events:,} events per round to one HTTPS subscription on loopback, SQLite, "
          f"{os.cpu_count()} CPUs (service on CPU {SERVICE_CPU}; receiver, publisher, nats-server on CPU {BENCH_CPU})")
    print(f"{'no filter':<44}{none:>10,.0f} deliveries/s   rounds: {', '.join(f'{x:,.0f}' for x in rates['none'])}")
    print(f"{'filter passing every event':<44}{with_filter:>10,.0f} deliveries/s   rounds: "
          f"{', '.join(f'{x:,.0f}' for x in rates['filter'])}   ratio {with_filter / none:.2f}")
    print(f"{'filter passing half (events/s taken in)':<44}{rates['half'][0]:>10,.0f} events/s")
    print(f"one evaluation in-process: {evaluation_us(PASSES_ALL):.1f} us ({PASSES_ALL!r}); "
          f"{evaluation_us(PASSES_HALF):.1f} us ({PASSES_HALF!r})")
    print(f"signatures verified: {r['delivered'] - r['bad_signatures']:,} of {r['delivered']:,}")  # type: ignore[operator]


if __name__ == "__main__":
    main()
