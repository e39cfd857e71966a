"""A partner manages its webhook subscriptions through the edge: the secret is shown once and
signs what the receiver gets, the administrator sees the subscription with its owner, the
partner sees and changes only its own, and every call is in the API log."""

from __future__ import annotations

import json
import uuid

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from tests.integration.edge_webhooks.conftest import ApiLog, Client, Stack, verifies
from tests.integration.webhooks.receiver import Receiver
from tests.support.waiting import eventually

LOT = '{"lot_id": "L-1"}'


async def _create(client: Client, receiver: Receiver, types: list[str] | None = None, **fields: object) -> dict:
    status, headers, body = await client("POST", "/v1/webhooks", json={
        "endpoint_url": receiver.url(), "activity_types": types or ["lot.created"], **fields})
    assert status == 201, body
    assert headers["cache-control"] == "no-store" and headers["location"] == f"/v1/webhooks/{body['id']}"
    return body


async def test_a_partner_creates_a_subscription_and_deliveries_verify_with_the_secret_it_got(
    stack: Stack, receiver: Receiver, apilog: ApiLog
) -> None:
    client = await stack.partner()
    request_id = f"create-{uuid.uuid4().hex[:8]}"
    status, headers, created = await client("POST", "/v1/webhooks", headers={"X-Request-ID": request_id}, json={
        "endpoint_url": receiver.url(), "activity_types": ["lot.created", "harvest.recorded"], "description": "ERP lots"})
    assert status == 201, created
    secret = created["signing_secret"]
    assert secret.startswith("whsec_") and headers["cache-control"] == "no-store"
    assert (created["integration_id"], created["organisation_id"], created["status"], created["signature_scheme"]) == (
        client.partner.integration_id, stack.org, "active", "spec")
    assert created["activity_types"] == ["harvest.recorded", "lot.created"] and created["description"] == "ERP lots"

    status, _, shown = await client("GET", f"/v1/webhooks/{created['id']}")
    assert status == 200 and "signing_secret" not in shown and secret not in json.dumps(shown)
    assert shown == {k: v for k, v in created.items() if k != "signing_secret"}
    status, _, listed = await client("GET", "/v1/webhooks")
    assert status == 200 and [s["id"] for s in listed["subscriptions"]] == [created["id"]] and listed["next_cursor"] is None

    everything = await stack.webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=stack.webhooks.admin)
    assert {s.id: s.integration_id for s in everything.subscriptions} == {created["id"]: client.partner.integration_id}

    await stack.webhooks.publish("lot.created", LOT)
    (first,) = await receiver.wait_for(1)
    assert verifies(first, secret) and json.loads(first.body)["data"] == {"lot_id": "L-1"}

    status, _, regenerated = await client("POST", f"/v1/webhooks/{created['id']}/regenerate-secret")
    assert status == 200 and regenerated["signing_secret"].startswith("whsec_") and regenerated["signing_secret"] != secret
    await stack.webhooks.publish("harvest.recorded", '{"harvest_id": "H-1"}')
    second = (await receiver.wait_for(2))[1]
    assert verifies(second, regenerated["signing_secret"]) and not verifies(second, secret)

    status, _, tested = await client("POST", f"/v1/webhooks/{created['id']}/test")
    assert status == 200, tested
    assert tested["attempt"]["succeeded"] and tested["attempt"]["status_code"] == 200
    assert tested["delivery"]["status"] == "succeeded" and tested["delivery"]["test"]
    third = (await receiver.wait_for(3))[2]
    assert json.loads(third.body)["type"] == "webhook.test" and verifies(third, regenerated["signing_secret"])

    record = await eventually(lambda: _found(apilog, request_id), what="the API log record of the create")
    assert (record.integration_id, record.org_id, record.method, record.endpoint, record.status, record.scope_category) == (
        client.partner.integration_id, stack.org, "POST", "/v1/webhooks", 201, "webhooks")
    for data in apilog.raw:
        assert secret.encode() not in data and regenerated["signing_secret"].encode() not in data


async def _found(apilog: ApiLog, request_id: str):  # type: ignore[no-untyped-def]
    return apilog.find(request_id)


