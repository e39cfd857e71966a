"""Wires the edge together: NATS (invalidation events, rate-limit counters, the API log), the
identity and registry channels (and webhooks, when a built-in route of the table needs it) with
the edge's service identity, the caches, the route table, the built-ins and the uvicorn server
(uvloop + httptools; docs/benchmarks.md "## Edge" says why). Nothing runs at import time.

`python -m services.edge` serves on settings.edge_addr until SIGTERM or SIGINT, then stops
taking connections, lets requests in flight finish, flushes the API log and closes.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from services.edge.adapters.apilog import ApiLogPublisher, PlatformBudget
from services.edge.adapters.credentials import ApiKeys, Issuer, KeySet, Tokens
from services.edge.adapters.integrations import Integrations, Invalidator
from services.edge.adapters.metrics import EdgeMetrics
from services.edge.adapters.peers import Peers
from services.edge.adapters.ratelimit import RateLimiter
from services.edge.application.builtins import BUILTINS, WEBHOOKS_BUILTINS, Builtin, whoami
from services.edge.application.pipeline import Pipeline
from services.edge.domain.routes import RouteTable, RouteTableError
from services.edge.entrypoints.app import EdgeApp
from services.edge.entrypoints.oauth import TokenEndpoint
from services.edge.entrypoints.partner_webhooks import PartnerWebhooks
from services.edge.entrypoints.settings import EdgeProcessSettings
from services.edge.http.proxy import Upstreams
from services.edge.http.server import REQUEST_LINE_BYTES, HttpLimits, serving
from services.kit.auth import EDGE_PERMISSION, ServiceTokenSource
from services.kit.builder import ServiceBuilder
from services.kit.httpserve import QuietServer, RunningHttp
from services.kit.metrics import MetricsServer
from services.kit.service import configure_logging
from services.kit.settingcheck import SettingError, exit_on_bad_settings
from services.kit.settings import Mode, load_settings
from services.kit.telemetry import http_trace_headers, setup_tracing

log = logging.getLogger(__name__)

NAME = "edge"
# The embedded mode's route table, when none is configured (docs/partners.md describes it).
EXAMPLE_ROUTES = Path(__file__).resolve().parents[3] / "examples" / "routes.toml"
MAX_EXTERNAL_JWKS_BYTES = 256 * 1024
# A subscription's JSON is a URL, some types and a description: bodies of the webhook routes are
# refused above this (a 10 MB body would be parsed on the event loop every partner shares).
WEBHOOK_BODY_BYTES = 64 * 1024


def routes_file(settings: EdgeProcessSettings) -> Path:
    if settings.edge_routes_file:
        return Path(settings.edge_routes_file)
    if settings.mode is Mode.EMBEDDED:
        return EXAMPLE_ROUTES
    raise SettingError("TRELLIS_EDGE_ROUTES_FILE", "the route table's file (TOML) outside the embedded mode")


@dataclass(kw_only=True)
class RunningEdge(RunningHttp):
    """A bootstrapped edge (services.kit.httpserve.RunningHttp): stop() stops serving, then
    flushes the API log and closes."""

    app: EdgeApp
    # GET /metrics on settings.edge_metrics_addr, when set (else on the partner port).
    metrics_server: MetricsServer | None = None


async def bootstrap(settings: EdgeProcessSettings, *, address: str | None = None) -> RunningEdge:
    """A ready-to-start edge bound to `address` (default settings.edge_addr; port 0 in tests)."""
    path = routes_file(settings)
    try:
        routes = RouteTable.load(path, builtins=BUILTINS)
    except RouteTableError as exc:
        raise SettingError("TRELLIS_EDGE_ROUTES_FILE", f"a route table that loads ({exc})", given=str(path)) from exc
    tokens_source = ServiceTokenSource.from_settings(settings, user_id="service:edge", permissions=(EDGE_PERMISSION,))
    # What is opened is closed newest first when the edge stops (after uvicorn stopped serving):
    # the metrics listener, the subscriptions, the log flush, the limiter, the upstream client,
    # the socket, the peer channels, NATS.
    async with ServiceBuilder(NAME, settings) as build:
        bus = await build.nats()
        # Only a table that routes to webhooks makes webhooks a peer (and part of /readyz).
        uses_webhooks = any(route.builtin in WEBHOOKS_BUILTINS for route in routes.routes)
        peers = Peers(settings.identity_addr, settings.registry_addr, tokens_source, timeout=settings.edge_peer_timeout_seconds,
                      webhooks_addr=settings.webhooks_addr if uses_webhooks else None)
        build.on_close(peers.close, "peer channels")
        sock = build.listen(address or settings.edge_addr, nodelay=False)  # as measured in docs/benchmarks.md
        ttl = settings.edge_cache_ttl_seconds
        upstreams = Upstreams(timeout=settings.edge_upstream_timeout_seconds, max_body_bytes=settings.edge_max_body_bytes)
        build.on_close(upstreams.close, "upstream client")
        own_keys = KeySet(peers.jwks_json, ttl=ttl, refetch_interval=settings.edge_jwks_refetch_seconds, name="identity")
        own = Issuer(settings.token_issuer, settings.token_audience, own_keys, max_lifetime=settings.token_ttl_seconds)
        external = None
        if settings.external_issuer and settings.external_jwks_url:
            external = Issuer(settings.external_issuer, settings.external_audience or None, KeySet(
                lambda: upstreams.fetch_text(settings.external_jwks_url, MAX_EXTERNAL_JWKS_BYTES),
                ttl=ttl, refetch_interval=settings.edge_jwks_refetch_seconds, name="external issuer",
            ), external=True, client_id_claim=settings.external_client_id_claim)
        keys, tokens = ApiKeys(peers, ttl=ttl), Tokens(own, external=external, ttl=ttl, token_url=settings.token_url)
        integrations = Integrations(peers, ttl=ttl)
        # Started with the server (RunningHttp.start), before the first request.
        limiter = RateLimiter(bus.js, replicas=settings.nats_stream_replicas, fail_open=settings.edge_rate_limit_fail_open)
        build.on_close(limiter.close, "rate limiter")
        apilog = ApiLogPublisher(bus.js, platform=PlatformBudget())
        build.on_close(apilog.close, "API log publisher")
        invalidator = Invalidator(bus.nc, integrations, keys, tokens)
        build.on_close(invalidator.close, "invalidation subscriptions")
        starts: list[Callable[[], Awaitable[object]]] = [limiter.start, apilog.start, invalidator.start]
        metrics = EdgeMetrics()
        metrics.watch(apilog_dropped=lambda: apilog.dropped, apilog_queued=lambda: apilog.queued,
                      jwks_fetches=lambda: own_keys.fetches)
        metrics_server = None
        if settings.edge_metrics_addr:
            metrics_server = MetricsServer(metrics.scrape, settings.edge_metrics_addr)
            starts.insert(0, metrics_server.start)
            build.on_close(metrics_server.stop, "metrics listener")
        builtins: dict[str, Builtin] = {"whoami": whoami}
        if uses_webhooks:
            # A test delivery waits for the receiver: allow webhooks' delivery timeout and a margin.
            builtins.update(PartnerWebhooks(peers, max_body_bytes=min(settings.edge_max_body_bytes, WEBHOOK_BODY_BYTES), test_timeout=max(
                settings.edge_peer_timeout_seconds, settings.webhooks_timeout_seconds + 5)).builtins())
        pipeline = Pipeline(keys=keys, tokens=tokens, integrations=integrations, invalidator=invalidator,
                            limiter=limiter, routes=routes, upstreams=upstreams, builtins=builtins,
                            trace_headers=http_trace_headers)
        app = EdgeApp(settings, pipeline=pipeline, peers=peers, token_endpoint=TokenEndpoint(peers, integrations),
                      jwks=own_keys, apilog=apilog, metrics=metrics, nc=bus.nc)
        limits = HttpLimits(
            header_seconds=settings.edge_header_read_timeout_seconds, body_seconds=settings.edge_body_read_timeout_seconds,
            per_address=settings.edge_max_connections_per_address,
            head_bytes=settings.edge_max_header_bytes + REQUEST_LINE_BYTES,
            uncounted=tuple(ipaddress.ip_network(c.strip(), strict=False) for c in settings.edge_trusted_proxies))
        config = uvicorn.Config(
            # uvicorn calls `http` with a protocol's arguments, so a factory serves where it types a class.
            app, http=serving(limits),  # type: ignore[arg-type]  # a protocol factory, not a class
            ws="none", lifespan="off", interface="asgi3", log_config=None, access_log=False,
            # Never rewrite the client address from X-Forwarded-For: services.edge.domain.clientip decides,
            # with the configured trusted proxies only.
            proxy_headers=False, server_header=False, timeout_graceful_shutdown=int(settings.grpc_grace_seconds) or None,
        )
        return RunningEdge(name=NAME, app=app, server=QuietServer(config), sock=sock, port=sock.getsockname()[1],
                           starts=starts, stops=[build.handover()], metrics_server=metrics_server)


def main() -> None:
    with exit_on_bad_settings():
        settings = load_settings(EdgeProcessSettings)
    configure_logging(settings, NAME)
    import uvloop

    async def run() -> None:
        setup_tracing(NAME, namespace=settings.otel_service_namespace, sample_ratio=settings.otel_sample_ratio)
        if settings.mode is not Mode.EMBEDDED and settings.issuer_is_derived():
            log.warning("the token issuer %s is derived from TRELLIS_EDGE_ADDR; identity derives its own from the "
                        "address it is given: set TRELLIS_EDGE_PUBLIC_URL (or TRELLIS_TOKEN_ISSUER) alike for every "
                        "process", settings.token_issuer)
        edge = await (await bootstrap(settings)).start()
        # What start-up allocated (modules, protobuf descriptors, the route table) lives as long as
        # the process: out of the collector's sight, a full collection scans only request garbage.
        gc.collect()
        gc.freeze()
        log.info("edge serving on %s:%d", settings.edge_addr.rpartition(":")[0], edge.port)
        await edge.serve_until_signalled()

    with exit_on_bad_settings():
        uvloop.run(run())
