"""Subscription and delivery ids that are not ours (non-ASCII, NUL, spaces, line breaks, 100 kB)
get a clean NOT_FOUND or INVALID_ARGUMENT from every webhooks method that takes one, for an
administrator and for the edge acting for an integration, on SQLite and PostgreSQL, over a real
channel: never INTERNAL (`Invalid metadata`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit import errors
from services.kit.auth import EDGE_PERMISSION
from services.kit.rpc_errors import from_rpc_error
from tests.integration.webhooks.conftest import Webhooks
from tests.support.odd_ids import answered_or_refused, expected, odd_ids, refusal


def _calls(subscription: str, delivery: str, view: dict[str, str]) -> dict[str, object]:
    return {
        "GetSubscription": pb.GetSubscriptionRequest(subscription_id=subscription, **view),
        "UpdateSubscription": pb.UpdateSubscriptionRequest(subscription_id=subscription, update_mask=["description"],
                                                           description="new", **view),
        "PauseSubscription": pb.PauseSubscriptionRequest(subscription_id=subscription, **view),
        "ResumeSubscription": pb.ResumeSubscriptionRequest(subscription_id=subscription, **view),
        "DeleteSubscription": pb.DeleteSubscriptionRequest(subscription_id=subscription, **view),
        "RegenerateSecret": pb.RegenerateSecretRequest(subscription_id=subscription, **view),
        "SendTestDelivery": pb.SendTestDeliveryRequest(subscription_id=subscription, **view),
        "ListDeliveries": pb.ListDeliveriesRequest(subscription_id=subscription, **view),
        "ListAttempts": pb.ListAttemptsRequest(subscription_id=subscription, **view),
        "GetDelivery": pb.GetDeliveryRequest(delivery_id=delivery, **view),
        "Redeliver": pb.RedeliverRequest(delivery_id=delivery, **view),
    }


async def test_every_method_refuses_odd_ids_as_not_found(start_webhooks: Callable[..., Awaitable[Webhooks]],
                                                         database_url: str) -> None:
    webhooks = await start_webhooks(webhooks_database_url=database_url)
    edge = webhooks.as_actor("svc-edge", "org_platform", [EDGE_PERMISSION])
    as_edge = {"org_id": webhooks.org, "integration_id": "int_01jabc"}
    for label, odd in odd_ids("whk").items():
        delivery = odd.replace("whk_", "dlv_", 1)
        for who, metadata, view in (("admin", webhooks.admin, {}), ("edge", edge, as_edge)):
            for method, request in _calls(odd, delivery, view).items():
                error = await refusal(getattr(webhooks.stub, method)(request, metadata=metadata, timeout=20),
                                      what=f"{method} {who} {label}")
                assert error.code() in expected(odd), (method, who, label)
    error = await refusal(webhooks.stub.GetSubscription(pb.GetSubscriptionRequest(subscription_id="whk_é"),
                                                        metadata=webhooks.admin))
    refused = from_rpc_error(error)
    assert isinstance(refused, errors.NotFound) and refused.fields == {"subscription_id": "whk_é"}


async def test_odd_filters_and_views_are_refused_or_empty_never_a_server_error(
        start_webhooks: Callable[..., Awaitable[Webhooks]], database_url: str) -> None:
    webhooks = await start_webhooks(webhooks_database_url=database_url)
    edge = webhooks.as_actor("svc-edge", "org_platform", [EDGE_PERMISSION])
    for label, odd in odd_ids("int").items():
        for request, metadata in (
            (pb.ListSubscriptionsRequest(page_token=odd), webhooks.admin),
            (pb.ListSubscriptionsRequest(org_id=webhooks.org, integration_id=odd), edge),
            (pb.ListSubscriptionsRequest(org_id=odd, integration_id="int_01jabc"), edge),
        ):
            answer = await answered_or_refused(webhooks.stub.ListSubscriptions(request, metadata=metadata, timeout=20),
                                               what=f"ListSubscriptions {label}")
            assert answer is None or list(answer.subscriptions) == [], label
        for request in (pb.ListActivitiesRequest(page_token=odd), pb.ListActivitiesRequest(types=[odd])):
            await answered_or_refused(webhooks.stub.ListActivities(request, metadata=webhooks.admin, timeout=20),
                                      what=f"ListActivities {label}")


async def test_an_activity_time_no_datetime_holds_is_invalid_argument(webhooks: Webhooks) -> None:
    for seconds in (10**15, -10**15):
        error = await refusal(webhooks.stub.PublishActivity(pb.PublishActivityRequest(
            type="lot.created", data_json="{}", occurred_at=Timestamp(seconds=seconds)), metadata=webhooks.admin, timeout=20),
            frozenset({grpc.StatusCode.INVALID_ARGUMENT}))
        assert "occurred_at" in (error.details() or "")
