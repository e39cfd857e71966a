"""Webhook deliveries per second and event-to-delivery latency, beside a bare aiohttp POST loop
to the same HTTPS receiver measured in the same run.

Webhooks runs as its own process (`python -m services.webhooks`, SQLite, its own nats-server)
pinned to CPU 0; the receiver (aiohttp over TLS with a `trustme` CA, verifying every signature),
the publisher and nats-server share CPU 1. The bare loop (`bench.webhooks.bare`) runs as its own
process on CPU 0 too, so both clients get the same core.

1. bare: N POSTs of a small JSON body with 16 concurrent requests;
2. throughput: N activity events published to JetStream at once; deliveries/s counts until the
   last is received and its attempt is in the delivery log;
3. latency: events published at a steady rate (default 500/s); latency is receive time minus
   publish time of each event;
4. recovery: a second subscription's receiver refuses N events (410: each fails at once), comes
   back, and one StartRecovery sends all N again: time to queue (the call) and time until the
   receiver has them all, beside the plain throughput of step 2.
5. stored attempt details: the service is restarted on the same database and JetStream durable
   three times, with TRELLIS_WEBHOOKS_RECORD_ATTEMPT_DETAILS on, off, on (N events each after a
   warm-up of 500): deliveries/s without the details beside the mean of the two runs with them
   (so that neither side has the smaller database), and the bytes an attempt's details take.

Every loop is bounded by count and time; the run stops by itself (about a minute).

    .venv/bin/python -m bench.webhooks [--events 10000] [--rate 500] [--latency-events 5000] [--recover-events 10000]
                                       [--throughput-only] [--backend sqlite|postgresql] [--replicas 2]

`--backend postgresql` runs the production shape instead (bench/webhooks/production.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import pstats
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import nats
import trustme
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate_async
from services.kit.natsproc import NatsServer
from tests.support.ports import free_port

ISSUER, AUDIENCE = "bench-actors", "trellis"
ORG = "org_bench"
MAX_PHASE_SECONDS = 120.0
WARM_UP = 500  # events before each timed run after a restart
SERVICE_CPU, BENCH_CPU = 0, 1


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(pid, {cpu})


@dataclass
class Receiver:
    """The HTTPS endpoint: verifies each delivery's signature, records arrival and latency."""

    secret: str = ""
    delivered: int = 0
    bad_signatures: int = 0
    bare: int = 0
    latencies: list[float] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)
    last_arrival: float = 0.0
    # The recovery phase's endpoint: down (410) until `recover_up`, then counts what arrives.
    recover_secret: str = ""
    recover_up: bool = False
    refused: int = 0
    recovered: set[str] = field(default_factory=set)
    recover_last: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/bare":
            self.bare += 1
            return web.Response(text="ok")
        if request.path == "/recover":
            if not self.recover_up:
                self.refused += 1
                return web.Response(status=410, text="down")
            ts = request.headers.get("X-Webhook-Timestamp", "")
            expected = "sha256=" + hmac.new(self.recover_secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, request.headers.get("X-Webhook-Signature", "")):
                self.bad_signatures += 1
            self.recovered.add(json.loads(body)["id"])
            self.recover_last = time.perf_counter()
            return web.Response(text="ok")
        now = time.time()
        ts = request.headers.get("X-Webhook-Timestamp", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Webhook-Signature", "")):
            self.bad_signatures += 1
        event = json.loads(body)
        self.event_ids.add(event["id"])
        self.delivered += 1
        self.last_arrival = time.perf_counter()
        sent = event["data"].get("t")
        if sent is not None:
            self.latencies.append(now - sent)
        return web.Response(text="ok")


async def start_receiver(receiver: Receiver, context: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=1024)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("webhooks did not start")


def exchange_bytes(database: Path) -> float:
    """The mean size of the stored attempt details (the `exchange` column) of attempts that have them."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        return float(db.execute("select coalesce(avg(length(exchange)), 0) from attempts where exchange is not null").fetchone()[0])


async def stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(child.wait, 15)
        except subprocess.TimeoutExpired:
            child.kill()


def logged_attempts(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        return db.execute("select count(*) from attempts where succeeded").fetchone()[0]


def stage_latencies(database: Path, since: str) -> dict[str, float]:
    """p50/p99 of the two halves of the latency run, from the service's own rows: stream ->
    stored (JetStream's timestamp to the commit of the activity) and stored -> attempt start."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        rows = db.execute(
            "select a.occurred_at, a.received_at, t.attempted_at from activities a join attempts t "
            "on t.org_id = a.org_id and t.event_id = a.event_id where a.received_at >= ? and t.attempt = 1", (since,)
        ).fetchall()

    def seconds(text: str) -> float:
        return dt.datetime.fromisoformat(text).timestamp()

    ingest = sorted(seconds(r[1]) - seconds(r[0]) for r in rows)
    dispatch = sorted(seconds(r[2]) - seconds(r[1]) for r in rows)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")

    return {"ingest_p50": pct(ingest, 0.5), "ingest_p99": pct(ingest, 0.99),
            "dispatch_p50": pct(dispatch, 0.5), "dispatch_p99": pct(dispatch, 0.99)}


def failed_deliveries(database: Path, subscription_id: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        return db.execute("select count(*) from deliveries where subscription_id = ? and status = 'failed'",
                          (subscription_id,)).fetchone()[0]


def activity(n: int, stamp: bool, type_: str = "lot.created") -> bytes:
    data: dict[str, object] = {"lot_id": f"L-{n}", "weight_kg": 12.5, "room": "Flower 3"}
    if stamp:
        data["t"] = time.time()
    return events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type=type_, org_id=ORG,
                                    sender_type="integration", sender_id="int_bench", data_json=json.dumps(data)).SerializeToString()


async def until(condition, timeout: float = MAX_PHASE_SECONDS, interval: float = 0.01) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark phase did not finish in time")
        await asyncio.sleep(interval)


async def tls_receiver(root: Path) -> tuple[Path, Receiver, web.AppRunner, int]:
    """A test CA (its file under `root`) and the HTTPS receiver it certifies, on loopback."""
    ca = trustme.CA()
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    receiver = Receiver()
    runner, receiver_port = await start_receiver(receiver, server_context)
    return ca_file, receiver, runner, receiver_port


async def broker_and_receiver(root: Path) -> tuple[NatsServer, Path, Receiver, web.AppRunner, int]:
    """A nats-server on the bench's core, a test CA and the HTTPS receiver it certifies: what
    every webhooks benchmark delivers through."""
    nats_server = NatsServer(root / "nats").start()
    pin(nats_server.process.pid, BENCH_CPU)  # type: ignore[union-attr]
    return nats_server, *await tls_receiver(root)


def service_env(root: Path, nats_url: str, port: int, ca_file: Path) -> dict[str, str]:
    """The environment of a `python -m services.webhooks` under the bench (its actor key is
    `root/actor.pem`; the receiver's CA trusted; loopback allowed)."""
    return {
        **os.environ, "TRELLIS_DATA_DIR": str(root / "data"), "TRELLIS_NATS_URL": nats_url,
        "TRELLIS_WEBHOOKS_ADDR": f"127.0.0.1:{port}", "TRELLIS_ACTOR_ISSUER": ISSUER, "TRELLIS_ACTOR_AUDIENCE": AUDIENCE,
        "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(root / "actor.pem"), "TRELLIS_KEK": base64.b64encode(os.urandom(32)).decode(),
        "TRELLIS_WEBHOOKS_CA_BUNDLE": str(ca_file), "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
        "TRELLIS_LOG_LEVEL": "WARNING",
    }


async def run_bare(receiver_port: int, ca_file: Path, count: int) -> dict[str, float]:
    """bench.webhooks.bare as its own process on the service's core: its rate and CPU per POST."""
    bare = subprocess.Popen([sys.executable, "-m", "bench.webhooks.bare", "--url", f"https://127.0.0.1:{receiver_port}/bare",
                             "--ca", str(ca_file), "--count", str(count)], stdout=subprocess.PIPE)
    pin(bare.pid, SERVICE_CPU)
    try:
        out, _ = await asyncio.to_thread(bare.communicate, timeout=MAX_PHASE_SECONDS)
    finally:
        if bare.poll() is None:
            bare.kill()
    result: dict[str, float] = json.loads(out)
    return result


async def run(args: argparse.Namespace, root: Path) -> dict[str, float]:
    pin(os.getpid(), BENCH_CPU)
    nats_server, ca_file, receiver, runner, receiver_port = await broker_and_receiver(root)
    children: list[subprocess.Popen[bytes]] = []
    try:
        # 1. The bare loop.
        bare_result = await run_bare(receiver_port, ca_file, args.events)
        bare_rate, bare_cpu = bare_result["rate"], bare_result["cpu_us"]

        # 2. Webhooks as its own process.
        actor_private, actor_public = generate_actor_key()
        (root / "actor.pem").write_bytes(actor_public)
        database = root / "data" / "webhooks.db"
        await migrate_async("webhooks", f"sqlite+aiosqlite:///{database}")
        port = free_port()
        env = service_env(root, nats_server.url, port, ca_file)
        def start_service(details: bool) -> subprocess.Popen[bytes]:
            profiler = ["-m", "cProfile", "-o", str(args.cprofile.resolve())] if args.cprofile else []
            child = subprocess.Popen([sys.executable, *profiler, "-m", "services.webhooks"],
                                     env={**env, "TRELLIS_WEBHOOKS_RECORD_ATTEMPT_DETAILS": str(details).lower()})
            children.append(child)
            pin(child.pid, SERVICE_CPU)
            return child

        service = start_service(True)
        await wait_serving(f"127.0.0.1:{port}")
        token = mint_actor_token(actor_private, issuer=ISSUER, audience=AUDIENCE, user_id="usr_bench", org_id=ORG,
                                 permissions=[ADMIN_PERMISSION], ttl_seconds=600)
        metadata = (("authorization", f"Bearer {token}"),)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = webhooks_pb2_grpc.WebhooksStub(channel)
        created = await stub.CreateSubscription(pb.CreateSubscriptionRequest(
            url=f"https://127.0.0.1:{receiver_port}/hook", activity_types=["lot.created"]), metadata=metadata)
        receiver.secret = created.signing_secret

        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        try:
            # 3. Throughput: everything at once.
            payloads = [activity(n, stamp=False) for n in range(args.events)]
            cpu_before = cpu_seconds(service.pid)
            print(f"throughput step: webhooks pid {service.pid}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            for chunk in range(0, len(payloads), 1000):
                await asyncio.gather(*(js.publish("activity.lot.created", p) for p in payloads[chunk:chunk + 1000]))
            published = time.perf_counter()
            await until(lambda: receiver.delivered >= args.events)
            received = receiver.last_arrival
            await until(lambda: logged_attempts(database) >= args.events, interval=0.05)
            logged = time.perf_counter()
            cpu_per_delivery = (cpu_seconds(service.pid) - cpu_before) / args.events * 1e6
            throughput = args.events / (max(received, logged) - start)
            receive_rate = args.events / (received - start)
            if args.throughput_only:
                return {"bare": bare_rate, "bare_cpu_us": bare_cpu, "throughput": throughput, "receive_rate": receive_rate,
                        "publish_seconds": published - start, "logged_lag_ms": max(0.0, logged - received) * 1000,
                        "cpu_us": cpu_per_delivery, "bad_signatures": receiver.bad_signatures,
                        "distinct": len(receiver.event_ids), "delivered": receiver.delivered}

            # 4. Latency at a steady offered rate.
            since = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
            receiver.latencies.clear()
            before = receiver.delivered
            begin = time.perf_counter()
            for n in range(args.latency_events):
                delay = begin + n / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await js.publish("activity.lot.created", activity(n, stamp=True))
            offered_for = time.perf_counter() - begin
            await until(lambda: receiver.delivered >= before + args.latency_events)
            await until(lambda: logged_attempts(database) >= args.events + args.latency_events, interval=0.05)
            stages = stage_latencies(database, since)

            # 5. Recovery: a second subscription's receiver is down for N events, then back.
            down = await stub.CreateSubscription(pb.CreateSubscriptionRequest(
                url=f"https://127.0.0.1:{receiver_port}/recover", activity_types=["harvest.recorded"]), metadata=metadata)
            receiver.recover_secret = down.signing_secret
            outage_began = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
            refused = [activity(n, stamp=False, type_="harvest.recorded") for n in range(args.recover_events)]
            for chunk in range(0, len(refused), 1000):
                await asyncio.gather(*(js.publish("activity.harvest.recorded", p) for p in refused[chunk:chunk + 1000]))
            await until(lambda: failed_deliveries(database, down.subscription.id) >= args.recover_events, interval=0.1)
            receiver.recover_up = True
            since_ts = Timestamp()
            since_ts.FromDatetime(outage_began)
            recover_start = time.perf_counter()
            recovery = await stub.StartRecovery(pb.StartRecoveryRequest(subscription_id=down.subscription.id, since=since_ts),
                                                metadata=metadata, timeout=MAX_PHASE_SECONDS)
            queued_at = time.perf_counter()
            await until(lambda: len(receiver.recovered) >= args.recover_events)
            recovered_at = receiver.recover_last

            async def recovery_done() -> pb.Recovery:
                return await stub.GetRecovery(pb.GetRecoveryRequest(recovery_id=recovery.id), metadata=metadata)

            deadline = time.monotonic() + MAX_PHASE_SECONDS
            shown = await recovery_done()
            while shown.done < shown.queued and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                shown = await recovery_done()
            recovery_logged = time.perf_counter()

            # 6. The cost of stored attempt details: off, then on again, on the same database.
            async def throughput_run(details: bool) -> float:
                nonlocal service
                await stop_child(service)
                service = start_service(details)
                await wait_serving(f"127.0.0.1:{port}")
                # A warm-up batch first: the restarted consumer and connections are ready before the clock starts.
                warm = receiver.delivered + WARM_UP
                await asyncio.gather(*(js.publish("activity.lot.created", activity(n, stamp=False)) for n in range(WARM_UP)))
                await until(lambda: receiver.delivered >= warm)
                await until(lambda: logged_attempts(database) >= receiver.delivered, interval=0.05)
                base_received, base_logged = receiver.delivered, logged_attempts(database)
                batch = [activity(n, stamp=False) for n in range(args.events)]
                began = time.perf_counter()
                for chunk in range(0, len(batch), 1000):
                    await asyncio.gather(*(js.publish("activity.lot.created", p) for p in batch[chunk:chunk + 1000]))
                await until(lambda: receiver.delivered >= base_received + args.events)
                await until(lambda: logged_attempts(database) >= base_logged + args.events, interval=0.05)
                return args.events / (time.perf_counter() - began)

            details_on_first = await throughput_run(True)
            details_off = await throughput_run(False)
            details_on_again = await throughput_run(True)
            details_bytes = exchange_bytes(database)
        finally:
            await nc.close()
            await channel.close()
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(child.wait, 15)
                except subprocess.TimeoutExpired:
                    child.kill()
        await runner.cleanup()
        nats_server.stop()
    latencies = sorted(receiver.latencies)
    return {
        "bare": bare_rate, "throughput": throughput, "receive_rate": receive_rate, "publish_seconds": published - start,
        "logged_lag_ms": max(0.0, logged - received) * 1000, "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "max": latencies[-1] * 1000,
        "offered": args.latency_events / offered_for, "bad_signatures": receiver.bad_signatures,
        "distinct": len(receiver.event_ids), "delivered": receiver.delivered, **stages,
        "recover_queued": recovery.queued, "recover_queue_seconds": queued_at - recover_start,
        "recover_deliver_seconds": recovered_at - recover_start, "recover_done_seconds": recovery_logged - recover_start,
        "recover_succeeded": shown.succeeded, "recover_refused": receiver.refused,
        "details_off": details_off, "details_on": (details_on_first + details_on_again) / 2,
        "details_on_runs": (details_on_first, details_on_again),
        "details_bytes": details_bytes, "cpu_us": cpu_per_delivery, "bare_cpu_us": bare_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events for the bare loop and the throughput run (max 50000)")
    parser.add_argument("--rate", type=float, default=500.0, help="offered events per second in the latency run")
    parser.add_argument("--latency-events", type=int, default=5_000, help="events in the latency run (max 50000)")
    parser.add_argument("--recover-events", type=int, default=10_000, help="failed deliveries recovered at once (max 50000)")
    parser.add_argument("--throughput-only", action="store_true", help="steps 1 and 2 only (bare loop and throughput)")
    parser.add_argument("--cprofile", type=Path, help="with --throughput-only: run the service under cProfile, its stats "
                        "written here, and print its Python function calls per delivery (a count, not a time)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="postgresql: the production shape instead (bench.webhooks.production: SQLite beside a "
                             "throwaway PostgreSQL, then one and two replicas on it)")
    parser.add_argument("--replicas", type=int, default=2, help="with --backend postgresql: replicas in the last step (1-2)")
    args = parser.parse_args()
    if args.backend == "postgresql":
        from bench.webhooks import production
        production.main(args)
        return
    args.recover_events = min(max(args.recover_events, 100), 50_000)
    args.events = min(max(args.events, 100), 50_000)
    args.latency_events = min(max(args.latency_events, 100), 50_000)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-webhooks-") as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    print(f"webhooks: {args.events:,} events to one HTTPS subscription on loopback, SQLite, {os.cpu_count()} CPUs "
          f"(service and bare loop on CPU {SERVICE_CPU}; receiver, publisher, nats-server on CPU {BENCH_CPU})")
    print(f"{'bare aiohttp POST loop':<44}{r['bare']:>10,.0f} /s                CPU {r['bare_cpu_us']:,.0f} µs/POST")
    print(f"{'signed, logged deliveries (JetStream -> log)':<44}{r['throughput']:>10,.0f} /s   ratio {r['throughput'] / r['bare']:.2f}"
          f"   CPU {r['cpu_us']:,.0f} µs/delivery (ratio {r['bare_cpu_us'] / r['cpu_us']:.2f})")
    print(f"{'  received by the receiver':<44}{r['receive_rate']:>10,.0f} /s   (publishing took {r['publish_seconds']:.2f} s; "
          f"log {r['logged_lag_ms']:.0f} ms behind)")
    if args.throughput_only:
        print(f"signatures verified: {r['delivered'] - r['bad_signatures']:,} of {r['delivered']:,}; distinct events {r['distinct']:,}")
        if args.cprofile:
            total = pstats.Stats(str(args.cprofile)).total_calls  # type: ignore[attr-defined]  # set by Stats, not in its stub
            print(f"under cProfile (rates above are not comparable): {total:,} Python function calls in the service, "
                  f"{total / args.events:,.0f} per delivery (start-up and shutdown included)")
        return
    print(f"latency at {r['offered']:,.0f} events/s offered ({args.latency_events:,} events): "
          f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms")
    print(f"  of which: stream -> stored p50 {r['ingest_p50']:.1f} ms, p99 {r['ingest_p99']:.1f} ms; "
          f"stored -> POST p50 {r['dispatch_p50']:.1f} ms, p99 {r['dispatch_p99']:.1f} ms")
    rate = r["recover_queued"] / r["recover_deliver_seconds"]
    print(f"recovery of {r['recover_queued']:,} failed deliveries (of {r['recover_refused']:,} refused): queued in "
          f"{r['recover_queue_seconds']:.2f} s, all received in {r['recover_deliver_seconds']:.2f} s ({rate:,.0f} /s, "
          f"ratio {rate / r['throughput']:.2f} of the throughput above); recovery reads done after "
          f"{r['recover_done_seconds']:.2f} s, {r['recover_succeeded']:,} succeeded")
    on_runs = ", ".join(f"{v:,.0f}" for v in r["details_on_runs"])
    print(f"{'with stored attempt details (default)':<44}{r['details_on']:>10,.0f} /s   (mean of {on_runs})")
    print(f"{'without (RECORD_ATTEMPT_DETAILS=false)':<44}{r['details_off']:>10,.0f} /s   "
          f"details cost {(1 - r['details_on'] / r['details_off']) * 100:+.1f} %; {r['details_bytes']:,.0f} bytes an attempt")
    print(f"signatures verified: {r['delivered'] + r['recover_queued'] - r['bad_signatures']:,} of "
          f"{r['delivered'] + r['recover_queued']:,}; distinct events {r['distinct']:,}")


if __name__ == "__main__":
    main()
