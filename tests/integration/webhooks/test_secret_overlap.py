"""Secret rotation with an overlap, against a real HTTPS receiver: on the Standard Webhooks
scheme both signatures go in `webhook-signature` until the overlap ends, and the reference
`standardwebhooks` library verifies with either secret; the spec's scheme refuses the overlap
and says why; more than 7 days is refused; a refusal changes nothing."""

from __future__ import annotations

import time

import grpc
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually


async def _regenerate(webhooks: Webhooks, subscription_id: str, overlap_seconds: int) -> pb.RegenerateSecretResponse:
    return await webhooks.stub.RegenerateSecret(pb.RegenerateSecretRequest(subscription_id=subscription_id,
                                                                           overlap_seconds=overlap_seconds),
                                                metadata=webhooks.admin)


async def test_during_the_overlap_both_signatures_verify_with_either_secret(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    old = created.signing_secret
    rotated = await _regenerate(webhooks, created.subscription.id, 24 * 3600)
    new = rotated.signing_secret
    expires = rotated.subscription.previous_secret_expires_at.seconds
    assert new != old and abs(expires - (time.time() + 24 * 3600)) < 60

    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (new, old):
        assert Webhook(secret).verify(got.body, dict(got.headers))["id"] == got.headers["webhook-id"]
    stranger = (await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)).signing_secret
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(got.body, dict(got.headers))

    # A test delivery signs with both too; the log masks both secrets if echoed, never shows them.
    test = await webhooks.stub.SendTestDelivery(pb.SendTestDeliveryRequest(subscription_id=created.subscription.id),
                                                metadata=webhooks.admin)
    assert test.attempt.succeeded
    assert len((await receiver.wait_for(2))[1].headers["webhook-signature"].split(" ")) == 2
    assert old not in str(await webhooks.subscription(created.subscription.id))


async def test_after_the_overlap_only_the_new_secret_signs(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    rotated = await _regenerate(webhooks, created.subscription.id, 1)
    ends = rotated.subscription.previous_secret_expires_at.ToDatetime().timestamp()

    async def over() -> bool:
        return time.time() > ends + 0.05
    await eventually(over, timeout=5, what="the end of a one-second overlap")
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert " " not in got.headers["webhook-signature"]
    Webhook(rotated.signing_secret).verify(got.body, dict(got.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(created.signing_secret).verify(got.body, dict(got.headers))


async def test_without_an_overlap_the_old_secret_stops_at_once_and_ends_an_earlier_overlap(
        webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    await _regenerate(webhooks, created.subscription.id, 3600)
    final = await _regenerate(webhooks, created.subscription.id, 0)
    assert not final.subscription.HasField("previous_secret_expires_at")
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert " " not in got.headers["webhook-signature"]
    Webhook(final.signing_secret).verify(got.body, dict(got.headers))


async def test_the_spec_scheme_refuses_an_overlap_and_says_why(webhooks: Webhooks, receiver: Receiver) -> None:
    created = await webhooks.subscribe(receiver.url())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _regenerate(webhooks, created.subscription.id, 3600)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "room for one signature" in refused.value.details() and "standard_webhooks" in refused.value.details()
    unchanged = await webhooks.subscription(created.subscription.id)
    assert unchanged.version == created.subscription.version  # the secret was not changed either
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Webhook-Signature"].startswith("sha256=")


@pytest.mark.parametrize("overlap", [7 * 86400 + 1, 30 * 86400, -1])
async def test_an_overlap_over_seven_days_or_negative_is_invalid(webhooks: Webhooks, receiver: Receiver, overlap: int) -> None:
    created = await webhooks.subscribe(receiver.url(), scheme=pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _regenerate(webhooks, created.subscription.id, overlap)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "604800" in refused.value.details()
    assert (await webhooks.subscription(created.subscription.id)).version == created.subscription.version
    assert (await _regenerate(webhooks, created.subscription.id, 7 * 86400)).subscription.HasField(
        "previous_secret_expires_at")  # seven days exactly is allowed
