"""The partner pipeline, in the documented order: credentials (both headers; key, token, the
pair, the integration Active), IP allowlist, rate limit and quota, route and scope, then a
built-in answer or the upstream. Each step either passes or raises an EdgeError that app.py
turns into the JSON error; `Trail` collects what the request log records about it.

Whose log a request goes to: a refused request is still attributed to an organisation when a
credential it carries says which, so that a stolen key probed without its token (or a token
with a wrong key) shows in that organisation's log: a known API key (even when the token is
missing or wrong), else an access token whose signature verifies (even when the key is missing
or unknown). A request with neither goes to the platform log (services/edge/adapters/apilog.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from services.edge.application.builtins import Builtin, BuiltinCall
from services.edge.application.ports import (
    ApiKeysPort,
    IntegrationsPort,
    InvalidatorPort,
    RateLimiterPort,
    TokensPort,
    TraceHeaders,
    UpstreamsPort,
)
from services.edge.domain.errors import BodyTooLarge, EdgeError, RevokedKey, too_large, unauthorized
from services.edge.domain.limits import Decision
from services.edge.domain.model import Caller, check_active, check_ip, check_pair, check_scope
from services.edge.domain.routes import Route, RouteTable, unsafe_path
from services.edge.http.asgi import Receive, Request, Responder

log = logging.getLogger(__name__)

# The error code recorded for a 5xx answer of the upstream itself (the partner gets its answer).
UPSTREAM_ERROR = "upstream_error"


@dataclass(slots=True)
class Trail:
    """What is known about a request as it goes: the request log and metrics read it."""

    route: str = "unmatched"
    matched: Route | None = None  # the route the path falls under (matched once, when the request starts)
    integration_id: str = ""
    org_id: str = ""
    scope_category: str = ""
    error_code: str = ""

    def attribute(self, integration_id: str, org_id: str) -> None:
        """The request's log is this integration's organisation's."""
        self.integration_id, self.org_id = integration_id, org_id


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        (b"x-ratelimit-reset", str(decision.reset_at).encode()),
    ]


def refusal(decision: Decision) -> EdgeError:
    retry = (b"retry-after", str(max(1, decision.retry_after)).encode())
    if decision.code == "quota_exceeded":
        return EdgeError("quota_exceeded", "the integration has used its daily quota; retry after "
                         f"{decision.retry_after} seconds (Retry-After) or ask for a higher quota", headers=(retry,))
    return EdgeError("rate_limit_exceeded", f"the rate limit of {decision.limit} requests per minute is used up; "
                     f"retry after {decision.reset_at} (X-RateLimit-Reset), with backoff", headers=(retry,))


@functools.lru_cache(maxsize=4096)
def caller_headers(integration_id: str, org_id: str, client_id: str, scopes: frozenset[str]) -> tuple[tuple[bytes, bytes], ...]:
    """Who is calling, for the upstream: integration, organisation, client and `X-Trellis-Scopes`
    (the scopes, sorted, space-separated). Few distinct callers: remembered."""
    return ((b"x-trellis-integration-id", integration_id.encode()), (b"x-trellis-org-id", org_id.encode()),
            (b"x-trellis-client-id", client_id.encode()), (b"x-trellis-scopes", " ".join(sorted(scopes)).encode()))


def bearer_token(request: Request) -> str:
    header = request.header(b"authorization") or b""
    scheme, _, token = header.partition(b" ")
    return token.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""


