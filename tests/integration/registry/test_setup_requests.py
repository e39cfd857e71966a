"""Setup requests of pre-built integrations over real gRPC, with a real nats-server and the
registry's SQLite file: the lifecycle an organisation and the platform team see, isolation by
id across organisations, permission refusals, secrets never returned nor at rest in plain text,
idempotent create, and the audit events on the bus; the platform team reading the secrets
(RevealSetupRequestSecrets), their erasure when final, and separation of duties."""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.js.api import DeliverPolicy

from services.contracts.trellis.events.v1 import events_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION
from services.kit.natsproc import NatsServer
from services.kit.rpc_errors import from_rpc_error
from tests.integration.registry.helpers import AsActor, new_org, refused
from tests.support.settings import Settings
from tests.support.waiting import eventually

Stub = registry_pb2_grpc.RegistryStub
SECRET_KEY, SECRET = "ck_" + uuid.uuid4().hex, "cs_" + uuid.uuid4().hex
WOO = {"store_url": "https://shop.example.com", "consumer_key": SECRET_KEY, "consumer_secret": SECRET}
SUBMITTED, IN_PROGRESS = pb.SETUP_REQUEST_STATUS_SUBMITTED, pb.SETUP_REQUEST_STATUS_IN_PROGRESS
CONFIGURED, DECLINED = pb.SETUP_REQUEST_STATUS_CONFIGURED, pb.SETUP_REQUEST_STATUS_DECLINED


def operator(as_actor: AsActor) -> Any:
    return as_actor("op_pat", "org_platform", [PLATFORM_PERMISSION])


async def submit(stub: Stub, md: Any, **fields: Any) -> pb.SetupRequest:
    values: dict[str, Any] = {"prebuilt_id": "woocommerce", "connection": WOO, "contact_email": "ops@example.com",
                              "notes": "Weekdays only"}
    values.update(fields)
    return await stub.CreateSetupRequest(pb.CreateSetupRequestRequest(**values), metadata=md)


async def test_the_catalogue_lists_three_prebuilt_integrations_none_of_them_a_vendor(
        registry_stub: Stub, as_actor: AsActor) -> None:
    md = as_actor("reader", new_org(), [])
    catalogue = (await registry_stub.ListPrebuiltIntegrations(pb.ListPrebuiltIntegrationsRequest(), metadata=md)).integrations
    assert [p.id for p in catalogue] == ["woocommerce", "shopify", "quickbooks_online"]
    woo = {f.name: f for f in catalogue[0].fields}
    assert woo["consumer_secret"].secret and woo["consumer_secret"].required and woo["store_url"].max_length == 2048
    vendors = [v.id for v in (await registry_stub.ListVendors(pb.ListVendorsRequest(), metadata=md)).vendors]
    assert len(vendors) == 12 and "woocommerce" not in vendors
    error = await refused(registry_stub.CreateIntegration(pb.CreateIntegrationRequest(
        vendor_id="woocommerce", name="Woo", owner="o", scopes=["orders:read"]), metadata=as_actor("a", new_org())))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "woocommerce" in (error.details() or "")


async def test_submitted_started_configured_as_the_organisation_and_the_team_see_it(
        registry_stub: Stub, as_actor: AsActor) -> None:
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    created = await submit(registry_stub, rita)
    assert created.status == SUBMITTED and created.org_id == org and created.requested_by == "rita"
    assert dict(created.connection) == {"store_url": "https://shop.example.com"}
    assert list(created.secrets_given) == ["consumer_key", "consumer_secret"]

    queue = await registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(
        all_organisations=True, statuses=[SUBMITTED], page_size=500), metadata=team)
    assert created.id in [r.id for r in queue.setup_requests]
    started = await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
    assert started.status == IN_PROGRESS and started.handled_by == "op_pat"
    done = await registry_stub.CompleteSetupRequest(pb.CompleteSetupRequestRequest(
        setup_request_id=created.id, note="Orders sync every 15 minutes"), metadata=team)
    assert done.status == CONFIGURED and done.configured_note == "Orders sync every 15 minutes"

    seen = await registry_stub.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=created.id), metadata=rita)
    assert seen.status == CONFIGURED and seen.version == 3
    assert [(s.action, s.actor_id, s.from_status, s.to_status) for s in seen.history] == [
        ("submitted", "rita", pb.SETUP_REQUEST_STATUS_UNSPECIFIED, SUBMITTED),
        ("started", "op_pat", SUBMITTED, IN_PROGRESS), ("configured", "op_pat", IN_PROGRESS, CONFIGURED),
        ("secrets_erased", "op_pat", CONFIGURED, CONFIGURED)]
    again = await refused(registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
        setup_request_id=created.id, reason="late"), metadata=team))
    assert again.code() is grpc.StatusCode.FAILED_PRECONDITION and "configured" in (again.details() or "")


