"""The partner webhook routes under test: a real edge (in-process uvicorn on port 0) with the
shipped embedded route table (examples/routes.toml), in front of real identity, registry and
webhooks services over real gRPC channels, the session's nats-server, and real HTTPS receivers
whose certificates chain to a `trustme` CA the webhooks service is told to trust.

The fixtures of tests/integration/edge and tests/integration/webhooks are reused as they are:
importing them here makes them available to this directory's tests.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.edge.entrypoints.main import EXAMPLE_ROUTES, RunningEdge
from tests.integration.edge.conftest import (  # noqa: F401 - fixtures reused
    DEFAULT_SCOPES,
    Partner,
    ProvisionPartner,
    actor_private_key_file,
    call,
    edge_settings,
    example_upstream,
    fetch_token,
    http,
    partner_headers,
    provision,
    start_edge,
    upstream,
)
from tests.integration.edge.test_happy_path import ApiLog, apilog  # noqa: F401 - fixture reused
from tests.integration.webhooks.conftest import (  # noqa: F401 - fixtures reused
    Webhooks,
    receiver,
    start_receiver,
    start_webhooks,
    tls,
)
from tests.integration.webhooks.receiver import Received

WEBHOOK_SCOPES = (*DEFAULT_SCOPES, "webhooks:manage", "activities:read")
# Small, so a test can send a body over it; every legitimate body here is far smaller.
MAX_BODY_BYTES = 4096


def verifies(delivery: Received, secret: str) -> bool:
    """The spec's recipe: HMAC-SHA256 over "<timestamp>.<raw body>", keyed by the secret as shown."""
    timestamp = delivery.headers["X-Webhook-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", delivery.headers["X-Webhook-Signature"])


@dataclass
class Client:
    """One partner's credentials and a way to call the edge with them."""

    partner: Partner
    token: str
    edge: str
    http: aiohttp.ClientSession

    async def __call__(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any], Any]:
        headers = partner_headers(self.token, self.partner, **kw.pop("headers", {}))
        return await call(self.http, method, f"{self.edge}{path}", headers=headers, **kw)


@dataclass
class Stack:
    """A running edge in front of webhooks, for one organisation (more can be made)."""

    edge: str
    running: RunningEdge
    webhooks: Webhooks
    http: aiohttp.ClientSession
    provision: ProvisionPartner

    @property
    def org(self) -> str:
        return self.webhooks.org

    async def partner(self, org: str | None = None, scopes: tuple[str, ...] = WEBHOOK_SCOPES) -> Client:
        """A newly activated integration in `org` (default: the stack's) and a token for it."""
        partner = await self.provision(org or self.org, scopes=list(scopes))
        return Client(partner, await fetch_token(self.http, self.edge, partner), self.edge, self.http)


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
def start_stack(start_webhooks: Callable[..., Awaitable[Webhooks]], start_edge: Callable[..., Awaitable[RunningEdge]],  # noqa: F811
                http: aiohttp.ClientSession, provision: ProvisionPartner) -> StartStack:  # noqa: F811
    """start_stack(routes=examples/routes.toml, **edge settings) -> webhooks and an edge routing to it."""

    async def _start(routes: Path = EXAMPLE_ROUTES, **overrides: Any) -> Stack:
        webhooks = await start_webhooks(org=f"org_{uuid.uuid4().hex[:12]}")
        values = {"edge_routes_file": str(routes), "webhooks_addr": f"127.0.0.1:{webhooks.service.port}",
                  "edge_max_body_bytes": MAX_BODY_BYTES, **overrides}
        running = await start_edge(**values)
        return Stack(f"http://127.0.0.1:{running.port}", running, webhooks, http, provision)

    return _start


@pytest.fixture
async def stack(start_stack: StartStack) -> Stack:
    return await start_stack()
