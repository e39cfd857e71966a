"""Custom headers per subscription against real HTTPS receivers: every delivery carries them,
their values are sealed at rest and never shown back (a name and a hint), names that would
break a delivery or its signature are refused, and a refused request writes nothing."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

KEY = "gw-key-0123456789abcdef"


def _headers(**values: str) -> list[pb.CustomHeader]:
    return [pb.CustomHeader(name=name.replace("_", "-"), value=value) for name, value in values.items()]


async def _subscription_count(webhooks: Webhooks) -> int:
    return len((await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=webhooks.admin)).subscriptions)


async def test_every_delivery_sends_the_custom_headers_and_they_are_shown_back_only_as_hints(
        webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), custom_headers=_headers(X_Api_Key=KEY, X_Tenant="north"))
    hints = {h.name: h.hint for h in created.subscription.custom_headers}
    assert hints == {"X-Api-Key": f"…cdef ({len(KEY)} characters)", "X-Tenant": "(5 characters)"}
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Api-Key"] == KEY and got.headers["X-Tenant"] == "north"
    assert got.headers["X-Webhook-Signature"].startswith("sha256=")

    shown = await webhooks.subscription(created.subscription.id)
    assert {h.name: h.hint for h in shown.custom_headers} == hints and KEY not in str(shown)
    # The attempt's record of what it sent masks the values, and so does an echo of them.
    test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=created.subscription.id),
                                                metadata=webhooks.admin)
    one = await webhooks.stub.GetAttempt(pb.GetAttemptRequest(attempt_id=test.attempt.id), metadata=webhooks.admin)
    sent = {h.name: h.value for h in one.exchange.request_headers}
    assert sent["X-Api-Key"] == "[masked]" and sent["X-Tenant"] == "[masked]" and KEY not in str(one)
    assert (await receiver.wait_for(2))[1].headers["X-Api-Key"] == KEY

    database = webhooks.settings.database_url("webhooks").split("///", 1)[1]
    with sqlite3.connect(database) as db:
        plain, sealed = db.execute("select custom_headers, custom_headers_sealed from subscriptions where id = ?",
                                   (created.subscription.id,)).fetchone()
    assert KEY not in plain and KEY.encode() not in sealed and sealed.startswith(b"TE1")


async def test_a_receiver_echoing_a_custom_header_value_sees_it_masked_in_the_log(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.behaviour = lambda r: (401, f"key {r.headers['X-Api-Key']} refused")
    created = await webhooks.subscribe(receiver.url(), custom_headers=_headers(X_Api_Key=KEY))
    test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=created.subscription.id),
                                                metadata=webhooks.admin)
    assert test.attempt.response_body == "key [masked] refused"
    one = await webhooks.stub.GetAttempt(pb.GetAttemptRequest(attempt_id=test.attempt.id), metadata=webhooks.admin)
    assert one.exchange.response_body == "key [masked] refused" and KEY not in str(one)


@pytest.mark.parametrize("name, value, says", [
    ("Host", "evil.test", "Host cannot be set"),
    ("content-length", "1", "content-length cannot be set"),
    ("Content-Type", "text/plain", "Content-Type cannot be set"),
    ("Transfer-Encoding", "chunked", "Transfer-Encoding cannot be set"),
    ("X-Webhook-Signature", "sha256=00", "X-Webhook-Signature cannot be set"),
    ("X-Webhook-Timestamp", "1", "X-Webhook-Timestamp cannot be set"),
    ("webhook-signature", "v1,AA==", "webhook-signature cannot be set"),
    ("webhook-timestamp", "1", "webhook-timestamp cannot be set"),
    ("Connection", "close", "Connection cannot be set"),
    ("Upgrade", "h2c", "Upgrade cannot be set"),
    ("X Api Key", "v", "is not a header name"),
    ("X-Api-Key:", "v", "is not a header name"),
    ("X-Split", "a\r\nX-Injected: 1", "line break"),
    ("X-Empty", "", "is empty"),
    ("X-Long", "v" * 1025, "longer than 1024"),
    ("X-" + "n" * 63, "v", "longer than 64"),
])
async def test_a_header_that_would_break_a_delivery_is_refused_and_nothing_is_written(
        webhooks: Webhooks, receiver: Receiver, name: str, value: str, says: str) -> None:
    before = await _subscription_count(webhooks)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.subscribe(receiver.url(), custom_headers=[pb.CustomHeader(name=name, value=value)])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in refused.value.details()
    assert await _subscription_count(webhooks) == before


async def test_header_count_duplicates_and_total_size_are_bounded(webhooks: Webhooks, receiver: Receiver) -> None:
    cases = [
        ([pb.CustomHeader(name=f"X-H{i}", value="v") for i in range(21)], "at most 20 custom headers"),
        ([pb.CustomHeader(name="X-Api-Key", value="a"), pb.CustomHeader(name="x-api-key", value="b")], "given twice"),
        ([pb.CustomHeader(name=f"X-Big{i}", value="v" * 1000) for i in range(9)], "exceed 8192 bytes"),
    ]
    for headers, says in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await webhooks.subscribe(receiver.url(), custom_headers=headers)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in refused.value.details(), says
    assert await _subscription_count(webhooks) == 0


async def test_an_update_replaces_the_set_and_a_refused_update_changes_nothing(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), custom_headers=_headers(X_Api_Key=KEY))
    sid = created.subscription.id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
            subscription_id=sid, update_mask=["custom_headers", "description"], description="changed",
            custom_headers=_headers(X_Api_Key="new-key-000000", Host="x")), metadata=webhooks.admin)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unchanged = await webhooks.subscription(sid)
    assert unchanged.description == "" and unchanged.version == created.subscription.version
    await webhooks.publish()
    assert (await receiver.wait_for(1))[0].headers["X-Api-Key"] == KEY

    updated = await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=sid, update_mask=["custom_headers"], custom_headers=_headers(X_Other="other-value-1234")),
        metadata=webhooks.admin)
    assert [h.name for h in updated.custom_headers] == ["X-Other"]
    await webhooks.publish()
    [_, second] = await receiver.wait_for(2)
    assert second.headers["X-Other"] == "other-value-1234" and "X-Api-Key" not in second.headers

    cleared = await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=sid, update_mask=["custom_headers"]), metadata=webhooks.admin)
    assert not cleared.custom_headers
    await webhooks.publish()
    third = (await receiver.wait_for(3))[2]
    assert "X-Other" not in third.headers

    async def delivered() -> bool:
        return all(d.status == pb.DELIVERY_STATUS_SUCCEEDED for d in await webhooks.deliveries(sid))
    await eventually(delivered)
