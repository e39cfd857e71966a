"""Recovery after an outage over real gRPC, against a real HTTPS receiver: every failed delivery
of a subscription in a time range is sent again, each with its original event id and a new
round, as one operation whose progress can be read; bad ranges and other organisations'
subscriptions are refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually


def ts(when: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def _failed(webhooks: Webhooks, subscription_id: str, count: int) -> list[pb.Delivery] | None:
    found = await webhooks.deliveries(subscription_id, outcome=pb.OUTCOME_FAILED)
    return found if len(found) == count else None


async def _outage(webhooks: Webhooks, receiver: Receiver, count: int) -> tuple[str, list[str]]:
    """A subscription whose receiver refused `count` events (a 4xx fails at once)."""
    receiver.behaviour = lambda _: (410, "gone for maintenance")
    created = await webhooks.subscribe(receiver.url())
    events = [(await webhooks.publish(data_json=f'{{"n": {n}}}')).event_id for n in range(count)]
    await eventually(lambda: _failed(webhooks, created.subscription.id, count), what=f"{count} failed deliveries")
    return created.subscription.id, events


async def _done(webhooks: Webhooks, recovery_id: str) -> pb.Recovery | None:
    got = await webhooks.stub.GetRecovery(pb.GetRecoveryRequest(recovery_id=recovery_id), metadata=webhooks.admin)
    return got if got.done == got.queued else None


async def test_recovery_sends_every_failed_delivery_again_with_its_event_id_and_reports_progress(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver, database_url: str) -> None:
    webhooks = await start_webhooks(webhooks_database_url=database_url)
    sub_id, events = await _outage(webhooks, receiver, 6)
    receiver.behaviour = None  # back: 200 from now on

    started = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(now() - dt.timedelta(hours=2))), metadata=webhooks.admin)
    assert started.id.startswith("rcv_") and started.queued == 6 and started.subscription_id == sub_id
    finished = await eventually(lambda: _done(webhooks, started.id), what="the recovery to finish")
    assert (finished.done, finished.succeeded, finished.failed) == (6, 6, 0)

    resent = [r.headers["X-Webhook-Id"] for r in receiver.received[6:]]
    assert sorted(resent) == sorted(events)  # each once more, with its original event id
    deliveries = await webhooks.deliveries(sub_id)
    assert {(d.status, d.round) for d in deliveries} == {(pb.DELIVERY_STATUS_SUCCEEDED, 2)}
    second_round = [a for a in await webhooks.attempts(sub_id) if a.round == 2]
    assert len(second_round) == 6 and all(a.attempt == 1 and a.succeeded for a in second_round)

    # Nothing failed is left in the range: a second recovery queues nothing and is done at once.
    again = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(now() - dt.timedelta(hours=2))), metadata=webhooks.admin)
    assert (again.queued, again.done) == (0, 0)


async def test_recovery_takes_only_deliveries_whose_event_arrived_in_the_range(
        webhooks: Webhooks, receiver: Receiver) -> None:
    receiver.behaviour = lambda _: (410, "gone")
    sub_id, early = await _outage(webhooks, receiver, 2)
    middle = now()
    late = [(await webhooks.publish(data_json='{"late": true}')).event_id for _ in range(3)]
    await eventually(lambda: _failed(webhooks, sub_id, 5))
    receiver.behaviour = None

    first = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(middle - dt.timedelta(hours=1)), until=ts(middle)), metadata=webhooks.admin)
    assert first.queued == 2
    await eventually(lambda: _done(webhooks, first.id))
    assert sorted(r.headers["X-Webhook-Id"] for r in receiver.received[5:]) == sorted(early)
    assert {d.event_id for d in await webhooks.deliveries(sub_id, outcome=pb.OUTCOME_FAILED)} == set(late)


async def test_a_recovery_of_a_paused_subscription_waits_and_says_why(webhooks: Webhooks, receiver: Receiver) -> None:
    sub_id, _ = await _outage(webhooks, receiver, 1)
    await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    started = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(now() - dt.timedelta(minutes=5))), metadata=webhooks.admin)
    assert (started.queued, started.done) == (1, 0) and "paused" in started.waiting_for
    receiver.behaviour = None
    await webhooks.stub.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    finished = await eventually(lambda: _done(webhooks, started.id))
    assert finished.succeeded == 1 and finished.waiting_for == ""


@pytest.mark.parametrize(("since", "until", "field"), [
    (None, None, "since"),
    (dt.timedelta(hours=1), None, "since"),
    (dt.timedelta(hours=-1), dt.timedelta(hours=1), "until"),
    (dt.timedelta(hours=-1), dt.timedelta(hours=-2), "until"),
    (dt.timedelta(hours=-1), dt.timedelta(hours=-1), "until"),
])
async def test_a_bad_range_is_refused_naming_the_field(webhooks: Webhooks, receiver: Receiver,
                                                       since: dt.timedelta | None, until: dt.timedelta | None,
                                                       field: str) -> None:
    created = await webhooks.subscribe(receiver.url())
    base = now()
    request = pb.StartRecoveryRequest(subscription_id=created.subscription.id)
    if since is not None:
        request.since.CopyFrom(ts(base + since))
    if until is not None:
        request.until.CopyFrom(ts(base + until))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.StartRecovery(request, metadata=webhooks.admin)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()


async def test_another_organisations_subscription_and_recovery_are_not_found(
        webhooks: Webhooks, receiver: Receiver) -> None:
    sub_id, _ = await _outage(webhooks, receiver, 1)
    started = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(now() - dt.timedelta(hours=1))), metadata=webhooks.admin)
    stranger = webhooks.as_actor("admin", "org_someone_else")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
            subscription_id=sub_id, since=ts(now() - dt.timedelta(hours=1))), metadata=stranger)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await webhooks.stub.GetRecovery(pb.GetRecoveryRequest(recovery_id=started.id), metadata=stranger)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


async def test_recoveries_are_listed_newest_first_with_their_progress_a_page_at_a_time(
        start_webhooks: Callable[..., Awaitable[Webhooks]], receiver: Receiver, database_url: str) -> None:
    webhooks = await start_webhooks(webhooks_database_url=database_url)
    first_sub, _ = await _outage(webhooks, receiver, 2)
    second_sub, _ = await _outage(webhooks, receiver, 1)
    receiver.behaviour = None
    since = ts(now() - dt.timedelta(hours=1))
    started = [await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(subscription_id=sub, since=since),
                                                 metadata=webhooks.admin)
               for sub in (first_sub, second_sub, first_sub)]
    # The first subscription failed the second outage's event too: both take every type.
    assert [r.queued for r in started] == [3, 1, 0]
    for recovery in started:
        await eventually(lambda recovery_id=recovery.id: _done(webhooks, recovery_id), what="the recoveries to finish")

    listed = await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(), metadata=webhooks.admin)
    assert [r.id for r in listed.recoveries] == [r.id for r in reversed(started)] and not listed.next_page_token
    by_id = {r.id: r for r in listed.recoveries}
    assert (by_id[started[0].id].subscription_id, by_id[started[0].id].queued, by_id[started[0].id].done,
            by_id[started[0].id].succeeded) == (first_sub, 3, 3, 3)
    assert by_id[started[0].id].since == since

    # One subscription's, and a page at a time.
    of_first = await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(subscription_id=first_sub),
                                                  metadata=webhooks.admin)
    assert [r.id for r in of_first.recoveries] == [started[2].id, started[0].id]
    page = await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(page_size=2), metadata=webhooks.admin)
    rest = await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(page_size=2, page_token=page.next_page_token),
                                              metadata=webhooks.admin)
    assert [r.id for r in (*page.recoveries, *rest.recoveries)] == [r.id for r in reversed(started)]
    assert page.next_page_token and not rest.next_page_token

    # Another organisation sees none of them, and this organisation's subscription is NOT_FOUND to it.
    stranger = webhooks.as_actor("admin", "org_someone_else")
    assert not (await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(), metadata=stranger)).recoveries
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(subscription_id=first_sub), metadata=stranger)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(page_size=-1), metadata=webhooks.admin)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_listed_recovery_of_a_paused_subscription_says_what_it_waits_for(
        webhooks: Webhooks, receiver: Receiver) -> None:
    sub_id, _ = await _outage(webhooks, receiver, 1)
    await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    started = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(now() - dt.timedelta(hours=1))), metadata=webhooks.admin)
    listed = await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(subscription_id=sub_id), metadata=webhooks.admin)
    assert [r.id for r in listed.recoveries] == [started.id]
    assert listed.recoveries[0].done == 0 and "paused" in listed.recoveries[0].waiting_for


async def test_a_deleted_subscriptions_recovery_stays_readable_and_finished(webhooks: Webhooks, receiver: Receiver) -> None:
    sub_id, _ = await _outage(webhooks, receiver, 2)
    refused = len(receiver.received)
    await webhooks.stub.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    started = await webhooks.stub.StartRecovery(pb.StartRecoveryRequest(
        subscription_id=sub_id, since=ts(now() - dt.timedelta(hours=1))), metadata=webhooks.admin)
    assert (started.queued, started.done) == (2, 0) and "paused" in started.waiting_for

    await webhooks.stub.DeleteSubscription(pb.DeleteSubscriptionRequest(subscription_id=sub_id), metadata=webhooks.admin)
    # Its queued deliveries were cancelled with it: the recovery is over, none succeeded, nothing waits.
    got = await webhooks.stub.GetRecovery(pb.GetRecoveryRequest(recovery_id=started.id), metadata=webhooks.admin)
    assert (got.queued, got.done, got.succeeded, got.waiting_for) == (2, 2, 0, "")
    listed = await webhooks.stub.ListRecoveries(pb.ListRecoveriesRequest(), metadata=webhooks.admin)
    assert [(r.id, r.done, r.waiting_for) for r in listed.recoveries if r.id == started.id] == [(started.id, 2, "")]
    assert len(receiver.received) == refused  # nothing of the recovery went out
