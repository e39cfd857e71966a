"""The delivery path in its production shape (issue 16): the embedded default (SQLite) beside
PostgreSQL, then one replica beside two on the same PostgreSQL, all in one run.

`python -m bench.webhooks --backend postgresql` runs this. The set-up is bench.webhooks's (the
HTTPS receiver verifying every signature, in this process with the publisher; nats-server),
plus a throwaway PostgreSQL as tests/support/postgres.py starts it (fsync off). This process,
nats-server and PostgreSQL are pinned to CPU 1; replica 1 (and the bare loop) to CPU 0.

1. bare: the bare aiohttp POST loop (bench.webhooks.bare) on CPU 0;
2. SQLite: one `python -m services.webhooks` on SQLite, N events published at once, counted until
   received and their attempts logged (as bench.webhooks's throughput step);
3. PostgreSQL: the same with a fresh replica on a fresh PostgreSQL database;
4. replicas: on that database and the same JetStream durable, after a warm-up each, N events with
   one replica, N with two (replica 2 started on CPU 1, beside the receiver, nats-server and
   PostgreSQL: a 2-CPU machine has no core left for them), and N with one again (replica 2
   stopped); the ratio is two over the mean of the two one-replica rounds.

Every row gives the CPU time per delivery of the webhooks processes and of the rest (this
process: the receiver and publisher; nats-server; PostgreSQL) from /proc/<pid>/stat, so that
what limits each row can be read off it. Every loop is bounded by count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import nats
from nats.js import JetStreamContext

from bench.webhooks.__main__ import (
    AUDIENCE, BENCH_CPU, ISSUER, MAX_PHASE_SECONDS, ORG, SERVICE_CPU, WARM_UP, Receiver, activity, broker_and_receiver,
    cpu_seconds, pin, run_bare, service_env, stop_child, until, wait_serving,
)
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, generate_actor_key, mint_actor_token
from services.kit.db import migrate_async
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer


async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float = MAX_PHASE_SECONDS,
                      interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark phase did not finish in time")
        await asyncio.sleep(interval)


def postgres_pids(pg: PostgresServer) -> list[int]:
    """The postmaster and every process it has forked so far."""
    postmaster = int((pg.dir / "data" / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


class AttemptLog:
    """Counts of the delivery log's successful attempts, by replica, on either backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: asyncpg.Connection | None = None

    async def by_replica(self) -> dict[str, int]:
        query = "select sent_by, count(*) from attempts where succeeded group by sent_by"
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[1]
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                return {str(r[0]): int(r[1]) for r in db.execute(query).fetchall()}
        if self._pg is None:
            self._pg = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        return {str(r[0]): int(r[1]) for r in await self._pg.fetch(query)}

    async def total(self) -> int:
        return sum((await self.by_replica()).values())

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()


@dataclass
class Round:
    """One timed batch: deliveries/s, and CPU µs per delivery of each kind of process."""

    label: str
    rate: float
    cpu: dict[str, float]
    shares: list[int] = field(default_factory=list)  # deliveries each replica made


@dataclass
class Replicas:
    """`python -m services.webhooks` processes on one database and one JetStream durable."""

    env: dict[str, str]
    children: list[tuple[subprocess.Popen[bytes], str]] = field(default_factory=list)

    async def start(self, cpu: int) -> str:
        port = free_port()
        child = subprocess.Popen([sys.executable, "-m", "services.webhooks"],
                                 env={**self.env, "TRELLIS_WEBHOOKS_ADDR": f"127.0.0.1:{port}"})
        pin(child.pid, cpu)
        address = f"127.0.0.1:{port}"
        self.children.append((child, address))
        await wait_serving(address)
        return address

    @property
    def pids(self) -> list[int]:
        return [child.pid for child, _ in self.children]

    async def stop_last(self) -> None:
        child, _ = self.children.pop()
        await stop_child(child)

    async def stop_all(self) -> None:
        while self.children:
            await self.stop_last()




