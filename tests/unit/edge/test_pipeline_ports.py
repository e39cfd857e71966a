"""The partner pipeline at its ports: in-memory credentials, integrations, limiter and upstream
(services/edge/application/ports.py) stand in for identity, the registry, JetStream and the
HTTP client, so the order of the checks and what reaches the upstream are seen without I/O.
The same behaviour against the real peers: tests/integration/edge."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.edge.application.pipeline import Pipeline, Trail
from services.edge.domain.errors import EdgeError, RevokedKey, unauthorized
from services.edge.domain.limits import Decision
from services.edge.domain.model import ApiKeyInfo, IntegrationSnapshot, TokenGrant
from services.edge.domain.routes import Route, RouteTable
from services.edge.http.asgi import Headers, Message, Receive, Request, Responder, Send

KEY, TOKEN = "grq_live_key", "token-1"
INFO = ApiKeyInfo(integration_id="int_1", org_id="org_1", client_ids=frozenset({"cli_1"}), key_hash="h")
GRANT = TokenGrant(client_id="cli_1", integration_id="int_1", org_id="org_1", scopes=frozenset({"inventory:read"}),
                   expires_at=2e9, issuer="https://issuer.test")
ACTIVE = IntegrationSnapshot(id="int_1", org_id="org_1", status="active", scopes=frozenset({"inventory:read"}),
                             rate_limit_per_minute=60, daily_quota=0)
ALLOWED = Decision(True, None, 60, 59, 1_700_000_060, 0)


class Keys:
    def __init__(self, revoked: bool = False) -> None:
        self.revoked = revoked

    async def verify(self, api_key: str, request_id: str = "") -> ApiKeyInfo:
        if api_key != KEY:
            raise unauthorized("invalid_api_key", "unknown key")
        if self.revoked:
            raise RevokedKey("int_1")
        return INFO

    @staticmethod
    def invalid() -> EdgeError:
        return unauthorized("invalid_api_key", "unknown key")


class Tokens:
    async def verify(self, token: str) -> TokenGrant:
        if token != TOKEN:
            raise unauthorized("invalid_token", "bad token")
        return GRANT


class Integrations:
    def __init__(self, snapshot: IntegrationSnapshot = ACTIVE) -> None:
        self.snapshot = snapshot

    async def get(self, integration_id: str, request_id: str = "") -> IntegrationSnapshot:
        return self.snapshot


class Invalidator:
    checks = 0

    def check_connection(self) -> None:
        self.checks += 1


class Limiter:
    def __init__(self, decision: Decision = ALLOWED) -> None:
        self.decision = decision
        self.asked: list[tuple[str, int, int]] = []

    async def check(self, integration_id: str, limit_per_minute: int, daily_quota: int) -> Decision:
        self.asked.append((integration_id, limit_per_minute, daily_quota))
        return self.decision


class Upstreams:
    max_body_bytes = 1024

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, Headers]] = []

    async def forward(self, request: Request, route: Route, receive: Receive, send: Send,
                      add_request: Headers, add_response: Headers) -> int:
        self.forwarded.append((route.prefix, add_request))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        return 200


def pipeline(*, keys: Keys | None = None, integrations: Integrations | None = None, limiter: Limiter | None = None,
             upstreams: Upstreams | None = None, traced: list[dict[str, str]] | None = None) -> Pipeline:
    routes = RouteTable([Route(prefix="/v1/inventory", category="inventory", upstream="http://upstream.test")])

    def trace_headers() -> list[tuple[bytes, bytes]]:
        headers = [(b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
        if traced is not None:
            traced.append({k.decode(): v.decode() for k, v in headers})
        return headers

    return Pipeline(keys=keys or Keys(), tokens=Tokens(), integrations=integrations or Integrations(),
                    invalidator=Invalidator(), limiter=limiter or Limiter(), routes=routes,
                    upstreams=upstreams or Upstreams(), builtins={}, trace_headers=trace_headers)


def request(path: str = "/v1/inventory/items", *, key: str | None = KEY, token: str | None = TOKEN,
            traced: bool = False) -> Request:
    headers = [(b"host", b"api.test")]
    if key is not None:
        headers.append((b"x-api-key", key.encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    found = Request({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "headers": headers,
                     "client": ("203.0.113.7", 5000), "scheme": "http"})
    found.request_id, found.client_ip, found.traced = "req_1", "203.0.113.7", traced
    return found


async def serve(p: Pipeline, req: Request) -> tuple[Trail, list[Message]]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    trail = p.trail(req.path)
    await p.handle(req, receive, Responder(send, []), trail)
    return trail, sent


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_good_request_reaches_the_upstream_with_who_is_calling_and_the_rate_limit_headers() -> None:
    upstreams, limiter = Upstreams(), Limiter()
    traced: list[dict[str, str]] = []
    trail, sent = run(serve(pipeline(upstreams=upstreams, limiter=limiter, traced=traced), request(traced=True)))
    assert (trail.route, trail.integration_id, trail.org_id, trail.scope_category, trail.error_code) == (
        "/v1/inventory", "int_1", "org_1", "inventory", "")
    assert limiter.asked == [("int_1", 60, 0)]
    ((prefix, added),) = upstreams.forwarded
    assert prefix == "/v1/inventory"
    assert dict(added)[b"x-trellis-integration-id"] == b"int_1"
    assert dict(added)[b"x-trellis-scopes"] == b"inventory:read"
    assert dict(added)[b"x-forwarded-for"] == b"203.0.113.7"
    assert dict(added)[b"traceparent"].startswith(b"00-") and len(traced) == 1
    assert (b"x-ratelimit-remaining", b"59") in sent[0]["headers"]


def test_no_trace_context_is_added_to_an_untraced_request() -> None:
    upstreams = Upstreams()
    traced: list[dict[str, str]] = []
    run(serve(pipeline(upstreams=upstreams, traced=traced), request(traced=False)))
    assert b"traceparent" not in dict(upstreams.forwarded[0][1]) and traced == []


def test_a_request_with_a_known_key_and_no_token_is_refused_and_attributed_to_the_keys_organisation() -> None:
    p = pipeline()
    req = request(token=None)
    trail = p.trail(req.path)

    async def go() -> None:
        async def send(message: Message) -> None: ...

        async def receive() -> Message:
            return {"type": "http.request"}

        await p.handle(req, receive, Responder(send, []), trail)

    with pytest.raises(EdgeError) as refused:
        run(go())
    assert (refused.value.code, refused.value.status) == ("missing_credentials", 401)
    assert (trail.integration_id, trail.org_id) == ("int_1", "org_1")


def test_a_revoked_key_of_a_suspended_integration_says_so() -> None:
    suspended = IntegrationSnapshot(id="int_1", org_id="org_1", status="suspended", scopes=frozenset(),
                                    rate_limit_per_minute=60, daily_quota=0)
    with pytest.raises(EdgeError) as refused:
        run(serve(pipeline(keys=Keys(revoked=True), integrations=Integrations(suspended)), request()))
    assert refused.value.code == "integration_inactive"


def test_the_rate_limit_refuses_before_the_route_is_looked_at() -> None:
    limited = Limiter(Decision(False, "rate_limit_exceeded", 60, 0, 1_700_000_060, 12))
    upstreams = Upstreams()
    with pytest.raises(EdgeError) as refused:
        run(serve(pipeline(limiter=limited, upstreams=upstreams), request("/nowhere")))
    assert (refused.value.code, refused.value.status) == ("rate_limit_exceeded", 429)
    assert (b"retry-after", b"12") in refused.value.headers and upstreams.forwarded == []


def test_a_path_no_route_matches_is_not_found_after_authentication() -> None:
    with pytest.raises(EdgeError) as refused:
        run(serve(pipeline(), request("/nowhere")))
    assert refused.value.code == "not_found"
