"""The webhook.subscription_* alerts respect who owns what: an alert about a partner's
subscription reaches that partner's other subscriptions and the administrators', never another
partner's, and a partner's activity list never shows alerts."""

from __future__ import annotations

import json

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.edge_webhooks.conftest import Stack
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

ALERTS = ["webhook.subscription_failing", "webhook.subscription_recovered"]


async def _types(receiver: Receiver) -> list[str]:
    return [json.loads(r.body)["type"] for r in receiver.received]


async def test_an_alert_about_a_partners_subscription_reaches_only_that_partner_and_the_administrators(
        stack: Stack, start_receiver) -> None:  # type: ignore[no-untyped-def]
    broken, own, admins, other = [await start_receiver() for _ in range(4)]
    broken.behaviour = lambda _: (503, "down")
    partner, stranger = await stack.partner(), await stack.partner()
    status, _, failing = await partner("POST", "/v1/webhooks", json={"endpoint_url": broken.url(), "activity_types": ["lot.created"]})
    assert status == 201, failing
    status, _, _ = await partner("POST", "/v1/webhooks", json={"endpoint_url": own.url(), "activity_types": ALERTS})
    assert status == 201
    status, _, _ = await stranger("POST", "/v1/webhooks", json={"endpoint_url": other.url(), "activity_types": ["*"]})
    assert status == 201
    await stack.webhooks.stub.CreateSubscription(pb.CreateSubscriptionRequest(url=admins.url(), activity_types=ALERTS),
                                                 metadata=stack.webhooks.admin)

    await stack.webhooks.publish("lot.created", '{"lot_id": "L-1"}')
    await eventually(lambda: _got(own, "webhook.subscription_failing"), timeout=20, what="the partner's own alert")
    await eventually(lambda: _got(admins, "webhook.subscription_failing"), what="the administrators' alert")
    assert json.loads(own.received[0].body)["data"]["subscription_id"] == failing["id"]
    assert await _types(other) == ["lot.created"]  # the other partner's * gets the event, not the alert
    status, _, listed = await stranger("GET", "/v1/activities")
    assert status == 200 and [a["type"] for a in listed["activities"]] == ["lot.created"]


async def _got(receiver: Receiver, type_: str) -> bool:
    return type_ in await _types(receiver)
