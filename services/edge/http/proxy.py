"""Forwarding a partner request to its upstream (through the edge's own upstream client,
services/edge/http/upstream_client.py; docs/benchmarks.md "## Edge" says why).

The request body is read whole, bounded by `max_body_bytes`, before the upstream sees anything,
and sent with its length: a body that turns out malformed, too large, too slow or cut short is
refused (400, 413, 408, 499 in the log) without half a request reaching the upstream. The
response body streams back. Request headers lose the hop-by-hop ones (and those `Connection`
names), the framing (the body is framed again), the partner's credentials, any `X-Trellis-*` a
client made up, and what the edge sets itself; the edge then adds the caller's identity headers.
Failures before the response starts become edge errors: 502 (refused or broken), 504 (no answer
within the timeout).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from services.edge.domain.errors import BodyTooLarge, EdgeError, too_large
from services.edge.domain.routes import Route
from services.edge.http.asgi import Headers, Receive, Request, Send, read_body
from services.edge.http.upstream_client import Origin, UpstreamError, UpstreamPool, UpstreamTimeout, split_url

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
# Set by the edge itself, or the partner's credentials: never passed on as the client sent them.
REQUEST_STRIPPED = frozenset({
    b"host", b"authorization", b"x-api-key", b"x-request-id", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"forwarded", b"traceparent", b"tracestate", b"expect", b"content-length",
})
# Responses with a Content-Length up to this are read whole and sent in one body message (one
# write to the partner instead of a chunk plus an empty end); larger or unsized ones stream.
SMALL_RESPONSE_BYTES = 64 * 1024
# The longest a whole document fetch (fetch_text: an external issuer's JWKS) may take.
FETCH_SECONDS = 5.0
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


def response_headers(headers: Headers) -> Headers:
    """The upstream's response headers (names in lower case) that may go back to the partner."""
    named = _connection_named(headers)
    return [
        (k, v) for k, v in headers
        if k not in HOP_BY_HOP and k not in RESPONSE_STRIPPED and k not in named
        and not k.startswith(b"proxy-") and not k.startswith(b"x-ratelimit-")
    ]


def has_body(request: Request) -> bool:
    """The request is framed with a body (its Content-Length, even 0, or chunked)."""
    return request.header(b"content-length") is not None or request.header(b"transfer-encoding") is not None


def check_content_length(request: Request, limit: int) -> None:
    """Refuse, before reading anything, a Content-Length that is not a number or is over `limit`
    (a body without one is bounded while it is read)."""
    length = request.header(b"content-length")
    if length is not None and not length.strip().isdigit():
        raise EdgeError("invalid_request", "the Content-Length header is not a number")
    if length is not None and int(length) > limit:
        raise too_large(limit)


class Upstreams:
    """Every upstream, through one pool of keep-alive connections (services/edge/http/upstream_client.py)."""

    def __init__(self, *, timeout: float, max_body_bytes: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._seconds = timeout
        self.max_body_bytes = max_body_bytes
        self._pool = UpstreamPool(timeout=timeout, ssl_context=ssl_context)
        self._bases: dict[str, tuple[Origin, str]] = {}

    async def close(self) -> None:
        await self._pool.close()

    def _base(self, upstream: str) -> tuple[Origin, str]:
        """A route's upstream base URL as its origin and path prefix (split once)."""
        base = self._bases.get(upstream)
        if base is None:
            origin, path = split_url(upstream)
            base = self._bases[upstream] = (origin, path.decode("latin-1").rstrip("/"))
        return base

    async def forward(self, request: Request, route: Route, receive: Receive, send: Send,
                      add_request: Headers, add_response: Headers) -> int:
        """Send `request` to `route`'s upstream and stream the answer back; returns its status."""
        assert route.upstream is not None
        body = None
        if has_body(request):
            check_content_length(request, self.max_body_bytes)
            body = await read_body(receive, self.max_body_bytes)
            if body is None:
                raise BodyTooLarge()
        origin, prefix = self._base(route.upstream)
        target = prefix + route.upstream_path(request.raw_path.decode("latin-1"))
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        started = False
        try:
            response = await self._pool.request(request.method, origin, target.encode("latin-1"),
                                                 request_headers(request.headers) + add_request, body)
            try:
                out = response_headers(response.headers) + add_response
                if response.content_length is not None and response.content_length <= SMALL_RESPONSE_BYTES:
                    whole = await response.read()
                    await send({"type": "http.response.start", "status": response.status, "headers": out})
                    started = True
                    await send({"type": "http.response.body", "body": whole})
                    return response.status
                await send({"type": "http.response.start", "status": response.status, "headers": out})
                started = True
                async for chunk in response.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return response.status
            finally:
                response.release()
        except Exception as exc:
            if started:
                raise  # the partner already has the status line; the connection is cut
            raise self._failure(exc, route) from exc

    def _failure(self, exc: Exception, route: Route) -> EdgeError:
        if isinstance(exc, UpstreamTimeout):
            log.warning("upstream of %s did not answer within %.1fs", route.prefix, self._seconds)
            return EdgeError("upstream_unavailable", f"the service behind {route.prefix} did not answer in time; "
                             "retry later with backoff", status=504)
        if isinstance(exc, UpstreamError):
            log.warning("upstream of %s failed: %s", route.prefix, exc)
            return EdgeError("upstream_unavailable", f"the service behind {route.prefix} cannot be reached; "
                             "retry later with backoff", status=502)
        raise exc

    async def fetch_text(self, url: str, limit: int) -> str:
        """A small document over HTTP (an external issuer's JWKS), refused above `limit` bytes."""
        origin, target = split_url(url)
        # The whole fetch is bounded, so a slow drip cannot hold it: at most FETCH_SECONDS.
        async with asyncio.timeout(min(self._seconds, FETCH_SECONDS)):
            return await self._fetch(url, origin, target, limit)

    async def _fetch(self, url: str, origin: Origin, target: bytes, limit: int) -> str:
        response = await self._pool.request("GET", origin, target, [(b"accept", b"application/json")])
        try:
            if response.status != 200:
                raise ValueError(f"{url} answered {response.status}")
            if response.content_length is not None and response.content_length > limit:
                raise ValueError(f"{url} answered more than {limit} bytes")
            parts, size = [], 0
            async for chunk in response.chunks():
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"{url} answered more than {limit} bytes")
                parts.append(chunk)
        finally:
            response.release()
        return b"".join(parts).decode()
