"""SSRF protection on real deliveries: refused addresses never get a connection, the host is
resolved once (no DNS rebinding), and TLS and `Host` use the URL's host name.

An administrator's URL is checked when it is set too (test_destinations.py), so the
subscriptions here that point at refused addresses are made the ways that check cannot stop:
by a partner through the edge (never told), or by a name that changed after it was checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import EDGE_PERMISSION
from tests.integration.webhooks.conftest import Webhooks
from tests.integration.webhooks.helpers import holds
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

StartWebhooks = Callable[..., Awaitable[Webhooks]]


async def _first_attempt(webhooks: Webhooks, subscription_id: str) -> pb.Attempt | None:
    attempts = await webhooks.attempts(subscription_id)
    return attempts[0] if attempts else None


async def _nothing_received(receiver: Receiver) -> bool:
    return not receiver.received


async def _partners(webhooks: Webhooks, url: str) -> pb.CreateSubscriptionResponse:
    """A subscription a partner made through the edge: its URL is not checked when it is set."""
    edge = webhooks.as_actor("trellis-edge", "trellis", [EDGE_PERMISSION])
    return await webhooks.subscribe(url, metadata=edge, org_id=webhooks.org, integration_id="int_partner")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_loopback_is_refused_unless_allowed(host: str, start_webhooks: StartWebhooks, receiver: Receiver,
                                                  start_receiver: Callable[..., Awaitable[Receiver]]) -> None:
    webhooks = await start_webhooks(webhooks_allowed_private_networks=[])
    target = receiver if host != "[::1]" else await start_receiver(host="::1")
    created = await _partners(webhooks, f"https://{host}:{target.port}/hook")
    await webhooks.publish()
    attempt = await eventually(lambda: _first_attempt(webhooks, created.subscription.id))
    assert attempt.error == pb.ATTEMPT_ERROR_SSRF_REFUSED and "loopback" in attempt.error_detail
    [delivery] = await webhooks.deliveries(created.subscription.id)
    # Retried on the schedule, as a name that does not resolve is: the two look alike to a partner.
    assert delivery.status == pb.DELIVERY_STATUS_PENDING and delivery.HasField("next_attempt_at")
    assert not target.received


@pytest.mark.parametrize("answer", [
    "169.254.169.254", "10.1.2.3", "100.64.0.9", "192.168.0.10", "::ffff:169.254.169.254", "::ffff:127.0.0.1",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "fd00::1", "fe80::1",
])
async def test_a_name_resolving_to_a_refused_address_gets_no_connection(answer: str, start_webhooks: StartWebhooks,
                                                                        receiver: Receiver) -> None:
    dns = {"internal.example.test": ["93.184.216.34"]}  # public when the administrator sets the URL
    webhooks = await start_webhooks(dns=dns, webhooks_allowed_private_networks=[])
    created = await webhooks.subscribe(f"https://internal.example.test:{receiver.port}/hook")
    dns["internal.example.test"] = [answer]  # then the name moves
    await webhooks.publish()
    attempt = await eventually(lambda: _first_attempt(webhooks, created.subscription.id))
    assert attempt.error == pb.ATTEMPT_ERROR_SSRF_REFUSED and answer.split("%")[0] in attempt.error_detail


async def test_the_host_is_resolved_once_so_rebinding_cannot_reach_an_internal_address(
        start_webhooks: StartWebhooks, receiver: Receiver) -> None:
    answers = [["10.20.30.40"], ["127.0.0.1"]]  # the second answer would reach the receiver

    def rebinding(host: str) -> list[str] | None:
        return answers.pop(0) if host == "rebind.example.test" and answers else None

    webhooks = await start_webhooks(dns=rebinding)
    created = await _partners(webhooks, f"https://rebind.example.test:{receiver.port}/hook")
    await webhooks.publish()
    attempt = await eventually(lambda: _first_attempt(webhooks, created.subscription.id))
    assert attempt.error == pb.ATTEMPT_ERROR_SSRF_REFUSED and "10.20.30.40" in attempt.error_detail
    assert webhooks.lookups.count("rebind.example.test") == 1
    await holds(lambda: _nothing_received(receiver), seconds=0.3, what="no connection to the receiver")


async def test_tls_and_host_use_the_urls_name_while_connecting_to_the_checked_address(
        start_webhooks: StartWebhooks, receiver: Receiver) -> None:
    webhooks = await start_webhooks(dns={"hooks.example.test": ["127.0.0.1"], "not-in-cert.example.test": ["127.0.0.1"]})
    good = await webhooks.subscribe(f"https://hooks.example.test:{receiver.port}/hook")
    bad = await webhooks.subscribe(f"https://not-in-cert.example.test:{receiver.port}/hook")
    await webhooks.publish()
    [got] = await receiver.wait_for(1)
    assert got.host == f"hooks.example.test:{receiver.port}"
    assert (await eventually(lambda: _first_attempt(webhooks, good.subscription.id))).succeeded
    refused = await eventually(lambda: _first_attempt(webhooks, bad.subscription.id))
    assert refused.error == pb.ATTEMPT_ERROR_TLS  # the certificate was checked against the URL's name
    assert len(receiver.received) == 1
