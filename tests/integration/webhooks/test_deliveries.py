"""Deliveries end to end: real HTTPS receivers on loopback, the real service, real gRPC.

Signatures are checked with the receiver sample of docs/receivers.md (written from the spec's
recipe alone) and with the `standardwebhooks` reference library."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.webhooks.conftest import FAST_SCHEDULE, Webhooks
from tests.integration.webhooks.helpers import code_blocks, holds
from tests.integration.webhooks.receiver import Received, Receiver
from tests.support.waiting import eventually


def docs_receiver() -> dict[str, object]:
    """The Python sample of docs/receivers.md, run as printed."""
    [sample] = [block for block in code_blocks("python") if "def verify_webhook" in block]
    namespace: dict[str, object] = {}
    exec(compile(sample, "docs/receivers.md", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def verifying(secret: str, enqueued: list[dict]) -> Callable[[Received], tuple[int, str]]:
    sample = docs_receiver()

    def behaviour(request: Received) -> tuple[int, str]:
        status = sample["handle"](secret, request.headers, request.body, enqueued.append)  # type: ignore[operator]
        return status, "verified" if status == 200 else "refused"

    return behaviour


async def test_every_delivery_verifies_with_the_documented_python_receiver(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), ["*"])
    enqueued: list[dict] = []
    receiver.behaviour = verifying(created.signing_secret, enqueued)
    published = [await webhooks.publish(t, json.dumps({"n": i, "text": "café ✓"})) for i, t in
                 enumerate(["lot.created", "order.status_changed", "capa.opened", "final_product_weights.recorded"])]
    test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=created.subscription.id),
                                                metadata=webhooks.admin)
    await receiver.wait_for(5)
    assert test.attempt.succeeded and test.attempt.status_code == 200
    assert sorted(e["id"] for e in enqueued) == sorted([p.event_id for p in published] + [test.delivery.event_id])
    assert all(a.succeeded and a.response_body == "verified" for a in await eventually(
        lambda: _attempts_when(webhooks, created.subscription.id, 5)))

    sample = docs_receiver()
    good = receiver.received[0]
    for tampered in (good.body + b" ", good.body.replace(b'"n":0', b'"n":1')):
        with pytest.raises(sample["InvalidWebhook"]):  # type: ignore[arg-type]
            sample["verify_webhook"](created.signing_secret, good.headers, tampered)  # type: ignore[operator]
    with pytest.raises(sample["InvalidWebhook"]):  # type: ignore[arg-type]
        sample["verify_webhook"](created.signing_secret, good.headers, good.body, now=time.time() + 301)  # type: ignore[operator]


async def _attempts_when(webhooks: Webhooks, subscription_id: str, count: int) -> list[pb.Attempt] | None:
    attempts = await webhooks.attempts(subscription_id)
    return attempts if len(attempts) >= count else None


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH")
async def test_every_delivery_verifies_with_the_documented_node_receiver(webhooks: Webhooks, receiver: Receiver, tmp_path) -> None:
    created = await webhooks.subscribe(receiver.url(), ["*"])
    for t in ("lot.created", "harvest.recorded", "recall.initiated"):
        await webhooks.publish(t, json.dumps({"type": t, "note": "naïve"}))
    received = await receiver.wait_for(3)
    [sample] = [block for block in code_blocks("javascript") if "function verifyWebhook" in block]
    (tmp_path / "verify.js").write_text(sample)
    (tmp_path / "check.js").write_text(
        'const { verifyWebhook } = require("./verify.js");\n'
        'const input = JSON.parse(require("fs").readFileSync(0, "utf8"));\n'
        "for (const d of input.deliveries) {\n"
        '  verifyWebhook(input.secret, d.headers, Buffer.from(d.body, "base64"));\n'
        '  let tampered = false;\n'
        '  try { verifyWebhook(input.secret, d.headers, Buffer.concat([Buffer.from(d.body, "base64"), Buffer.from(" ")])); }\n'
        "  catch (e) { tampered = true; }\n"
        '  if (!tampered) throw new Error("a tampered body verified");\n'
        "}\n"
        'console.log("verified " + input.deliveries.length);\n'
    )
    import base64

    document = {"secret": created.signing_secret, "deliveries": [
        {"headers": {k.lower(): v for k, v in r.headers.items()}, "body": base64.b64encode(r.body).decode()} for r in received
    ]}
    result = await asyncio.to_thread(subprocess.run, ["node", str(tmp_path / "check.js")], input=json.dumps(document),
                                     capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "verified 3"


async def test_standard_webhooks_deliveries_verify_with_the_reference_library(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), ["lot.created"], scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    published = await webhooks.publish()
    [got] = await receiver.wait_for(1)
    payload = Webhook(created.signing_secret).verify(got.body, dict(got.headers))
    assert payload["id"] == published.event_id == got.headers["webhook-id"]
    assert got.headers["X-Webhook-Event"] == "lot.created"
    assert "X-Webhook-Signature" not in got.headers
    other = (await webhooks.subscribe(receiver.url(), ["lot.created"])).signing_secret
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, dict(got.headers))


async def test_a_delivery_has_exactly_the_documented_headers_and_body(webhooks: Webhooks, receiver: Receiver) -> None:
    await webhooks.subscribe(receiver.url("/hooks/in?src=growr"))
    published = await webhooks.publish("lot.created", '{"lot_id": "L-7", "weight_kg": 12.5}')
    [got] = await receiver.wait_for(1)
    assert got.method == "POST" and got.path == "/hooks/in"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "GrowerIQ-Webhook/1.0"
    assert got.headers["X-Webhook-Id"] == published.event_id
    assert got.headers["X-Webhook-Event"] == "lot.created"
    assert abs(int(got.headers["X-Webhook-Timestamp"]) - time.time()) < 5
    assert "Authorization" not in got.headers and "Cookie" not in got.headers
    body = json.loads(got.body)
    assert set(body) == {"id", "type", "created_at", "organisation_id", "sender", "data"}
    assert body["id"] == published.event_id and body["type"] == "lot.created"
    assert body["organisation_id"] == webhooks.org
    assert body["sender"] == {"type": "user", "id": "admin"}
    assert body["data"] == {"lot_id": "L-7", "weight_kg": 12.5}


async def test_the_user_agent_is_a_setting(start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver) -> None:
    webhooks = await start_webhooks(webhooks_user_agent="Acme-Hooks/2.0")
    await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert got.headers["User-Agent"] == "Acme-Hooks/2.0"


async def test_failed_attempts_follow_the_schedule_and_five_failures_make_the_subscription_failing(
        webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.behaviour = lambda _: (503, "down for maintenance")
    created = await webhooks.subscribe(receiver.url())
    published = await webhooks.publish()
    arrivals = await receiver.wait_for(5, timeout=15)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(arrivals)]
    for gap, delay in zip(gaps, FAST_SCHEDULE, strict=True):
        assert delay - 0.05 <= gap <= delay + 0.35, (gaps, FAST_SCHEDULE)
    assert len({r.body for r in arrivals}) == 1  # the same bytes, the same event id, every time
    assert len({r.headers["X-Webhook-Id"] for r in arrivals}) == 1

    subscription = await eventually(lambda: _status_is(webhooks, created.subscription.id, pb.SUBSCRIPTION_STATUS_FAILING))
    assert subscription.HasField("failing_since")
    attempts = await webhooks.attempts(created.subscription.id)
    assert [a.attempt for a in attempts] == [1, 2, 3, 4, 5]
    assert all(a.status_code == 503 and a.error == pb.ATTEMPT_ERROR_HTTP_STATUS and not a.succeeded for a in attempts)
    assert attempts[0].response_body == "down for maintenance" and attempts[0].duration_ms > 0
    assert all(a.event_id == published.event_id for a in attempts)
    [delivery] = await webhooks.deliveries(created.subscription.id)
    assert delivery.status == pb.DELIVERY_STATUS_FAILED and delivery.attempts == 5
    assert len(receiver.received) == 5


async def _status_is(webhooks: Webhooks, subscription_id: str, status: int) -> pb.Subscription | None:
    subscription = await webhooks.subscription(subscription_id)
    return subscription if subscription.status == status else None


async def test_a_4xx_is_never_retried(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.statuses = [404]
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    await receiver.wait_for(1)
    [delivery] = await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_FAILED))
    assert delivery.attempts == 1 and delivery.last_status_code == 404
    await holds(lambda: _count_is(receiver, 1), seconds=sum(FAST_SCHEDULE[:2]) + 0.3, what="no retry after a 4xx")
    assert (await webhooks.subscription(created.subscription.id)).status == pb.SUBSCRIPTION_STATUS_ACTIVE


async def _deliveries_with(webhooks: Webhooks, subscription_id: str, status: int) -> list[pb.Delivery] | None:
    found = [d for d in await webhooks.deliveries(subscription_id) if d.status == status]
    return found or None


async def _count_is(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) == count


async def test_a_3xx_is_a_failure_that_is_neither_followed_nor_retried(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.statuses = [302]
    created = await webhooks.subscribe(receiver.url("/old"))
    await webhooks.publish()
    await receiver.wait_for(1)
    [delivery] = await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_FAILED))
    assert delivery.last_error == pb.ATTEMPT_ERROR_REDIRECT and delivery.last_status_code == 302
    await holds(lambda: _count_is(receiver, 1), seconds=0.8, what="no follow, no retry")
    assert [r.path for r in receiver.received] == ["/old"]


async def test_while_failing_events_queue_and_a_good_test_sends_them_oldest_first(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver) -> None:
    webhooks = await start_webhooks(webhooks_concurrency_per_subscription=1)
    receiver.behaviour = lambda _: (500, "broken")
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    await webhooks.publish(data_json='{"n": 0}')
    await eventually(lambda: _status_is(webhooks, sub_id, pb.SUBSCRIPTION_STATUS_FAILING), timeout=15)
    assert len(receiver.received) == 5

    queued = [(await webhooks.publish(data_json=json.dumps({"n": n}))).event_id for n in range(1, 5)]
    await holds(lambda: _count_is(receiver, 5), seconds=1.0, what="nothing attempted while Failing")
    pending = await webhooks.deliveries(sub_id, outcome=pb.OUTCOME_PENDING)
    assert sorted(d.event_id for d in pending) == sorted(queued) and all(d.attempts == 0 for d in pending)

    receiver.behaviour = None  # fixed: 200 from now on
    test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=sub_id), metadata=webhooks.admin)
    assert test.attempt.succeeded and test.delivery.test and test.delivery.event_type == "webhook.test"
    assert test.subscription.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    drained = await receiver.wait_for(5 + 1 + 4)
    assert [r.headers["X-Webhook-Id"] for r in drained[6:]] == queued
    assert json.loads(drained[5].body)["type"] == "webhook.test"


async def test_a_failed_test_delivery_keeps_the_subscription_failing(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.behaviour = lambda _: (500, "broken")
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    await eventually(lambda: _status_is(webhooks, created.subscription.id, pb.SUBSCRIPTION_STATUS_FAILING), timeout=15)
    test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=created.subscription.id),
                                                metadata=webhooks.admin)
    assert not test.attempt.succeeded and test.attempt.status_code == 500
    assert test.delivery.status == pb.DELIVERY_STATUS_FAILED
    assert test.subscription.status == pb.SUBSCRIPTION_STATUS_FAILING


async def test_a_paused_subscription_gets_nothing(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    paused = await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    assert paused.status == pb.SUBSCRIPTION_STATUS_PAUSED
    await webhooks.publish()
    await holds(lambda: _count_is(receiver, 0), seconds=1.0, what="nothing delivered while paused")
    assert await webhooks.deliveries(sub_id) == []
    resumed = await webhooks.stub.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    assert resumed.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    after = await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Webhook-Id"] == after.event_id


async def test_pausing_holds_retries_and_resuming_sends_them(start_webhooks: Callable[..., Awaitable[Webhooks]],
                                                            receiver: Receiver) -> None:
    webhooks = await start_webhooks(webhooks_retry_schedule_seconds=[0.5, 0.5, 0.5, 0.5])
    receiver.statuses = [500]
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    await webhooks.publish()
    await receiver.wait_for(1)
    await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    await holds(lambda: _count_is(receiver, 1), seconds=1.0, what="the retry waits while paused")
    await webhooks.stub.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    await receiver.wait_for(2)
    [delivery] = await eventually(lambda: _deliveries_with(webhooks, sub_id, pb.DELIVERY_STATUS_SUCCEEDED))
    assert delivery.attempts == 2


async def test_delete_cancels_pending_deliveries_and_nothing_more_is_sent(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver) -> None:
    # The retry falls due 2 s after the first attempt: long enough that the delete lands first
    # even on a loaded machine (at 0.6 s the retry could be in flight, and counted, before it),
    # and inside the 3 s that nothing may arrive after the delete, so a cancelled retry that
    # still went out would be seen.
    webhooks = await start_webhooks(webhooks_retry_schedule_seconds=[2.0, 2.0, 2.0, 2.0])
    receiver.behaviour = lambda _: (500, "broken")
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    await webhooks.publish()
    await receiver.wait_for(1)
    await eventually(lambda: _deliveries_with(webhooks, sub_id, pb.DELIVERY_STATUS_PENDING))
    deleted = await webhooks.stub.DeleteSubscription(pb.DeleteSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    assert deleted.cancelled_deliveries == 1
    await webhooks.publish()
    await holds(lambda: _count_is(receiver, 1), seconds=3.0, what="nothing sent after delete")
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await webhooks.subscription(sub_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    [delivery] = (await webhooks.stub.ListDeliveries(pb.ListDeliveriesRequest(event_id=(
        json.loads(receiver.received[0].body)["id"])), metadata=webhooks.admin)).deliveries
    assert delivery.status == pb.DELIVERY_STATUS_CANCELLED


async def test_regenerating_the_secret_invalidates_the_old_one_at_once(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url())
    sample = docs_receiver()
    verify = sample["verify_webhook"]
    await webhooks.publish()
    [first] = await receiver.wait_for(1)
    verify(created.signing_secret, first.headers, first.body)  # type: ignore[operator]

    regenerated = await webhooks.stub.RegenerateSecret(pb.RegenerateSecretRequest(subscription_id=created.subscription.id),
                                                       metadata=webhooks.admin)
    assert regenerated.signing_secret.startswith("whsec_") and regenerated.signing_secret != created.signing_secret
    await webhooks.publish()
    [_, second] = await receiver.wait_for(2)
    verify(regenerated.signing_secret, second.headers, second.body)  # type: ignore[operator]
    with pytest.raises(sample["InvalidWebhook"]):  # type: ignore[arg-type]
        verify(created.signing_secret, second.headers, second.body)  # type: ignore[operator]


async def test_a_hanging_receiver_does_not_delay_another_subscription(
        start_webhooks: Callable[..., Awaitable[Webhooks]], start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    webhooks = await start_webhooks(webhooks_concurrency_per_subscription=2, webhooks_concurrency_total=8,
                                    webhooks_timeout_seconds=20)
    slow, fast = await start_receiver(), await start_receiver()
    slow.hang()
    await webhooks.subscribe(slow.url())
    await webhooks.subscribe(fast.url())
    started = time.monotonic()
    for n in range(20):
        await webhooks.publish(data_json=json.dumps({"n": n}))
    await fast.wait_for(20, timeout=10)
    assert time.monotonic() - started < 5
    assert len(slow.received) == 2  # its two slots are stuck; nothing else of it was attempted
    slow.release()


async def test_the_log_records_timeouts_and_the_first_2_kb_of_an_answer(
        start_webhooks: Callable[..., Awaitable[Webhooks]], start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    webhooks = await start_webhooks(webhooks_timeout_seconds=0.5, webhooks_retry_schedule_seconds=[30, 30, 30, 30])
    slow, chatty = await start_receiver(), await start_receiver()
    slow.hang()
    chatty.behaviour = lambda _: (500, "x" * 5000)
    slow_sub = (await webhooks.subscribe(slow.url())).subscription.id
    chatty_sub = (await webhooks.subscribe(chatty.url())).subscription.id
    await webhooks.publish()
    [timed_out] = await eventually(lambda: _attempts_when(webhooks, slow_sub, 1))
    assert timed_out.error == pb.ATTEMPT_ERROR_TIMEOUT and timed_out.status_code == 0
    assert "timed out" in timed_out.error_detail and 450 <= timed_out.duration_ms < 2000
    [answered] = await eventually(lambda: _attempts_when(webhooks, chatty_sub, 1))
    assert answered.status_code == 500 and answered.response_body == "x" * 2048
    slow.release()


@pytest.mark.parametrize("case", ["connection_refused", "tls", "dns"])
async def test_the_log_names_connection_tls_and_dns_errors(case: str, start_webhooks: Callable[..., Awaitable[Webhooks]],
                                                           start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    webhooks = await start_webhooks(webhooks_retry_schedule_seconds=[30, 30, 30, 30])
    if case == "connection_refused":
        closed = await start_receiver()
        url = closed.url()
        await closed.stop()
        expected = pb.ATTEMPT_ERROR_CONNECTION_REFUSED
    elif case == "tls":
        url = (await start_receiver(trusted=False)).url()
        expected = pb.ATTEMPT_ERROR_TLS
    else:
        url = "https://no-such-host.invalid/hook"
        expected = pb.ATTEMPT_ERROR_DNS
    created = await webhooks.subscribe(url)
    await webhooks.publish()
    [attempt] = await eventually(lambda: _attempts_when(webhooks, created.subscription.id, 1))
    assert attempt.error == expected and not attempt.succeeded and attempt.error_detail
    [delivery] = await webhooks.deliveries(created.subscription.id)
    assert delivery.status == pb.DELIVERY_STATUS_PENDING and delivery.HasField("next_attempt_at")  # retried later


async def test_a_failed_delivery_can_be_redelivered_with_the_same_event_id(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.statuses = [410]
    created = await webhooks.subscribe(receiver.url())
    published = await webhooks.publish()
    [failed] = await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_FAILED))
    redelivered = await webhooks.stub.Redeliver(pb.RedeliverRequest(delivery_id=failed.id), metadata=webhooks.admin)
    assert redelivered.status == pb.DELIVERY_STATUS_PENDING and redelivered.round == 2
    first, second = await receiver.wait_for(2)
    assert first.body == second.body and second.headers["X-Webhook-Id"] == published.event_id
    [done] = await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_SUCCEEDED))
    details = await webhooks.stub.GetDelivery(pb.GetDeliveryRequest(delivery_id=done.id), metadata=webhooks.admin)
    assert [(a.round, a.attempt, a.status_code) for a in details.attempts] == [(1, 1, 410), (2, 1, 200)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.Redeliver(pb.RedeliverRequest(delivery_id=done.id), metadata=webhooks.admin)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_log_filters_succeeded_and_failed_and_shows_every_attempt_of_one_event(
        webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.statuses = [500, 500]
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    flaky = await webhooks.publish()
    await receiver.wait_for(3)
    steady = await webhooks.publish()
    await receiver.wait_for(4)
    await eventually(lambda: _attempts_when(webhooks, sub_id, 4))
    failed = await webhooks.attempts(sub_id, outcome=pb.OUTCOME_FAILED)
    succeeded = await webhooks.attempts(sub_id, outcome=pb.OUTCOME_SUCCEEDED)
    assert [(a.event_id, a.attempt) for a in failed] == [(flaky.event_id, 1), (flaky.event_id, 2)]
    assert sorted((a.event_id, a.attempt) for a in succeeded) == sorted([(flaky.event_id, 3), (steady.event_id, 1)])
    of_event = await webhooks.attempts("", event_id=flaky.event_id)
    assert [a.attempt for a in of_event] == [1, 2, 3] and of_event[0].url == receiver.url()
    delivered = await webhooks.deliveries(sub_id, outcome=pb.OUTCOME_SUCCEEDED)
    assert {d.event_id for d in delivered} == {flaky.event_id, steady.event_id}


async def test_an_event_id_seen_before_is_dropped(webhooks: Webhooks, receiver: Receiver) -> None:
    await webhooks.subscribe(receiver.url())
    first = await webhooks.publish(event_id="evt_same_123")
    again = await webhooks.publish(event_id="evt_same_123", data_json='{"changed": true}')
    assert not first.duplicate and first.deliveries == 1
    assert again.duplicate and again.deliveries == 0
    await receiver.wait_for(1)
    await holds(lambda: _count_is(receiver, 1), seconds=0.5, what="one delivery per event id")


async def test_an_edit_takes_effect_for_the_next_event(webhooks: Webhooks, start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    old, new = await start_receiver(), await start_receiver()
    created = await webhooks.subscribe(old.url(), ["lot.created"])
    await webhooks.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=created.subscription.id, update_mask=["url", "activity_types"], url=new.url(),
        activity_types=["order.created"]), metadata=webhooks.admin)
    await webhooks.publish("lot.created")
    order = await webhooks.publish("order.created")
    [got] = await new.wait_for(1)
    assert got.headers["X-Webhook-Id"] == order.event_id
    await holds(lambda: _count_is(old, 0), seconds=0.3, what="the old URL gets nothing")


async def test_the_log_says_when_a_pending_delivery_is_retried_and_redeliver_says_it_too(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver, database_url: str) -> None:
    webhooks = await start_webhooks(webhooks_retry_schedule_seconds=[3600, 3600, 3600, 3600], webhooks_database_url=database_url)
    receiver.statuses = [503]
    created = await webhooks.subscribe(receiver.url())
    sub_id = created.subscription.id
    await webhooks.publish()
    [attempt] = await eventually(lambda: _attempts_when(webhooks, sub_id, 1))
    [delivery] = await webhooks.deliveries(sub_id)
    assert delivery.status == pb.DELIVERY_STATUS_PENDING
    # The latest attempt carries when the next one is due: an hour after it, as the delivery says.
    assert attempt.HasField("next_attempt_at") and attempt.next_attempt_at == delivery.next_attempt_at
    due = attempt.next_attempt_at.ToDatetime(tzinfo=dt.timezone.utc)
    assert dt.timedelta(seconds=3590) < due - attempt.attempted_at.ToDatetime(tzinfo=dt.timezone.utc) < dt.timedelta(seconds=3610)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.Redeliver(pb.RedeliverRequest(delivery_id=delivery.id), metadata=webhooks.admin)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    when = due.isoformat(timespec="seconds").replace("+00:00", "Z")
    assert refused.value.details() == (f"only a failed delivery can be redelivered; this one is pending: "
                                       f"attempt 2 is due at {when}")

    await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    with pytest.raises(grpc.aio.AioRpcError) as held:
        await webhooks.stub.Redeliver(pb.RedeliverRequest(delivery_id=delivery.id), metadata=webhooks.admin)
    assert held.value.details().endswith(
        f"attempt 2 is due at {when}, but the subscription is paused: it goes when the subscription is resumed")


async def test_finished_deliveries_and_earlier_attempts_have_no_next_attempt(webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.statuses = [500]  # the first attempt fails, the retry (0.2 s later) succeeds
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish()
    await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_SUCCEEDED))
    attempts = await webhooks.attempts(created.subscription.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert not any(a.HasField("next_attempt_at") for a in attempts)


async def test_get_delivery_returns_the_body_the_receiver_got_and_the_headers_without_the_secret(
        webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url())
    await webhooks.publish("lot.created", '{"lot_id": "L-9", "note": "caf\u00e9 <b>"}')
    [got] = await receiver.wait_for(1)
    [delivery] = await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_SUCCEEDED))
    shown = await webhooks.stub.GetDelivery(pb.GetDeliveryRequest(delivery_id=delivery.id), metadata=webhooks.admin)
    sent = shown.request
    assert sent.body == got.body and sent.body_size == len(got.body) and not sent.body_truncated
    headers = {h.name: h for h in sent.headers}
    assert set(headers) == {"Content-Type", "User-Agent", "X-Webhook-Event", "X-Webhook-Id", "X-Webhook-Timestamp",
                            "X-Webhook-Signature"}
    assert set(headers) <= set(got.headers)
    for name in ("Content-Type", "User-Agent", "X-Webhook-Event", "X-Webhook-Id"):
        assert headers[name].value == got.headers[name] and not headers[name].per_attempt, name
    for name in ("X-Webhook-Timestamp", "X-Webhook-Signature"):
        assert headers[name].per_attempt and headers[name].value != got.headers[name], name
    assert created.signing_secret not in str(shown), "the secret is never shown"
    assert got.headers["X-Webhook-Signature"] not in str(sent), "the re-derived request names the signature, not a value"
    [attempt] = shown.attempts  # what the attempt actually sent, as the receiver saw it
    assert {h.name: h.value for h in attempt.exchange.request_headers}["X-Webhook-Signature"] == got.headers["X-Webhook-Signature"]


async def test_a_large_body_is_returned_bounded_with_its_size(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    await webhooks.publish("lot.created", json.dumps({"notes": "x" * 100_000}))
    [got] = await receiver.wait_for(1)
    [delivery] = await eventually(lambda: _deliveries_with(webhooks, created.subscription.id, pb.DELIVERY_STATUS_SUCCEEDED))
    sent = (await webhooks.stub.GetDelivery(pb.GetDeliveryRequest(delivery_id=delivery.id), metadata=webhooks.admin)).request
    assert sent.body_truncated and sent.body_size == len(got.body) > 64 * 1024
    assert sent.body == got.body[:64 * 1024]
    names = [h.name for h in sent.headers]
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(names) and "X-Webhook-Signature" not in names
