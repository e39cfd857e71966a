"""OpenTelemetry tracing: one tracer provider per process, OTLP export when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, and gRPC server and client instrumentation."""

from __future__ import annotations

import logging
import os

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)


def setup_tracing(service: str, *, namespace: str = "trellis", processor: SpanProcessor | None = None) -> trace.TracerProvider:
    """Install the process's tracer provider once; later calls reuse it and add `processor`."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": namespace}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces over OTLP")
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [aio_server_interceptor()]


def peer_channel(address: str) -> grpc.aio.Channel:
    """A traced channel to a peer service."""
    return grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
