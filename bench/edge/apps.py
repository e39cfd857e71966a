"""ASGI applications the edge benchmark serves, each an app factory (`--factory` in uvicorn and
granian) configured from the environment, with its clients made at lifespan startup:

- `hello`: the bare ASGI hello-world, the ceiling for any ASGI app on a server;
- `proxy_aiohttp`, `proxy_httpx`, `proxy_trellis`: forward every request to BENCH_UPSTREAM,
  streaming both bodies, with aiohttp, httpx or the edge's own client
  (services/edge/http/upstream_client.py) as the upstream client (the client choice);
- `edge_sketch`: the proxy plus the parts of the partner pipeline that exist before the edge
  app does: request id, `RateLimiter.check` against NATS (BENCH_NATS_URL) with its headers,
  and an `ApiLogPublisher` record per request (BENCH_SKETCH="limit", "log" or "" runs a part). No authentication or scope check: it is a
  stand-in, printed as such, until services.edge.entrypoints.app is plugged in (see `__main__.edge_target`).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host"})
HELLO_BODY = b'{"hello":"world"}'
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{8,128}")


async def _lifespan(receive: Receive, send: Send, startup: Callable[[], Awaitable[None]] | None = None,
                    shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def hello() -> ASGIApp:
    """The bare ASGI hello-world."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")]})
        await send({"type": "http.response.body", "body": HELLO_BODY})

    return app


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


def _has_body(scope: Scope) -> bool:
    return any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"]) and scope["method"] not in ("GET", "HEAD")


def _target(scope: Scope) -> str:
    query = scope.get("query_string") or b""
    return scope["raw_path"].decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


class AiohttpForwarder:
    """Forwards with one aiohttp ClientSession (pooled keep-alive connections)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: Any = None

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, ttl_dns_cache=None), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"), timeout=aiohttp.ClientTimeout(total=10))

    async def close(self) -> None:
        await self.session.close()

    async def forward(self, scope: Scope, receive: Receive, send: Send, add_request: list[tuple[bytes, bytes]],
                      add_response: list[tuple[bytes, bytes]]) -> int:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        headers += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in add_request]
        async with self.session.request(scope["method"], self.upstream + _target(scope), headers=headers,
                                        data=_request_body(receive) if _has_body(scope) else None,
                                        allow_redirects=False) as resp:
            out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": out + add_response})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return resp.status


class HttpxForwarder:
    """Forwards with one httpx AsyncClient, response streamed (`send(..., stream=True)`)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.client: Any = None

    async def start(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=self.upstream, timeout=httpx.Timeout(10.0), follow_redirects=False,
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=1024))

    async def close(self) -> None:
        await self.client.aclose()

    async def forward(self, scope: Scope, receive: Receive, send: Send, add_request: list[tuple[bytes, bytes]],
                      add_response: list[tuple[bytes, bytes]]) -> int:
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP] + add_request
        request = self.client.build_request(scope["method"], _target(scope), headers=headers,
                                            content=_request_body(receive) if _has_body(scope) else None)
        resp = await self.client.send(request, stream=True)
        try:
            out = [(k.lower(), v) for k, v in resp.headers.raw if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out + add_response})
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return resp.status_code
        finally:
            await resp.aclose()


class TrellisForwarder:
    """Forwards with the edge's own upstream client (services/edge/http/upstream_client.py)."""

    def __init__(self, upstream: str) -> None:
        from services.edge.http.upstream_client import UpstreamPool, split_url

        self.origin, _ = split_url(upstream)
        self.pool = UpstreamPool(timeout=10)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.pool.close()

    async def forward(self, scope: Scope, receive: Receive, send: Send, add_request: list[tuple[bytes, bytes]],
                      add_response: list[tuple[bytes, bytes]]) -> int:
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP] + add_request
        resp = await self.pool.request(scope["method"], self.origin, _target(scope).encode("latin-1"), headers,
                                       _request_body(receive) if _has_body(scope) else None)
        try:
            out = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": out + add_response})
            async for chunk in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return resp.status
        finally:
            resp.release()


FORWARDERS = {"aiohttp": AiohttpForwarder, "httpx": HttpxForwarder, "trellis": TrellisForwarder}


def _proxy(client: str) -> ASGIApp:
    forwarder = FORWARDERS[client](os.environ["BENCH_UPSTREAM"])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, forwarder.start, forwarder.close)
            return
        await forwarder.forward(scope, receive, send, [], [])

    return app


def proxy_aiohttp() -> ASGIApp:
    return _proxy("aiohttp")


def proxy_httpx() -> ASGIApp:
    return _proxy("httpx")


def proxy_trellis() -> ASGIApp:
    return _proxy("trellis")


def edge_sketch() -> ASGIApp:
    """Proxy + request id + NATS rate limit + API log record; no auth (a stand-in for the edge)."""
    from services.contracts.trellis.events.v1 import events_pb2
    from services.edge.adapters.apilog import ApiLogPublisher
    from services.edge.adapters.ratelimit import RateLimiter
    from services.kit.bus import connect, ensure_streams

    forwarder = FORWARDERS[os.environ.get("BENCH_CLIENT", "aiohttp")](os.environ["BENCH_UPSTREAM"])
    # BENCH_SKETCH names the parts to run ("limit,log" by default), to see what each one costs.
    enabled = set(os.environ.get("BENCH_SKETCH", "limit,log").split(","))
    limit, log = "limit" in enabled, "log" in enabled
    parts: dict[str, Any] = {}

    async def startup() -> None:
        nc = await connect(os.environ["BENCH_NATS_URL"], name="bench-edge-sketch")
        js = nc.jetstream()
        await ensure_streams(js)
        parts.update(nc=nc, limiter=RateLimiter(js), log=ApiLogPublisher(js))
        await parts["limiter"].start()
        await parts["log"].start()
        await forwarder.start()

    async def shutdown() -> None:
        await forwarder.close()
        await parts["log"].close()
        await parts["limiter"].close()
        await parts["nc"].drain()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, startup, shutdown)
            return
        started = time.perf_counter()
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()
        limits = [(b"x-request-id", request_id)]
        if limit:
            decision = await parts["limiter"].check("int_bench", 1_000_000_000, 0)
            limits += [(b"x-ratelimit-limit", str(decision.limit).encode()),
                       (b"x-ratelimit-remaining", str(decision.remaining).encode()),
                       (b"x-ratelimit-reset", str(decision.reset_at).encode())]
        status = await forwarder.forward(scope, receive, send,
                                         [(b"x-request-id", request_id), (b"x-trellis-integration", b"int_bench")], limits)
        if log:
            parts["log"].record(events_pb2.ApiRequestLogged(
                request_id=request_id.decode(), integration_id="int_bench", method=scope["method"],
                endpoint=scope["path"], status=status, duration_ms=(time.perf_counter() - started) * 1000,
                ip=(scope.get("client") or ("",))[0]))

    return app