async def test_the_delivery_log_and_redelivery_through_the_partner_api(stack: Stack, receiver: Receiver) -> None:
    client = await stack.partner()
    created = await _create(client, receiver)
    receiver.statuses = [404]  # a 4xx is never retried: the delivery fails at once
    event_id = (await stack.webhooks.publish("lot.created", LOT)).event_id
    path = f"/v1/webhooks/{created['id']}"

    async def failed() -> list | None:
        _, _, page = await client("GET", f"{path}/deliveries?outcome=failed")
        return page["deliveries"] or None

    (delivery,) = await eventually(failed, what="the failed delivery")
    assert (delivery["event_id"], delivery["event_type"], delivery["last_status_code"], delivery["last_error"]) == (
        event_id, "lot.created", 404, "http_status")
    status, _, attempts = await client("GET", f"{path}/attempts?outcome=failed&event_id={event_id}")
    assert status == 200 and [(a["attempt"], a["status_code"], a["succeeded"]) for a in attempts["attempts"]] == [(1, 404, False)]
    assert attempts["attempts"][0]["response_body"] == "scripted"

    status, _, redelivered = await client("POST", f"{path}/deliveries/{delivery['id']}/redeliver")
    assert status == 202 and redelivered["status"] == "pending" and redelivered["round"] == 2
    await receiver.wait_for(2)

    async def succeeded() -> dict | None:
        _, _, one = await client("GET", f"{path}/deliveries/{delivery['id']}")
        return one if one["status"] == "succeeded" else None

    done = await eventually(succeeded, what="the redelivery")
    assert [(a["round"], a["status_code"]) for a in done["attempts"]] == [(1, 404), (2, 200)]
    status, _, body = await client("POST", f"{path}/deliveries/{delivery['id']}/redeliver")
    assert (status, body["error"]) == (409, "conflict") and "succeeded" in body["message"]


async def test_pause_resume_update_and_delete(stack: Stack, start_receiver) -> None:  # type: ignore[no-untyped-def]
    first, second = await start_receiver(), await start_receiver()
    client = await stack.partner()
    created = await _create(client, first)
    path = f"/v1/webhooks/{created['id']}"

    status, _, paused = await client("POST", f"{path}/pause")
    assert status == 200 and paused["status"] == "paused"
    assert (await stack.webhooks.publish("lot.created", LOT)).deliveries == 0  # a paused subscription gets nothing
    status, _, resumed = await client("POST", f"{path}/resume")
    assert status == 200 and resumed["status"] == "active"
    assert (await stack.webhooks.publish("lot.created", LOT)).deliveries == 1
    await first.wait_for(1)

    status, _, updated = await client("PATCH", path, json={"endpoint_url": second.url(), "activity_types": ["*"],
                                                           "description": "everything"})
    assert status == 200, updated
    assert (updated["endpoint_url"], updated["activity_types"], updated["description"]) == (second.url(), ["*"], "everything")
    await stack.webhooks.publish("capa.opened", '{"capa_id": "C-1"}')
    (moved,) = await second.wait_for(1)
    assert json.loads(moved.body)["type"] == "capa.opened" and len(first.received) == 1

    status, _, deleted = await client("DELETE", path)
    assert status == 200 and (deleted["id"], deleted["deleted"]) == (created["id"], True)
    assert deleted["cancelled_deliveries"] in (0, 1)  # the last delivery may not have been recorded yet
    status, _, gone = await client("GET", path)
    assert (status, gone["error"]) == (404, "not_found")
    assert (await client("GET", "/v1/webhooks"))[2]["subscriptions"] == []
    assert (await stack.webhooks.publish("lot.created", LOT)).deliveries == 0


