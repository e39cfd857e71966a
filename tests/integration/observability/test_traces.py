"""One trace per piece of work, end to end: a partner request through the edge, identity and
registry to the upstream; a platform activity through NATS and webhooks to the receiver's
POST; the W3C context passed on unchanged by a process without the SDK; and spans exported
over OTLP/gRPC from a real service process to a collector this test serves."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import nats
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.registry.v1 import registry_pb2, registry_pb2_grpc
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.bus import trace_headers
from services.kit.db import migrate_async
from tests.support.settings import Settings
from tests.integration.edge.conftest import (
    Partner,
    ProvisionPartner,
    Upstream,
    call,
    fetch_token,
    partner_headers,
)
from tests.integration.edge.test_freshness import SERVING, edge_environment
from tests.integration.observability.conftest import in_trace
from tests.integration.webhooks.conftest import Webhooks, webhook_settings
from tests.integration.webhooks.processes import ROOT, WebhooksProcess
from tests.integration.webhooks.receiver import Receiver, Tls
from tests.support.ports import free_port
from tests.support.waiting import eventually

Metadata = tuple[tuple[str, str], ...]


def _traceparent(headers: object) -> tuple[int, int]:
    """(trace id, parent span id) of the one `traceparent` among `headers` (pairs or a mapping)."""
    pairs = headers.items() if hasattr(headers, "items") else headers  # type: ignore[union-attr]
    [value] = [v for k, v in pairs if k.lower() == "traceparent"]  # type: ignore[union-attr]
    _, trace_id, parent_id, _ = value.split("-")
    return int(trace_id, 16), int(parent_id, 16)


async def _at(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def _only(spans: list[ReadableSpan], **where: object) -> ReadableSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, f"expected one span with {where}, got {[(s.name, s.kind) for s in spans]}"
    return found[0]


# --- partner request ----------------------------------------------------------------------------


async def test_a_partner_request_is_one_trace_from_the_edge_through_identity_and_registry_to_the_upstream(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream, spans: InMemorySpanExporter,
) -> None:
    partner = await provision()
    # The token request is the first to need the integration (its IP allowlist): the registry
    # lookup is in its trace, and the API request finds the integration cached.
    token_trace = secrets.randbits(128) | 1
    token = await fetch_token(http, edge, partner, traceparent=f"00-{token_trace:032x}-{secrets.randbits(64) | 1:016x}-01")

    status, _, _ = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(token, partner))

    assert status == 200
    trace_id, upstream_parent = _traceparent(upstream.last().headers)
    found = in_trace(spans, trace_id)
    root = _only(found, kind=trace.SpanKind.SERVER, parent=None)
    assert root.instrumentation_scope.name == "services.edge"
    assert upstream_parent == root.context.span_id  # the upstream's parent is the edge's span
    token_spans = in_trace(spans, token_trace)
    token_root = _only(token_spans, name="POST /oauth/token", kind=trace.SpanKind.SERVER)
    for spans_of, parent, method in ((found, root, "/trellis.identity.v1.Identity/VerifyApiKey"),
                                     (token_spans, token_root, "/trellis.identity.v1.Identity/IssueToken"),
                                     (token_spans, token_root, "/trellis.registry.v1.Registry/LookupIntegration")):
        client = _only(spans_of, name=method, kind=trace.SpanKind.CLIENT)
        server = _only(spans_of, name=method, kind=trace.SpanKind.SERVER)
        assert client.parent.span_id == parent.context.span_id, method
        assert server.parent.span_id == client.context.span_id, method


async def _call_with_a_trace(edge: str, http: aiohttp.ClientSession,
                             provision: ProvisionPartner) -> tuple[Partner, str, tuple[int, int]]:
    """A new partner's GET through the edge carrying a traceparent of its own; (partner, token,
    (trace id, parent span id) it sent)."""
    partner = await provision()
    token = await fetch_token(http, edge, partner)
    incoming_trace, incoming_parent = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    traceparent = f"00-{incoming_trace:032x}-{incoming_parent:016x}-01"
    status, _, _ = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(token, partner, traceparent=traceparent))
    assert status == 200
    return partner, token, (incoming_trace, incoming_parent)


async def test_a_traceparent_the_partner_sends_reaches_the_upstream_in_the_same_trace(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream, spans: InMemorySpanExporter,
) -> None:
    _, _, (incoming_trace, incoming_parent) = await _call_with_a_trace(edge, http, provision)
    trace_id, _ = _traceparent(upstream.last().headers)
    assert trace_id == incoming_trace
    root = _only(in_trace(spans, incoming_trace), name="GET /api", kind=trace.SpanKind.SERVER)  # the edge's
    assert root.parent.span_id == incoming_parent


async def test_without_a_tracer_the_edge_passes_the_partners_trace_context_on_unchanged(
    edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As deployed with no exporter: no SDK, so the edge makes no span of its own (this test
    # process has one installed for the others; the edge is told it has none).
    monkeypatch.setattr("services.edge.entrypoints.app.tracing_installed", lambda: False)
    partner, token, (incoming_trace, incoming_parent) = await _call_with_a_trace(edge, http, provision)
    assert _traceparent(upstream.last().headers) == (incoming_trace, incoming_parent)  # the partner's, as sent

    status, _, _ = await call(http, "GET", f"{edge}/api/lots", headers=partner_headers(token, partner))
    assert status == 200 and "traceparent" not in {k.lower() for k, _ in upstream.last().headers}  # none made up


# --- sampling ---------------------------------------------------------------------------------


@pytest.fixture
async def unsampled_edge(edge_settings: Callable[..., Settings], collector: tuple[Collector, int],
                         tmp_path: Path) -> AsyncIterator[str]:
    """`python -m services.edge` with TRELLIS_OTEL_SAMPLE_RATIO=0, exporting over OTLP to this
    test's collector; identity and registry (in this process) sample at 1.0, parent-based."""
    env = edge_environment(edge_settings(), tmp_path / "edge-data") | {
        "TRELLIS_OTEL_SAMPLE_RATIO": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector[1]}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    log = tmp_path / "edge.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.edge"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def serving() -> str:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        found = SERVING.search(log.read_text(errors="replace"))
        return f"http://127.0.0.1:{found.group(1)}" if found else ""

    try:
        yield await eventually(serving, timeout=30, what="the edge process to serve")
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)


