"""The kit's sampler and span batching: the SDK's parent-based ratio sampler, the
BatchSpanProcessor sizes the OTLP export gets unless OTEL_BSP_* says otherwise, `current_span`
(start_as_current_span's behaviour, cheaper) and the resource whose hash is computed once."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.kit.telemetry import BSP_DEFAULTS, _Resource, batch_processor, current_span, http_trace_headers, sampler, traceparent


def _decide(ratio: float, parent: TraceFlags | None) -> bool:
    context = None
    if parent is not None:
        span = NonRecordingSpan(SpanContext(secrets.randbits(128) | 1, secrets.randbits(64) | 1, is_remote=True,
                                            trace_flags=parent))
        context = trace.set_span_in_context(span)
    result = sampler(ratio).should_sample(context, secrets.randbits(128) | 1, "GET /api")
    return result.decision is Decision.RECORD_AND_SAMPLE


@pytest.mark.parametrize("ratio", [0.0, 0.1, 1.0])
def test_a_sampled_parent_is_always_followed_and_an_unsampled_one_never(ratio: float) -> None:
    assert all(_decide(ratio, TraceFlags(TraceFlags.SAMPLED)) for _ in range(200))
    assert not any(_decide(ratio, TraceFlags(TraceFlags.DEFAULT)) for _ in range(200))


def test_a_new_trace_is_sampled_at_the_ratio() -> None:
    assert not any(_decide(0.0, None) for _ in range(200))
    assert all(_decide(1.0, None) for _ in range(200))
    assert 300 < sum(_decide(0.1, None) for _ in range(5000)) < 700  # 500 expected; 7 standard deviations either side


def _parents() -> list[otel_context.Context | None]:
    """Every kind of parent the SDK's ParentBased tells apart, with and without a trace state,
    and none."""
    found: list[otel_context.Context | None] = [None, trace.set_span_in_context(trace.INVALID_SPAN)]
    for remote in (True, False):
        for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT):
            for state in (TraceState(), TraceState([("vendor", "v1")])):
                span = NonRecordingSpan(SpanContext(secrets.randbits(128) | 1, secrets.randbits(64) | 1,
                                                    is_remote=remote, trace_flags=TraceFlags(flags), trace_state=state))
                found.append(trace.set_span_in_context(span))
    return found


@pytest.mark.parametrize("ratio", [0.0, 0.001, 0.1, 0.5, 1.0])
def test_the_sampler_decides_as_the_sdks_parent_based_ratio_sampler(ratio: float) -> None:
    ours, sdks = sampler(ratio), ParentBased(TraceIdRatioBased(ratio))
    attributes = {"http.route": "/lots"}
    edges = [0, 1, TraceIdRatioBased.get_bound_for_rate(ratio) - 1, TraceIdRatioBased.get_bound_for_rate(ratio),
             (1 << 64) - 1, (1 << 128) - 1]
    for parent in _parents():
        for trace_id in edges + [secrets.randbits(128) for _ in range(300)]:
            got = ours.should_sample(parent, trace_id, "GET /lots", trace.SpanKind.SERVER, attributes)
            want = sdks.should_sample(parent, trace_id, "GET /lots", trace.SpanKind.SERVER, attributes)
            assert (got.decision, dict(got.attributes), got.trace_state) == (
                want.decision, dict(want.attributes), want.trace_state), (ratio, trace_id, parent)
    assert ours.get_description() == sdks.get_description()


def test_the_trace_headers_are_the_sdks_tracecontext_injection() -> None:
    propagator = TraceContextTextMapPropagator()
    own = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        secrets.randbits(128) | 1, secrets.randbits(64) | 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
    for current in [*_parents()[1:], own]:  # every kind of parent current, and a span of its own
        token = otel_context.attach(current)
        try:
            carrier: dict[str, str] = {}
            propagator.inject(carrier)
            assert dict(http_trace_headers()) == {k.encode(): v.encode() for k, v in carrier.items()}
            assert traceparent() == carrier.get("traceparent", "")
        finally:
            otel_context.detach(token)
    assert http_trace_headers() == [] and traceparent() == ""  # no span: nothing to pass on


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_ratio_outside_0_to_1_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="between 0.0 and 1.0"):
        sampler(ratio)


def _sizes(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, int]:
    for variable, _ in BSP_DEFAULTS.values():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    processor = batch_processor()
    try:
        inner = processor._batch_processor  # the SDK keeps its sizes here
        return {"max_queue_size": inner._max_queue_size, "max_export_batch_size": inner._max_export_batch_size,
                "schedule_delay_millis": inner._schedule_delay_millis}
    finally:
        processor.shutdown()


def test_the_export_batching_is_the_kits_unless_otel_bsp_variables_say_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _sizes(monkeypatch) == {arg: default for arg, (_, default) in BSP_DEFAULTS.items()}
    assert _sizes(monkeypatch, OTEL_BSP_SCHEDULE_DELAY="250", OTEL_BSP_MAX_QUEUE_SIZE="4096") == {
        "max_queue_size": 4096, "max_export_batch_size": 512, "schedule_delay_millis": 250}


def _recording(ratio: float = 1.0) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler(ratio))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _remote(flags: TraceFlags) -> trace.SpanContext:
    return SpanContext(secrets.randbits(128) | 1, secrets.randbits(64) | 1, is_remote=True, trace_flags=flags)


def test_current_span_is_current_inside_its_block_under_its_parent_and_ended_after() -> None:
    spans, exporter = _recording()
    parent = _remote(TraceFlags(TraceFlags.SAMPLED))
    outside = trace.get_current_span()
    with current_span(spans, "GET edge", context=trace.set_span_in_context(NonRecordingSpan(parent)),
                      kind=trace.SpanKind.SERVER) as span:
        assert trace.get_current_span() is span
        assert span.get_span_context().trace_id == parent.trace_id
        assert exporter.get_finished_spans() == ()
    assert trace.get_current_span() is outside
    (finished,) = exporter.get_finished_spans()
    assert finished.parent == parent and finished.kind is trace.SpanKind.SERVER
    assert finished.status.status_code is StatusCode.UNSET


def test_current_span_records_an_exception_leaving_it_as_an_error_and_lets_it_go() -> None:
    spans, exporter = _recording()
    with pytest.raises(LookupError, match="no such lot"), current_span(spans, "lookup"):
        raise LookupError("no such lot")
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code is StatusCode.ERROR
    assert finished.status.description == "LookupError: no such lot"
    assert [event.name for event in finished.events] == ["exception"]


def test_current_span_ends_a_cancelled_block_without_calling_it_an_error() -> None:
    spans, exporter = _recording()
    with pytest.raises(asyncio.CancelledError), current_span(spans, "cancelled"):
        raise asyncio.CancelledError
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code is StatusCode.UNSET and not finished.events


def test_an_unsampled_current_span_records_nothing_but_carries_its_parents_trace() -> None:
    spans, exporter = _recording(ratio=1.0)
    parent = _remote(TraceFlags(TraceFlags.DEFAULT))
    with current_span(spans, "GET edge", context=trace.set_span_in_context(NonRecordingSpan(parent))) as span:
        assert not span.is_recording() and trace.get_current_span() is span
        assert span.get_span_context().trace_id == parent.trace_id
    assert exporter.get_finished_spans() == ()


def test_the_resource_hashes_and_compares_as_the_sdks_and_groups_every_span_under_it() -> None:
    plain = Resource.create({"service.name": "edge", "service.namespace": "trellis"})
    fixed = _Resource(plain)
    assert fixed == plain and hash(fixed) == hash(plain) and fixed.attributes == plain.attributes
    assert _Resource(Resource.create({"service.name": "webhooks"})) != fixed
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=fixed)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for n in range(3):
        with current_span(provider.get_tracer("test"), f"span {n}"):
            pass
    (group,) = encode_spans(exporter.get_finished_spans()).resource_spans
    assert len(group.scope_spans[0].spans) == 3
    assert {kv.key: kv.value.string_value for kv in group.resource.attributes}["service.name"] == "edge"
