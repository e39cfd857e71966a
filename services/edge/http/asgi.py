"""The little of ASGI the edge needs: a read-only view of a request and response senders.

No framework: the edge is one ASGI callable, and these helpers keep its code about the
pipeline rather than about message dictionaries.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from services.edge.domain.errors import EdgeError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
# The status logged for a request whose client went away before its answer (nginx's convention).
CLIENT_CLOSED = 499
# scope["extensions"][REFUSAL]["error"]: the EdgeError the HTTP layer refused a request with before
# the application saw it (services/edge/http/server.py); the application answers with it.
REFUSAL = "trellis.refusal"


class ClientGone(EdgeError):
    """The client closed the connection before its request's body was complete."""

    def __init__(self) -> None:
        super().__init__("client_closed_request", "the client closed the connection before the request was complete")


class Request:
    """One HTTP request's scope, with header lookups (ASGI header names are lower case)."""

    __slots__ = ("scope", "method", "path", "headers", "request_id", "client_ip", "hops", "traced", "_first")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: Headers = scope["headers"]
        self.request_id = ""
        self.client_ip = ""
        # The addresses from the client to us (X-Forwarded-For upstream), set by the app.
        self.hops: list[str] = []
        self.traced = False  # there is a trace to pass on: the caller's (traceparent) or our own span
        self._first: dict[bytes, bytes] | None = None  # each header's first value, made on the first lookup

    @property
    def refusal(self) -> EdgeError | None:
        """The HTTP layer's refusal of this request, which the answer must be (else None)."""
        extensions = self.scope.get("extensions")
        refused = extensions.get(REFUSAL) if extensions else None
        return refused["error"] if refused else None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case), or None."""
        first = self._first
        if first is None:
            first = self._first = dict(reversed(self.headers))  # the first of repeated names is put last: it wins
        return first.get(name)

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @property
    def raw_path(self) -> bytes:
        return self.scope.get("raw_path") or self.path.encode()

    @property
    def query_string(self) -> bytes:
        return self.scope.get("query_string") or b""

    @property
    def peer(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else ""

    def header_bytes(self) -> int:
        """Size of the request headers as sent (names, values, and ': ' plus CRLF per line)."""
        return sum([len(k) + len(v) for k, v in self.headers]) + 4 * len(self.headers)


async def send_bytes(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]],
                     content_type: bytes = JSON) -> None:
    out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, status, json.dumps(payload, separators=(",", ":")).encode(), headers)


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds `limit` bytes. Raises ClientGone when the
    client leaves before its end (and the HTTP layer's refusal when the body is malformed or slow)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class Responder:
    """Wraps `send`: adds `extra` headers (the request id, the rate-limit headers once known)
    to whatever response starts, and remembers its status: CLIENT_CLOSED when the client had
    gone before it (send raises OSError then, ASGI 2.4; nothing more is sent)."""

    __slots__ = ("_send", "extra", "status", "gone")

    def __init__(self, send: Send, extra: Headers) -> None:
        self._send = send
        self.extra = extra
        self.status = 0
        self.gone = False

    @property
    def started(self) -> bool:
        return self.status != 0

    async def __call__(self, message: Message) -> None:
        start = message["type"] == "http.response.start"
        if start:
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), *self.extra]
        if self.gone:
            return
        try:
            await self._send(message)
        except OSError:
            self.gone = True
            if start:
                self.status = CLIENT_CLOSED
