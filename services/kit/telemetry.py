"""OpenTelemetry tracing: the SDK tracer provider only when spans have somewhere to go (an OTLP
endpoint in the standard variables, or a processor a test passes), gRPC server and client
instrumentation either way.

Without the SDK the API's no-op tracer is left in place. It records nothing and costs little,
yet still propagates: a span started under an incoming context is a non-recording span with
that context, so a `traceparent` received (in gRPC metadata, NATS headers, HTTP headers) is
injected again, unchanged, into what the process sends on.

With the SDK, spans are sampled parent-based (the SDK's ParentBased(TraceIdRatioBased(ratio)),
decided in one step by ParentBasedRatio):
a sampled parent (a partner's or publisher's `traceparent` with the sampled flag, or a peer's
span) is always followed, an unsampled one never, and a trace that starts here is recorded with
probability `ratio` (TRELLIS_OTEL_SAMPLE_RATIO). Unsampled spans record nothing, yet their
context (flag 00) is propagated, so every process downstream makes the same decision.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import TracebackType

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

_TRUE = ("true", "1", "yes", "on")


def sdk_disabled() -> bool:
    """OTEL_SDK_DISABLED, the specification's switch for the whole SDK."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE


def otlp_endpoint() -> str:
    """The OTLP traces endpoint the standard variables name, or ""."""
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()


# The batching of the OTLP export (BatchSpanProcessor keyword arguments), each unless its
# OTEL_BSP_* variable is set (the SDK reads those). The worker exports whenever a batch is full,
# so under load the batch size, not the delay, paces exports: the SDK's 512 costs under 1 µs of
# export overhead per span (bench.edge). The queue is 4x the SDK's, about 1 s of a saturated
# edge's spans at ratio 1.0, so a burst is not dropped while a batch is on the wire; beyond it
# spans are dropped rather than held in memory. The delay (the SDK's is 5 s) bounds how late a
# quiet process's spans reach the collector.
BSP_DEFAULTS = {"max_queue_size": ("OTEL_BSP_MAX_QUEUE_SIZE", 8192),
                "max_export_batch_size": ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
                "schedule_delay_millis": ("OTEL_BSP_SCHEDULE_DELAY", 1000)}


