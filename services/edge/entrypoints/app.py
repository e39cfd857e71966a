"""The edge as one ASGI application: the public endpoints (token, discovery, health, metrics,
API reference) answered here, everything else through the partner pipeline.

For every request: an X-Request-ID (the caller's when sane, else new) on whatever answer goes
back; request headers over the size bound refused with 431; a server span (when a tracer is
installed, sampled parent-based: services.kit.telemetry; otherwise only the caller's trace
context is passed on) around the whole request; metrics; and, for partner requests (the API and the token endpoint, refused or not),
one API log record, queued without waiting: in the organisation's log when a credential says
whose the request is, else in the platform log (services/edge/adapters/apilog.py).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from services.contracts.trellis.events.v1 import events_pb2
from services.edge.adapters.apilog import ApiLogPublisher
from services.edge.adapters.credentials import KeySet
from services.edge.adapters.metrics import EdgeMetrics
from services.edge.adapters.peers import Peers
from services.edge.application.pipeline import Pipeline, Trail
from services.edge.domain.clientip import ClientIpResolver
from services.edge.domain.errors import EdgeError, error_body
from services.edge.entrypoints.oauth import TokenEndpoint, jwks_response, openid_configuration
from services.edge.entrypoints.openapi import build_spec, render_html, spec_json
from services.edge.entrypoints.settings import EdgeProcessSettings
from services.edge.http.asgi import CLIENT_CLOSED, Receive, Request, Responder, Scope, Send, send_bytes, send_json
from services.kit.logcontext import request_id_var
from services.kit.telemetry import current_span, tracing_installed

log = logging.getLogger(__name__)

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
AUTH_CODES = frozenset({"invalid_client", "missing_credentials", "invalid_api_key", "invalid_token", "token_expired",
                        "credentials_mismatch", "integration_inactive", "ip_not_allowed"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# A public endpoint's handler: answers, and notes an error code ("" for none) on the trail.
Handler = Callable[[Request, Receive, Send, Trail], Awaitable[None]]


class RequestIds:
    """New request ids: 32 hex digits of the OS's randomness (as os.urandom(16).hex()), read 4 KiB
    at a time: one system call per 256 requests instead of one each."""

    __slots__ = ("_pool", "_at")

    def __init__(self) -> None:
        self._pool, self._at = "", 0

    def __call__(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4096).hex(), 0
        start = self._at
        self._at = start + 32
        return self._pool[start:start + 32]


@dataclass(frozen=True)
class Endpoint:
    handler: Handler
    methods: frozenset[str]
    logged: bool = False  # partner traffic: one API log record per request (the token endpoint)


class EdgeApp:
    """The ASGI callable. Built by services.edge.entrypoints.main.bootstrap with its parts already made."""

    def __init__(self, settings: EdgeProcessSettings, *, pipeline: Pipeline, peers: Peers, token_endpoint: TokenEndpoint,
                 jwks: KeySet, apilog: ApiLogPublisher, metrics: EdgeMetrics, nc: NATS) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._peers = peers
        self._jwks = jwks
        self._apilog = apilog
        self._metrics = metrics
        self._nc = nc
        self._resolver = ClientIpResolver(settings.edge_trusted_proxies)
        self._max_header_bytes = settings.edge_max_header_bytes
        self._tracer = trace.get_tracer("services.edge")
        self._new_id = RequestIds()
        spec = build_spec(pipeline.routes, server_url=settings.edge_public_url, token_url=settings.token_url)
        self._spec_json, self._docs_html = spec_json(spec), render_html(spec)
        self._discovery = openid_configuration(settings)
        get = frozenset({"GET", "HEAD"})
        self._endpoints: dict[str, Endpoint] = {
            "/oauth/token": Endpoint(token_endpoint, frozenset({"POST"}), logged=True),
            "/.well-known/jwks.json": Endpoint(self._jwks_document, get),
            "/.well-known/openid-configuration": Endpoint(self._openid_configuration, get),
            "/healthz": Endpoint(self._healthz, get),
            "/readyz": Endpoint(self._readyz, get),
            "/openapi.json": Endpoint(self._openapi, get),
            "/docs": Endpoint(self._docs, get),
        }
        if not settings.edge_metrics_addr:  # otherwise served on that address only (services.edge.entrypoints.main)
            self._endpoints["/metrics"] = Endpoint(self._metrics_text, get)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":  # run with lifespan off; answer politely if not
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, wall = time.perf_counter(), time.time()
        request = Request(scope)
        given = request.header(b"x-request-id")
        request.request_id = given.decode() if given and _SANE_REQUEST_ID.fullmatch(given) else self._new_id()
        request.client_ip, request.hops = self._resolver.resolve(request.peer, request.header_values(b"x-forwarded-for"))
        responder = Responder(send, [(b"x-request-id", request.request_id.encode())])
        endpoint = self._endpoints.get(request.path)
        trail = Trail(route=request.path) if endpoint else self._pipeline.trail(request.path)
        request_id_var.set(request.request_id)  # each request runs in its own task: no reset needed
        incoming = self._incoming_trace(request)
        installed = tracing_installed()
        request.traced = installed or incoming is not None
        if installed:
            with current_span(self._tracer, f"{request.method} edge", context=incoming, kind=trace.SpanKind.SERVER) as span:
                await self._serve(request, receive, responder, endpoint, trail, started, wall, span)
        else:
            # No tracer of our own (no exporter configured): no span, but the partner's trace
            # context, if any, is current, so it reaches identity, registry and the upstream unchanged.
            token = otel_context.attach(incoming) if incoming is not None else None
            try:
                await self._serve(request, receive, responder, endpoint, trail, started, wall, None)
            finally:
                if token is not None:
                    otel_context.detach(token)

    async def _serve(self, request: Request, receive: Receive, responder: Responder, endpoint: Endpoint | None,
                     trail: Trail, started: float, wall: float, span: trace.Span | None) -> None:
        try:
            if request.refusal is not None:  # refused by the HTTP layer (services/edge/http/server.py)
                raise request.refusal
            if request.header_bytes() > self._max_header_bytes:
                raise EdgeError("request_headers_too_large", f"the request headers are larger than "
                                f"{self._max_header_bytes} bytes; send fewer or shorter headers")
            if endpoint is not None:
                await self._builtin(endpoint, request, receive, responder, trail)
            else:
                await self._pipeline.handle(request, receive, responder, trail)
        except EdgeError as exc:
            trail.error_code = exc.code
            await self._refuse(exc, request, responder)
        except Exception:
            log.exception("request %s failed", request.request_id)
            trail.error_code = "internal_error"
            await self._refuse(EdgeError("internal_error", "the edge failed to answer this request; retry later"),
                               request, responder)
        finally:
            status = responder.status or CLIENT_CLOSED
            if status == CLIENT_CLOSED:  # the log says what the client got: nothing
                trail.error_code = "client_closed_request"
            self._finish(span, request, trail, status, started, wall, partner=endpoint is None or endpoint.logged)

    @staticmethod
    def _incoming_trace(request: Request) -> Context | None:
        """The caller's W3C trace context, so a partner's trace continues through the edge to the
        upstream (with or without a tracer of our own installed)."""
        parent = request.header(b"traceparent")
        if parent is None:
            return None
        carrier = {"traceparent": parent.decode("latin-1")}
        state = request.header(b"tracestate")
        if state is not None:
            carrier["tracestate"] = state.decode("latin-1")
        return propagate.extract(carrier)

    async def _builtin(self, endpoint: Endpoint, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        if request.method not in endpoint.methods:
            allowed = ", ".join(sorted(endpoint.methods))
            raise EdgeError("method_not_allowed", f"{request.path} accepts {allowed}", headers=((b"allow", allowed.encode()),))
        await endpoint.handler(request, receive, send, trail)

    async def _refuse(self, exc: EdgeError, request: Request, send: Responder) -> None:
        if send.started:
            raise exc  # too late for an error answer: the connection is cut instead
        await send_bytes(send, exc.status, error_body(exc.code, exc.message, request.request_id), exc.headers)

    def _finish(self, span: trace.Span | None, request: Request, trail: Trail, status: int, started: float, wall: float,
                *, partner: bool) -> None:
        elapsed = time.perf_counter() - started
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        self._metrics.observe(trail.route, method, status, elapsed)
        if trail.error_code in AUTH_CODES:
            self._metrics.auth_failures.labels(trail.error_code).inc()
        elif trail.error_code in ("rate_limit_exceeded", "quota_exceeded"):
            self._metrics.rate_limited.labels(trail.error_code).inc()
        elif trail.error_code == "upstream_unavailable":
            self._metrics.upstream_errors.labels(str(status)).inc()
        if span is not None and span.is_recording():  # a span sampled out records nothing: skip its attributes
            span.update_name(f"{method} {trail.route}")
            span.set_attributes({"http.request.method": method, "http.route": trail.route,
                                 "http.response.status_code": status, "trellis.request_id": request.request_id,
                                 "trellis.integration_id": trail.integration_id})
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)
        if partner:
            entry = events_pb2.ApiRequestLogged(
                request_id=request.request_id, org_id=trail.org_id,
                integration_id=trail.integration_id, method=method, endpoint=request.path[:1024], status=status,
                duration_ms=elapsed * 1000, ip=request.client_ip, error_code=trail.error_code,
                scope_category=trail.scope_category,
            )
            seconds = int(wall)
            entry.occurred_at.seconds, entry.occurred_at.nanos = seconds, int((wall - seconds) * 1e9)
            self._apilog.record(entry)

    def record_unattributed(self, *, request_id: str, method: str, path: str, status: int, client_ip: str,
                            error_code: str, duration_ms: float = 0.0, wall: float | None = None) -> None:
        """One platform-log record for a request answered before the pipeline could say whose it
        was (the HTTP layer's own answers: malformed HTTP, a client that went away); the
        platform budget bounds them like every record without an organisation."""
        entry = events_pb2.ApiRequestLogged(
            request_id=request_id or self._new_id(), method=method if method in KNOWN_METHODS else "OTHER",
            endpoint=path[:1024], status=status, duration_ms=duration_ms, ip=client_ip, error_code=error_code,
        )
        when = time.time() if wall is None else wall
        seconds = int(when)
        entry.occurred_at.seconds, entry.occurred_at.nanos = seconds, int((when - seconds) * 1e9)
        self._apilog.record(entry)

    # --- public endpoints ---------------------------------------------------------------------

    async def _jwks_document(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        await jwks_response(self._jwks, send)

    async def _openid_configuration(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        await send_json(send, 200, self._discovery, ((b"cache-control", b"public, max-age=300"),))

    async def _healthz(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        await send_json(send, 200, {"status": "alive"})

    async def _readyz(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        checks = {**await self._peers.health(), "nats": self._nc.is_connected}
        ready = all(checks.values())
        await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})

    async def _metrics_text(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        await send_bytes(send, 200, self._metrics.render(), (), content_type=self._metrics.content_type.encode())

    async def _openapi(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        await send_bytes(send, 200, self._spec_json, ())

    async def _docs(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        await send_bytes(send, 200, self._docs_html, (), content_type=b"text/html; charset=utf-8")
