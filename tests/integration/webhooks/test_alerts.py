"""Telling people when something breaks: a subscription becoming Failing, and recovering, is an
operational event on NATS (`trellis.webhooks.alert.*`) and a `webhook.subscription_*` activity
that the organisation's other subscriptions receive (never the subscription it is about), all
against real HTTPS receivers, real NATS and the real service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import grpc
import nats
import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.observability.conftest import scrape, value
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

ALERTS = ["webhook.subscription_failing", "webhook.subscription_recovered"]


def _types(receiver: Receiver) -> list[str]:
    return [json.loads(r.body)["type"] for r in receiver.received]


async def test_failing_and_recovery_reach_the_other_subscriptions_and_nats_never_the_subscription_itself(
        webhooks: Webhooks, start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    broken, watcher, everything = await start_receiver(), await start_receiver(), await start_receiver()
    broken.behaviour = lambda _: (503, "down")
    # The broken one chose the alerts too: it must not hear about itself.
    failing = (await webhooks.subscribe(broken.url(), ["lot.created", *ALERTS])).subscription
    await webhooks.subscribe(watcher.url(), ALERTS)
    await webhooks.subscribe(everything.url(), ["*"])
    other_org = webhooks.as_actor("admin", f"org_{uuid.uuid4().hex[:12]}")
    elsewhere = await start_receiver()
    await webhooks.subscribe(elsewhere.url(), ALERTS, metadata=other_org)

    nc = await nats.connect(webhooks.settings.nats_url)
    heard: list[pb.SubscriptionAlert] = []

    async def on_alert(msg) -> None:  # type: ignore[no-untyped-def]
        heard.append(pb.SubscriptionAlert.FromString(msg.data))

    await nc.subscribe("trellis.webhooks.alert.>", cb=on_alert)
    try:
        await webhooks.publish("lot.created", '{"lot_id": "L-9"}')
        await eventually(lambda: _has(watcher, "webhook.subscription_failing"), timeout=20, what="the failing alert")
        [alert] = [json.loads(r.body) for r in watcher.received]
        assert alert["type"] == "webhook.subscription_failing" and alert["organisation_id"] == webhooks.org
        assert alert["sender"] == {"type": "system", "id": "webhooks"}
        data = alert["data"]
        assert (data["subscription_id"], data["endpoint_url"], data["status"]) == (failing.id, broken.url(), "failing")
        assert data["failed_event_type"] == "lot.created" and "503" in data["last_error"] and data["failing_since"]
        await eventually(lambda: _heard(heard, "subscription_failing"), what="the alert on NATS")
        assert heard[0].event_id == alert["id"] and heard[0].subscription_id == failing.id
        assert json.loads(heard[0].data_json) == data
        failing_gauge = "trellis_webhooks_failing_subscriptions"  # what deploy/k8s's alert rule reads
        assert value(await scrape(webhooks.service.metrics_port), failing_gauge) == 1

        broken.behaviour = None
        test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=failing.id),
                                                    metadata=webhooks.admin)
        assert test.subscription.status == pb.SUBSCRIPTION_STATUS_ACTIVE
        await eventually(lambda: _has(watcher, "webhook.subscription_recovered"), what="the recovered alert")
        recovered = json.loads(watcher.received[1].body)["data"]
        assert (recovered["subscription_id"], recovered["status"], recovered["queued_deliveries"]) == (failing.id, "active", 0)
        assert recovered["failing_since"] == data["failing_since"]
        assert value(await scrape(webhooks.service.metrics_port), failing_gauge) == 0
        await eventually(lambda: _heard(heard, "subscription_recovered"), what="the recovered alert on NATS")
        await eventually(lambda: _has(everything, "webhook.subscription_recovered"), what="* receives the alerts too")
        assert _types(everything) == ["lot.created", *ALERTS]
    finally:
        await nc.close()
    assert not any(t.startswith("webhook.subscription") for t in _types(broken))  # never about itself
    assert elsewhere.received == []  # another organisation hears nothing


async def _has(receiver: Receiver, type_: str) -> bool:
    return type_ in _types(receiver)


async def _heard(heard: list[pb.SubscriptionAlert], kind: str) -> bool:
    return any(a.kind == kind for a in heard)


@pytest.mark.parametrize("type_", ALERTS)
async def test_nobody_can_publish_an_alert(webhooks: Webhooks, type_: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.publish(type_, "{}")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "webhook.*" in (refused.value.details() or "")