def _sampled(headers: object) -> bool:
    """The sampled flag of the one `traceparent` among `headers` (W3C trace-flags bit 0)."""
    pairs = headers.items() if hasattr(headers, "items") else headers  # type: ignore[union-attr]
    [value] = [v for k, v in pairs if k.lower() == "traceparent"]  # type: ignore[union-attr]
    return bool(int(value.rsplit("-", 1)[1], 16) & 1)


async def test_at_ratio_0_a_sampled_traceparent_is_still_followed_through_the_edge_and_its_peers(
    unsampled_edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream,
    spans: InMemorySpanExporter, collector: tuple[Collector, int],
) -> None:
    servicer, _ = collector
    _, _, (incoming_trace, incoming_parent) = await _call_with_a_trace(unsampled_edge, http, provision)

    trace_id, upstream_parent = _traceparent(upstream.last().headers)
    assert trace_id == incoming_trace and _sampled(upstream.last().headers)

    async def exported() -> list[Span]:
        return [s for s in servicer.spans("edge", incoming_trace) if s.kind == Span.SPAN_KIND_SERVER]

    [root] = await eventually(exported, timeout=15, what="the edge's span of the sampled request at the collector")
    assert root.name == "GET /api" and int.from_bytes(root.parent_span_id, "big") == incoming_parent
    assert upstream_parent == int.from_bytes(root.span_id, "big")  # the upstream's parent is the edge's span
    method = "/trellis.identity.v1.Identity/VerifyApiKey"  # a new partner's key: a cache miss
    [client] = await eventually(lambda: _at(servicer.spans("edge", incoming_trace), method), timeout=15,
                                what="the edge's VerifyApiKey span at the collector")
    assert client.parent_span_id == root.span_id
    server = _only(in_trace(spans, incoming_trace), name=method, kind=trace.SpanKind.SERVER)  # identity's, here
    assert server.parent.span_id == int.from_bytes(client.span_id, "big")


