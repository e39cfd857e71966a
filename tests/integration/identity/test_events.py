"""Identity and NATS: the events it publishes through its outbox, and the registry's integration
events it consumes (safety-net revocation, scope sync)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.kit.ids import new_id
from services.kit.natsproc import NatsServer
from tests.integration.identity.conftest import Identity, Metadata, issue, new_integration_id
from tests.support.waiting import eventually


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def consuming_identity(start_identity) -> Identity:
    # Its own durable: other tests' identity instances must not take this test's events.
    return await start_identity(durable=f"identity-test-{uuid.uuid4().hex[:12]}")


def integration_event(kind: str, org: str, integration_id: str, *, at: dt.datetime | None = None,
                      scopes: tuple[str, ...] = (), event_id: str | None = None) -> events_pb2.IntegrationChanged:
    occurred = Timestamp()
    occurred.FromDatetime(at or dt.datetime.now(dt.timezone.utc))
    return events_pb2.IntegrationChanged(
        event_id=event_id or new_id("evt"), occurred_at=occurred, kind=kind, org_id=org, integration_id=integration_id,
        status={"suspended": "suspended", "revoked": "revoked"}.get(kind, "active"), scopes=list(scopes), actor_id="usr_registry",
    )


async def publish(nc: NATS, event: events_pb2.IntegrationChanged, *, msg_id: str | None = None) -> None:
    await nc.jetstream().publish(
        f"trellis.integration.{event.kind}", event.SerializeToString(), headers={"Nats-Msg-Id": msg_id or event.event_id}
    )


async def key_refused(identity: Identity, edge: Metadata, api_key: str) -> bool:
    try:
        await identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=api_key), metadata=edge)
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


async def token_scope(identity: Identity, edge: Metadata, creds: pb.Credentials) -> str:
    grant = pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret)
    return (await identity.stub.IssueToken(grant, metadata=edge)).scope


async def test_suspended_event_revokes_the_integrations_credentials(
    consuming_identity: Identity, nc: NATS, admin: Metadata, edge: Metadata, org: str
) -> None:
    integration_id = new_integration_id()
    creds = await issue(consuming_identity.stub, admin, integration_id)
    await publish(nc, integration_event("suspended", org, integration_id))
    await eventually(lambda: key_refused(consuming_identity, edge, creds.api_key), what="the key to be revoked by the event")
    info = await consuming_identity.stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=admin)
    assert info.status == pb.CREDENTIAL_STATUS_REVOKED


async def test_an_event_older_than_the_credentials_does_not_revoke_them(
    consuming_identity: Identity, nc: NATS, admin: Metadata, edge: Metadata, org: str
) -> None:
    integration_id = new_integration_id()
    creds = await issue(consuming_identity.stub, admin, integration_id, scopes=("inventory:read",))
    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    await publish(nc, integration_event("suspended", org, integration_id, at=stale))
    # An `updated` event published after it is applied after it: once its effect shows, the
    # stale suspension has been handled.
    await publish(nc, integration_event("updated", org, integration_id, scopes=("inventory:read", "orders:read")))

    async def synced() -> bool:
        return await token_scope(consuming_identity, edge, creds) == "inventory:read orders:read"

    await eventually(synced, what="the scope sync")
    assert not await key_refused(consuming_identity, edge, creds.api_key)


async def test_a_redelivered_event_is_applied_once(
    consuming_identity: Identity, nc: NATS, admin: Metadata, edge: Metadata, org: str
) -> None:
    integration_id = new_integration_id()
    first = await issue(consuming_identity.stub, admin, integration_id, scopes=("inventory:read",))
    suspended = integration_event("suspended", org, integration_id)
    await publish(nc, suspended)
    await eventually(lambda: key_refused(consuming_identity, edge, first.api_key), what="the first revocation")

    second = await issue(consuming_identity.stub, admin, integration_id, scopes=("inventory:read",))
    # The same event again (new stream message, same event id, now newer than the credentials).
    again = integration_event("suspended", org, integration_id, event_id=suspended.event_id)
    await publish(nc, again, msg_id=new_id("msg"))
    await publish(nc, integration_event("updated", org, integration_id, scopes=("orders:read",)))

    async def synced() -> bool:
        return await token_scope(consuming_identity, edge, second) == "orders:read"

    await eventually(synced, what="the marker event")
    assert not await key_refused(consuming_identity, edge, second.api_key)


async def test_changes_publish_credentials_and_audit_events_without_secrets(
    identity: Identity, nc: NATS, admin: Metadata, org: str
) -> None:
    received: list[tuple[str, bytes]] = []

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        received.append((msg.subject, msg.data))

    await nc.subscribe("trellis.credentials.>", cb=collect)
    await nc.subscribe("trellis.audit.identity.>", cb=collect)
    await nc.flush()

    integration_id = new_integration_id()
    creds = await issue(identity.stub, admin, integration_id)
    regenerated = await identity.stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=admin)
    await identity.stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id, reason="offboarded"), metadata=admin)

    def mine() -> dict[str, list]:
        by_subject: dict[str, list] = {}
        for subject, data in received:
            if subject.startswith("trellis.credentials."):
                event = events_pb2.CredentialsChanged.FromString(data)
            else:
                event = events_pb2.AuditEvent.FromString(data)
            if integration_id in (getattr(event, "integration_id", ""), getattr(event, "object_id", "")):
                by_subject.setdefault(subject, []).append(event)
        return by_subject

    expected = {
        "trellis.credentials.issued", "trellis.credentials.api_key_regenerated", "trellis.credentials.revoked",
        "trellis.audit.identity.credentials.issued", "trellis.audit.identity.credentials.api_key_regenerated",
        "trellis.audit.identity.credentials.revoked",
    }

    async def all_arrived() -> bool:
        return expected <= mine().keys()

    await eventually(all_arrived, what="identity's events")
    events = mine()
    regen = events["trellis.credentials.api_key_regenerated"][0]
    assert list(regen.revoked_api_key_hashes) == [hashlib.sha256(creds.api_key.encode()).hexdigest()]
    revoked = events["trellis.credentials.revoked"][0]
    assert list(revoked.revoked_api_key_hashes) == [hashlib.sha256(regenerated.api_key.encode()).hexdigest()]
    assert list(revoked.revoked_client_ids) == [creds.client_id] and revoked.org_id == org
    audit = events["trellis.audit.identity.credentials.revoked"][0]
    assert audit.service == "identity" and audit.action == "credentials.revoked" and audit.reason == "offboarded"
    assert audit.actor_id.startswith("usr_") and audit.org_id == org and audit.event_id
    for subject, data in received:
        for secret in (creds.api_key, creds.client_secret, regenerated.api_key):
            assert secret.encode() not in data, subject


async def test_rotation_publishes_the_new_kid(identity: Identity, nc: NATS, operator: Metadata) -> None:
    rotated: list[events_pb2.CredentialsChanged] = []

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        rotated.append(events_pb2.CredentialsChanged.FromString(msg.data))

    await nc.subscribe("trellis.credentials.signing_key_rotated", cb=collect)
    await nc.flush()
    response = await identity.stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=operator)

    async def arrived() -> bool:
        return any(event.kid == response.kid for event in rotated)

    await eventually(arrived, what="the signing_key_rotated event")


async def test_issue_regenerate_and_revoke_return_only_after_their_event_is_in_the_stream(
    identity: Identity, nc: NATS, admin: Metadata, operator: Metadata
) -> None:
    # Read right after each call, with no waiting: the edge drops a cached key on these
    # events, so the call must not return before JetStream has them.
    js = nc.jetstream()

    async def last(kind: str) -> events_pb2.CredentialsChanged:
        msg = await js.get_last_msg("TRELLIS", f"trellis.credentials.{kind}")
        return events_pb2.CredentialsChanged.FromString(msg.data)

    integration_id = new_integration_id()
    creds = await issue(identity.stub, admin, integration_id)
    assert (await last("issued")).integration_id == integration_id

    await identity.stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=admin)
    regenerated = await last("api_key_regenerated")
    assert (regenerated.integration_id, list(regenerated.revoked_api_key_hashes)) == (
        integration_id, [hashlib.sha256(creds.api_key.encode()).hexdigest()],
    )

    await identity.stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id, reason="gone"), metadata=admin)
    revoked = await last("revoked")
    assert (revoked.integration_id, list(revoked.revoked_client_ids)) == (integration_id, [creds.client_id])

    response = await identity.stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=operator)
    assert (await last("signing_key_rotated")).kid == response.kid
