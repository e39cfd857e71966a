"""Identity's use cases at the unit-of-work seam (tests/unit/identity/memory.py): issuing,
verifying, revoking and regenerating credentials, the client-credentials grant and its refusals,
signing-key rotation, the registry's events; what each commits, publishes and waits for."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pytest

from services.contracts.trellis.events.v1 import events_pb2
from services.identity.adapters.signing import JwtSigning
from services.identity.application import commands
from services.identity.application.handlers import CredentialHandlers, PartnerEndpoints
from services.identity.application.tokens import SigningKeyRing, TokenHandlers
from services.identity.domain.model import TokenSettings
from services.kit import jwtverify
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, PLATFORM_PERMISSION, Actor
from services.kit.crypto import Envelope
from services.kit.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from services.kit.uow import MemoryStore, WriteConflict
from tests.unit.identity.memory import MemoryIdentityUnitOfWork

PREFIX = "grq_live_"
ENDPOINTS = PartnerEndpoints(api_key_prefix=PREFIX, token_url="https://api.test/oauth/token",
                             issuer="https://api.test", audience="trellis-api")
TOKENS = TokenSettings(issuer="https://api.test", audience="trellis-api", ttl_seconds=3600)
EDGE = Actor("svc_edge", "org_trellis_edge", frozenset({EDGE_PERMISSION}))
OPERATOR = Actor("usr_op", "org_platform", frozenset({PLATFORM_PERMISSION}))


def admin(org: str = "org_a") -> Actor:
    return Actor(f"usr_{uuid.uuid4().hex[:6]}", org, frozenset({ADMIN_PERMISSION}))


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.ring = SigningKeyRing(self.unit, JwtSigning(Envelope({1: os.urandom(32)}, 1), "ES256"))
        self.credentials = CredentialHandlers(self.unit, ENDPOINTS)
        self.tokens = TokenHandlers(self.unit, self.ring, TOKENS)

    def unit(self, *, read_only: bool = False) -> MemoryIdentityUnitOfWork:
        return MemoryIdentityUnitOfWork(self.store)

    def subjects(self) -> list[str]:
        return [e.subject for e in self.store.events]

    async def issue(self, actor: Actor, integration_id: str = "int_1", request_id: str = "",
                    scopes: tuple[str, ...] = ("inventory:read", "orders:write")) -> commands.IssuedCredentials:
        return await self.credentials.issue_credentials(
            actor, commands.IssueCredentials(integration_id, scopes, request_id=request_id or uuid.uuid4().hex)
        )


@pytest.fixture
async def world() -> World:
    w = World()
    await w.ring.ensure_current()
    return w


async def test_issued_credentials_verify_and_their_events_are_on_the_bus_before_the_call_returns(world: World) -> None:
    actor = admin()
    issued = await world.issue(actor)
    assert issued.api_key.startswith(PREFIX) and issued.api_key_prefix == issued.api_key[:16]
    assert (issued.token_url, issued.issuer, issued.audience) == (ENDPOINTS.token_url, ENDPOINTS.issuer, ENDPOINTS.audience)
    verified = await world.credentials.verify_api_key(EDGE, issued.api_key)
    assert (verified.integration_id, verified.org_id, verified.client_ids) == ("int_1", "org_a", (issued.client_id,))
    assert world.subjects() == ["trellis.credentials.issued", "trellis.audit.identity.credentials.issued"]
    assert world.store.published[-1] == [e.event_id for e in world.store.events]
    audit = events_pb2.AuditEvent.FromString(world.store.events[1].payload)
    assert issued.api_key not in audit.after_json and issued.client_secret not in audit.after_json
    assert json.loads(audit.after_json)["client_ids"] == [issued.client_id]


async def test_a_retry_replaces_what_the_first_call_issued_and_a_superseded_one_is_refused(world: World) -> None:
    actor = admin()
    first = await world.issue(actor, request_id="req_one")
    retry = await world.issue(actor, request_id="req_one")
    with pytest.raises(Unauthenticated):
        await world.credentials.verify_api_key(EDGE, first.api_key)
    assert (await world.credentials.verify_api_key(EDGE, retry.api_key)).integration_id == "int_1"
    changed = events_pb2.CredentialsChanged.FromString(world.store.events[-2].payload)
    assert list(changed.revoked_client_ids) == [first.client_id]
    await world.issue(actor, request_id="req_two")
    with pytest.raises(FailedPrecondition):
        await world.issue(actor, request_id="req_one")


async def test_another_organisations_integration_is_not_found(world: World) -> None:
    await world.issue(admin("org_a"))
    with pytest.raises(NotFound):
        await world.issue(admin("org_b"))
    with pytest.raises(NotFound):
        await world.credentials.credential_info(admin("org_b"), "int_1")
    assert await world.credentials.revoke_credentials(admin("org_b"), commands.RevokeCredentials("int_2")) == 0


@pytest.mark.parametrize("presented", ["", "nope", PREFIX + "A" * 43, "grq_test_" + "A" * 43, PREFIX + "bad key!"])
async def test_anything_but_a_live_key_is_invalid_api_key(world: World, presented: str) -> None:
    await world.issue(admin())
    with pytest.raises(Unauthenticated) as refused:
        await world.credentials.verify_api_key(EDGE, presented)
    assert refused.value.fields == {"error": "invalid_api_key"}


async def test_verifying_a_key_needs_the_edge_permission(world: World) -> None:
    issued = await world.issue(admin())
    with pytest.raises(PermissionDenied):
        await world.credentials.verify_api_key(admin(), issued.api_key)


async def test_revoking_ends_every_live_credential_once(world: World) -> None:
    actor = admin()
    issued = await world.issue(actor)
    assert await world.credentials.revoke_credentials(actor, commands.RevokeCredentials("int_1", "done")) == 2
    assert await world.credentials.revoke_credentials(actor, commands.RevokeCredentials("int_1")) == 0
    with pytest.raises(Unauthenticated):
        await world.credentials.verify_api_key(EDGE, issued.api_key)
    info = await world.credentials.credential_info(actor, "int_1")
    assert not info.live and info.client_id == issued.client_id
    assert world.subjects()[-2:] == ["trellis.credentials.revoked", "trellis.audit.identity.credentials.revoked"]


async def test_regenerating_needs_live_credentials_and_ends_the_old_key(world: World) -> None:
    actor = admin()
    with pytest.raises(NotFound):
        await world.credentials.regenerate_api_key(actor, commands.RegenerateApiKey("int_1"))
    issued = await world.issue(actor)
    new = await world.credentials.regenerate_api_key(actor, commands.RegenerateApiKey("int_1"))
    with pytest.raises(Unauthenticated):
        await world.credentials.verify_api_key(EDGE, issued.api_key)
    assert (await world.credentials.verify_api_key(EDGE, new.api_key)).api_key_prefix == new.api_key_prefix
    await world.credentials.revoke_credentials(actor, commands.RevokeCredentials("int_1"))
    with pytest.raises(FailedPrecondition):
        await world.credentials.regenerate_api_key(actor, commands.RegenerateApiKey("int_1"))


async def test_a_write_conflict_is_aborted_naming_the_integration_and_leaves_nothing(world: World) -> None:
    actor = admin()
    before = (world.store.commits, len(world.store.events))
    world.store.fail_next_commit = WriteConflict("another request changed the same data at the same time; retry")
    with pytest.raises(Aborted) as aborted:
        await world.issue(actor)
    assert aborted.value.message == "credentials for this integration changed concurrently; retry"
    assert aborted.value.fields == {"integration_id": "int_1"}
    assert (world.store.commits, len(world.store.events)) == before
    with pytest.raises(NotFound):
        await world.credentials.credential_info(actor, "int_1")


async def test_a_token_for_a_live_client_verifies_with_what_it_grants(world: World) -> None:
    issued = await world.issue(admin())
    token = await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret, "inventory:read"))
    assert token.scopes == ("inventory:read",) and token.expires_in == 3600
    access = await world.tokens.verify_access_token(EDGE, token.access_token)
    assert (access.integration_id, access.org_id, access.client_id, access.scopes) == (
        "int_1", "org_a", issued.client_id, ("inventory:read",))
    kid = jwtverify.read_header(token.access_token)["kid"]
    assert [k["kid"] for k in json.loads(await world.tokens.jwks())["keys"]] == [kid]


async def test_token_refusals_say_invalid_client_and_name_the_integration_only_when_it_exists(world: World) -> None:
    issued = await world.issue(admin())
    with pytest.raises(Unauthenticated) as unknown:
        await world.tokens.issue_token(EDGE, commands.IssueToken("trc_unknown", issued.client_secret))
    assert unknown.value.fields == {"error": "invalid_client"}
    with pytest.raises(Unauthenticated) as wrong:
        await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret[::-1]))
    assert wrong.value.fields == {"error": "invalid_client", "integration_id": "int_1", "org_id": "org_a"}
    with pytest.raises(InvalidArgument) as scope:
        await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret, "reports:execute"))
    assert scope.value.fields == {"error": "invalid_scope", "integration_id": "int_1", "org_id": "org_a"}
    with pytest.raises(PermissionDenied):
        await world.tokens.issue_token(admin(), commands.IssueToken(issued.client_id, issued.client_secret))


async def test_a_revoked_clients_token_and_secret_stop_working(world: World) -> None:
    actor = admin()
    issued = await world.issue(actor)
    token = await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret))
    await world.credentials.revoke_credentials(actor, commands.RevokeCredentials("int_1"))
    with pytest.raises(Unauthenticated):
        await world.tokens.verify_access_token(EDGE, token.access_token)
    with pytest.raises(Unauthenticated) as refused:
        await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret))
    assert refused.value.fields["error"] == "invalid_client"


async def test_rotation_keeps_the_previous_key_verifying_and_needs_a_platform_operator(world: World) -> None:
    issued = await world.issue(admin())
    old = await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret))
    with pytest.raises(PermissionDenied):
        await world.tokens.rotate_signing_key(admin(), commands.RotateSigningKey())
    rotated = await world.tokens.rotate_signing_key(OPERATOR, commands.RotateSigningKey("req_rot"))
    assert rotated.previous_kid == jwtverify.read_header(old.access_token)["kid"] != rotated.kid
    assert [k["kid"] for k in json.loads(await world.tokens.jwks())["keys"]] == [rotated.kid, rotated.previous_kid]
    assert (await world.tokens.verify_access_token(EDGE, old.access_token)).client_id == issued.client_id
    new = await world.tokens.issue_token(EDGE, commands.IssueToken(issued.client_id, issued.client_secret))
    assert jwtverify.read_header(new.access_token)["kid"] == rotated.kid
    assert world.subjects()[-2:] == ["trellis.credentials.signing_key_rotated", "trellis.audit.identity.signing_key.rotated"]


async def test_the_registrys_suspension_revokes_earlier_credentials_once(world: World) -> None:
    actor = admin()
    issued = await world.issue(actor)
    change = commands.ApplyIntegrationChange(
        event_id="evt_1", kind="suspended", org_id="org_a", integration_id="int_1", scopes=(),
        occurred_at=dt.datetime.now(dt.timezone.utc),
    )
    await world.credentials.apply_integration_change(change)
    with pytest.raises(Unauthenticated):
        await world.credentials.verify_api_key(EDGE, issued.api_key)
    events_before = len(world.store.events)
    again = await world.issue(actor)
    await world.credentials.apply_integration_change(change)  # the same event again: nothing more
    assert (await world.credentials.verify_api_key(EDGE, again.api_key)).integration_id == "int_1"
    assert world.subjects()[events_before - 2:events_before] == [
        "trellis.credentials.revoked", "trellis.audit.identity.credentials.revoked"]