@dataclass
class Bench:
    js: JetStreamContext
    receiver: Receiver
    others: dict[str, Callable[[], list[int]]]  # kind -> the pids of that kind

    async def publish(self, events: int) -> None:
        payloads = [activity(n, stamp=False) for n in range(events)]
        for chunk in range(0, len(payloads), 1000):
            await asyncio.gather(*(self.js.publish("activity.lot.created", p) for p in payloads[chunk:chunk + 1000]))

    async def warm_up(self, log: AttemptLog) -> None:
        """A batch before the clock starts: the consumers and connections are ready."""
        target, logged = self.receiver.delivered + WARM_UP, await log.total() + WARM_UP
        await self.publish(WARM_UP)
        await until(lambda: self.receiver.delivered >= target)
        await until_async(lambda: self._logged(log, logged))

    async def _logged(self, log: AttemptLog, at_least: int) -> bool:
        return await log.total() >= at_least

    async def timed(self, label: str, events: int, log: AttemptLog, replicas: Replicas) -> Round:
        """`events` published at once, counted until received and their attempts logged."""
        before_shares = await log.by_replica()
        base_received, base_logged = self.receiver.delivered, sum(before_shares.values())
        kinds = {"webhooks": lambda: replicas.pids, **self.others}
        cpu_before = {kind: {pid: cpu_seconds(pid) for pid in pids()} for kind, pids in kinds.items()}
        start = time.perf_counter()
        await self.publish(events)
        await until(lambda: self.receiver.delivered >= base_received + events)
        received = self.receiver.last_arrival
        await until_async(lambda: self._logged(log, base_logged + events))
        done = max(received, time.perf_counter())
        cpu = {}
        for kind, pids in kinds.items():
            spent = 0.0
            for pid in pids():
                try:
                    spent += cpu_seconds(pid) - cpu_before[kind].get(pid, 0.0)
                except OSError:  # a PostgreSQL backend that ended in the round
                    continue
            cpu[kind] = spent / events * 1e6
        after = await log.by_replica()
        shares = sorted((after.get(k, 0) - before_shares.get(k, 0) for k in after), reverse=True)
        return Round(label, events / (done - start), cpu, [s for s in shares if s])


