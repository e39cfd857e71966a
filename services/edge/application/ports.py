"""What the partner pipeline needs from outside, as protocols: the adapters (identity's and the
registry's caches, the JetStream rate limiter, the NATS invalidator) and the HTTP layer's
upstream client provide them; services/edge/entrypoints/main.py wires them in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from services.edge.domain.errors import EdgeError
from services.edge.domain.limits import Decision
from services.edge.domain.model import ApiKeyInfo, IntegrationSnapshot, TokenGrant
from services.edge.domain.routes import Route
from services.edge.http.asgi import Headers, Receive, Request, Send


class ApiKeysPort(Protocol):
    """Identity's API keys, cached (services/edge/adapters/credentials.py ApiKeys)."""

    async def verify(self, api_key: str, request_id: str = "") -> ApiKeyInfo:
        """The key's integration; raises RevokedKey for a key announced as revoked, an EdgeError
        for an unknown one or when identity cannot say."""
        ...

    @staticmethod
    def invalid() -> EdgeError:
        """The refusal of a key that is not (or no longer) valid."""
        ...


class TokensPort(Protocol):
    """Access tokens, verified against the issuers' keys (credentials.py Tokens)."""

    async def verify(self, token: str) -> TokenGrant: ...


class IntegrationsPort(Protocol):
    """The registry's integrations, cached (services/edge/adapters/integrations.py Integrations)."""

    async def get(self, integration_id: str, request_id: str = "") -> IntegrationSnapshot: ...


class InvalidatorPort(Protocol):
    """The events that keep the caches fresh (integrations.py Invalidator)."""

    def check_connection(self) -> None:
        """Forget every cached credential and integration if events may have been missed."""
        ...


class RateLimiterPort(Protocol):
    """The per-integration rate limit and daily quota shared by every replica (adapters/ratelimit.py)."""

    async def check(self, integration_id: str, limit_per_minute: int, daily_quota: int) -> Decision: ...


class UpstreamsPort(Protocol):
    """Forwarding a partner request to its route's upstream (services/edge/http/proxy.py Upstreams);
    raises BodyTooLarge for a body over `max_body_bytes`."""

    @property
    def max_body_bytes(self) -> int: ...

    async def forward(self, request: Request, route: Route, receive: Receive, send: Send,
                      add_request: Headers, add_response: Headers) -> int: ...


# The current trace context as headers for the upstream (services.kit.telemetry.http_trace_headers).
TraceHeaders = Callable[[], list[tuple[bytes, bytes]]]
