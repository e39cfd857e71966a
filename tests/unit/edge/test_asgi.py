"""services/edge/http/asgi.py: header lookups read the first of a repeated name; the Responder adds its
headers to each answer without touching what its caller passed (lists and tuples reused by many
answers, such as an error's headers)."""

from __future__ import annotations

from typing import Any

from services.edge.http.asgi import Request, Responder


def request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_the_first_value_of_a_repeated_header_wins() -> None:
    r = request([(b"x-api-key", b"first"), (b"host", b"edge"), (b"x-api-key", b"second"), (b"x-api-key", b"third")])
    assert r.header(b"x-api-key") == b"first"
    assert r.header(b"host") == b"edge"
    assert r.header(b"authorization") is None
    assert r.header_values(b"x-api-key") == [b"first", b"second", b"third"]


async def test_the_responder_leaves_its_callers_headers_as_they_were() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    shared = ((b"allow", b"GET"),)  # e.g. an EdgeError's headers, reused by every answer it makes
    listed = [(b"content-type", b"application/json")]
    for n, headers in enumerate((shared, listed, shared)):
        responder = Responder(send, [(b"x-request-id", f"req{n}".encode())])
        await responder({"type": "http.response.start", "status": 405, "headers": headers})
        assert (responder.started, responder.status) == (True, 405)
    assert shared == ((b"allow", b"GET"),) and listed == [(b"content-type", b"application/json")]
    assert [m["headers"] for m in sent] == [
        [(b"allow", b"GET"), (b"x-request-id", b"req0")],
        [(b"content-type", b"application/json"), (b"x-request-id", b"req1")],
        [(b"allow", b"GET"), (b"x-request-id", b"req2")],
    ]