async def test_decline_needs_a_reason_and_the_organisation_reads_it(registry_stub: Stub, as_actor: AsActor) -> None:
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    created = await submit(registry_stub, rita, prebuilt_id="shopify",
                           connection={"shop_domain": "acme.myshopify.com", "admin_api_access_token": "shpat_x"})
    missing = await refused(registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
        setup_request_id=created.id), metadata=team))
    assert missing.code() is grpc.StatusCode.INVALID_ARGUMENT
    await registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
        setup_request_id=created.id, reason="The token lacks the write_orders scope"), metadata=team)
    own = await registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(), metadata=rita)
    assert [(r.id, r.status, r.decline_reason) for r in own.setup_requests] == [
        (created.id, DECLINED, "The token lacks the write_orders scope")]


async def test_another_organisations_request_is_not_found_and_not_listed(registry_stub: Stub, as_actor: AsActor) -> None:
    mine = await submit(registry_stub, as_actor("rita", new_org()))
    eve = as_actor("eve", new_org())
    for guess in (mine.id, mine.id[:-1] + "x", "setup_" + "9" * 30, "é" * 3):
        error = await refused(registry_stub.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=guess), metadata=eve))
        assert error.code() is grpc.StatusCode.NOT_FOUND, guess
    assert (await registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(), metadata=eve)).setup_requests == []


async def test_an_administrator_cannot_move_requests_or_read_every_organisation(registry_stub: Stub,
                                                                               as_actor: AsActor) -> None:
    org = new_org()
    rita = as_actor("rita", org)
    created = await submit(registry_stub, rita)
    for call in (registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=rita),
                 registry_stub.CompleteSetupRequest(pb.CompleteSetupRequestRequest(setup_request_id=created.id), metadata=rita),
                 registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(setup_request_id=created.id, reason="x"),
                                                   metadata=rita),
                 registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(all_organisations=True), metadata=rita)):
        error = await refused(call)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED and PLATFORM_PERMISSION in (error.details() or "")
    nobody = as_actor("nobody", org, [])
    error = await refused(submit(registry_stub, nobody))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED and ADMIN_PERMISSION in (error.details() or "")
    # An operator of the platform, not an administrator of the organisation, creates nothing in it.
    error = await refused(submit(registry_stub, operator(as_actor)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_bad_connection_details_are_invalid_argument_naming_the_field(registry_stub: Stub, as_actor: AsActor) -> None:
    md = as_actor("rita", new_org())
    cases = [
        ({"connection": {**WOO, "store_url": "ftp://shop"}}, "connection.store_url"),
        ({"connection": {**WOO, "password": "x"}}, "connection.password"),
        ({"connection": {"store_url": "https://shop.example.com"}}, "connection.consumer_key"),
        ({"connection": {**WOO, "consumer_secret": "s" * 201}}, "connection.consumer_secret"),
        ({"contact_email": "not-an-email"}, "contact_email"),
        ({"prebuilt_id": "sap"}, "prebuilt_id"),
        ({"request_id": "bad id"}, "request_id"),
    ]
    for fields, field in cases:
        error = await refused(submit(registry_stub, md, **fields))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert from_rpc_error(error).fields["field"] == field, (field, error.details())
    error = await refused(registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(page_size=-1), metadata=md))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_secrets_are_never_returned_and_not_stored_in_plain_text(
        registry_stub: Stub, as_actor: AsActor, make_settings: Callable[..., Settings]) -> None:
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    created = await submit(registry_stub, rita)
    answers = [created,
               await registry_stub.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=created.id), metadata=team),
               await registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(), metadata=rita)]
    for answer in answers:
        raw = answer.SerializeToString()
        assert SECRET.encode() not in raw and SECRET_KEY.encode() not in raw
    db_file = Path(make_settings().database_url("registry").removeprefix("sqlite+aiosqlite:///"))
    stored = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
    assert SECRET.encode() not in stored and SECRET_KEY.encode() not in stored
    with sqlite3.connect(db_file) as db:
        (sealed,) = db.execute("SELECT sealed_secrets FROM setup_requests WHERE id = ?", (created.id,)).fetchone()
    assert sealed.startswith(b"TE1")