async def test_a_partner_sees_and_manages_only_its_own_subscriptions(stack: Stack, receiver: Receiver) -> None:
    a, b = await stack.partner(), await stack.partner()
    stranger = await stack.partner(org=f"org_{uuid.uuid4().hex[:12]}")
    mine = await _create(a, receiver)
    theirs = await _create(b, receiver)
    receiver.statuses = [404]
    await stack.webhooks.publish("lot.created", LOT)

    async def a_delivery() -> list | None:
        return (await a("GET", f"/v1/webhooks/{mine['id']}/deliveries"))[2]["deliveries"] or None

    (delivery,) = await eventually(a_delivery, what="A's delivery")
    path = f"/v1/webhooks/{mine['id']}"
    for other in (b, stranger):
        for method, suffix, body in (("GET", "", None), ("PATCH", "", {"description": "mine now"}), ("DELETE", "", None),
                                     ("POST", "/pause", None), ("POST", "/resume", None), ("POST", "/regenerate-secret", None),
                                     ("POST", "/test", None), ("GET", "/deliveries", None), ("GET", "/attempts", None),
                                     ("GET", f"/deliveries/{delivery['id']}", None),
                                     ("POST", f"/deliveries/{delivery['id']}/redeliver", None)):
            status, _, refused = await other(method, path + suffix, json=body)
            assert (status, refused["error"]) == (404, "not_found"), (method, suffix, refused)
        # A's delivery under the refused caller's own subscription id is not found either.
        if other is b:
            status, _, refused = await b("GET", f"/v1/webhooks/{theirs['id']}/deliveries/{delivery['id']}")
            assert (status, refused["error"]) == (404, "not_found")
    assert [s["id"] for s in (await b("GET", "/v1/webhooks"))[2]["subscriptions"]] == [theirs["id"]]
    assert (await stranger("GET", "/v1/webhooks"))[2]["subscriptions"] == []
    assert (await a("GET", path))[2]["description"] == "" and (await a("GET", path))[2]["status"] == "active"

    everything = await stack.webhooks.stub.ListSubscriptions(pb.ListSubscriptionsRequest(), metadata=stack.webhooks.admin)
    assert {s.id: s.integration_id for s in everything.subscriptions} == {
        mine["id"]: a.partner.integration_id, theirs["id"]: b.partner.integration_id}


async def test_a_partner_reads_what_each_attempt_sent_and_what_its_receiver_answered(stack: Stack, receiver: Receiver) -> None:
    client = await stack.partner()
    created = await _create(client, receiver)
    receiver.answer_headers = {"X-Partner-Receiver": "v2", "X-Echo": f"secret={created['signing_secret']}"}
    receiver.statuses = [422]
    await stack.webhooks.publish("lot.created", LOT)
    [got] = await receiver.wait_for(1)
    path = f"/v1/webhooks/{created['id']}"

    async def failed() -> list | None:
        _, _, page = await client("GET", f"{path}/deliveries?outcome=failed")
        return page["deliveries"] or None

    (delivery,) = await eventually(failed, what="the failed delivery")
    status, _, one = await client("GET", f"{path}/deliveries/{delivery['id']}")
    assert status == 200
    [attempt] = one["attempts"]
    exchange = attempt["exchange"]
    sent = {h["name"]: h["value"] for h in exchange["request_headers"]}
    assert sent["X-Webhook-Signature"] == got.headers["X-Webhook-Signature"]
    answered = {h["name"]: h["value"] for h in exchange["response_headers"]}
    assert answered["X-Partner-Receiver"] == "v2" and answered["X-Echo"] == "secret=[masked]"
    assert exchange["response_body"] == "scripted" and created["signing_secret"] not in json.dumps(one)

    status, _, alone = await client("GET", f"{path}/attempts/{attempt['id']}")
    assert status == 200 and alone["exchange"] == exchange
    _, _, listed = await client("GET", f"{path}/attempts")
    assert "exchange" not in listed["attempts"][0]

    other = await _create(client, receiver)
    status, _, body = await client("GET", f"/v1/webhooks/{other['id']}/attempts/{attempt['id']}")
    assert (status, body["error"]) == (404, "not_found")
    stranger = await stack.partner()
    status, _, body = await stranger("GET", f"{path}/attempts/{attempt['id']}")
    assert status == 404


