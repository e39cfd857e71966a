"""An administrator's endpoint URL that no delivery could ever reach is refused when it is set
(create and update, over real gRPC, webhooks on SQLite and PostgreSQL), naming the setting that
allows private receivers; partners through the edge are not told (their delivery log says
`unusable_host`), and a name that does not resolve yet is accepted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import EDGE_PERMISSION
from tests.integration.webhooks.conftest import Webhooks

StartWebhooks = Callable[..., Awaitable[Webhooks]]
ALLOW_SETTING = "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS"
DNS = {"internal.example.test": ["10.1.2.3", "fd00::1"], "mixed.example.test": ["10.1.2.3", "93.184.216.34"],
       "metadata.example.test": ["169.254.169.254"]}


async def _stored(webhooks: Webhooks) -> list[str]:
    listed = await webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=webhooks.admin)
    return [s.url for s in listed.subscriptions]


@pytest.fixture
async def strict(start_webhooks: StartWebhooks, database_url: str) -> Webhooks:
    """Webhooks as deployed by default: no private network allowed."""
    return await start_webhooks(dns=DNS, webhooks_allowed_private_networks=[], webhooks_database_url=database_url)


@pytest.mark.parametrize(("url", "why"), [
    ("https://127.0.0.1:8443/hook", "its host 127.0.0.1 is refused (loopback)"),
    ("https://[::1]/hook", "its host ::1 is refused (loopback)"),
    ("https://169.254.169.254/latest/meta-data", "(link-local (cloud metadata))"),
    ("https://localhost:8443/hook", "its host localhost resolves only to refused addresses: "),
    ("https://internal.example.test/hook", "resolves only to refused addresses: 10.1.2.3 (private (RFC 1918)), "
                                           "fd00::1 (unique local (private))"),
    ("https://metadata.example.test/hook", "169.254.169.254 (link-local (cloud metadata))"),
])
async def test_an_administrators_unreachable_url_is_refused_at_create_naming_the_setting(
    strict: Webhooks, url: str, why: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await strict.subscribe(url)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert why in details and ALLOW_SETTING in details, details
    assert await _stored(strict) == []


async def test_an_administrators_unreachable_url_is_refused_at_update_and_the_old_one_kept(strict: Webhooks) -> None:
    created = await strict.subscribe("https://mixed.example.test/hook")  # one public address is enough
    for url in ("https://10.0.0.7/hook", "https://internal.example.test/hook"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await strict.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
                subscription_id=created.subscription.id, update_mask=["url"], url=url), metadata=strict.admin)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert ALLOW_SETTING in (caught.value.details() or "")
    shown = await strict.subscription(created.subscription.id)
    assert (shown.url, shown.version) == ("https://mixed.example.test/hook", created.subscription.version)
    changed = await strict.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=created.subscription.id, update_mask=["description"], description="ERP"), metadata=strict.admin)
    assert changed.description == "ERP"  # an update that leaves the URL alone does not resolve it


async def test_a_name_that_does_not_resolve_yet_is_accepted(strict: Webhooks) -> None:
    created = await strict.subscribe("https://not-yet.invalid/hook")
    assert await _stored(strict) == [created.subscription.url]


async def test_an_allowed_private_network_is_accepted(start_webhooks: StartWebhooks) -> None:
    webhooks = await start_webhooks(dns=DNS, webhooks_allowed_private_networks=["127.0.0.0/8", "::1/128", "10.0.0.0/8",
                                                                               "fd00::/8"])
    for url in ("https://127.0.0.1:8443/hook", "https://[::1]/hook", "https://internal.example.test/hook"):
        await webhooks.subscribe(url)
    assert len(await _stored(webhooks)) == 3


async def test_a_partner_through_the_edge_is_not_told_when_it_sets_the_url(strict: Webhooks) -> None:
    edge = strict.as_actor("trellis-edge", "trellis", [EDGE_PERMISSION])
    created = await strict.subscribe("https://127.0.0.1:8443/hook", metadata=edge, org_id=strict.org,
                                     integration_id="int_partner")
    updated = await strict.stub.UpdateSubscription(pb.UpdateSubscriptionRequest(
        subscription_id=created.subscription.id, update_mask=["url"], url="https://internal.example.test/hook",
        org_id=strict.org, integration_id="int_partner"), metadata=edge)
    assert updated.url == "https://internal.example.test/hook"
