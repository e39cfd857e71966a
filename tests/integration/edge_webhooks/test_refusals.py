"""What the partner webhook routes refuse, and how: scopes, bad values with the service's own
explanation, oversize bodies, unknown paths and methods, and a webhooks service that is down."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from services.edge.entrypoints.partner_webhooks import UNUSABLE_HOST_DETAIL
from tests.integration.edge.conftest import closed_port, write_routes
from tests.integration.edge_webhooks.conftest import (
    MAX_BODY_BYTES,
    WEBHOOK_SCOPES,
    Stack,
    StartStack,
)
from tests.support.waiting import eventually

HOOK = "https://hooks.example.test/in"


async def test_every_method_needs_webhooks_manage(stack: Stack) -> None:
    client = await stack.partner(scopes=tuple(s for s in WEBHOOK_SCOPES if s != "webhooks:manage"))
    for method, path in (("GET", "/v1/webhooks"), ("POST", "/v1/webhooks"), ("GET", "/v1/webhooks/whk_1"),
                         ("PATCH", "/v1/webhooks/whk_1"), ("DELETE", "/v1/webhooks/whk_1"),
                         ("POST", "/v1/webhooks/whk_1/regenerate-secret")):
        status, headers, body = await client(method, path, json={"endpoint_url": HOOK, "activity_types": ["*"]})
        assert (status, body["error"]) == (403, "insufficient_scope"), (method, path, body)
        assert "webhooks:manage" in body["message"] and 'scope="webhooks:manage"' in headers["www-authenticate"]


async def test_values_the_service_refuses_are_400_with_its_explanation(stack: Stack) -> None:
    client = await stack.partner()
    status, _, body = await client("POST", "/v1/webhooks", json={"endpoint_url": "http://hooks.example.test/in",
                                                                 "activity_types": ["lot.created"]})
    assert (status, body["error"]) == (400, "invalid_request") and "HTTPS" in body["message"]

    status, _, body = await client("POST", "/v1/webhooks", json={"endpoint_url": HOOK,
                                                                 "activity_types": ["lot.created", "lot.vanished"]})
    assert (status, body["error"]) == (400, "invalid_request")
    assert "lot.vanished" in body["message"] and "harvest.recorded" in body["message"] and "capa.opened" in body["message"]

    for payload, complaint in (({"activity_types": ["*"]}, "endpoint_url is required"),
                               ({"endpoint_url": HOOK, "activity_types": "lot.created"}, "list of strings"),
                               ({"endpoint_url": HOOK, "activity_types": ["*"], "secret": "mine"}, "unknown field(s) secret"),
                               # The owner is always the calling partner's own, verified integration.
                               ({"endpoint_url": HOOK, "activity_types": ["*"], "integration_id": "int_other"},
                                "unknown field(s) integration_id"),
                               ({"endpoint_url": HOOK, "activity_types": ["*"], "signature_scheme": "md5"}, "standard_webhooks"),
                               ([HOOK], "JSON object")):
        status, _, body = await client("POST", "/v1/webhooks", json=payload)
        assert (status, body["error"]) == (400, "invalid_request") and complaint in body["message"], body
    status, _, body = await client("POST", "/v1/webhooks", data=b"{not json", headers={"Content-Type": "application/json"})
    assert (status, body["error"]) == (400, "invalid_request") and "not valid JSON" in body["message"]

    status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": HOOK, "activity_types": ["*"],
                                                                    "signature_scheme": "standard_webhooks"})
    assert status == 201 and created["signature_scheme"] == "standard_webhooks"
    status, _, body = await client("PATCH", f"/v1/webhooks/{created['id']}", json={})
    assert (status, body["error"]) == (400, "invalid_request") and "at least one field" in body["message"]
    status, _, body = await client("GET", "/v1/webhooks?status=sleeping")
    assert (status, body["error"]) == (400, "invalid_request") and "active" in body["message"]
    status, _, body = await client("GET", "/v1/webhooks?page=2")
    assert (status, body["error"]) == (400, "invalid_request") and "unknown query parameter(s) page" in body["message"]


async def test_a_body_over_the_limit_is_413_announced_or_streamed(stack: Stack) -> None:
    client = await stack.partner()
    oversize = b'{"description": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, _, body = await client("POST", "/v1/webhooks", data=oversize, headers={"Content-Type": "application/json"})
    assert (status, body["error"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the edge counts as it reads
        for _ in range(8):
            yield b" " * (MAX_BODY_BYTES // 4)

    status, _, body = await client("PATCH", "/v1/webhooks/whk_any", data=chunks(), headers={"Content-Type": "application/json"})
    assert (status, body["error"]) == (413, "payload_too_large")


async def test_unknown_paths_are_404_and_wrong_methods_405(stack: Stack) -> None:
    client = await stack.partner()
    for path in ("/v1/webhooks/whk_1/deliveries/dlv_1/attempts", "/v1/webhooks/whk_1/explode", "/v1/activities/whatever"):
        status, _, body = await client("GET", path)
        assert (status, body["error"]) == (404, "not_found"), path
    status, headers, body = await client("PUT", "/v1/webhooks")
    assert (status, body["error"], headers["allow"]) == (405, "method_not_allowed", "GET, HEAD, POST")
    status, headers, _ = await client("GET", "/v1/webhooks/whk_1/pause")
    assert (status, headers["allow"]) == (405, "POST")
    status, _, body = await client("GET", "/v1/webhooks/whk_nobody")
    assert (status, body["error"]) == (404, "not_found") and "whk_nobody" in body["message"]


async def test_webhooks_down_is_502_and_not_ready_only_where_it_is_routed(start_stack: StartStack, tmp_path: Path) -> None:
    stack = await start_stack(webhooks_addr=f"127.0.0.1:{closed_port()}")
    client = await stack.partner()
    status, _, body = await client("GET", "/v1/webhooks")
    assert (status, body["error"]) == (502, "upstream_unavailable")
    status, _, ready = await client("GET", "/readyz")
    assert status == 503 and ready["checks"]["webhooks"] is False and ready["checks"]["identity"] is True

    # A table without the webhooks built-ins does not depend on webhooks, reachable or not.
    plain = write_routes(tmp_path / "plain.toml", "http://127.0.0.1:9", "http://127.0.0.1:9")
    other = await start_stack(routes=plain, webhooks_addr=f"127.0.0.1:{closed_port()}")
    status, _, ready = await (await other.partner())("GET", "/readyz")
    assert status == 200 and "webhooks" not in ready["checks"]

    status, _, ready = await (await (await start_stack()).partner())("GET", "/readyz")
    assert status == 200 and ready["checks"]["webhooks"] is True


async def test_a_refused_endpoint_address_is_not_revealed_to_the_partner(stack: Stack) -> None:
    """A name that does not resolve and an address the SSRF guard refuses read the same to a
    partner: otherwise the difference would tell an outsider which internal names exist."""
    client = await stack.partner()
    seen, subscriptions = {}, {}
    # The cloud metadata address (refused even where loopback receivers are allowed), and a name
    # that cannot resolve (RFC 6761 .invalid).
    for url in ("https://169.254.169.254/latest", "https://no-such-host.invalid/hook"):
        status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": url, "activity_types": ["*"]})
        assert status == 201, created
        status, _, tested = await client("POST", f"/v1/webhooks/{created['id']}/test")
        assert status == 200, tested
        attempt = tested["attempt"]
        assert (attempt["succeeded"], attempt["error"], attempt["error_detail"]) == (False, "unusable_host",
                                                                                    UNUSABLE_HOST_DETAIL)
        delivery = tested["delivery"]
        assert (delivery["last_error"], delivery["last_error_detail"]) == ("unusable_host", UNUSABLE_HOST_DETAIL)
        assert "169.254" not in json.dumps(delivery)
        status, _, attempts = await client("GET", f"/v1/webhooks/{created['id']}/attempts")
        assert status == 200 and "169.254.169.254 " not in json.dumps(attempts)  # only in the URL the partner gave
        assert all((a["error"], a["error_detail"]) == ("unusable_host", UNUSABLE_HOST_DETAIL)
                   for a in attempts["attempts"])
        seen[url] = {k: v for k, v in attempt.items() if k in ("succeeded", "status_code", "error", "error_detail",
                                                                  "response_body")}
        subscriptions[url] = created["id"]
    first, second = seen.values()
    assert first == second

    # A real activity: both deliveries fail the same way and both wait for their retry (a refused
    # address is retried as a name that does not resolve is, or the difference would show here).
    await stack.webhooks.publish()

    async def delivered(subscription: str) -> dict[str, object] | None:
        status, _, page = await client("GET", f"/v1/webhooks/{subscription}/deliveries")
        assert status == 200, page
        real = [d for d in page["deliveries"] if not d["test"] and d["attempts"] >= 1]
        return real[0] if real else None

    shown = []
    for subscription in subscriptions.values():
        delivery = await eventually(lambda subscription=subscription: delivered(subscription), what="the activity's first attempt")
        assert delivery["next_attempt_at"] is not None
        shown.append({k: delivery[k] for k in ("status", "attempts", "last_status_code", "last_error",
                                               "last_error_detail")})
    assert shown[0] == shown[1] and shown[0]["status"] == "pending"


async def test_malformed_values_are_400_never_500(stack: Stack) -> None:
    client = await stack.partner()
    for payload in ({"endpoint_url": HOOK, "activity_types": ["*"], "signature_scheme": []},
                    {"endpoint_url": HOOK, "activity_types": ["*"], "signature_scheme": {}}):
        status, _, body = await client("POST", "/v1/webhooks", json=payload)
        assert (status, body["error"]) == (400, "invalid_request"), body
    status, _, body = await client("POST", "/v1/webhooks", data=b"[" * 50_000, headers={"Content-Type": "application/json"})
    assert status in (400, 413) and body["error"] in ("invalid_request", "payload_too_large"), body
    for limit in ("²", "9" * 5000, "0", "-1"):
        status, _, body = await client("GET", f"/v1/activities?limit={limit}")
        assert (status, body["error"]) == (400, "invalid_request"), (limit, body)
    for cursor in ("garbage", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgIngiXQ", "W1sxXSwgIngiXQ"):
        status, _, body = await client("GET", f"/v1/activities?cursor={cursor}")
        assert (status, body["error"]) == (400, "invalid_request"), (cursor, body)