class Pipeline:
    """Answers one partner request, or raises the EdgeError that refuses it."""

    def __init__(self, *, keys: ApiKeysPort, tokens: TokensPort, integrations: IntegrationsPort,
                 invalidator: InvalidatorPort, limiter: RateLimiterPort, routes: RouteTable, upstreams: UpstreamsPort,
                 builtins: Mapping[str, Builtin], trace_headers: TraceHeaders) -> None:
        self._keys = keys
        self._tokens = tokens
        self._integrations = integrations
        self._invalidator = invalidator
        self._limiter = limiter
        self.routes = routes
        self._upstreams = upstreams
        self._builtins = builtins
        self._trace_headers = trace_headers

    async def handle(self, request: Request, receive: Receive, send: Responder, trail: Trail) -> None:
        self._invalidator.check_connection()
        caller = await self.authenticate(request, trail)
        check_ip(caller.integration, request.client_ip)
        integration = caller.integration
        decision = await self._limiter.check(integration.id, integration.rate_limit_per_minute, integration.daily_quota)
        send.extra.extend(rate_limit_headers(decision))
        if not decision.allowed:
            raise refusal(decision)
        route = self.route_for(request, trail)
        check_scope(caller, route.required_scope(request.method))
        if route.builtin is not None:
            await self._builtins[route.builtin](BuiltinCall(request, caller, route.subpath(request.path), receive, send))
            return
        try:
            status = await self._upstreams.forward(request, route, receive, send, self.identity_headers(request, caller), [])
        except BodyTooLarge:
            raise too_large(self._upstreams.max_body_bytes) from None
        if status >= 500:
            # The service's own answer, passed on unchanged; recorded as the service's failure, apart
            # from the edge's own (upstream_unavailable: 502 unreachable, 504 no answer in time).
            trail.error_code = UPSTREAM_ERROR

    def trail(self, path: str) -> Trail:
        """A partner request's trail, with the route its path falls under (its prefix labels the
        metrics, "unmatched" when none)."""
        route = self.routes.match(path)
        return Trail(route.prefix, route) if route is not None else Trail()

    async def authenticate(self, request: Request, trail: Trail) -> Caller:
        token, api_key = bearer_token(request), (request.header(b"x-api-key") or b"").strip().decode("latin-1")
        if not token or not api_key:
            missing = [name for name, value in (("Authorization: Bearer <token>", token), ("X-API-Key", api_key)) if not value]
            if api_key:
                await self._attribute_key(api_key, request, trail)
            elif token:
                await self._attribute_token(token, trail)
            raise unauthorized("missing_credentials", f"missing {' and '.join(missing)}: every request needs both "
                               "Authorization: Bearer <token> and X-API-Key", token_error=False)
        try:
            key = await self._keys.verify(api_key, request.request_id)
        except RevokedKey as revoked:
            try:
                await self._explain_revoked(revoked.integration_id, request, trail)
            finally:
                if not trail.org_id:
                    await self._attribute_token(token, trail)
            raise self._keys.invalid() from None
        except EdgeError:  # an unknown key, or identity cannot say
            await self._attribute_token(token, trail)
            raise
        trail.attribute(key.integration_id, key.org_id)
        grant = await self._tokens.verify(token)
        check_pair(key, grant)
        integration = await self._integrations.get(key.integration_id, request.request_id)
        if integration.org_id != key.org_id:
            log.error("integration %s: registry and identity disagree on its organisation", key.integration_id)
            raise unauthorized("integration_inactive", "the integration of this API key is not usable; ask your administrator to check it")
        check_active(integration)
        return Caller(key, grant, integration)

    async def _explain_revoked(self, integration_id: str, request: Request, trail: Trail) -> None:
        """A revoked key's holder learns when its integration is no longer Active (suspended,
        revoked); otherwise the key itself was replaced and the caller gets invalid_api_key."""
        try:
            integration = await self._integrations.get(integration_id, request.request_id)
        except EdgeError as exc:
            if exc.code == "integration_inactive":
                raise
            return  # the registry cannot say; the key is dead either way
        trail.attribute(integration.id, integration.org_id)
        check_active(integration)

    async def _attribute_key(self, api_key: str, request: Request, trail: Trail) -> None:
        """Attribute a request that will be refused anyway to its API key's integration, if the key
        is known (or was, and identity announced it revoked); never changes the answer."""
        try:
            key = await self._keys.verify(api_key, request.request_id)
        except RevokedKey as revoked:
            try:
                integration = await self._integrations.get(revoked.integration_id, request.request_id)
            except EdgeError:
                return
            trail.attribute(integration.id, integration.org_id)
            return
        except EdgeError:
            return
        trail.attribute(key.integration_id, key.org_id)

    async def _attribute_token(self, token: str, trail: Trail) -> None:
        """Attribute a request that will be refused anyway to the integration its access token
        names, if the token verifies (its claims are ours, signed); never changes the answer.
        An external issuer's token names no integration: such a request stays unattributed."""
        try:
            grant = await self._tokens.verify(token)
        except EdgeError:
            return
        if grant.integration_id and grant.org_id:
            trail.attribute(grant.integration_id, grant.org_id)

    def route_for(self, request: Request, trail: Trail) -> Route:
        problem = unsafe_path(request.path, request.raw_path)
        if problem is not None:
            raise EdgeError("invalid_request", f"{problem}")
        route = trail.matched
        if route is None:
            raise EdgeError("not_found", f"no API route matches {request.path[:200]}; see the API reference")
        trail.scope_category = route.category or ""
        return route

    def identity_headers(self, request: Request, caller: Caller) -> list[tuple[bytes, bytes]]:
        """Who is calling, for the upstream: ids, scopes, the client's address, the trace."""
        hops = request.hops or [request.client_ip]
        headers = [
            (b"x-request-id", request.request_id.encode()),
            *caller_headers(caller.integration.id, caller.integration.org_id, caller.token.client_id, caller.scopes),
            (b"x-forwarded-for", ", ".join(hops).encode()),
            (b"x-forwarded-proto", b"https" if request.scope.get("scheme") == "https" else b"http"),
        ]
        host = request.header(b"host")
        if host:
            headers.append((b"x-forwarded-host", host))
        if request.traced:
            headers.extend(self._trace_headers())
        return headers
