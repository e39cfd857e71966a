"""One trace runs from the platform's publish on NATS through to the webhook POST: the trace
context crosses the bus in the message headers and is kept with the stored activity."""

from __future__ import annotations

import uuid

import nats
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.contracts.trellis.events.v1 import events_pb2
from services.kit.bus import trace_headers
from services.kit.telemetry import setup_tracing
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually


async def test_the_delivery_span_continues_the_publishers_trace(webhooks: Webhooks, receiver: Receiver) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("webhooks-tracing-test", processor=SimpleSpanProcessor(exporter))
    await webhooks.subscribe(receiver.url())
    nc = await nats.connect(webhooks.settings.nats_url)
    try:
        with trace.get_tracer("platform").start_as_current_span("platform.lot_created") as publish:
            event = events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=webhooks.org,
                                             sender_type="user", sender_id="u_1", data_json="{}")
            await nc.jetstream().publish("activity.lot.created", event.SerializeToString(), headers=trace_headers())
        trace_id = publish.get_span_context().trace_id
    finally:
        await nc.close()
    await receiver.wait_for(1)

    async def delivered_span():  # type: ignore[no-untyped-def]
        return [s for s in exporter.get_finished_spans()
                if s.name == "webhook.deliver" and s.attributes.get("webhook.event_id") == event.event_id]

    [span] = await eventually(delivered_span)
    assert span.context.trace_id == trace_id
    assert span.attributes["http.response.status_code"] == 200
    # The receiver can join the trace: the POST names the delivery span as its parent.
    traceparent = receiver.received[0].headers["traceparent"]
    assert traceparent.split("-")[1:3] == [format(trace_id, "032x"), format(span.context.span_id, "016x")]


async def test_an_event_without_trace_context_is_delivered_in_a_trace_of_its_own(webhooks: Webhooks,
                                                                                 receiver: Receiver) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("webhooks-tracing-test", processor=SimpleSpanProcessor(exporter))
    await webhooks.subscribe(receiver.url())
    nc = await nats.connect(webhooks.settings.nats_url)
    try:
        event = events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=webhooks.org,
                                         sender_type="user", sender_id="u_1", data_json="{}")
        # Published inside a span of this process, but without its headers: nothing to continue.
        with trace.get_tracer("platform").start_as_current_span("platform.unrelated"):
            await nc.jetstream().publish("activity.lot.created", event.SerializeToString())
    finally:
        await nc.close()
    await receiver.wait_for(1)

    async def delivered_span():  # type: ignore[no-untyped-def]
        return [s for s in exporter.get_finished_spans()
                if s.name == "webhook.deliver" and s.attributes.get("webhook.event_id") == event.event_id]

    [span] = await eventually(delivered_span)
    assert span.parent is None
    unrelated = [s for s in exporter.get_finished_spans() if s.name == "platform.unrelated"]
    assert all(s.context.trace_id != span.context.trace_id for s in unrelated)
    traceparent = receiver.received[0].headers["traceparent"]
    assert traceparent.split("-")[1:3] == [format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")]
