"""gRPC calls between services join one trace: the client span parents the server span."""

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.kit.telemetry import peer_channel, setup_tracing
from tests.support.probe_service import probe_service

SERVICE = "trellis.test.Traced"


async def _ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return format(trace.get_current_span().get_span_context().trace_id, "032x").encode()


async def test_a_peer_call_continues_the_callers_trace(actor_keys, as_actor):
    exporter = InMemorySpanExporter()
    provider = setup_tracing("tracing-test", processor=SimpleSpanProcessor(exporter))
    assert isinstance(provider, TracerProvider)

    async with probe_service(SERVICE, "Ping", _ping, actor_public_key_pem=actor_keys[1].read_bytes()) as port:
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            async with peer_channel(f"127.0.0.1:{port}") as channel:
                seen = await channel.unary_unary(f"/{SERVICE}/Ping")(b"", metadata=as_actor("alice", "org_a"))
    trace_id = format(caller.get_span_context().trace_id, "032x")
    assert seen.decode() == trace_id  # the handler ran inside the caller's trace
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == caller.get_span_context().trace_id]
    server_spans = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    client_spans = [s for s in spans if s.kind == trace.SpanKind.CLIENT]
    assert server_spans and client_spans
    assert server_spans[0].parent.span_id == client_spans[0].context.span_id
    assert client_spans[0].parent.span_id == caller.get_span_context().span_id
