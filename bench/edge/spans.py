"""What one request's span costs in the SDK, in this process, each way the edge could make it:
the tracer's start_as_current_span with the SDK's ParentBased(TraceIdRatioBased) sampler against
the kit's current_span with its ParentBasedRatio (services/kit/telemetry.py), for a span sampled
out and a recorded one with the edge's attributes; the sampler's decision alone; the trace
context for the upstream's headers by the global propagator against the kit's http_trace_headers;
and the OTLP encoding of an exported span with the SDK's Resource against the kit's, whose hash
is computed once. Each row is the best of `--repeat`
timings (the least the machine's noise adds), printed beside its alternative as a ratio.

    .venv/bin/python -m bench.edge.spans [--number 5000] [--repeat 9]

The wall-clock figures of a request through the edge are bench.edge's (`--rate 4000`) and
bench.edge.tracing_cost's; this one isolates the library's part, which those cannot resolve
below the machine's noise (a few microseconds of a 160-400 µs request).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from services.kit.settings import DEFAULT_SAMPLE_RATIO
from services.kit.telemetry import _Resource, current_span, http_trace_headers, sampler

BATCH = 512  # the kit's export batch (BSP_DEFAULTS)
SERVER = trace.SpanKind.SERVER
ATTRIBUTES = {"http.request.method": "GET", "http.route": "/lots", "http.response.status_code": 200,
              "trellis.request_id": "req_0f3a9c1e2b7d4a6f", "trellis.integration_id": "int_01HZX3K9Q2M4V6B8N0P2R4T6W8"}


class _Last(SpanExporter):
    """Keeps the last batch of ended spans (not all: a growing list makes every allocation dearer)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        del self.spans[:-BATCH]
        return SpanExportResult.SUCCESS


def _tracer(ratio: float, resource: Resource, *, sdk: bool = False) -> tuple[trace.Tracer, _Last]:
    """A tracer sampling at `ratio` with the kit's sampler, or with the SDK's pair (`sdk`)."""
    kept = _Last()
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(ratio)) if sdk else sampler(ratio))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider.get_tracer("services.edge"), kept


def _sdk(spans: trace.Tracer, *, attributes: bool) -> Callable[[], None]:
    def request() -> None:
        with spans.start_as_current_span("GET edge", kind=SERVER) as span:
            if attributes and span.is_recording():
                span.update_name("GET /lots")
                span.set_attributes(ATTRIBUTES)
    return request


def _kit(spans: trace.Tracer, *, attributes: bool) -> Callable[[], None]:
    def request() -> None:
        with current_span(spans, "GET edge", kind=SERVER) as span:
            if attributes and span.is_recording():
                span.update_name("GET /lots")
                span.set_attributes(ATTRIBUTES)
    return request


def _sdk_headers() -> list[tuple[bytes, bytes]]:
    """The edge's upstream trace headers as it made them before http_trace_headers: the global
    propagator into a dict, then encoded."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k.encode(), v.encode()) for k, v in carrier.items()]


def _headers(spans: trace.Tracer, make: Callable[[], list[tuple[bytes, bytes]]]) -> Callable[[], None]:
    def request() -> None:
        with current_span(spans, "GET edge", kind=SERVER):
            make()
    return request


def _decide(decide: Sampler) -> Callable[[], None]:
    dropped = (1 << 64) - 1  # a new trace's id that every ratio under 1 samples out
    def request() -> None:
        decide.should_sample(None, dropped, "GET edge", SERVER)
    return request


def best(run: Callable[[], object], *, number: int, repeat: int, per: int = 1) -> float:
    """µs per call (divided by `per` more), the best of `repeat` timings of `number` calls."""
    return min(timeit.repeat(run, number=number, repeat=repeat)) / number / per * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=5000, help="calls per timing (1,000-100,000)")
    parser.add_argument("--repeat", type=int, default=9, help="timings per row; the best is printed (3-30)")
    args = parser.parse_args()
    number, repeat = min(max(args.number, 1000), 100_000), min(max(args.repeat, 3), 30)
    plain = Resource.create({"service.name": "edge", "service.namespace": "trellis"})
    rows: list[tuple[str, float, float]] = []
    for ratio, label, attributes in ((0.0, "a span sampled out", False), (1.0, "a recorded span, the edge's attributes", True)):
        rows.append((label, best(_sdk(_tracer(ratio, plain, sdk=True)[0], attributes=attributes), number=number, repeat=repeat),
                     best(_kit(_tracer(ratio, plain)[0], attributes=attributes), number=number, repeat=repeat)))
    rows.append(("the sampler's decision, a new trace sampled out",
                 best(_decide(ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))), number=number, repeat=repeat),
                 best(_decide(sampler(DEFAULT_SAMPLE_RATIO)), number=number, repeat=repeat)))
    spans, _ = _tracer(0.0, plain)
    span_only = best(_kit(spans, attributes=False), number=number, repeat=repeat)
    rows.append(("the trace context for the upstream's headers",
                 best(_headers(spans, _sdk_headers), number=number, repeat=repeat) - span_only,
                 best(_headers(spans, http_trace_headers), number=number, repeat=repeat) - span_only))
    encoded = []
    for resource in (plain, _Resource(plain)):
        spans, kept = _tracer(1.0, resource)
        for _ in range(BATCH):
            _kit(spans, attributes=True)()
        batch = list(kept.spans)
        encoded.append(best(lambda batch=batch: encode_spans(batch).SerializeToString(), number=max(1, number // 500),
                            repeat=repeat, per=len(batch)))
    rows.append((f"OTLP encoding, per span of a {BATCH}-span batch", *encoded))

    print(f"µs per request, best of {repeat} x {number:,} calls (exports: of {max(1, number // 500)} batches)")
    print(f"{'':48} {'SDK':>9} {'kit':>9} {'kit/SDK':>8}")
    for label, sdk, kit in rows:
        print(f"{label:48} {sdk:9.1f} {kit:9.1f} {kit / sdk:8.2f}")
    print("SDK: start_as_current_span with ParentBased(TraceIdRatioBased), propagate.inject, the SDK's Resource;\n"
          "kit: current_span with ParentBasedRatio, http_trace_headers, _Resource (services/kit/telemetry.py)")


if __name__ == "__main__":
    main()
