"""Wires the console: NATS (the session buckets), the four gRPC channels, sign-in (OIDC, or the
local sign-in in the embedded mode), the pages, and a uvicorn server. Nothing runs at import.

`python -m services.console` serves on settings.console_addr until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvicorn

from services.console.app import Console
from services.console.audit.routes import AuditPages
from services.console.integrations.routes import IntegrationPages
from services.console.logs.routes import LogPages
from services.console.metrics import ConsoleMetrics
from services.console.pages import Renderer
from services.console.peers import Peers
from services.console.review.routes import ReviewPages
from services.console.sessions import SessionStore
from services.console.setup_requests.routes import SetupRequestPages
from services.console.signin.local import LocalSignIn
from services.console.signin.oidc import OidcSignIn
from services.console.signin.routes import Auth, SignInPages
from services.console.web import Cookies, content_security_policy
from services.console.webhooks.routes import WebhookPages
from services.kit.auth import ActorVerifier
from services.kit.builder import ServiceBuilder
from services.kit.httpserve import QuietServer, RunningHttp
from services.kit.metrics import MetricsServer
from services.kit.service import configure_logging
from services.console.entrypoints.settings import ConsoleProcessSettings, check_settings
from services.kit.settingcheck import exit_on_bad_settings
from services.kit.settings import Mode, load_settings
from services.kit.telemetry import setup_tracing

log = logging.getLogger(__name__)

NAME = "console"


@dataclass(kw_only=True)
class RunningConsole(RunningHttp):
    """A bootstrapped console (services.kit.httpserve.RunningHttp) and its application."""

    console: Console


async def bootstrap(settings: ConsoleProcessSettings, *, address: str | None = None) -> RunningConsole:
    """A ready-to-start console bound to `address` (default settings.console_addr; port 0 in tests).
    Settings it cannot serve with raise SettingError (one line, exit code 2 from main)."""
    check_settings(settings)
    embedded = settings.mode is Mode.EMBEDDED
    local = LocalSignIn(settings) if embedded else None
    oidc = None if embedded else OidcSignIn(settings, ActorVerifier.from_settings(settings))
    async with ServiceBuilder(NAME, settings) as build:
        bus = await build.nats()
        store = await SessionStore.open(bus.js, ttl_seconds=settings.console_session_ttl_seconds,
                                        replicas=settings.nats_stream_replicas)
        peers = Peers(settings)
        build.on_close(peers.close, "peer channels")
        # Plain HTTP only on a laptop: anywhere else the cookies are Secure and __Host- prefixed.
        cookies = Cookies(secure=not (embedded and urlsplit(settings.console_public_url).scheme == "http"))
        auth = Auth(store, cookies, local=local, oidc=oidc, session_ttl=settings.console_session_ttl_seconds)
        renderer, metrics = Renderer(embedded=embedded), ConsoleMetrics()

        async def ready() -> dict[str, bool]:
            return {**await peers.health(), "nats": bus.nc.is_connected}

        issuer = urlsplit(settings.actor_issuer)
        form_targets = () if embedded or not issuer.netloc else (f"{issuer.scheme}://{issuer.netloc}",)
        console = Console(
            auth=auth, renderer=renderer, metrics=metrics, ready=ready, csp=content_security_policy(form_targets),
            signin=SignInPages(auth, renderer, metrics, issuer=settings.actor_issuer, public_url=settings.console_public_url),
            integrations=IntegrationPages(peers, auth, renderer, store, max_live=settings.max_live_integrations,
                                          api_docs_url=settings.api_docs_url),
            areas=(WebhookPages(peers, auth, renderer, store, test_timeout=settings.webhooks_timeout_seconds + 5),
                   LogPages(peers, auth, renderer), AuditPages(peers, auth, renderer), ReviewPages(peers, auth, renderer),
                   SetupRequestPages(peers, auth, renderer)),
            serve_metrics=not settings.console_metrics_addr)
        # TCP_NODELAY (bind's default): with Nagle's algorithm on, every keep-alive answer's body
        # waited 40 ms for the browser's delayed ACK.
        sock = build.listen(address or settings.console_addr)
        starts: list[Callable[[], Awaitable[object]]] = []
        if settings.console_metrics_addr:
            metrics_server = MetricsServer(metrics.render, settings.console_metrics_addr)
            starts.append(metrics_server.start)
            build.on_close(metrics_server.stop, "metrics listener")
        config = uvicorn.Config(console, http="httptools", ws="none", lifespan="off", log_config=None,
                                access_log=False, proxy_headers=False, server_header=False,
                                timeout_graceful_shutdown=int(settings.grpc_grace_seconds) or None)
        return RunningConsole(name=NAME, console=console, server=QuietServer(config), sock=sock,
                              port=sock.getsockname()[1], starts=starts, stops=[build.handover()])


def main() -> None:
    with exit_on_bad_settings():
        settings = load_settings(ConsoleProcessSettings)
    configure_logging(settings, NAME)

    async def run() -> None:
        setup_tracing(NAME, namespace=settings.otel_service_namespace, sample_ratio=settings.otel_sample_ratio)
        console = await (await bootstrap(settings)).start()
        log.info("console serving on %s (port %d)", settings.console_public_url, console.port)
        await console.serve_until_signalled()

    import uvloop  # the event loop the edge runs on too (docs/benchmarks.md)

    with exit_on_bad_settings():  # what bootstrap finds unusable (check_settings) is one line too
        uvloop.run(run())
