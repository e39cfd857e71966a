"""Routes the edge answers itself (a route table entry with `builtin = "<name>"`).

`whoami`: who the credentials identify and what they may do, so a partner can check a new
set of credentials without touching any data. `webhooks` and `activities`: the partner's
webhook subscriptions and the organisation's activities, answered through the webhooks
service (services.edge.entrypoints.partner_webhooks).

A built-in runs after authentication, the IP allowlist, the rate limit and the route's scope;
it gets the request, the verified caller, the path below its route's prefix and the body's
`receive`, and answers through `send` or raises an EdgeError.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.edge.domain.errors import EdgeError
from services.edge.domain.model import Caller
from services.edge.http.asgi import Receive, Request, Send, send_json


@dataclass(frozen=True, slots=True)
class BuiltinCall:
    """One request to a built-in route, already authenticated and allowed."""

    request: Request
    caller: Caller
    subpath: str          # the path below the route's prefix: "" or "/whk_123/pause"
    receive: Receive
    send: Send


Builtin = Callable[[BuiltinCall], Awaitable[None]]

# The names a route table may use; main.py builds the handlers (some need the webhooks peer).
WEBHOOKS_BUILTINS = frozenset({"webhooks", "activities"})
BUILTINS = frozenset({"whoami"}) | WEBHOOKS_BUILTINS


async def whoami(call: BuiltinCall) -> None:
    request, caller = call.request, call.caller
    if request.method not in ("GET", "HEAD"):
        raise EdgeError("method_not_allowed", "use GET", headers=((b"allow", b"GET, HEAD"),))
    await send_json(call.send, 200, {
        "integration_id": caller.integration.id,
        "org_id": caller.integration.org_id,
        "client_id": caller.token.client_id,
        "scopes": sorted(caller.scopes),
        "rate_limit_per_minute": caller.integration.rate_limit_per_minute,
        "daily_quota": caller.integration.daily_quota,
        "token_expires_at": int(caller.token.expires_at),
        "request_id": request.request_id,
    })