async def test_a_partner_sets_custom_headers_that_deliveries_send_and_never_sees_their_values(
        stack: Stack, receiver: Receiver) -> None:
    client = await stack.partner()
    key = "partner-gw-key-9876543210"
    created = await _create(client, receiver, custom_headers={"X-Api-Key": key})
    assert created["custom_headers"] == [{"name": "X-Api-Key", "hint": f"…3210 ({len(key)} characters)"}]
    assert key not in json.dumps(created)
    await stack.webhooks.publish("lot.created", LOT)
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Api-Key"] == key

    path = f"/v1/webhooks/{created['id']}"
    status, _, body = await client("PATCH", path, json={"custom_headers": {"Content-Length": "0"}})
    assert (status, body["error"]) == (400, "invalid_request") and "Content-Length cannot be set" in body["message"]
    status, _, body = await client("PATCH", path, json={"custom_headers": ["X-Api-Key"]})
    assert (status, body["error"]) == (400, "invalid_request") and "custom_headers must be an object" in body["message"]
    status, _, shown = await client("GET", path)
    assert shown["custom_headers"] == created["custom_headers"]
    status, _, updated = await client("PATCH", path, json={"custom_headers": {}})
    assert status == 200 and updated["custom_headers"] == []
    status, _, body = await client("POST", "/v1/webhooks", json={
        "endpoint_url": receiver.url(), "activity_types": ["lot.created"], "custom_headers": {"webhook-signature": "v1,x"}})
    assert status == 400 and "webhook-signature cannot be set" in body["message"]


async def test_a_partner_gives_a_client_certificate_and_its_receiver_requiring_one_gets_deliveries(
        stack: Stack, tls) -> None:  # type: ignore[no-untyped-def]
    import ssl

    from tests.integration.webhooks.receiver import CERT_NAMES, Receiver as HttpsReceiver
    ca = tls.ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*CERT_NAMES).configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    receiver = await HttpsReceiver(context).start()
    try:
        client = await stack.partner()
        leaf = ca.issue_cert("partner-hooks", common_name="partner-hooks")
        upload = {"certificate_pem": leaf.cert_chain_pems[0].bytes().decode(),
                  "private_key_pem": leaf.private_key_pem.bytes().decode()}
        bad = {**upload, "private_key_pem": ca.issue_cert("x").private_key_pem.bytes().decode()}
        status, _, body = await client("POST", "/v1/webhooks", json={
            "endpoint_url": receiver.url(), "activity_types": ["lot.created"], "client_certificate": bad})
        assert status == 400 and "does not match" in body["message"]
        created = await _create(client, receiver, client_certificate=upload)
        assert created["client_certificate"]["subject"].startswith("CN=partner-hooks,") and "private_key_pem" not in json.dumps(created)
        status, _, tested = await client("POST", f"/v1/webhooks/{created['id']}/test")
        assert status == 200 and tested["attempt"]["succeeded"], tested
        status, _, updated = await client("PATCH", f"/v1/webhooks/{created['id']}", json={"client_certificate": None})
        assert status == 200 and updated["client_certificate"] is None
    finally:
        await receiver.stop()


async def test_a_partner_rotates_its_secret_with_an_overlap_on_standard_webhooks_only(stack: Stack, receiver: Receiver) -> None:
    from standardwebhooks import Webhook
    client = await stack.partner()
    created = await _create(client, receiver, signature_scheme="standard_webhooks")
    path = f"/v1/webhooks/{created['id']}"
    status, _, rotated = await client("POST", f"{path}/regenerate-secret?overlap_seconds=3600")
    assert status == 200 and rotated["previous_secret_expires_at"], rotated
    await stack.webhooks.publish("lot.created", LOT)
    [got] = await receiver.wait_for(1)
    for secret in (created["signing_secret"], rotated["signing_secret"]):
        Webhook(secret).verify(got.body, dict(got.headers))
    status, _, body = await client("POST", f"{path}/regenerate-secret?overlap_seconds=999999")
    assert (status, body["error"]) == (400, "invalid_request") and "604800" in body["message"]
    spec = await _create(client, receiver)
    status, _, body = await client("POST", f"/v1/webhooks/{spec['id']}/regenerate-secret?overlap_seconds=60")
    assert (status, body["error"]) == (409, "conflict") and "room for one signature" in body["message"]