def sampler(ratio: float) -> Sampler:
    """Parent-based sampling at `ratio` for traces that start here."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a sample ratio is between 0.0 and 1.0, not {ratio}")
    return ParentBasedRatio(ratio)


class ParentBasedRatio(Sampler):
    """The SDK's `ParentBased(TraceIdRatioBased(ratio))` with its default delegates, decided in
    one step: a valid parent (remote or local) is followed, sampled or not, keeping its trace
    state; a new trace is sampled when the low 64 bits of its id fall under the ratio's bound
    (the SDK's arithmetic). The SDK's pair looks the parent up twice and builds a result for
    every span; this looks once and shares the result of a new trace sampled out (a third of the
    sampler's calls, for every request: bench.edge.tracing_cost). tests/unit/kit/test_telemetry.py
    holds it to the SDK's decisions."""

    def __init__(self, ratio: float) -> None:
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self._description = (f"ParentBased{{root:{TraceIdRatioBased(ratio).get_description()},"  # as the SDK's
                             "remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
                             "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}")

    def should_sample(self, parent_context: otel_context.Context | None, trace_id: int, name: str,
                      kind: trace.SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[trace.Link] | None = None,
                      trace_state: trace.TraceState | None = None) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            if parent.trace_flags.sampled:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
            return SamplingResult(Decision.DROP, None, parent.trace_state)
        if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, None)
        return _NEW_TRACE_DROPPED

    def get_description(self) -> str:
        return self._description


_NEW_TRACE_DROPPED = SamplingResult(Decision.DROP)  # read, never changed, by the SDK


def traceparent(context: trace.SpanContext | None = None) -> str:
    """The W3C `traceparent` of `context` (the current span's by default), exactly as the SDK's
    TraceContextTextMapPropagator writes it; "" for an invalid span context. A few calls where
    the global propagator makes thirty (the composite, tracecontext and baggage: a third of what
    tracing costs an edge request sampled out, bench.edge.tracing_cost), for callers that pass on
    W3C trace context and no baggage."""
    if context is None:
        context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def http_trace_headers() -> list[tuple[bytes, bytes]]:
    """The current span's W3C trace context as HTTP header pairs: `traceparent`, and
    `tracestate` when there is one (as traceparent(), none without a valid span context)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return []
    headers = [(b"traceparent", traceparent(context).encode())]
    if context.trace_state:
        headers.append((b"tracestate", context.trace_state.to_header().encode()))
    return headers


def batch_processor() -> BatchSpanProcessor:
    """The OTLP exporter behind a BatchSpanProcessor sized as BSP_DEFAULTS (OTEL_BSP_* win)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    def size(arg: str) -> int | None:  # None: the SDK reads the variable
        variable, default = BSP_DEFAULTS[arg]
        return None if os.environ.get(variable, "").strip() else default

    return BatchSpanProcessor(OTLPSpanExporter(), max_queue_size=size("max_queue_size"),
                              max_export_batch_size=size("max_export_batch_size"),
                              schedule_delay_millis=size("schedule_delay_millis"))


class _Resource(Resource):
    """A Resource that computes its hash once. The OTLP encoder groups every exported span by its
    resource, and the SDK's Resource.__hash__ serialises all its attributes to JSON on each call:
    10-25 of the 40-65 µs an exported span costs to encode (bench.edge.spans). A resource is
    immutable, so its hash cannot change; equality stays the SDK's."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def setup_tracing(service: str, *, namespace: str = "trellis", sample_ratio: float = 1.0,
                  processor: SpanProcessor | None = None) -> trace.TracerProvider:
    """Install the SDK tracer provider if spans can go somewhere (an OTLP endpoint, or
    `processor`) and OTEL_SDK_DISABLED is not set; otherwise leave the no-op provider. New
    traces are sampled at `sample_ratio` (processes pass TRELLIS_OTEL_SAMPLE_RATIO; a test that
    passes a processor records every trace), sampled parents always followed.

    Safe to call again: an installed provider is reused (with its sampler) and gets `processor`;
    a process that started without one installs it on the first call that brings a processor.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current
    endpoint = otlp_endpoint()
    if sdk_disabled() or (processor is None and not endpoint):
        return current
    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip():
        # The SDK would read it, and fall back to sampling everything on a value it cannot parse:
        # the validated setting decides instead, always parent-based.
        log.warning("OTEL_TRACES_SAMPLER is ignored: Trellis samples parent-based at TRELLIS_OTEL_SAMPLE_RATIO (%g)",
                    sample_ratio)
    resource = _Resource(Resource.create({"service.name": service, "service.namespace": namespace}))
    provider = TracerProvider(resource=resource, sampler=sampler(sample_ratio))
    if endpoint:
        provider.add_span_processor(batch_processor())
        log.info("exporting traces over OTLP to %s, sampling new traces at %g", endpoint, sample_ratio)
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def tracing_installed() -> bool:
    """Whether this process records spans (an SDK tracer provider is installed): without one,
    hot paths skip making no-op spans and only pass trace context on."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


class current_span:  # noqa: N801 - used as a context manager, like contextlib's
    """`with current_span(tracer, name, context=…, kind=…) as span:` does what the tracer's
    start_as_current_span does (the span current inside the block, an exception leaving it
    recorded on the span with an ERROR status, the span ended), without its two generator
    context managers: a third less for a span sampled out (bench.edge.spans). `context` is the
    parent's, as for the SDK; the span is made current in the current context, as use_span does."""

    __slots__ = ("_span", "_token")

    def __init__(self, spans: trace.Tracer, name: str, *, context: otel_context.Context | None = None,
                 kind: trace.SpanKind = trace.SpanKind.INTERNAL) -> None:
        self._span = spans.start_span(name, context=context, kind=kind)

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        otel_context.detach(self._token)
        # As the SDK's use_span: an Exception is an error; a BaseException (a cancellation) is not.
        if isinstance(exc, Exception) and self._span.is_recording():
            self._span.record_exception(exc)
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self._span.end()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [aio_server_interceptor()]


def peer_channel(address: str) -> grpc.aio.Channel:
    """A traced channel to a peer service."""
    return grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
