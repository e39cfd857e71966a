"""The load of the memory benchmarks, every part at once against the running suite:

- partner requests through the edge (bench.memory.edgeload as its own process): the edge checks
  each key and token, the scope and the limit, proxies to the upstream, and sends its API log
  records to logs over JetStream;
- activity events published to JetStream for the console's organisation, which webhooks delivers,
  signed, to the HTTPS receiver (bench.webhooks's, verifying every signature) and records;
- integration updates through the registry's gRPC API, each a history row and an audit event
  that logs chains into its audit trail (and an integration fact the edge and logs follow);
- console pages fetched as the signed-in administrator: the integrations list and one
  integration, the API log, the audit trail, the webhooks and one subscription's delivery log.

Each part runs at a given rate, or with rate 0 as fast as it goes (the edge closed loop on
`EDGE_CONNECTIONS`, events kept at most `EVENT_WINDOW` ahead of the receiver, one update and one
page at a time): what the benchmark reaches, half of which is the soak's load.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import nats

from bench.edge.load import REPO
from bench.memory.suite import CONSOLE_ORG, PATH, Provisioned, Suite, actor
from bench.webhooks.__main__ import Receiver
from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc

EDGE_CONNECTIONS = 32
EVENT_WINDOW = 256  # events published and not yet received, at most, in the closed loop
EVENT_CHUNK = 32
SUBJECT = "activity.lot.created"


@dataclass(frozen=True)
class Rates:
    """Per second; 0 is as fast as it goes."""

    edge: float = 0.0
    events: float = 0.0
    audit: float = 0.0
    console: float = 0.0

    def half(self) -> "Rates":
        return Rates(self.edge / 2, self.events / 2, self.audit / 2, self.console / 2)

    def describe(self) -> str:
        def one(value: float) -> str:
            return f"{value:,.1f}/s" if value else "max"
        return (f"edge {one(self.edge)}, events {one(self.events)}, updates {one(self.audit)}, "
                f"console pages {one(self.console)}")


@dataclass
class Achieved:
    seconds: float = 0.0
    edge_rps: float = 0.0  # as bench.memory.edgeload measured it (from its first request to its last)
    edge_statuses: dict[str, int] = field(default_factory=dict)
    events_published: int = 0
    events_received: int = 0
    updates: int = 0
    pages: int = 0
    page_errors: int = 0

    @property
    def edge_requests(self) -> int:
        return sum(self.edge_statuses.values())

    def rates(self) -> Rates:
        s = max(self.seconds, 1e-9)
        return Rates(self.edge_rps, self.events_received / s, self.updates / s, self.pages / s)

    def describe(self) -> str:
        r = self.rates()
        statuses = ", ".join(f"{n:,} x {code}" for code, n in sorted(self.edge_statuses.items()))
        return (f"edge {r.edge:,.0f} req/s ({statuses}); webhooks {r.events:,.0f} deliveries/s received "
                f"({self.events_published:,} events published, {self.events_received:,} received); "
                f"{r.audit:,.1f} updates/s (audited); {r.console:,.1f} console pages/s ({self.page_errors} not 200)")


def activity(n: int) -> bytes:
    data = {"lot_id": f"L-{n}", "weight_kg": 12.5, "room": "Flower 3"}
    return bytes(events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=CONSOLE_ORG,
                                    sender_type="integration", sender_id="int_bench",
                                    data_json=json.dumps(data)).SerializeToString())


async def paced(rate: float, deadline: float, step: Callable[[], Awaitable[int]]) -> None:
    """`step()` (which says how many it did) until `deadline`, at `rate` a second or back to back."""
    start, done = time.monotonic(), 0
    while time.monotonic() < deadline:
        if rate:
            delay = start + done / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(min(delay, deadline - time.monotonic()))
                continue
        done += await step()


async def _edge(suite: Suite, rotate: Path, rate: float, seconds: float, achieved: Achieved) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.memory.edgeload", suite.url("edge") + PATH, "--seconds", str(seconds),
        "--rate", str(rate), "--connections", str(EDGE_CONNECTIONS), "--rotate", str(rotate),
        cwd=REPO, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(child.communicate(), timeout=seconds + 60)
    if child.returncode != 0:
        raise RuntimeError(f"bench.memory.edgeload exited with {child.returncode}")
    result = json.loads(out)
    achieved.edge_rps = result["rps"]
    achieved.edge_statuses = {str(k): v for k, v in result["statuses"].items()}


async def _events(suite: Suite, receiver: Receiver, rate: float, deadline: float, achieved: Achieved) -> None:
    nc = await nats.connect(suite.env["TRELLIS_NATS_URL"])
    js = nc.jetstream()
    base = receiver.delivered

    async def step() -> int:
        achieved.events_received = receiver.delivered - base
        if rate:
            await js.publish(SUBJECT, activity(achieved.events_published))
            achieved.events_published += 1
            return 1
        while achieved.events_published - (receiver.delivered - base) >= EVENT_WINDOW:
            if time.monotonic() > deadline:
                return 0
            await asyncio.sleep(0.005)
        first = achieved.events_published
        await asyncio.gather(*(js.publish(SUBJECT, activity(first + n)) for n in range(EVENT_CHUNK)))
        achieved.events_published += EVENT_CHUNK
        return EVENT_CHUNK

    try:
        await paced(rate, deadline, step)
    finally:
        achieved.events_received = receiver.delivered - base
        await nc.close()


async def _updates(suite: Suite, provisioned: Provisioned, rate: float, deadline: float, achieved: Achieved) -> None:
    # Not the first integration: its detail page is fetched, and its history should not grow.
    targets = provisioned.integration_ids[1:]
    metadata = actor(suite, CONSOLE_ORG)
    async with grpc.aio.insecure_channel(suite.address("registry")) as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)

        async def step() -> int:
            n = achieved.updates
            await registry.UpdateIntegration(rpb.UpdateIntegrationRequest(
                integration_id=targets[n % len(targets)], update_mask=["description"], description=f"change {n}"),
                metadata=metadata, timeout=30)
            achieved.updates += 1
            return 1

        await paced(rate, deadline, step)


def console_pages(provisioned: Provisioned) -> list[str]:
    first = provisioned.integration_ids[0]
    return ["/integrations", f"/integrations/{first}", "/logs", "/audit", "/webhooks",
            f"/webhooks/{provisioned.subscription_id}"]


async def _pages(suite: Suite, provisioned: Provisioned, rate: float, deadline: float, achieved: Achieved) -> None:
    pages = console_pages(provisioned)
    async with aiohttp.ClientSession(suite.url("console"), headers={"Cookie": provisioned.cookie},
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def step() -> int:
            async with http.get(pages[achieved.pages % len(pages)], allow_redirects=False) as answer:
                await answer.read()
                achieved.page_errors += answer.status != 200
            achieved.pages += 1
            return 1

        await paced(rate, deadline, step)


async def apply(suite: Suite, provisioned: Provisioned, receiver: Receiver, rotate: Path, rates: Rates,
                seconds: float, *, achieved: Achieved | None = None) -> Achieved:
    """Every part of the load at once for `seconds`: what each reached (counted into `achieved`
    as it goes, when given)."""
    achieved = achieved or Achieved()
    achieved.seconds = seconds
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        _edge(suite, rotate, rates.edge, seconds, achieved),
        _events(suite, receiver, rates.events, deadline, achieved),
        _updates(suite, provisioned, rates.audit, deadline, achieved),
        _pages(suite, provisioned, rates.console, deadline, achieved),
    )
    return achieved
