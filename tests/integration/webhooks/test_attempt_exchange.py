"""What each attempt sent and what came back, against real HTTPS receivers: the headers as the
receiver got them (signature included), the answer's status, headers and first 4 KiB, bounded,
and any secret a receiver echoes masked. Read through GetDelivery and GetAttempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Received, Receiver
from tests.support.waiting import eventually

MASK = "[masked]"


async def _finished(webhooks: Webhooks, subscription_id: str) -> pb.Delivery:
    async def done() -> pb.Delivery | None:
        found = [d for d in await webhooks.deliveries(subscription_id) if d.status != pb.DELIVERY_STATUS_PENDING]
        return found[0] if found else None
    return await eventually(done, what="a finished delivery")


async def _only_attempt(webhooks: Webhooks, subscription_id: str) -> pb.Attempt:
    delivery = await _finished(webhooks, subscription_id)
    shown = await webhooks.stub.GetDelivery(pb.GetDeliveryRequest(delivery_id=delivery.id), metadata=webhooks.admin)
    [attempt] = shown.attempts
    return attempt


async def test_an_attempt_keeps_the_headers_the_receiver_got_and_what_it_answered(
        webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.answer_headers = {"X-Receiver-Trace": "rx-42"}
    receiver.behaviour = lambda _: (202, "queued " + "y" * 6000)
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    attempt = await _only_attempt(webhooks, created.subscription.id)

    sent = {h.name: h.value for h in attempt.exchange.request_headers}
    for name in ("Content-Type", "User-Agent", "X-Webhook-Id", "X-Webhook-Event", "X-Webhook-Timestamp",
                 "X-Webhook-Signature", "Host", "Content-Length"):
        assert sent[name] == got.headers[name], name
    answered = {h.name: h.value for h in attempt.exchange.response_headers}
    assert attempt.status_code == 202 and answered["X-Receiver-Trace"] == "rx-42"
    assert attempt.exchange.response_body == ("queued " + "y" * 6000)[:4096]
    assert attempt.exchange.response_body_truncated and attempt.exchange.headers_omitted == 0
    assert len(attempt.response_body) == 2048  # the log's own field keeps its first 2 KB

    one = await webhooks.stub.GetAttempt(pb.GetAttemptRequest(attempt_id=attempt.id), metadata=webhooks.admin)
    assert one.exchange == attempt.exchange
    # Lists stay light: the exchange is read one attempt (or delivery) at a time.
    [listed] = await webhooks.attempts(created.subscription.id)
    assert listed.id == attempt.id and not listed.HasField("exchange")


async def test_a_secret_the_receiver_echoes_is_masked_in_the_body_and_headers(webhooks: Webhooks, receiver: Receiver) -> None:
    secrets: list[str] = []

    def echo(_: Received) -> tuple[int, str]:
        return 400, f"bad secret {secrets[0]}! key part {secrets[0].removeprefix('whsec_')}"

    receiver.behaviour = echo
    created = await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    secrets.append(created.signing_secret)
    receiver.answer_headers = {"X-Echo": f"got {created.signing_secret}"}
    await webhooks.publish()
    await receiver.wait_for(1)
    attempt = await _only_attempt(webhooks, created.subscription.id)
    key = created.signing_secret.removeprefix("whsec_")
    assert attempt.exchange.response_body == f"bad secret {MASK}! key part {MASK}"
    assert attempt.response_body == attempt.exchange.response_body
    assert {h.name: h.value for h in attempt.exchange.response_headers}["X-Echo"] == f"got {MASK}"
    one = await webhooks.stub.GetAttempt(pb.GetAttemptRequest(attempt_id=attempt.id), metadata=webhooks.admin)
    assert key not in str(one) and created.signing_secret not in str(one)
    # The signature is no secret: it is kept as sent.
    assert {h.name for h in attempt.exchange.request_headers} >= {"webhook-signature", "webhook-id"}


async def test_the_answer_headers_kept_are_bounded_in_count_and_size(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.answer_headers = {**{f"X-Many-{i:03d}": "v" for i in range(70)}, "X-Huge": "h" * 5000}
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    await receiver.wait_for(1)
    exchange = (await _only_attempt(webhooks, created.subscription.id)).exchange
    assert len(exchange.response_headers) == 50 and exchange.headers_omitted >= 20
    assert all(len(h.value) <= 1024 for h in exchange.response_headers)
    size = sum(len(h.name.encode()) + len(h.value.encode()) for h in exchange.response_headers)
    assert size <= 8192


async def test_a_connection_that_fails_keeps_what_was_sent_and_no_answer(webhooks: Webhooks, receiver: Receiver) -> None:
    url = receiver.url()
    await receiver.stop()  # nothing listens on its port now: connection refused
    created = await webhooks.subscribe(url)
    await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=created.subscription.id),
                                         metadata=webhooks.admin)
    [attempt] = await webhooks.attempts(created.subscription.id)
    one = await webhooks.stub.GetAttempt(pb.GetAttemptRequest(attempt_id=attempt.id), metadata=webhooks.admin)
    assert one.error == pb.ATTEMPT_ERROR_CONNECTION_REFUSED
    names = {h.name for h in one.exchange.request_headers}
    assert {"X-Webhook-Signature", "X-Webhook-Event"} <= names
    assert not one.exchange.response_headers and one.exchange.response_body == ""


async def test_with_attempt_details_off_nothing_more_is_kept(start_webhooks: Callable[..., Awaitable[Webhooks]],
                                                            receiver: Receiver) -> None:
    webhooks = await start_webhooks(webhooks_record_attempt_details=False)
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    await receiver.wait_for(1)
    attempt = await _only_attempt(webhooks, created.subscription.id)
    assert attempt.status_code == 200 and attempt.response_body == "ok" and not attempt.HasField("exchange")


async def test_another_organisations_attempt_is_not_found(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    attempt = await _only_attempt(webhooks, created.subscription.id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.GetAttempt(pb.GetAttemptRequest(attempt_id=attempt.id),
                                       metadata=webhooks.as_actor("admin", "org_someone_else"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
