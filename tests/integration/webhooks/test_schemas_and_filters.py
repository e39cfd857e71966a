"""Choosing what to receive: every activity type's `data` has a JSON Schema, served with the
types; PublishActivity refuses data that does not fit (naming the field), an activity on NATS
that does not fit is delivered all the same and counted; a subscription's JMESPath filter is
checked when saved, and an event it does not pass is a Filtered delivery, never sent."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.rpc_errors import from_rpc_error
from services.webhooks.domain.model import KNOWN_TYPES
from tests.integration.observability.conftest import scrape, value
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.helpers import holds
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

NONCONFORMING = "trellis_webhooks_nonconforming_activities_total"


def error_fields(error: grpc.aio.AioRpcError) -> dict[str, object]:
    return dict(from_rpc_error(error).fields)


async def refused(call: object, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_every_activity_type_comes_with_the_json_schema_of_its_data(webhooks: Webhooks) -> None:
    types = (await webhooks.stub.ListActivityTypes(pb.ListActivityTypesRequest(), metadata=webhooks.admin)).types
    assert {t.id for t in types} == KNOWN_TYPES
    lot = json.loads(next(t.schema_json for t in types if t.id == "lot.created"))
    assert lot["type"] == "object" and lot["properties"]["lot_id"]["type"] == "string"
    assert all(json.loads(t.schema_json)["$schema"].endswith("2020-12/schema") for t in types)


async def test_publish_refuses_data_that_does_not_fit_naming_the_field_and_stores_nothing(
    webhooks: Webhooks, receiver: Receiver,
) -> None:
    created = await webhooks.subscribe(receiver.url(), ["recall.initiated"])
    error = await refused(webhooks.publish("recall.initiated", json.dumps({"recall_id": "R-1", "lot_ids": ["L-1", 7]})))
    assert "data.lot_ids[1]" in (error.details() or "")
    assert error_fields(error).get("field") == "data.lot_ids[1]"
    await refused(webhooks.publish("recall.initiated", "[1, 2]"))  # data is an object
    assert await webhooks.deliveries(created.subscription.id) == []
    listed = await webhooks.stub.ListActivities(pb.ListActivitiesRequest(types=["recall.initiated"]), metadata=webhooks.admin)
    assert list(listed.activities) == []

    accepted = await webhooks.publish("recall.initiated", json.dumps({"recall_id": "R-1", "lot_ids": ["L-1"], "extra": 1}))
    assert accepted.deliveries == 1  # fields beyond the schema's are kept, as future fields would be


async def test_an_activity_on_nats_that_does_not_fit_is_delivered_and_counted(webhooks: Webhooks, receiver: Receiver) -> None:
    await webhooks.subscribe(receiver.url(), ["lot.created"])
    port = webhooks.service.metrics_port
    before = value(await scrape(port), NONCONFORMING, type="lot.created")
    occurred = Timestamp()
    occurred.FromDatetime(dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.timezone.utc))
    event = events_pb2.ActivityEvent(event_id=f"evt_{uuid.uuid4().hex}", occurred_at=occurred, type="lot.created",
                                     org_id=webhooks.org, sender_type="system", data_json=json.dumps({"lot_id": 42}))
    nc = await nats.connect(webhooks.settings.nats_url)
    try:
        await nc.jetstream().publish("activity.lot.created", event.SerializeToString())
    finally:
        await nc.close()
    [got] = await receiver.wait_for(1)
    assert json.loads(got.body)["data"] == {"lot_id": 42}

    async def counted() -> bool:
        return value(await scrape(port), NONCONFORMING, type="lot.created") == before + 1

    await eventually(counted, what="the nonconforming activity counted")


async def test_a_filter_sends_only_the_events_it_passes_and_records_the_others_as_filtered(
    webhooks: Webhooks, receiver: Receiver,
) -> None:
    created = await webhooks.subscribe(receiver.url(), ["lot.created"], filter="data.facility_id == 'fac_north'")
    sid = created.subscription.id
    assert created.subscription.filter == "data.facility_id == 'fac_north'"

    skipped = await webhooks.publish(data_json=json.dumps({"lot_id": "L-1", "facility_id": "fac_south"}))
    assert (skipped.deliveries, skipped.filtered) == (0, 1)
    sent = await webhooks.publish(data_json=json.dumps({"lot_id": "L-2", "facility_id": "fac_north"}))
    assert (sent.deliveries, sent.filtered) == (1, 0)

    [got] = await receiver.wait_for(1)
    assert json.loads(got.body)["id"] == sent.event_id
    await holds(lambda: _count_is(receiver, 1), seconds=0.5, what="the filtered event is never sent")
    [filtered] = await webhooks.deliveries(sid, outcome=pb.OUTCOME_FILTERED)
    assert filtered.event_id == skipped.event_id and filtered.status == pb.DELIVERY_STATUS_FILTERED
    assert filtered.attempts == 0 and "filter" in filtered.last_error_detail
    assert [a.event_id for a in await webhooks.attempts(sid)] == [sent.event_id]
    await refused(webhooks.stub.Redeliver(pb.RedeliverRequest(delivery_id=filtered.id), metadata=webhooks.admin),
                  grpc.StatusCode.FAILED_PRECONDITION)


async def _count_is(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) == count


async def test_a_filter_that_fails_on_an_event_does_not_pass_it(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), ["lot.created"], filter="contains(data.tags, 'organic')")
    accepted = await webhooks.publish(data_json=json.dumps({"lot_id": "L-1"}))  # no tags: contains(null, …) fails
    assert accepted.filtered == 1
    [filtered] = await webhooks.deliveries(created.subscription.id)
    assert filtered.status == pb.DELIVERY_STATUS_FILTERED and "failed on this event" in filtered.last_error_detail


@pytest.mark.parametrize("expression", [
    "data.[",                                   # does not compile
    "data.lot_id == '" + "x" * 1100 + "'",     # over 1024 characters
    "[@, @] | [@, @] | [@, @] | [@, @] | [@, @]",  # builds values 32 times the event's size
])
async def test_a_filter_that_does_not_compile_or_is_out_of_bounds_is_refused_naming_filter(
    webhooks: Webhooks, receiver: Receiver, expression: str,
) -> None:
    error = await refused(webhooks.subscribe(receiver.url(), filter=expression))
    assert error_fields(error).get("field") == "filter"
    listed = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=webhooks.admin)
    assert list(listed.subscriptions) == []


async def test_a_filter_is_set_changed_and_removed_by_update(webhooks: Webhooks, receiver: Receiver) -> None:
    sid = (await webhooks.subscribe(receiver.url())).subscription.id

    async def update(expression: str) -> pb.Subscription:
        return await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
            subscription_id=sid, update_mask=["filter"], filter=expression), metadata=webhooks.admin)

    assert (await update("data.quantity > `100`")).filter == "data.quantity > `100`"
    assert (await webhooks.publish(data_json='{"quantity": 5}')).filtered == 1
    assert (await webhooks.publish(data_json='{"quantity": 500}')).deliveries == 1
    error = await refused(update("data.quantity >"))
    assert error_fields(error).get("field") == "filter"
    assert (await webhooks.subscription(sid)).filter == "data.quantity > `100`"  # the refused one changed nothing
    assert (await update("")).filter == ""
    assert (await webhooks.publish(data_json='{"quantity": 5}')).deliveries == 1


async def test_another_organisations_filtered_delivery_is_not_found(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), filter="data.facility_id == 'x'")
    await webhooks.publish()
    [filtered] = await webhooks.deliveries(created.subscription.id)
    stranger = webhooks.as_actor("mallory", f"org_{uuid.uuid4().hex[:8]}")
    await refused(webhooks.stub.GetDelivery(pb.GetDeliveryRequest(delivery_id=filtered.id), metadata=stranger),
                  grpc.StatusCode.NOT_FOUND)