@pytest.mark.parametrize("incoming", ["none", "unsampled"])
async def test_at_ratio_0_a_request_is_not_recorded_anywhere_yet_its_unsampled_context_reaches_the_upstream(
    incoming: str, unsampled_edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner, upstream: Upstream,
    spans: InMemorySpanExporter, collector: tuple[Collector, int],
) -> None:
    servicer, _ = collector
    partner = await provision()
    token = await fetch_token(http, unsampled_edge, partner)
    sent = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"} if incoming == "unsampled" else {}
    status, _, _ = await call(http, "GET", f"{unsampled_edge}/api/lots", headers=partner_headers(token, partner, **sent))
    assert status == 200
    # The edge's context goes on, flagged unsampled, so identity, registry and the upstream decide alike.
    trace_id, upstream_parent = _traceparent(upstream.last().headers)
    assert not _sampled(upstream.last().headers)
    if sent:
        assert trace_id == _traceparent(sent)[0] and upstream_parent != _traceparent(sent)[1]  # the edge's span
    # A sampled request after it: once its edge span is exported, any span of the first would have been.
    _, _, (later, _) = await _call_with_a_trace(unsampled_edge, http, provision)
    await eventually(lambda: _at(servicer.spans("edge", later), "GET /api"), timeout=15,
                     what="the later sampled request's edge span at the collector")
    assert servicer.spans("edge", trace_id) == []  # the edge recorded nothing of it
    assert in_trace(spans, trace_id) == []  # nor did identity, at ratio 1.0, for its VerifyApiKey (a cache miss)


# --- activity to webhook ----------------------------------------------------------------------


async def test_an_activity_is_one_trace_from_its_publish_through_webhooks_to_the_receivers_post(
    webhooks: Webhooks, receiver: Receiver, spans: InMemorySpanExporter,
) -> None:
    await webhooks.subscribe(receiver.url())
    event = events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=webhooks.org,
                                     sender_type="user", sender_id="u_1", data_json="{}")
    nc = await nats.connect(webhooks.settings.nats_url)
    try:
        with trace.get_tracer("platform").start_as_current_span("platform.publish", kind=trace.SpanKind.PRODUCER) as publish:
            await nc.jetstream().publish("activity.lot.created", event.SerializeToString(), headers=trace_headers())
    finally:
        await nc.close()
    [received] = await receiver.wait_for(1)

    trace_id, post_parent = _traceparent(received.headers)
    assert trace_id == publish.get_span_context().trace_id

    async def delivered() -> list[ReadableSpan]:
        return [s for s in in_trace(spans, trace_id) if s.name == "webhook.deliver"]

    [deliver] = await eventually(delivered, what="the delivery span")
    ingest = _only(in_trace(spans, trace_id), name="webhooks.ingest")
    assert ingest.parent.span_id == publish.get_span_context().span_id  # consumed as the publisher's child
    assert deliver.parent.span_id == publish.get_span_context().span_id  # delivered as its child too
    assert post_parent == deliver.context.span_id  # the POST names the delivery span as its parent


async def test_without_the_sdk_webhooks_passes_the_publishers_trace_context_to_the_receiver_unchanged(
    make_settings: Callable[..., Settings], tls: Tls, as_actor: Callable[..., Metadata], receiver: Receiver, tmp_path: Path,
) -> None:
    settings = webhook_settings(make_settings, tls)
    await migrate_async("webhooks", settings.database_url("webhooks"))
    # A process of its own: this test process has the SDK installed, and no OTEL_* variable
    # reaches the child, so it runs with the no-op tracer.
    process = await WebhooksProcess(settings, free_port(), tmp_path / "webhooks.log").start()
    try:
        org = f"org_{uuid.uuid4().hex[:12]}"
        async with grpc.aio.insecure_channel(process.address) as channel:
            await webhooks_pb2_grpc.WebhooksStub(channel).CreateSubscription(
                pb.CreateSubscriptionRequest(url=receiver.url(), activity_types=["lot.created"]), metadata=as_actor("admin", org))
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        event = events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", type="lot.created", org_id=org,
                                         sender_type="user", sender_id="u_1", data_json="{}")
        nc = await nats.connect(settings.nats_url)
        try:
            await nc.jetstream().publish("activity.lot.created", event.SerializeToString(), headers={"traceparent": traceparent})
        finally:
            await nc.close()
        [received] = await receiver.wait_for(1, timeout=30)
        assert received.headers["traceparent"] == traceparent
    finally:
        await process.stop()


