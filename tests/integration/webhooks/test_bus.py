"""What webhooks takes from the session's nats-server: activities on `activity.<type>`
(protobuf ActivityEvent, or the same fields in JSON) and the owning integration's lifecycle
on `trellis.integration.<kind>`."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import EDGE_PERMISSION
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.helpers import holds
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually


@pytest.fixture
async def js(webhooks: Webhooks) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(webhooks.settings.nats_url)
    yield nc.jetstream()
    await nc.close()


def activity(org: str, type_: str = "lot.created", *, event_id: str | None = None, data: dict | None = None) -> events_pb2.ActivityEvent:
    occurred = Timestamp()
    occurred.FromDatetime(dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.timezone.utc))
    return events_pb2.ActivityEvent(
        event_id=event_id or f"evt_{uuid.uuid4().hex}", occurred_at=occurred, type=type_, org_id=org,
        sender_type="integration", sender_id="int_scale_7", data_json=json.dumps(data or {"lot_id": "L-9"}),
    )


async def _count_is(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) == count


async def test_an_activity_on_jetstream_is_delivered(webhooks: Webhooks, receiver: Receiver, js: JetStreamContext) -> None:
    await webhooks.subscribe(receiver.url(), ["harvest.recorded"])
    event = activity(webhooks.org, "harvest.recorded", data={"batch": "B-1", "wet_kg": 41.2})
    await js.publish("activity.harvest.recorded", event.SerializeToString())
    [got] = await receiver.wait_for(1)
    body = json.loads(got.body)
    assert body == {
        "id": event.event_id, "type": "harvest.recorded", "created_at": "2026-03-01T09:30:00.000Z",
        "organisation_id": webhooks.org, "sender": {"type": "integration", "id": "int_scale_7"},
        "data": {"batch": "B-1", "wet_kg": 41.2},
    }


async def test_a_json_activity_is_delivered_too(webhooks: Webhooks, receiver: Receiver, js: JetStreamContext) -> None:
    await webhooks.subscribe(receiver.url(), ["order.created"])
    document = {"event_id": "evt_json_" + uuid.uuid4().hex, "org_id": webhooks.org, "type": "order.created",
                "occurred_at": "2026-03-01T10:00:00Z", "sender_type": "user", "sender_id": "u_1", "data": {"order": 7}}
    await js.publish("activity.order.created", json.dumps(document).encode())
    [got] = await receiver.wait_for(1)
    assert json.loads(got.body)["id"] == document["event_id"] and json.loads(got.body)["data"] == {"order": 7}


async def test_a_repeated_event_id_on_the_stream_is_delivered_once(webhooks: Webhooks, receiver: Receiver,
                                                                  js: JetStreamContext) -> None:
    await webhooks.subscribe(receiver.url())
    event = activity(webhooks.org)
    for _ in range(3):  # no Nats-Msg-Id: the stream keeps all three, webhooks must drop two
        await js.publish("activity.lot.created", event.SerializeToString())
    later = activity(webhooks.org)
    await js.publish("activity.lot.created", later.SerializeToString())
    got = await receiver.wait_for(2)
    assert [r.headers["X-Webhook-Id"] for r in got] == [event.event_id, later.event_id]
    await holds(lambda: _count_is(receiver, 2), seconds=0.5, what="no duplicate delivery")


async def test_a_malformed_activity_is_dropped_and_the_next_flows(webhooks: Webhooks, receiver: Receiver,
                                                                  js: JetStreamContext) -> None:
    await webhooks.subscribe(receiver.url())
    await js.publish("activity.lot.created", b"\xff\xfe not protobuf")
    await js.publish("activity.lot.created", json.dumps({"type": "lot.created"}).encode())  # no organisation
    good = activity(webhooks.org)
    await js.publish("activity.lot.created", good.SerializeToString())
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Webhook-Id"] == good.event_id


async def _integration_event(js: JetStreamContext, org: str, integration_id: str, status: str, version: int) -> None:
    kind = {"suspended": "suspended", "active": "reactivated", "revoked": "revoked"}[status]
    event = events_pb2.IntegrationChanged(event_id=f"evt_{uuid.uuid4().hex}", kind=kind, org_id=org,
                                          integration_id=integration_id, status=status, version=version)
    await js.publish(f"trellis.integration.{kind}", event.SerializeToString())


async def _subscription_where(webhooks: Webhooks, sub_id: str, check: Callable[[pb.Subscription], bool]) -> pb.Subscription | None:
    subscription = await webhooks.subscription(sub_id)
    return subscription if check(subscription) else None


async def test_a_suspended_integration_gets_nothing_until_it_is_reactivated(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver) -> None:
    webhooks = await start_webhooks()
    nc = await nats.connect(webhooks.settings.nats_url)
    js = nc.jetstream()
    try:
        integration = f"int_{uuid.uuid4().hex[:10]}"
        edge = webhooks.as_actor("trellis-edge", "trellis", [EDGE_PERMISSION])  # the partner's own subscription
        owned = await webhooks.subscribe(receiver.url("/owned"), metadata=edge, org_id=webhooks.org, integration_id=integration)
        await webhooks.subscribe(receiver.url("/org-wide"))
        sub_id = owned.subscription.id
        await _integration_event(js, webhooks.org, integration, "suspended", 5)
        await eventually(lambda: _subscription_where(webhooks, sub_id, lambda s: s.integration_suspended))

        held = await webhooks.publish()
        [org_wide] = await receiver.wait_for(1)
        assert org_wide.path == "/org-wide"
        await holds(lambda: _count_is(receiver, 1), seconds=0.8, what="nothing for the suspended integration")

        await _integration_event(js, webhooks.org, integration, "active", 4)  # older: ignored
        await holds(lambda: _count_is(receiver, 1), seconds=0.5, what="a stale event changes nothing")
        await _integration_event(js, webhooks.org, integration, "active", 6)
        [_, resumed] = await receiver.wait_for(2)
        assert resumed.path == "/owned" and resumed.headers["X-Webhook-Id"] == held.event_id
    finally:
        await nc.close()


async def test_a_revoked_integrations_subscriptions_are_disabled_for_good(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver) -> None:
    webhooks = await start_webhooks(webhooks_retry_schedule_seconds=[0.5, 0.5, 0.5, 0.5])
    nc = await nats.connect(webhooks.settings.nats_url)
    js = nc.jetstream()
    try:
        integration = f"int_{uuid.uuid4().hex[:10]}"
        receiver.statuses = [500]
        edge = webhooks.as_actor("trellis-edge", "trellis", [EDGE_PERMISSION])  # the partner's own subscription
        owned = await webhooks.subscribe(receiver.url(), metadata=edge, org_id=webhooks.org, integration_id=integration)
        sub_id = owned.subscription.id
        await webhooks.publish()
        await receiver.wait_for(1)  # failed once; its retry is pending
        await _integration_event(js, webhooks.org, integration, "revoked", 9)
        disabled = await eventually(lambda: _subscription_where(
            webhooks, sub_id, lambda s: s.status == pb.SUBSCRIPTION_STATUS_DISABLED))
        assert disabled.status == pb.SUBSCRIPTION_STATUS_DISABLED
        [cancelled] = await webhooks.deliveries(sub_id)
        assert cancelled.status == pb.DELIVERY_STATUS_CANCELLED
        await webhooks.publish()
        await _integration_event(js, webhooks.org, integration, "active", 10)
        await holds(lambda: _count_is(receiver, 1), seconds=1.0, what="nothing after revocation")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await webhooks.stub.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await webhooks.subscribe(receiver.url(), metadata=edge, org_id=webhooks.org, integration_id=integration)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await nc.close()