async def test_a_retried_create_with_the_same_request_id_returns_the_first(registry_stub: Stub, as_actor: AsActor) -> None:
    org = new_org()
    md = as_actor("rita", org)
    request_id = uuid.uuid4().hex
    first = await submit(registry_stub, md, request_id=request_id)
    again = await submit(registry_stub, md, request_id=request_id)
    assert again.id == first.id
    elsewhere = await submit(registry_stub, as_actor("bo", new_org()), request_id=request_id)
    assert elsewhere.id != first.id
    own = await registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(), metadata=md)
    assert [r.id for r in own.setup_requests] == [first.id]


async def test_the_queue_pages_oldest_first_across_organisations(registry_stub: Stub, as_actor: AsActor) -> None:
    made = [(await submit(registry_stub, as_actor("rita", new_org()), prebuilt_id="quickbooks_online",
                          connection={"company_id": str(n)})).id for n in range(3)]
    team, seen, token = operator(as_actor), [], ""
    while True:
        page = await registry_stub.ListSetupRequests(pb.ListSetupRequestsRequest(
            all_organisations=True, page_size=1, page_token=token), metadata=team)
        seen += [r.id for r in page.setup_requests]
        if not (token := page.next_page_token):
            break
    assert [i for i in seen if i in made] == made


async def test_each_change_is_an_audit_event_in_the_requesting_organisations_trail(
        registry_stub: Stub, as_actor: AsActor, nats_server: NatsServer) -> None:
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    nc = await nats.connect(nats_server.url)
    audits: list[tuple[str, events_pb2.AuditEvent]] = []

    async def on_audit(msg: Any) -> None:
        audits.append((msg.subject, events_pb2.AuditEvent.FromString(msg.data)))

    try:
        await nc.jetstream().subscribe("trellis.audit.registry.setup_request.>", cb=on_audit, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.NEW)
        created = await submit(registry_stub, rita)
        await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
        await registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
            setup_request_id=created.id, reason="Store unreachable"), metadata=team)
        mine = lambda: [(s, e) for s, e in audits if e.object_id == created.id]  # noqa: E731

        async def arrived() -> bool:
            return len(mine()) >= 3

        await eventually(arrived, what="the three setup request audit events")
    finally:
        await nc.close()
    kinds = ["submitted", "started", "declined"]
    assert [s for s, _ in mine()] == [f"trellis.audit.registry.setup_request.{k}" for k in kinds]
    events = [e for _, e in mine()]
    assert [(e.action, e.actor_id, e.org_id, e.object_type) for e in events] == [
        (f"setup_request.{k}", actor, org, "setup_request") for k, actor in zip(kinds, ["rita", "op_pat", "op_pat"])]
    assert events[0].before_json == "" and events[2].reason == "Store unreachable"
    for e in events:
        assert SECRET not in e.before_json + e.after_json and SECRET_KEY not in e.before_json + e.after_json