# --- OTLP export ----------------------------------------------------------------------------------


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, service: str, trace_id: int) -> list[Span]:
        """The spans of `service` in one trace, as exported so far."""
        return [s for request in self.requests for resource_spans in request.resource_spans
                if any(a.key == "service.name" and a.value.string_value == service for a in resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans for s in scope.spans
                if int.from_bytes(s.trace_id, "big") == trace_id]

    def span_names(self, service: str) -> set[str]:
        names = set()
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                if attributes.get("service.name") == service:
                    names |= {s.name for scope in resource_spans.scope_spans for s in scope.spans}
        return names


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    servicer = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(0)


async def test_a_service_process_exports_its_spans_over_otlp_to_the_configured_collector(
    collector: tuple[Collector, int], make_settings: Callable[..., Settings], actor_keys: tuple[bytes, Path],
    as_actor: Callable[..., Metadata], tmp_path: Path,
) -> None:
    servicer, collector_port = collector
    settings = make_settings()
    await migrate_async("registry", settings.database_url("registry"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRELLIS_", "OTEL_"))} | {
        "TRELLIS_MODE": "embedded", "TRELLIS_DATA_DIR": str(settings.data_dir), "TRELLIS_NATS_URL": settings.nats_url,
        "TRELLIS_ACTOR_ISSUER": settings.actor_issuer, "TRELLIS_ACTOR_AUDIENCE": settings.actor_audience,
        "TRELLIS_ACTOR_PUBLIC_KEY_FILE": settings.actor_public_key_file, "TRELLIS_REGISTRY_ADDR": f"127.0.0.1:{port}",
        "TRELLIS_REGISTRY_METRICS_ADDR": "", "TRELLIS_LOG_LEVEL": "WARNING",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "TRELLIS_OTEL_SAMPLE_RATIO": "1",  # every new trace (the default samples some)
    }
    log_file = tmp_path / "registry.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.registry"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)

            async def listed() -> bool:
                assert process.poll() is None, log_file.read_text()[-3000:]
                try:
                    await stub.ListIntegrations(registry_pb2.ListIntegrationsRequest(), metadata=as_actor("alice", "org_otlp"),
                                                timeout=1.0)
                except grpc.aio.AioRpcError:
                    return False
                return True

            await eventually(listed, timeout=30, interval=0.1, what=f"registry to answer (log {log_file})")

        async def exported() -> bool:
            return "/trellis.registry.v1.Registry/ListIntegrations" in servicer.span_names("registry")

        await eventually(exported, timeout=15, interval=0.05, what="the registry's span at the collector")
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)


# --- when the SDK is installed ----------------------------------------------------------------

_INSTALL_LATER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from services.kit.telemetry import setup_tracing

early = trace.get_tracer("early")  # taken before any provider, as module code may do
assert not isinstance(setup_tracing("svc"), TracerProvider)  # nowhere to send spans: no SDK
exporter = InMemorySpanExporter()
provider = setup_tracing("svc", processor=SimpleSpanProcessor(exporter))
with early.start_as_current_span("after"):
    pass
print(isinstance(provider, TracerProvider), [s.name for s in exporter.get_finished_spans()])
"""


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "True ['after']"),
    ({"OTEL_SDK_DISABLED": "true"}, "False []"),
])
def test_the_sdk_is_installed_by_the_first_call_that_gives_spans_somewhere_to_go_unless_disabled(
    env: dict[str, str], expected: str,
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | env
    done = subprocess.run([sys.executable, "-c", _INSTALL_LATER], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == expected
