"""Ids that are not ours in the partner webhook routes' paths and queries (percent-encoded
non-ASCII, NUL, spaces, invalid UTF-8, very long) are 404 not_found (400 invalid_request for
control characters) with our JSON error body and a request id: never 502 upstream_unavailable from a webhooks
answer gRPC could not send, and no traceback in the logs."""

from __future__ import annotations

import logging

import pytest
from yarl import URL

from tests.integration.edge.conftest import call, partner_headers
from tests.integration.edge_webhooks.conftest import Client, Stack

ODD_SEGMENTS = {
    "non_ascii": "%C3%A9",
    "prefixed_non_ascii": "whk_%C3%A9",
    "emoji": "whk_%F0%9F%98%80",
    "invalid_utf8": "whk_%FF%FE",
    "nul": "whk_%00",
    "space": "whk_%20x",
    "line_break": "whk_%0D%0Ax",
    "long": "whk_" + "x" * 2000,
    "long_non_ascii": "whk_" + "%C3%A9" * 400,
}
HOOK = "https://hooks.example.test/in"


async def _raw(client: Client, method: str, path_and_query: str, **kw: object) -> tuple[int, dict[str, str], object]:
    headers = partner_headers(client.token, client.partner, **kw.pop("headers", {}))  # type: ignore[arg-type]
    return await call(client.http, method, URL(f"{client.edge}{path_and_query}", encoded=True), headers=headers, **kw)


def _paths(odd: str, real: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/webhooks/{odd}"), ("PATCH", f"/v1/webhooks/{odd}"), ("DELETE", f"/v1/webhooks/{odd}"),
        ("POST", f"/v1/webhooks/{odd}/pause"), ("POST", f"/v1/webhooks/{odd}/resume"),
        ("POST", f"/v1/webhooks/{odd}/regenerate-secret"), ("POST", f"/v1/webhooks/{odd}/test"),
        ("GET", f"/v1/webhooks/{odd}/deliveries"), ("GET", f"/v1/webhooks/{odd}/attempts"),
        ("GET", f"/v1/webhooks/{real}/deliveries/{odd.replace('whk_', 'dlv_')}"),
        ("POST", f"/v1/webhooks/{real}/deliveries/{odd.replace('whk_', 'dlv_')}/redeliver"),
        ("GET", f"/v1/webhooks/{odd}/deliveries/dlv_1"),
    ]


@pytest.mark.parametrize("odd", list(ODD_SEGMENTS.values()), ids=list(ODD_SEGMENTS))
async def test_an_odd_id_in_the_path_is_404_with_our_body(stack: Stack, odd: str, caplog: pytest.LogCaptureFixture) -> None:
    client = await stack.partner()
    status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": HOOK, "activity_types": ["*"]})
    assert status == 201, created
    caplog.set_level(logging.WARNING)
    for method, path in _paths(odd, created["id"]):
        body = {"json": {"description": "new"}} if method == "PATCH" else {}
        status, headers, answer = await _raw(client, method, path, **body)
        # The edge refuses control characters in a path itself (unsafe_path).
        wanted = (400, "invalid_request") if "%00" in odd or "%0D" in odd else (404, "not_found")
        assert isinstance(answer, dict) and (status, answer.get("error")) == wanted, (method, path[:80], status, answer)
        assert answer["request_id"] == headers["x-request-id"] and answer["message"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_odd_query_values_are_refused_or_find_nothing(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    client = await stack.partner()
    status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": HOOK, "activity_types": ["*"]})
    assert status == 201, created
    caplog.set_level(logging.WARNING)
    for odd in ODD_SEGMENTS.values():
        for path in (f"/v1/webhooks/{created['id']}/deliveries?event_id={odd}",
                     f"/v1/webhooks/{created['id']}/attempts?delivery_id={odd}&event_id={odd}",
                     f"/v1/webhooks?cursor={odd}", f"/v1/activities?type={odd}", f"/v1/activities?cursor={odd}"):
            status, _, answer = await _raw(client, "GET", path)
            assert isinstance(answer, dict), (path[:80], status, answer)
            assert status == 200 or (status, answer["error"]) == (400, "invalid_request"), (path[:80], status, answer)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_a_lone_surrogate_in_a_json_body_is_400_not_a_server_error(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    # "\ud800" is valid JSON but no text: it used to reach protobuf and fail there (500).
    client = await stack.partner()
    status, _, created = await client("POST", "/v1/webhooks", json={"endpoint_url": HOOK, "activity_types": ["*"]})
    assert status == 201, created
    caplog.set_level(logging.WARNING)
    json_body = {"Content-Type": "application/json"}
    for method, path, raw in (
        ("POST", "/v1/webhooks", rb'{"endpoint_url": "https://hooks.example.test/in", "activity_types": ["*"], "description": "\ud800"}'),
        ("POST", "/v1/webhooks", rb'{"endpoint_url": "https://hooks.example.test/\udfff", "activity_types": ["*"]}'),
        ("POST", "/v1/webhooks", rb'{"endpoint_url": "https://hooks.example.test/in", "activity_types": ["\udc00"]}'),
        ("PATCH", f"/v1/webhooks/{created['id']}", rb'{"description": "\ud83dx"}'),
    ):
        status, headers, answer = await client(method, path, data=raw, headers=json_body)
        assert (status, answer["error"]) == (400, "invalid_request"), (method, raw, status, answer)
        assert "surrogate" in answer["message"] and answer["request_id"] == headers["x-request-id"]
    # A whole pair is one character, and kept.
    status, _, kept = await client("PATCH", f"/v1/webhooks/{created['id']}", data=rb'{"description": "\ud83d\ude00"}',
                                   headers=json_body)
    assert (status, kept["description"]) == (200, "\U0001F600")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
