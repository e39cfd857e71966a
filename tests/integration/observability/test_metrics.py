"""Every gRPC service serves Prometheus /metrics on a port of its own, and the series move:
calls by method and status, refused actor tokens by code, outbox lag, consumer lag, and for
webhooks deliveries by outcome, delivery latency and queue depth."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from services.contracts.trellis.logs.v1 import logs_pb2
from services.contracts.trellis.registry.v1 import registry_pb2, registry_pb2_grpc
from services.kit.db import create_engine, new_metadata, session_factory, utcnow
from services.kit.metrics import ServiceMetrics
from services.kit.outbox import OutboxRelay, add_event, outbox_table
from services.kit.service import RunningService
from tests.support.settings import Settings
from tests.integration.logs.conftest import LogsRunner
from tests.integration.observability.conftest import scrape, value
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

Metadata = tuple[tuple[str, str], ...]
CALLS = "trellis_grpc_server_requests_total"
LATENCY_COUNT = "trellis_grpc_server_request_duration_seconds_count"
AUTH = "trellis_grpc_auth_failures_total"


async def test_identity_counts_calls_by_method_and_code_and_refused_actor_tokens_by_code(
    identity_service: RunningService, identity_stub: identity_pb2_grpc.IdentityStub, mint: Callable[..., str],
) -> None:
    jwks = "/trellis.identity.v1.Identity/GetJwks"
    info = "/trellis.identity.v1.Identity/GetCredentialInfo"
    before = await scrape(identity_service.metrics_port)

    await identity_stub.GetJwks(identity_pb2.GetJwksRequest())
    await identity_stub.GetJwks(identity_pb2.GetJwksRequest())
    refusals = {
        "missing_token": (),
        "invalid_token": (("authorization", "Bearer not-a-jwt"),),
        "token_expired": (("authorization", f"Bearer {mint('alice', 'org_m', ttl_seconds=-120)}"),),
    }
    for metadata in refusals.values():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity_stub.GetCredentialInfo(identity_pb2.GetCredentialInfoRequest(integration_id="int_x"), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    after = await scrape(identity_service.metrics_port)
    assert value(after, CALLS, method=jwks, code="OK") - value(before, CALLS, method=jwks, code="OK") == 2
    assert value(after, LATENCY_COUNT, method=jwks) - value(before, LATENCY_COUNT, method=jwks) == 2
    assert value(after, CALLS, method=info, code="UNAUTHENTICATED") - value(before, CALLS, method=info, code="UNAUTHENTICATED") == 3
    for code in refusals:
        assert value(after, AUTH, code=code) - value(before, AUTH, code=code) == 1, code
    # Its integration-events consumer's lag is sampled at scrape time.
    assert ("trellis_consumer_pending_messages", (("consumer", "identity"), ("stream", "TRELLIS"))) in after


async def test_registry_reports_its_calls_and_an_empty_outbox_once_events_are_published(
    registry_service: RunningService, registry_stub: registry_pb2_grpc.RegistryStub, as_actor: Callable[..., Metadata],
) -> None:
    create = "/trellis.registry.v1.Registry/CreateIntegration"
    before = await scrape(registry_service.metrics_port)

    await registry_stub.CreateIntegration(registry_pb2.CreateIntegrationRequest(
        vendor_id="sap", name="metrics", owner="alice", scopes=["inventory:read"]), metadata=as_actor("alice", f"org_{uuid.uuid4().hex[:8]}"))

    async def published() -> dict | None:  # type: ignore[type-arg]
        samples = await scrape(registry_service.metrics_port)
        return samples if ("trellis_outbox_unsent_events", ()) in samples and value(samples, "trellis_outbox_unsent_events") == 0 else None

    after = await eventually(published, what="the registry's outbox to drain")
    assert value(after, CALLS, method=create, code="OK") - value(before, CALLS, method=create, code="OK") == 1
    assert value(after, "trellis_outbox_oldest_unsent_age_seconds") == 0


async def test_outbox_lag_shows_the_unsent_events_and_the_age_of_the_oldest(tmp_path: Path) -> None:
    metadata = new_metadata()
    table = outbox_table(metadata)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        sessions = session_factory(engine)

        async def unreachable(subject: str, payload: bytes, headers: dict[str, str]) -> object:
            raise ConnectionError("NATS is down")

        relay = OutboxRelay(sessions, table, unreachable)
        metrics = ServiceMetrics("outbox-test")
        metrics.watch_outbox(relay)
        written = utcnow()
        async with sessions() as session, session.begin():
            for _ in range(3):
                await add_event(session, table, "trellis.test.lag", b"x")
        with pytest.raises(ConnectionError):
            await relay.drain_once()

        from prometheus_client.parser import text_string_to_metric_families

        samples = {s.name: s.value for f in text_string_to_metric_families((await metrics.render()).decode()) for s in f.samples}
        assert samples["trellis_outbox_unsent_events"] == 3
        assert 0 <= samples["trellis_outbox_oldest_unsent_age_seconds"] <= (utcnow() - written + dt.timedelta(seconds=1)).total_seconds()
    finally:
        await engine.dispose()


async def test_logs_serves_its_metrics_with_calls_and_the_lag_of_its_three_consumers(
    logs_runner: Callable[..., LogsRunner], as_actor: Callable[..., Metadata],
) -> None:
    runner = logs_runner()
    stub = await runner.start()
    assert runner.service is not None
    query = "/trellis.logs.v1.Logs/QueryRequests"

    await stub.QueryRequests(logs_pb2.QueryRequestsRequest(), metadata=as_actor("alice", f"org_{uuid.uuid4().hex[:8]}"))

    samples = await scrape(runner.service.metrics_port)
    assert value(samples, CALLS, method=query, code="OK") == 1
    for stream, durable in (("TRELLIS", runner.durables.integrations), ("TRELLIS", runner.durables.audit),
                            ("APILOG", runner.durables.apilog)):
        assert ("trellis_consumer_pending_messages", (("consumer", durable), ("stream", stream))) in samples, durable
        assert ("trellis_consumer_ack_pending_messages", (("consumer", durable), ("stream", stream))) in samples, durable


async def test_webhooks_counts_deliveries_by_outcome_with_their_latency_and_the_queue_depth(
    webhooks: Webhooks, receiver: Receiver,
) -> None:
    port = webhooks.service.metrics_port
    deliveries = "trellis_webhooks_deliveries_total"
    receiver.statuses = [500]  # the first attempt fails and is retried (0.2 s later), then 200
    await webhooks.subscribe(receiver.url())
    before = await scrape(port)

    await webhooks.publish()
    await receiver.wait_for(2)

    async def delivered() -> dict | None:  # type: ignore[type-arg]
        samples = await scrape(port)
        return samples if value(samples, deliveries, outcome="succeeded") > value(before, deliveries, outcome="succeeded") else None

    after = await eventually(delivered, what="a succeeded delivery in /metrics")
    assert value(after, deliveries, outcome="succeeded") - value(before, deliveries, outcome="succeeded") == 1
    assert value(after, deliveries, outcome="retry_scheduled") - value(before, deliveries, outcome="retry_scheduled") == 1
    assert value(after, "trellis_webhooks_delivery_latency_seconds_count") - \
        value(before, "trellis_webhooks_delivery_latency_seconds_count") == 1
    assert value(after, "trellis_webhooks_delivery_latency_seconds_sum") - \
        value(before, "trellis_webhooks_delivery_latency_seconds_sum") >= 0.2  # the retry waited 0.2 s
    assert ("trellis_webhooks_queue_depth", ()) in after

    async def drained() -> bool:
        return value(await scrape(port), "trellis_webhooks_queue_depth") == 0

    await eventually(drained, what="no pending delivery")
    consumer = f"{webhooks.settings.webhooks_consumer_name}-activity"
    assert ("trellis_consumer_pending_messages", (("consumer", consumer), ("stream", "ACTIVITY"))) in after


def test_the_metrics_port_is_the_grpc_port_plus_1000_unless_configured(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(bind_host="0.0.0.0")
    assert settings.metrics_address("identity", "0.0.0.0:50051") == "0.0.0.0:51051"
    assert settings.metrics_address("identity", "127.0.0.1:0") == "127.0.0.1:0"
    assert make_settings(webhooks_metrics_addr=":9100", bind_host="0.0.0.0").metrics_address("webhooks", "x:1") == "0.0.0.0:9100"
    assert make_settings(logs_metrics_addr="").metrics_address("logs", "127.0.0.1:50054") is None
