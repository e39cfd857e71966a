"""A setup request's steps reach the requesting organisation's audit trail: the real registry
publishes through its outbox, the real logs service consumes `trellis.audit.>` and answers
QueryAudit, with no secret anywhere in the entries."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from services.contracts.trellis.logs.v1 import logs_pb2 as lpb
from services.contracts.trellis.logs.v1 import logs_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION
from tests.integration.logs.conftest import unique
from tests.support.waiting import eventually

Metadata = Callable[..., tuple[tuple[str, str], ...]]


async def test_submitted_and_declined_are_in_the_organisations_audit_trail(
        registry_stub: registry_pb2_grpc.RegistryStub, logs_stub: logs_pb2_grpc.LogsStub, as_actor: Metadata) -> None:
    org = unique("org")
    admin = as_actor("rita", org, [ADMIN_PERMISSION])
    team = as_actor("op_pat", "org_platform", [PLATFORM_PERMISSION])
    secret = "cs_" + uuid.uuid4().hex
    created = await registry_stub.CreateSetupRequest(pb.CreateSetupRequestRequest(
        prebuilt_id="woocommerce", connection={"store_url": "https://shop.example.com", "consumer_key": "ck_1",
                                               "consumer_secret": secret}), metadata=admin)
    await registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
        setup_request_id=created.id, reason="Store unreachable"), metadata=team)

    async def both() -> list[lpb.AuditEntry] | None:
        found = await logs_stub.QueryAudit(lpb.QueryAuditRequest(object_type="setup_request"), metadata=admin)
        return list(found.entries) if len(found.entries) == 2 else None

    entries = await eventually(both, timeout=20, what="the two setup request audit entries")
    assert [(e.action, e.actor_id, e.object_id) for e in reversed(entries)] == [
        ("setup_request.submitted", "rita", created.id), ("setup_request.declined", "op_pat", created.id)]
    assert entries[0].reason == "Store unreachable"
    assert all(secret not in e.before_json + e.after_json for e in entries)


async def test_a_read_of_the_secrets_is_in_the_organisations_audit_trail_with_names_only(
        registry_stub: registry_pb2_grpc.RegistryStub, logs_stub: logs_pb2_grpc.LogsStub, as_actor: Metadata) -> None:
    org = unique("org")
    admin = as_actor("rita", org, [ADMIN_PERMISSION])
    team = as_actor("op_pat", "org_platform", [PLATFORM_PERMISSION])
    secret = "cs_" + uuid.uuid4().hex
    created = await registry_stub.CreateSetupRequest(pb.CreateSetupRequestRequest(
        prebuilt_id="woocommerce", connection={"store_url": "https://shop.example.com", "consumer_key": "ck_1",
                                               "consumer_secret": secret}), metadata=admin)
    await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
    revealed = await registry_stub.RevealSetupRequestSecrets(pb.RevealSetupRequestSecretsRequest(
        setup_request_id=created.id, reason="Registering the order webhook"), metadata=team)
    assert revealed.secrets["consumer_secret"] == secret

    async def three() -> list[lpb.AuditEntry] | None:
        found = await logs_stub.QueryAudit(lpb.QueryAuditRequest(object_type="setup_request"), metadata=admin)
        return list(found.entries) if len(found.entries) == 3 else None

    entries = await eventually(three, timeout=20, what="the three setup request audit entries")
    read = entries[0]
    assert (read.action, read.actor_id, read.object_id, read.reason) == (
        "setup_request.secrets_revealed", "op_pat", created.id, "Registering the order webhook")
    assert "consumer_secret" in read.after_json
    assert all(secret not in e.before_json + e.after_json + e.reason for e in entries)
