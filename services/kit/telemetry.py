"""OpenTelemetry tracing: the SDK tracer provider only when spans have somewhere to go (an OTLP
endpoint in the standard variables, or a processor a test passes), gRPC server and client
instrumentation either way.

Without the SDK the API's no-op tracer is left in place. It records nothing and costs little,
yet still propagates: a span started under an incoming context is a non-recording span with
that context, so a `traceparent` received (in gRPC metadata, NATS headers, HTTP headers) is
injected again, unchanged, into what the process sends on.
"""

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

_TRUE = ("true", "1", "yes", "on")


def sdk_disabled() -> bool:
    """OTEL_SDK_DISABLED, the specification's switch for the whole SDK."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE


def otlp_endpoint() -> str:
    """The OTLP traces endpoint the standard variables name, or ""."""
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()


def setup_tracing(service: str, *, namespace: str = "trellis", processor: SpanProcessor | None = None) -> trace.TracerProvider:
    """Install the SDK tracer provider if spans can go somewhere (an OTLP endpoint, or
    `processor`) and OTEL_SDK_DISABLED is not set; otherwise leave the no-op provider.

    Safe to call again: an installed provider is reused and gets `processor`; a process that
    started without one installs it on the first call that brings a processor.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current
    endpoint = otlp_endpoint()
    if sdk_disabled() or (processor is None and not endpoint):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": namespace}))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces over OTLP to %s", endpoint)
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def tracing_installed() -> bool:
    """Whether this process records spans (an SDK tracer provider is installed): without one,
    hot paths skip making no-op spans and only pass trace context on."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [aio_server_interceptor()]


def peer_channel(address: str) -> grpc.aio.Channel:
    """A traced channel to a peer service."""
    return grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
