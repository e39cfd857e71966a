"""The kit's sampler and span batching: the SDK's parent-based ratio sampler, and the
BatchSpanProcessor sizes the OTLP export gets unless OTEL_BSP_* says otherwise."""

from __future__ import annotations

import secrets

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.kit.telemetry import BSP_DEFAULTS, batch_processor, sampler


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
