"""Prometheus metrics of one gRPC service, in a registry of its own (several services share one
test process), served at `GET /metrics` on a port of its own.

Series every service has (docs/operators.md, "Observability"):

- `trellis_grpc_server_requests_total{method, code}` and
  `trellis_grpc_server_request_duration_seconds{method}`: calls by full method name and status;
- `trellis_grpc_auth_failures_total{code}`: actor tokens refused (`missing_token`,
  `token_expired`, `invalid_token`);
- `trellis_outbox_unsent_events`, `trellis_outbox_oldest_unsent_age_seconds`: the outbox lag;
- `trellis_consumer_pending_messages{stream, consumer}`,
  `trellis_consumer_ack_pending_messages{stream, consumer}`: each durable consumer's lag.

Gauges that need I/O (a database count, a JetStream consumer info) are sampled when /metrics is
scraped, each within `SAMPLE_TIMEOUT_SECONDS`; one that fails keeps its last value and counts
in `trellis_metrics_sample_failures_total{sample}`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SAMPLE_TIMEOUT_SECONDS = 2.0

Sample = Callable[[], Awaitable[None]]


class Backlog(Protocol):
    """What the outbox relay reports: unsent rows and when the oldest was written."""

    async def backlog(self) -> tuple[int, dt.datetime | None]: ...


class ServiceMetrics:
    """The metrics of one service; the kit's interceptors and samplers feed it."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("trellis_grpc_server_requests", "gRPC calls answered, by method and status code",
                                ["method", "code"], registry=r)
        self.latency = Histogram("trellis_grpc_server_request_duration_seconds", "Time to answer a gRPC call, by method",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.auth_failures = Counter("trellis_grpc_auth_failures", "Calls refused for their actor token, by code",
                                     ["code"], registry=r)
        self.outbox_unsent = Gauge("trellis_outbox_unsent_events", "Outbox events written and not yet on JetStream",
                                   registry=r)
        self.outbox_age = Gauge("trellis_outbox_oldest_unsent_age_seconds",
                                "Age of the oldest unsent outbox event (0 when none waits)", registry=r)
        self.consumer_pending = Gauge("trellis_consumer_pending_messages", "Messages a durable consumer has not yet "
                                      "been delivered", ["stream", "consumer"], registry=r)
        self.consumer_ack_pending = Gauge("trellis_consumer_ack_pending_messages", "Messages delivered to a durable "
                                          "consumer and not yet acknowledged", ["stream", "consumer"], registry=r)
        self.sample_failures = Counter("trellis_metrics_sample_failures", "Scrape-time samples that failed, by sample",
                                       ["sample"], registry=r)
        self._samples: dict[str, Sample] = {}
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    # --- fed by the gRPC server ---------------------------------------------------------------

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, code), self.latency.labels(method))
        children[0].inc()
        children[1].observe(seconds)

    def auth_refused(self, code: str) -> None:
        self.auth_failures.labels(code).inc()

    # --- sampled at scrape time ---------------------------------------------------------------

    def sample(self, name: str, sample: Sample) -> None:
        """Run `sample()` before each scrape renders (it sets its gauges)."""
        self._samples[name] = sample

    def watch_outbox(self, relay: Backlog) -> None:
        async def outbox() -> None:
            count, oldest = await relay.backlog()
            self.outbox_unsent.set(count)
            age = (dt.datetime.now(dt.timezone.utc) - oldest).total_seconds() if oldest is not None else 0.0
            self.outbox_age.set(max(0.0, age))

        self.sample("outbox", outbox)

    def watch_consumer(self, js: JetStreamContext, stream: str, durable: str) -> None:
        """The lag of a JetStream durable consumer this service runs (`js.consumer_info`)."""
        pending = self.consumer_pending.labels(stream, durable)
        ack_pending = self.consumer_ack_pending.labels(stream, durable)

        async def consumer() -> None:
            info = await js.consumer_info(stream, durable, timeout=SAMPLE_TIMEOUT_SECONDS)
            pending.set(info.num_pending or 0)
            ack_pending.set(info.num_ack_pending or 0)

        self.sample(f"consumer:{stream}:{durable}", consumer)

    async def _run_samples(self) -> None:
        async def one(name: str, sample: Sample) -> None:
            try:
                async with asyncio.timeout(SAMPLE_TIMEOUT_SECONDS):
                    await sample()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a scrape shows what it could read
                self.sample_failures.labels(name).inc()
                log.debug("metrics sample %s failed", name, exc_info=True)

        await asyncio.gather(*(one(name, sample) for name, sample in list(self._samples.items())))

    async def render(self) -> bytes:
        """The Prometheus text exposition, after this scrape's samples."""
        await self._run_samples()
        return generate_latest(self.registry)


class MetricsServer:
    """`GET /metrics` over plain HTTP on its own port (aiohttp, in the service's event loop).
    `render` gives the exposition text (ServiceMetrics.render; the edge passes its own)."""

    def __init__(self, render: Callable[[], Awaitable[bytes]], address: str) -> None:
        self._render = render
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]") or "0.0.0.0"
        self._port = int(port)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # aiohttp keeps the bound sockets here (a TCPSite's is loop.create_server's asyncio.Server,
        # typed as its AbstractServer base); port 0 needs the real one.
        server = cast("asyncio.Server | None", site._server)
        self.port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        body = await self._render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
