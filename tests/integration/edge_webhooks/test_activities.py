"""`/v1/activities`: the organisation's activities, newest first, cursor-paginated, needing
`activities:read`; the activity types; and the routes' description in /openapi.json."""

from __future__ import annotations

import json
import uuid

from tests.integration.edge_webhooks.conftest import WEBHOOK_SCOPES, Stack

TYPES = ["lot.created", "harvest.recorded", "lot.created", "capa.opened", "harvest.recorded", "lot.created", "order.created"]


async def test_a_partner_walks_every_page_of_its_organisations_activities_once(stack: Stack) -> None:
    client = await stack.partner()
    published = [(await stack.webhooks.publish(t, json.dumps({"n": n}))).event_id for n, t in enumerate(TYPES)]
    elsewhere = stack.webhooks.as_actor("admin", f"org_{uuid.uuid4().hex[:12]}")
    await stack.webhooks.publish("lot.created", metadata=elsewhere)

    seen, pages, cursor = [], 0, ""
    while True:
        status, _, page = await client("GET", "/v1/activities?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        assert len(page["activities"]) <= 3
        seen += page["activities"]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert pages == 3 and [a["id"] for a in seen] == list(reversed(published))
    oldest = seen[-1]
    assert (oldest["type"], oldest["data"], oldest["organisation_id"], oldest["sender"]["type"]) == (
        "lot.created", {"n": 0}, stack.org, "user")
    assert oldest["created_at"].endswith("Z") and oldest["received_at"].endswith("Z")

    status, _, harvests = await client("GET", "/v1/activities?type=harvest.recorded,capa.opened")
    assert [a["id"] for a in harvests["activities"]] == [published[4], published[3], published[1]]
    status, _, capped = await client("GET", "/v1/activities?limit=100000")
    assert status == 200 and len(capped["activities"]) == len(TYPES)
    for query, complaint in (("limit=0", "limit"), ("limit=ten", "limit"), ("cursor=bogus", "cursor")):
        status, _, body = await client("GET", f"/v1/activities?{query}")
        assert (status, body["error"]) == (400, "invalid_request") and complaint in body["message"], body


async def test_activities_need_activities_read(stack: Stack) -> None:
    client = await stack.partner(scopes=tuple(s for s in WEBHOOK_SCOPES if s != "activities:read"))
    for path in ("/v1/activities", "/v1/activities/types"):
        status, _, body = await client("GET", path)
        assert (status, body["error"]) == (403, "insufficient_scope") and "activities:read" in body["message"]


async def test_the_activity_types_and_the_api_reference(stack: Stack) -> None:
    client = await stack.partner()
    status, _, answer = await client("GET", "/v1/activities/types")
    assert status == 200 and len(answer["activity_types"]) == 27  # the spec's 25 and the two alerts
    assert {"id": "final_product_weights.recorded", "name": "Final product weights recorded",
            "category": "Production"} in answer["activity_types"]

    status, _, spec = await client("GET", "/openapi.json")
    paths = spec["paths"]
    assert paths["/v1/webhooks"]["post"]["x-required-scope"] == "webhooks:manage"
    assert paths["/v1/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubscriptionWithSecret"}
    assert {m: op["x-required-scope"] for m, op in paths["/v1/webhooks/{subscription_id}"].items()} == {
        "get": "webhooks:manage", "patch": "webhooks:manage", "delete": "webhooks:manage"}
    assert "post" in paths["/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/redeliver"]
    assert [p["name"] for p in paths["/v1/activities"]["get"]["parameters"]] == ["type", "limit", "cursor"]
    assert paths["/v1/activities/types"]["get"]["x-required-scope"] == "activities:read"
    assert "signing_secret" in spec["components"]["schemas"]["SubscriptionWithSecret"]["properties"]
    async with client.http.get(f"{stack.edge}/docs") as response:
        page = await response.text()
    assert "/v1/webhooks/{subscription_id}/regenerate-secret" in page and "webhooks:manage" in page
