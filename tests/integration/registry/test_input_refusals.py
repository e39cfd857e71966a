"""Input the registry must refuse rather than quietly store as something else, over real gRPC,
on SQLite and PostgreSQL: an explicit rate limit of 0, allowlist entries with host bits set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from tests.support.settings import Settings
from tests.integration.registry.helpers import AsActor, create, new_org, refused
from tests.support.services import channel_to, start_service


@pytest.fixture
async def registry(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
    """The registry on each database in turn; these calls never reach identity."""
    service = await start_service("registry", make_settings(registry_database_url=database_url))
    try:
        async with channel_to(service) as channel:
            yield registry_pb2_grpc.RegistryStub(channel)
    finally:
        await service.stop(0)


async def listed(stub: registry_pb2_grpc.RegistryStub, md: tuple[tuple[str, str], ...]) -> list[pb.Integration]:
    return list((await stub.ListIntegrations(pb.ListIntegrationsRequest(), metadata=md)).integrations)


@pytest.mark.parametrize("limit", [0, -1])
async def test_an_explicit_rate_limit_of_zero_or_less_is_refused_at_create_and_nothing_is_stored(
    registry: registry_pb2_grpc.RegistryStub, as_actor: AsActor, limit: int
) -> None:
    alice = as_actor("alice", new_org())
    error = await refused(create(registry, alice, rate_limit_per_minute=limit))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"between 1 and 10,000 requests per minute, got {limit}" in (error.details() or "")
    assert await listed(registry, alice) == []


async def test_a_rate_limit_left_out_is_the_default_and_a_daily_quota_of_zero_is_none(
    registry: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    alice = as_actor("alice", new_org())
    default = await create(registry, alice)
    given = await create(registry, alice, rate_limit_per_minute=1, daily_quota=0)
    assert (default.rate_limit_per_minute, default.daily_quota) == (60, 0)
    assert (given.rate_limit_per_minute, given.daily_quota) == (1, 0)
    stored = {i.id: (i.rate_limit_per_minute, i.daily_quota) for i in await listed(registry, alice)}
    assert stored == {default.id: (60, 0), given.id: (1, 0)}
    error = await refused(create(registry, alice, daily_quota=-1))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "daily quota" in (error.details() or "")


async def test_an_allowlist_entry_with_host_bits_is_refused_at_create_and_update_naming_the_network(
    registry: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    alice = as_actor("alice", new_org())
    error = await refused(create(registry, alice, ip_allowlist=["203.0.113.0/24", "10.0.0.1/8"]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "10.0.0.1/8 has host bits set: write 10.0.0.0/8 for the network, or 10.0.0.1/32" in (error.details() or "")
    assert await listed(registry, alice) == []

    integration = await create(registry, alice, ip_allowlist=["10.0.0.1", "10.0.0.0/8"])
    assert list(integration.ip_allowlist) == ["10.0.0.1/32", "10.0.0.0/8"]
    error = await refused(registry.UpdateIntegration(pb.UpdateIntegrationRequest(
        integration_id=integration.id, update_mask=["ip_allowlist"], ip_allowlist=["2001:db8::1/32"]), metadata=alice))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "2001:db8::1/32 has host bits set: write 2001:db8::/32" in (error.details() or "")
    shown = await registry.GetIntegration(pb.GetIntegrationRequest(integration_id=integration.id), metadata=alice)
    assert (list(shown.ip_allowlist), shown.version) == (["10.0.0.1/32", "10.0.0.0/8"], integration.version)


async def test_update_refuses_a_zero_rate_limit_and_a_negative_expected_version(
    registry: registry_pb2_grpc.RegistryStub, as_actor: AsActor
) -> None:
    alice = as_actor("alice", new_org())
    integration = await create(registry, alice, rate_limit_per_minute=120)
    for request in (
        pb.UpdateIntegrationRequest(integration_id=integration.id, update_mask=["rate_limit_per_minute"],
                                    rate_limit_per_minute=0),
        pb.UpdateIntegrationRequest(integration_id=integration.id, update_mask=["owner"], owner="someone",
                                    expected_version=-1),
    ):
        error = await refused(registry.UpdateIntegration(request, metadata=alice))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    shown = await registry.GetIntegration(pb.GetIntegrationRequest(integration_id=integration.id), metadata=alice)
    assert (shown.rate_limit_per_minute, shown.owner, shown.version) == (120, "olivia", integration.version)


async def test_a_negative_page_size_is_refused(registry: registry_pb2_grpc.RegistryStub, as_actor: AsActor) -> None:
    error = await refused(registry.ListIntegrations(pb.ListIntegrationsRequest(page_size=-1),
                                                    metadata=as_actor("alice", new_org())))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
