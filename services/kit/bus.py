"""NATS JetStream: one connection per process, the streams Trellis uses created idempotently,
and W3C trace context carried in message headers (it does not cross the bus by itself)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
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
    StreamSpec("APILOG", ("apilog.>",), "One record per partner request through the edge"),
)


async def connect(url: str, *, name: str) -> NATS:
    """A connection that reconnects forever; callers publish through JetStream."""
    return await nats.connect(
        url,
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
        config = _config(spec, replicas)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", spec.name)
            continue
        await js.update_stream(config)


def trace_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """`headers` plus the current span's `traceparent`/`tracestate`."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a message carried, to parent the consumer's span on."""
    return propagate.extract(dict(headers or {}))
