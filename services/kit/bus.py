"""NATS JetStream: one connection per process, the streams Trellis uses created idempotently,
and W3C trace context carried in message headers (it does not cross the bus by itself)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from opentelemetry import context as otel_context
from opentelemetry import propagate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str
    # Nats-Msg-Id de-duplication window; covers any outbox relay restart we expect.
    duplicate_window_seconds: float = 300.0
    max_age_days: float = 7.0


STREAMS = (
    StreamSpec("TRELLIS", ("trellis.>",), "Domain and audit events from Trellis services"),
    StreamSpec("ACTIVITY", ("activity.>",), "Platform activity delivered by webhooks"),
    StreamSpec("APILOG", ("apilog.>",), "Partner request records from the edge (batches on apilog.batch)"),
)


def server_urls(url: str) -> list[str]:
    """The servers of `TRELLIS_NATS_URL`: one URL, or several separated by commas (a cluster)."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(url: str, *, name: str) -> NATS:
    """A connection that reconnects forever, to any server of a comma-separated list (the
    client also learns the rest of a cluster from the servers); callers publish through JetStream."""
    return await nats.connect(
        server_urls(url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
    )


def _config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=spec.duplicate_window_seconds,
        max_age=spec.max_age_days * 86400,
    )


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1, specs: tuple[StreamSpec, ...] = STREAMS) -> None:
    """Create each stream, or bring an existing one to this configuration; safe to repeat."""
    for spec in specs:
        await ensure_stream(js, _config(spec, replicas))


# A replicated stream answers nothing while it elects a leader (a fresh cluster, a server that
# just died): about 2-7 s on loopback. Processes starting meanwhile wait this long for it.
STREAM_READY_SECONDS = 30.0
_LEADERLESS = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError, asyncio.TimeoutError)

T = TypeVar("T")


async def while_electing(operation: Callable[[], Awaitable[T]], *, what: str, within: float = STREAM_READY_SECONDS) -> T:
    """`operation()`, retried while JetStream does not answer (timeouts, "no responders", 503:
    a stream or the cluster without a leader) for `within` seconds, then the error raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.25
    while True:
        try:
            return await operation()
        except _LEADERLESS as exc:
            if loop.time() + delay >= deadline:
                raise
            log.warning("%s: JetStream not answering yet (%s); retrying", what, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)


async def ensure_stream(js: JetStreamContext, config: StreamConfig, *, within: float = STREAM_READY_SECONDS) -> None:
    """Create the stream, or bring an existing one to `config`; safe to repeat and to race
    (another process creating it first is fine), and patient with a stream electing a leader."""

    name = config.name
    if name is None:  # nats-py types the name optional; a stream is found by it
        raise ValueError("a stream config needs a name")

    async def ensure() -> None:
        try:
            await js.stream_info(name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("created stream %s", config.name)
                return
            except BadRequestError:
                pass  # another process created it first: update below
        await js.update_stream(config)

    await while_electing(ensure, what=f"stream {config.name}", within=within)


def trace_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """`headers` plus the current span's `traceparent`/`tracestate`."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a message carried, to parent the consumer's span on."""
    return propagate.extract(dict(headers or {}))
