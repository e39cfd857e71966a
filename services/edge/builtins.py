"""Routes the edge answers itself (a route table entry with `builtin = "<name>"`).

`whoami`: who the credentials identify and what they may do, so a partner can check a new
set of credentials without touching any data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.edge.asgi import Request, Send, send_json
from services.edge.errors import EdgeError
from services.edge.model import Caller

Builtin = Callable[[Request, Caller, Send], Awaitable[int]]


async def whoami(request: Request, caller: Caller, send: Send) -> int:
    if request.method not in ("GET", "HEAD"):
        raise EdgeError("method_not_allowed", "use GET", headers=((b"allow", b"GET, HEAD"),))
    await send_json(send, 200, {
        "integration_id": caller.integration.id,
        "org_id": caller.integration.org_id,
        "client_id": caller.token.client_id,
        "scopes": sorted(caller.scopes),
        "rate_limit_per_minute": caller.integration.rate_limit_per_minute,
        "daily_quota": caller.integration.daily_quota,
        "token_expires_at": int(caller.token.expires_at),
        "request_id": request.request_id,
    })
    return 200


BUILTINS: dict[str, Builtin] = {"whoami": whoami}
