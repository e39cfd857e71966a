"""Forwarding a partner request to its upstream, streaming both bodies (aiohttp client; see
docs/benchmarks.md "## Edge" for why aiohttp).

Request headers lose the hop-by-hop ones (and those `Connection` names), the partner's
credentials, any `X-Trellis-*` a client made up, and what the edge sets itself; the edge then
adds the caller's identity headers. Failures before the response starts become edge errors:
502 (refused or broken), 504 (no answer within the timeout), 413 (body over the limit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from services.edge.asgi import Headers, Receive, Request, Send
from services.edge.errors import EdgeError
from services.edge.routes import Route

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
# Set by the edge itself, or the partner's credentials: never passed on as the client sent them.
REQUEST_STRIPPED = frozenset({
    b"host", b"authorization", b"x-api-key", b"x-request-id", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"forwarded", b"traceparent", b"tracestate", b"expect",
})
# Responses with a Content-Length up to this are read whole and sent in one body message (one
# write to the partner instead of a chunk plus an empty end); larger or unsized ones stream.
SMALL_RESPONSE_BYTES = 64 * 1024
# Set by the edge on every response.
RESPONSE_STRIPPED = frozenset({b"x-request-id", b"date", b"server"})


def _connection_named(headers: Headers) -> set[bytes]:
    return {t.strip().lower() for k, v in headers if k == b"connection" for t in v.split(b",") if t.strip()}


def request_headers(headers: Headers) -> Headers:
    """The client's headers that may go upstream."""
    named = _connection_named(headers)
    return [
        (k, v) for k, v in headers
        if k not in HOP_BY_HOP and k not in REQUEST_STRIPPED and k not in named
        and not k.startswith(b"proxy-") and not k.startswith(b"x-trellis-")
    ]


def response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> Headers:
    """The upstream's response headers that may go back to the partner."""
    lowered = [(k.lower(), v) for k, v in raw]
    named = _connection_named(lowered)
    return [
        (k, v) for k, v in lowered
        if k not in HOP_BY_HOP and k not in RESPONSE_STRIPPED and k not in named
        and not k.startswith(b"proxy-") and not k.startswith(b"x-ratelimit-")
    ]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class RequestBody:
    """The request body as an async iterator of chunks, refused once it passes `limit` bytes."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self.size = 0
        self.too_large = False
        self.gone = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGone()
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self._limit:
                self.too_large = True
                raise BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body"):
                return


def has_body(request: Request) -> bool:
    length = request.header(b"content-length")
    return (length is not None and length.strip() not in (b"", b"0")) or request.header(b"transfer-encoding") is not None


def too_large(limit: int) -> EdgeError:
    return EdgeError("payload_too_large", f"the request body is larger than {limit} bytes; send a smaller body")


def check_content_length(request: Request, limit: int) -> None:
    """Refuse, before reading anything, a Content-Length that is not a number or is over `limit`
    (a body without one is bounded while it is read)."""
    length = request.header(b"content-length")
    if length is not None and not length.strip().isdigit():
        raise EdgeError("invalid_request", "the Content-Length header is not a number")
    if length is not None and int(length) > limit:
        raise too_large(limit)


class Upstreams:
    """One pooled HTTP client for every upstream."""

    def __init__(self, *, timeout: float, max_body_bytes: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._seconds = timeout
        self.max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, ttl_dns_cache=60),
            auto_decompress=False, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(),
            # Send what the partner sent, not what aiohttp would add.
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: Request, route: Route, receive: Receive, send: Send,
                      add_request: Headers, add_response: Headers) -> int:
        """Send `request` to `route`'s upstream and stream the answer back; returns its status."""
        assert self._session is not None and route.upstream is not None
        check_content_length(request, self.max_body_bytes)
        body = RequestBody(receive, self.max_body_bytes) if has_body(request) else None
        target = route.upstream + route.upstream_path(request.raw_path.decode("latin-1"))
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request_headers(request.headers) + add_request]
        started = False
        try:
            async with self._session.request(
                request.method, URL(target, encoded=True), headers=headers, allow_redirects=False,
                data=body.chunks() if body is not None else None,
            ) as response:
                out = response_headers(response.raw_headers) + add_response
                if response.content_length is not None and response.content_length <= SMALL_RESPONSE_BYTES:
                    whole = await response.read()
                    await send({"type": "http.response.start", "status": response.status, "headers": out})
                    started = True
                    await send({"type": "http.response.body", "body": whole})
                    return response.status
                await send({"type": "http.response.start", "status": response.status, "headers": out})
                started = True
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return response.status
        except (BodyTooLarge, ClientGone):
            raise
        except Exception as exc:
            if body is not None and body.too_large:
                raise BodyTooLarge() from exc
            if body is not None and body.gone:
                raise ClientGone() from exc
            if started:
                raise  # the partner already has the status line; the connection is cut
            raise self._failure(exc, route) from exc

    def _failure(self, exc: Exception, route: Route) -> EdgeError:
        if isinstance(exc, asyncio.TimeoutError):
            log.warning("upstream of %s did not answer within %.1fs", route.prefix, self._seconds)
            return EdgeError("upstream_unavailable", f"the service behind {route.prefix} did not answer in time; "
                             "retry later with backoff", status=504)
        if isinstance(exc, aiohttp.ClientError):
            log.warning("upstream of %s failed: %s", route.prefix, type(exc).__name__)
            return EdgeError("upstream_unavailable", f"the service behind {route.prefix} cannot be reached; "
                             "retry later with backoff", status=502)
        raise exc

    async def fetch_text(self, url: str, limit: int) -> str:
        """A small document over HTTP (an external issuer's JWKS), refused above `limit` bytes."""
        assert self._session is not None
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5), headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            body = await response.content.read(limit + 1)
        if len(body) > limit:
            raise ValueError(f"{url} answered more than {limit} bytes")
        return body.decode()
