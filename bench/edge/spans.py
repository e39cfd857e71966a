"""What one request's span costs in the SDK, in this process, each way the edge could make it:
the tracer's start_as_current_span against the kit's current_span (services/kit/telemetry.py),
for a span sampled out and a recorded one with the edge's attributes, the trace context
injected into the upstream's headers, and the OTLP encoding of an exported span with the SDK's
Resource against the kit's, whose hash is computed once. Each row is the best of `--repeat`
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

from services.kit.telemetry import _Resource, current_span, sampler

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


def _tracer(ratio: float, resource: Resource) -> tuple[trace.Tracer, _Last]:
    kept = _Last()
    provider = TracerProvider(resource=resource, sampler=sampler(ratio))
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


def _inject(spans: trace.Tracer) -> Callable[[], None]:
    def request() -> None:
        with current_span(spans, "GET edge", kind=SERVER):
            propagate.inject({})
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
        spans, _ = _tracer(ratio, plain)
        rows.append((label, best(_sdk(spans, attributes=attributes), number=number, repeat=repeat),
                     best(_kit(spans, attributes=attributes), number=number, repeat=repeat)))
    spans, _ = _tracer(0.0, plain)
    span_only = best(_kit(spans, attributes=False), number=number, repeat=repeat)
    inject = best(_inject(spans), number=number, repeat=repeat) - span_only
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
    print("SDK: start_as_current_span, and for the encoding the SDK's Resource; kit: current_span, and _Resource")
    print(f"trace context injected into one request's headers (propagate.inject, sampled out): {inject:.1f} µs")


if __name__ == "__main__":
    main()