# --- the platform team reads the secrets; erasure; separation of duties ---------------------------


def sealed_at_rest(make_settings: Callable[..., Settings], setup_request_id: str) -> bytes | None:
    db_file = Path(make_settings().database_url("registry").removeprefix("sqlite+aiosqlite:///"))
    with sqlite3.connect(db_file) as db:
        (sealed,) = db.execute("SELECT sealed_secrets FROM setup_requests WHERE id = ?", (setup_request_id,)).fetchone()
    return bytes(sealed) if sealed is not None else None


async def reveal(stub: Stub, md: Any, setup_request_id: str, reason: str = "") -> pb.RevealSetupRequestSecretsResponse:
    return await stub.RevealSetupRequestSecrets(pb.RevealSetupRequestSecretsRequest(
        setup_request_id=setup_request_id, reason=reason), metadata=md)


async def test_an_operator_reads_the_secrets_of_an_in_progress_request_and_the_organisation_sees_who(
        registry_stub: Stub, as_actor: AsActor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    created = await submit(registry_stub, rita)
    await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
    answer = await reveal(registry_stub, team, created.id, "Setting up the order webhook")
    assert dict(answer.secrets) == {"consumer_key": SECRET_KEY, "consumer_secret": SECRET}
    seen = await registry_stub.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=created.id), metadata=rita)
    step = seen.history[-1]
    assert (step.action, step.actor_id, step.from_status, step.to_status, step.note) == (
        "secrets_revealed", "op_pat", IN_PROGRESS, IN_PROGRESS, "Setting up the order webhook")
    assert step.at.seconds > 0 and seen.status == IN_PROGRESS
    assert SECRET.encode() not in seen.SerializeToString()
    assert caplog.records, "expected some DEBUG log output to search"
    logged = caplog.text + "".join(str(r.args) + str(r.__dict__) for r in caplog.records)
    assert SECRET not in logged and SECRET_KEY not in logged


async def test_reading_the_secrets_is_refused_to_administrators_other_organisations_and_outside_in_progress(
        registry_stub: Stub, as_actor: AsActor) -> None:
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    created = await submit(registry_stub, rita)
    early = await refused(reveal(registry_stub, team, created.id))
    assert early.code() is grpc.StatusCode.FAILED_PRECONDITION and "start it first" in (early.details() or "")
    await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
    for md in (as_actor("ada", org), as_actor("eve", new_org())):
        error = await refused(reveal(registry_stub, md, created.id))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED and PLATFORM_PERMISSION in (error.details() or "")
        # Refused before any lookup: the answer is the same for an id that exists nowhere.
        guessed = await refused(reveal(registry_stub, md, "setup_" + "9" * 30))
        assert (guessed.code(), guessed.details()) == (error.code(), error.details())
    # Operators see every organisation's requests; an id that names none is NOT_FOUND.
    error = await refused(reveal(registry_stub, team, "setup_" + "9" * 30))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    error = await refused(reveal(registry_stub, team, ""))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and from_rpc_error(error).fields["field"] == "setup_request_id"
    error = await refused(reveal(registry_stub, team, created.id, "x" * 2001))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and from_rpc_error(error).fields["field"] == "reason"
    qb = await submit(registry_stub, rita, prebuilt_id="quickbooks_online", connection={"company_id": "9130354"})
    await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=qb.id), metadata=team)
    error = await refused(reveal(registry_stub, team, qb.id))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and "no secret" in (error.details() or "")
    seen = await registry_stub.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=created.id), metadata=rita)
    assert "secrets_revealed" not in [s.action for s in seen.history]


