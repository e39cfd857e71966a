"""A partner reads the event types with their schemas, and gives its subscription a filter,
through the edge's /v1/webhooks routes; what the filter does not pass is a `filtered` delivery."""

from __future__ import annotations

import json

from tests.integration.edge_webhooks.conftest import Stack
from tests.integration.webhooks.receiver import Receiver


async def test_a_partner_reads_every_event_type_with_the_schema_of_its_data(stack: Stack) -> None:
    client = await stack.partner()
    status, _, answer = await client("GET", "/v1/webhooks/event-types")
    assert status == 200, answer
    types = {t["id"]: t for t in answer["event_types"]}
    assert len(types) == 27 and "webhook.subscription_recovered" in types
    assert types["recall.initiated"]["schema"]["properties"]["lot_ids"] == {
        "type": "array", "items": {"type": "string"}, "description": "the lots recalled"}
    status, _, spec = await client("GET", "/openapi.json")
    assert spec["paths"]["/v1/webhooks/event-types"]["get"]["x-required-scope"] == "webhooks:manage"


async def test_a_partners_filter_is_checked_saved_applied_and_removed(stack: Stack, receiver: Receiver) -> None:
    client = await stack.partner()
    status, _, refused = await client("POST", "/v1/webhooks", json={
        "endpoint_url": receiver.url(), "activity_types": ["lot.created"], "filter": "data.facility_id =="})
    assert (status, refused["error"]) == (400, "invalid_request") and "filter" in refused["message"], refused
    status, _, refused = await client("POST", "/v1/webhooks", json={
        "endpoint_url": receiver.url(), "activity_types": ["lot.created"], "filter": 7})
    assert (status, refused["error"]) == (400, "invalid_request") and "filter must be a string" in refused["message"]
    status, _, listed = await client("GET", "/v1/webhooks")
    assert listed["subscriptions"] == []

    status, _, created = await client("POST", "/v1/webhooks", json={
        "endpoint_url": receiver.url(), "activity_types": ["lot.created"], "filter": "data.facility_id == 'fac_north'"})
    assert status == 201 and created["filter"] == "data.facility_id == 'fac_north'", created
    sid = created["id"]
    skipped = await stack.webhooks.publish("lot.created", json.dumps({"facility_id": "fac_south"}))
    sent = await stack.webhooks.publish("lot.created", json.dumps({"facility_id": "fac_north"}))
    [got] = await receiver.wait_for(1)
    assert json.loads(got.body)["id"] == sent.event_id

    status, _, page = await client("GET", f"/v1/webhooks/{sid}/deliveries?outcome=filtered")
    assert status == 200, page
    [filtered] = page["deliveries"]
    assert (filtered["event_id"], filtered["status"], filtered["attempts"]) == (skipped.event_id, "filtered", 0)

    status, _, updated = await client("PATCH", f"/v1/webhooks/{sid}", json={"filter": None})
    assert status == 200 and updated["filter"] is None, updated
    again = await stack.webhooks.publish("lot.created", json.dumps({"facility_id": "fac_south"}))
    assert again.deliveries == 1