async def subscribe(address: str, token: str, receiver: Receiver, receiver_port: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        created = await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(pb.CreateSubscriptionRequest(
            url=f"https://127.0.0.1:{receiver_port}/hook", activity_types=["lot.created"]),
            metadata=(("authorization", f"Bearer {token}"),))
    receiver.secret = created.signing_secret


async def run(args: argparse.Namespace, root: Path) -> dict[str, object]:
    pin(os.getpid(), BENCH_CPU)
    nats_server, ca_file, receiver, runner, receiver_port = await broker_and_receiver(root)
    pg = PostgresServer().start()
    for pid in postgres_pids(pg):
        pin(pid, BENCH_CPU)  # the backends it forks later inherit it
    logs: list[AttemptLog] = []
    replicas: list[Replicas] = []
    try:
        bare = await run_bare(receiver_port, ca_file, args.events)
        actor_private, actor_public = generate_actor_key()
        (root / "actor.pem").write_bytes(actor_public)
        token = mint_actor_token(actor_private, issuer=ISSUER, audience=AUDIENCE, user_id="usr_bench", org_id=ORG,
                                 permissions=[ADMIN_PERMISSION], ttl_seconds=3600)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        bench = Bench(js, receiver, {
            "receiver": lambda: [os.getpid()],  # and the publisher
            "nats": lambda: [nats_server.process.pid],  # type: ignore[union-attr]
            "postgres": lambda: postgres_pids(pg),
        })
        rounds: list[Round] = []
        try:
            base_env = service_env(root, nats_server.url, 0, ca_file)
            for backend, url in (("SQLite", f"sqlite+aiosqlite:///{root / 'data' / 'webhooks.db'}"),
                                 ("PostgreSQL", pg.create_database("webhooks"))):
                await migrate_async("webhooks", url)
                log = AttemptLog(url)
                logs.append(log)
                group = Replicas({**base_env, "TRELLIS_WEBHOOKS_DATABASE_URL": url,
                                  "TRELLIS_WEBHOOKS_CONSUMER_NAME": f"webhooks-{backend.lower()}"})
                replicas.append(group)
                address = await group.start(SERVICE_CPU)
                await subscribe(address, token, receiver, receiver_port)
                print(f"{backend}: webhooks pid {group.pids[0]}", file=sys.stderr, flush=True)
                rounds.append(await bench.timed(f"{backend}, one replica, fresh", args.events, log, group))
                if backend == "SQLite":
                    await group.stop_all()
                    # The next backend's durable starts on an empty stream, not on this one's events.
                    await js.purge_stream("ACTIVITY")
                    continue
                if args.replicas < 2:
                    break
                await bench.warm_up(log)
                rounds.append(await bench.timed("PostgreSQL, one replica", args.events, log, group))
                await group.start(BENCH_CPU)
                print(f"{backend}: second replica pid {group.pids[1]}", file=sys.stderr, flush=True)
                await bench.warm_up(log)
                rounds.append(await bench.timed("PostgreSQL, two replicas", args.events, log, group))
                await group.stop_last()
                await bench.warm_up(log)
                rounds.append(await bench.timed("PostgreSQL, one replica again", args.events, log, group))
        finally:
            await nc.close()
    finally:
        for group in replicas:
            await group.stop_all()
        for log in logs:
            await log.close()
        await runner.cleanup()
        nats_server.stop()
        pg.stop()
    return {"bare": bare, "rounds": rounds, "delivered": receiver.delivered, "distinct": len(receiver.event_ids),
            "bad_signatures": receiver.bad_signatures}


def main(args: argparse.Namespace) -> None:
    args.events = min(max(args.events, 100), 50_000)
    args.replicas = min(max(args.replicas, 1), 2)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-webhooks-pg-") as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    bare: dict[str, float] = r["bare"]  # type: ignore[assignment]
    rounds: list[Round] = r["rounds"]  # type: ignore[assignment]
    print(f"webhooks, production shape: {args.events:,} events a round to one HTTPS subscription on loopback, "
          f"{os.cpu_count()} CPUs (replica 1 and the bare loop on CPU {SERVICE_CPU}; receiver, publisher, nats-server, "
          f"PostgreSQL (fsync off) and replica 2 on CPU {BENCH_CPU})")
    kinds = list(rounds[0].cpu)
    print(f"{'':<34}{'/s':>7}{'ratio':>7}   CPU µs per delivery: " + "".join(f"{k:>10}" for k in kinds) + "   attempts by replica")
    print(f"{'bare aiohttp POST loop':<34}{bare['rate']:>7,.0f}{1:>7.2f}   {'':21}{bare['cpu_us']:>10,.0f}   (its own process)")
    for row in rounds:
        print(f"{row.label:<34}{row.rate:>7,.0f}{row.rate / bare['rate']:>7.2f}   {'':21}"
              + "".join(f"{row.cpu[k]:>10,.0f}" for k in kinds) + "   " + " + ".join(f"{s:,}" for s in row.shares))
    by_label = {row.label: row for row in rounds}
    two = by_label.get("PostgreSQL, two replicas")
    if two is not None:
        ones = [by_label["PostgreSQL, one replica"], by_label["PostgreSQL, one replica again"]]
        one_rate = sum(o.rate for o in ones) / 2
        one_cpu = sum(o.cpu["webhooks"] for o in ones) / 2
        cpu_ratio = two.cpu["webhooks"] / one_cpu
        print(f"two replicas / one: {two.rate / one_rate:.2f} (one: mean of {ones[0].rate:,.0f} and {ones[1].rate:,.0f}/s), "
              f"measured here, replica 2 sharing CPU {BENCH_CPU} with the receiver, nats-server and PostgreSQL")
        print(f"webhooks CPU per delivery, two replicas / one: {cpu_ratio:.2f}; with a core for each replica and enough "
              f"for the rest, two would deliver {2 / cpu_ratio:.2f}x one (2 / that ratio)")
    print(f"signatures verified: {r['delivered'] - r['bad_signatures']:,} of {r['delivered']:,}; "  # type: ignore[operator]
          f"distinct events {r['distinct']:,} (a delivery sent twice would make fewer)")
    print(json.dumps({"bare": bare, "rounds": [row.__dict__ for row in rounds]}), file=sys.stderr)