@pytest.mark.parametrize("end", ["complete", "decline"])
async def test_configured_or_declined_deletes_the_sealed_blob_from_the_row(
        registry_stub: Stub, as_actor: AsActor, make_settings: Callable[..., Settings], end: str) -> None:
    rita, team = as_actor("rita", new_org()), operator(as_actor)
    created = await submit(registry_stub, rita)
    await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
    assert sealed_at_rest(make_settings, created.id) is not None
    if end == "complete":
        done = await registry_stub.CompleteSetupRequest(pb.CompleteSetupRequestRequest(
            setup_request_id=created.id), metadata=team)
    else:
        done = await registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
            setup_request_id=created.id, reason="Wrong store"), metadata=team)
    assert sealed_at_rest(make_settings, created.id) is None
    assert list(done.secrets_given) == ["consumer_key", "consumer_secret"] and done.history[-1].action == "secrets_erased"
    error = await refused(reveal(registry_stub, team, created.id))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and "erased" in (error.details() or "")


async def test_the_requester_cannot_start_complete_decline_or_read_their_own_request(
        registry_stub: Stub, as_actor: AsActor) -> None:
    org = new_org()
    # The embedded Administrator holds both permissions: the rule is about the person, not the role.
    rita = as_actor("rita", org, [ADMIN_PERMISSION, PLATFORM_PERMISSION])
    ada = as_actor("ada", org, [ADMIN_PERMISSION, PLATFORM_PERMISSION])
    created = await submit(registry_stub, rita)

    async def refused_to_rita(call: Any) -> None:
        error = await refused(call)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert "you submitted this setup request" in (error.details() or "")
        assert "separation of duties" in (error.details() or "")
        assert "permission" not in from_rpc_error(error).fields

    await refused_to_rita(registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id),
                                                          metadata=rita))
    await refused_to_rita(registry_stub.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
        setup_request_id=created.id, reason="mine"), metadata=rita))
    await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=ada)
    await refused_to_rita(reveal(registry_stub, rita, created.id))
    await refused_to_rita(registry_stub.CompleteSetupRequest(pb.CompleteSetupRequestRequest(
        setup_request_id=created.id), metadata=rita))
    assert (await reveal(registry_stub, ada, created.id)).secrets["consumer_secret"] == SECRET
    done = await registry_stub.CompleteSetupRequest(pb.CompleteSetupRequestRequest(setup_request_id=created.id),
                                                    metadata=ada)
    assert done.status == CONFIGURED and done.handled_by == "ada"


async def test_a_read_of_the_secrets_is_an_audit_event_naming_them_without_their_values(
        registry_stub: Stub, as_actor: AsActor, nats_server: NatsServer) -> None:
    org = new_org()
    rita, team = as_actor("rita", org), operator(as_actor)
    nc = await nats.connect(nats_server.url)
    audits: list[tuple[str, events_pb2.AuditEvent]] = []

    async def on_audit(msg: Any) -> None:
        audits.append((msg.subject, events_pb2.AuditEvent.FromString(msg.data)))

    try:
        await nc.jetstream().subscribe("trellis.audit.registry.setup_request.>", cb=on_audit, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.NEW)
        created = await submit(registry_stub, rita)
        await registry_stub.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=created.id), metadata=team)
        await registry_stub.RevealSetupRequestSecrets(pb.RevealSetupRequestSecretsRequest(
            setup_request_id=created.id, reason="Webhook setup"), metadata=(*team, ("x-request-id", "req-reveal-1")))
        mine = lambda: [(s, e) for s, e in audits if e.object_id == created.id]  # noqa: E731

        async def arrived() -> bool:
            return len(mine()) >= 3

        await eventually(arrived, what="the submitted, started and secrets_revealed audit events")
    finally:
        await nc.close()
    subject, event = mine()[2]
    assert subject == "trellis.audit.registry.setup_request.secrets_revealed"
    assert (event.action, event.actor_id, event.org_id, event.object_type, event.reason) == (
        "setup_request.secrets_revealed", "op_pat", org, "setup_request", "Webhook setup")
    assert event.request_id == "req-reveal-1"
    before, after = json.loads(event.before_json), json.loads(event.after_json)
    assert after["secrets_given"] == ["consumer_key", "consumer_secret"] and after["version"] == before["version"] + 1
    raw = event.SerializeToString()
    assert SECRET.encode() not in raw and SECRET_KEY.encode() not in raw
