"""Subscriptions over real gRPC: validation, who sees what, the secret shown once, events."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Awaitable, Callable

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import EDGE_PERMISSION
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

URL = "https://erp.example.com/hooks/growr"


async def _code(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value.code()


async def test_create_returns_the_secret_once_and_stores_it_only_sealed(webhooks: Webhooks) -> None:
    created = await webhooks.subscribe(URL, ["lot.created", "harvest.recorded"], description="ERP lots")
    secret = created.signing_secret
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    s = created.subscription
    assert s.status == pb.SUBSCRIPTION_STATUS_ACTIVE and s.signature_scheme == pb.SIGNATURE_SCHEME_SPEC
    assert list(s.activity_types) == ["harvest.recorded", "lot.created"] and s.description == "ERP lots"
    assert s.org_id == webhooks.org and s.created_by == "admin" and s.integration_id == ""
    shown = await webhooks.subscription(s.id)
    assert secret not in str(shown) and shown.url == URL
    database = webhooks.settings.database_url("webhooks").split("///", 1)[1]
    with sqlite3.connect(database) as db:
        dump = "\n".join(db.iterdump())
        rows = db.execute("select secret from subscriptions").fetchall()
    assert secret not in dump and secret.encode() not in rows[0][0]
    assert secret[6:] not in dump


async def test_a_url_that_is_not_https_is_refused_with_a_clear_error(webhooks: Webhooks) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.subscribe("http://erp.example.com/hooks")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "HTTPS" in (refused.value.details() or "")


async def test_unknown_activity_types_are_refused_with_the_known_ones(webhooks: Webhooks) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.subscribe(URL, ["lot.created", "lot.vanished"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "lot.vanished" in details and "capa.opened" in details and "final_product_weights.recorded" in details


async def test_the_catalogue_lists_the_25_types_and_the_two_alerts(webhooks: Webhooks) -> None:
    response = await webhooks.stub.ListActivityTypes(pb.ListActivityTypesRequest(), metadata=webhooks.admin)
    assert len(response.types) == 27  # the spec's 25 and the two webhook.subscription_* alerts
    assert {"lot.created", "order.status_changed", "capa.opened", "final_product_weights.recorded"} <= {t.id for t in response.types}


async def test_star_receives_current_and_future_types(webhooks: Webhooks, start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    everything, lots = await start_receiver(), await start_receiver()
    await webhooks.subscribe(everything.url(), ["*"])
    await webhooks.subscribe(lots.url(), ["lot.created"])
    future = await webhooks.publish("plant.moved")
    lot = await webhooks.publish("lot.created")
    got = await everything.wait_for(2)
    assert {r.headers["X-Webhook-Id"] for r in got} == {future.event_id, lot.event_id}
    [only] = await lots.wait_for(1)
    assert only.headers["X-Webhook-Id"] == lot.event_id


async def test_another_organisations_subscription_is_not_found(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    await webhooks.publish()
    [delivery] = await eventually(lambda: _some(webhooks.deliveries(sub_id)))
    other = webhooks.as_actor("admin", "org_elsewhere_" + webhooks.org)
    stub = webhooks.stub
    for call in (
        stub.GetDelivery(pb.GetDeliveryRequest(delivery_id=delivery.id), metadata=other),
        stub.Redeliver(pb.RedeliverRequest(delivery_id=delivery.id), metadata=other),
        stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id=sub_id), metadata=other),
        stub.UpdateSubscription(pb.UpdateSubscriptionRequest(subscription_id=sub_id, update_mask=["description"]), metadata=other),
        stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=other),
        stub.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=sub_id), metadata=other),
        stub.RegenerateSecret(pb.RegenerateSecretRequest(subscription_id=sub_id), metadata=other),
        stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=sub_id), metadata=other),
        stub.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=sub_id), metadata=other),
        stub.ListAttempts(pb.ListAttemptsRequest(subscription_id=sub_id), metadata=other),
        stub.DeleteSubscription(pb.DeleteSubscriptionRequest(subscription_id=sub_id), metadata=other),
    ):
        assert await _code(call) == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=other)
    assert list(listed.subscriptions) == []
    their_log = await stub.ListAttempts(pb.ListAttemptsRequest(event_id=delivery.event_id), metadata=other)
    assert list(their_log.attempts) == []
    assert (await webhooks.subscription(sub_id)).status == pb.SUBSCRIPTION_STATUS_ACTIVE


async def _some(call: Awaitable[list]) -> list | None:
    found = await call
    return found or None


async def test_administration_needs_the_permission(webhooks: Webhooks) -> None:
    viewer = webhooks.as_actor("viewer", webhooks.org, ["qa_access"])
    assert await _code(webhooks.subscribe(URL, metadata=viewer)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=viewer)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(webhooks.publish(metadata=viewer)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest())) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_partner_sees_and_manages_only_its_own_integrations_subscriptions(webhooks: Webhooks) -> None:
    edge = webhooks.as_actor("trellis-edge", "trellis", [EDGE_PERMISSION])
    mine = {"org_id": webhooks.org, "integration_id": "int_partner_a"}
    theirs = {"org_id": webhooks.org, "integration_id": "int_partner_b"}
    admins = await webhooks.subscribe(URL)
    a = await webhooks.subscribe(URL + "/a", metadata=edge, **mine)
    b = await webhooks.subscribe(URL + "/b", metadata=edge, **theirs)
    assert a.subscription.integration_id == "int_partner_a" and a.signing_secret
    assert a.subscription.created_by == "integration:int_partner_a"

    listed = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(**mine), metadata=edge)
    assert [s.id for s in listed.subscriptions] == [a.subscription.id]
    for other in (admins, b):
        assert await _code(webhooks.stub.GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=other.subscription.id, **mine), metadata=edge)) == grpc.StatusCode.NOT_FOUND
        assert await _code(webhooks.stub.DeleteSubscription(
            pb.DeleteSubscriptionRequest(subscription_id=other.subscription.id, **mine), metadata=edge)) == grpc.StatusCode.NOT_FOUND
    paused = await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=a.subscription.id, **mine),
                                                   metadata=edge)
    assert paused.status == pb.SUBSCRIPTION_STATUS_PAUSED
    assert await _code(webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=edge)) == grpc.StatusCode.INVALID_ARGUMENT

    everything = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=webhooks.admin)
    assert {s.id: s.integration_id for s in everything.subscriptions} == {
        admins.subscription.id: "", a.subscription.id: "int_partner_a", b.subscription.id: "int_partner_b"}
    narrowed = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(integration_id="int_partner_b"),
                                                     metadata=webhooks.admin)
    assert [s.id for s in narrowed.subscriptions] == [b.subscription.id]
    assert await _code(webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(org_id="org_other"),
                                                       metadata=webhooks.admin)) == grpc.StatusCode.PERMISSION_DENIED


async def test_lists_are_paginated(webhooks: Webhooks) -> None:
    created = [(await webhooks.subscribe(f"{URL}/{n}")).subscription.id for n in range(5)]
    seen: list[str] = []
    request = pb.ListSubscriptionsRequest(page_size=2)
    while True:
        page = await webhooks.stub.ListSubscriptions(request, metadata=webhooks.admin)
        assert len(page.subscriptions) <= 2
        seen += [s.id for s in page.subscriptions]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == created


async def test_activities_are_listed_newest_first_with_a_cursor(webhooks: Webhooks) -> None:
    published = [(await webhooks.publish(t, json.dumps({"n": n}))).event_id
                 for n, t in enumerate(["lot.created", "order.created", "lot.created", "capa.opened", "lot.created"])]
    seen: list[pb.Activity] = []
    request = pb.ListActivitiesRequest(page_size=2)
    while True:
        page = await webhooks.stub.ListActivities(request, metadata=webhooks.admin)
        seen += page.activities
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert [a.event_id for a in seen] == list(reversed(published))
    assert json.loads(seen[-1].data_json) == {"n": 0} and seen[-1].sender_type == "user"
    lots = await webhooks.stub.ListActivities(pb.ListActivitiesRequest(types=["lot.created"]), metadata=webhooks.admin)
    assert [a.event_id for a in lots.activities] == [published[4], published[2], published[0]]
    elsewhere = await webhooks.stub.ListActivities(pb.ListActivitiesRequest(), metadata=webhooks.as_actor("admin", "org_x"))
    assert list(elsewhere.activities) == []


async def test_every_change_is_audited_and_announced_without_the_secret(webhooks: Webhooks) -> None:
    nc = await nats.connect(webhooks.settings.nats_url)
    heard: list[tuple[str, bytes]] = []

    async def keep(msg) -> None:  # type: ignore[no-untyped-def]
        heard.append((msg.subject, msg.data))

    await nc.subscribe("trellis.audit.webhooks.>", cb=keep)
    await nc.subscribe("trellis.subscription.>", cb=keep)
    try:
        created = await webhooks.subscribe(URL)
        sub_id = created.subscription.id
        stub, md = webhooks.stub, webhooks.admin
        await stub.UpdateSubscription(pb.UpdateSubscriptionRequest(subscription_id=sub_id, update_mask=["description"],
                                                                   description="new words"), metadata=md)
        await stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=md)
        await stub.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=sub_id), metadata=md)
        regenerated = await stub.RegenerateSecret(pb.RegenerateSecretRequest(subscription_id=sub_id), metadata=md)
        await stub.DeleteSubscription(pb.DeleteSubscriptionRequest(subscription_id=sub_id), metadata=md)
        kinds = ["created", "updated", "paused", "resumed", "secret_regenerated", "deleted"]

        async def all_heard() -> bool:
            return len(heard) >= 2 * len(kinds)

        await eventually(all_heard)
    finally:
        await nc.close()
    audits = [events_pb2.AuditEvent.FromString(data) for subject, data in heard if subject.startswith("trellis.audit.")]
    assert [a.action for a in audits] == [f"subscription.{k}" for k in kinds]
    assert all(a.service == "webhooks" and a.object_id == sub_id and a.org_id == webhooks.org and a.actor_id == "admin"
               for a in audits)
    assert json.loads(audits[1].before_json)["description"] == "" and json.loads(audits[1].after_json)["description"] == "new words"
    changes = [pb.SubscriptionChanged.FromString(data) for subject, data in heard if subject.startswith("trellis.subscription.")]
    assert [c.kind for c in changes] == kinds
    everything = b"".join(data for _, data in heard)
    for secret in (created.signing_secret, regenerated.signing_secret):
        assert secret.encode() not in everything and secret[6:].encode() not in everything


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_malformed_requests_are_invalid_arguments(webhooks: Webhooks) -> None:
    created = await webhooks.subscribe(URL)
    stub, md = webhooks.stub, webhooks.admin
    for call in (
        stub.UpdateSubscription(pb.UpdateSubscriptionRequest(subscription_id=created.subscription.id, update_mask=["secret"]), metadata=md),
        stub.UpdateSubscription(pb.UpdateSubscriptionRequest(subscription_id=created.subscription.id, update_mask=["url"],
                                                             url="http://plain.example.com"), metadata=md),
        stub.ListSubscriptions(pb.ListSubscriptionsRequest(page_token="garbage!"), metadata=md),
        # Well-formed tokens of the wrong kind: another list's, or crafted.
        stub.ListActivities(pb.ListActivitiesRequest(page_token=_token(["2026-01-01T00:00:00+00:00", "x"])), metadata=md),
        stub.ListActivities(pb.ListActivitiesRequest(page_token=_token([[1], "x"])), metadata=md),
        stub.ListActivities(pb.ListActivitiesRequest(page_token=_token([10**30, "x"])), metadata=md),
        stub.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=created.subscription.id,
                                                     page_token=_token(["abc", "x"])), metadata=md),
        stub.ListSubscriptions(pb.ListSubscriptionsRequest(page_token=_token([7, "x"])), metadata=md),
        stub.ListSubscriptions(pb.ListSubscriptionsRequest(page_token=_token(["2026-01-01T00:00:00", "x"])), metadata=md),
        webhooks.publish("Not A Type"),
        webhooks.publish("lot.created", data_json="{not json"),
    ):
        assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="whk_nope"), metadata=md)) == grpc.StatusCode.NOT_FOUND


async def test_enum_and_time_values_outside_the_contract_are_invalid_argument_not_internal(webhooks: Webhooks) -> None:
    created = await webhooks.subscribe(URL)
    sid = created.subscription.id
    calls = [
        webhooks.stub.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=sid, outcome=9), metadata=webhooks.admin),
        webhooks.stub.ListAttempts(pb.ListAttemptsRequest(subscription_id=sid, outcome=9), metadata=webhooks.admin),
        # On update the scheme must be named: "unspecified" would silently become the spec's.
        webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
            subscription_id=sid, update_mask=["signature_scheme"], signature_scheme=pb.SIGNATURE_SCHEME_UNSPECIFIED),
            metadata=webhooks.admin),
        webhooks.stub.PublishActivity(pb.PublishActivityRequest(
            type="lot.created", occurred_at=Timestamp(seconds=253402300800)), metadata=webhooks.admin),
    ]
    for call in calls:
        assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT
    standard = await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=sid, update_mask=["signature_scheme"], signature_scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS),
        metadata=webhooks.admin)
    assert standard.signature_scheme == pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS
