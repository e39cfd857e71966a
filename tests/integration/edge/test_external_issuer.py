"""External issuer mode through the edge: tokens from an external tenant (an Auth0 one, say),
verified against its JWKS served on loopback, are accepted with the API key of the integration
their client is registered to, and with no other."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.edge.entrypoints.main import bootstrap
from services.identity.adapters import signing
from tests.support.settings import Settings
from tests.integration.edge.conftest import Upstream, call, new_org, serve, write_routes
from tests.support.services import channel_to, start_service

ISSUER, AUDIENCE, KID = "https://tenant.auth0.test/", "https://api.trellis.test", "auth0-key-1"
TENANT_KEY = signing.generate_private_key("RS256")


def tenant_token(client_id: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"{client_id}@clients", "azp": client_id, "iat": now, "exp": now + 600,
            "gty": "client-credentials", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, TENANT_KEY, algorithm="RS256", headers={"kid": KID})


@pytest.fixture
async def tenant_jwks_url() -> AsyncIterator[str]:
    document = json.dumps({"keys": [signing.public_jwk(TENANT_KEY, KID)]})

    async def jwks(request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner, url = await serve(app)
    yield f"{url}/.well-known/jwks.json"
    await runner.cleanup()


async def test_external_tokens_are_accepted_with_their_integrations_key_only(
    make_settings: Callable[..., Settings], tenant_jwks_url: str, upstream: Upstream, example_upstream: str,
    actor_private_key_file: Path, tmp_path: Path, as_actor: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    external = {"external_issuer": ISSUER, "external_jwks_url": tenant_jwks_url, "external_audience": AUDIENCE}
    identity = await start_service("identity", make_settings(**external))
    registry = await start_service("registry", make_settings(identity_addr=f"127.0.0.1:{identity.port}"))
    edge = await (await bootstrap(make_settings(
        **external, identity_addr=f"127.0.0.1:{identity.port}", registry_addr=f"127.0.0.1:{registry.port}",
        actor_private_key_file=str(actor_private_key_file),
        edge_routes_file=str(write_routes(tmp_path / "routes.toml", upstream.url, example_upstream)),
    ), address="127.0.0.1:0")).start()
    try:
        org = new_org()
        alice, bob = as_actor("alice", org), as_actor("bob", org)
        async with channel_to(registry) as registry_channel, channel_to(identity) as identity_channel:
            registry_stub = registry_pb2_grpc.RegistryStub(registry_channel)
            keys = []
            for _ in range(2):
                created = await registry_stub.CreateIntegration(rpb.CreateIntegrationRequest(
                    vendor_id="sap", name="SAP", owner="alice", description="x",
                    scopes=["inventory:read", "orders:read"], rate_limit_per_minute=1000), metadata=alice)
                await registry_stub.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
                activated = await registry_stub.ActivateIntegration(rpb.ActivateIntegrationRequest(
                    integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob)
                keys.append((created.id, activated.credentials.api_key))
            (integration_id, api_key), (_, other_key) = keys
            client = f"auth0_{uuid.uuid4().hex[:10]}"
            await identity_pb2_grpc.IdentityStub(identity_channel).RegisterExternalClient(
                identity_pb2.RegisterExternalClientRequest(integration_id=integration_id, client_id=client), metadata=alice)

        base = f"http://127.0.0.1:{edge.port}"
        headers = {"Authorization": f"Bearer {tenant_token(client, scope='inventory:read finance:read')}", "X-API-Key": api_key}
        status, _, body = await call(http, "GET", f"{base}/api/lots", headers=headers)
        assert status == 200, body
        seen = dict((k.lower(), v) for k, v in upstream.last().headers)
        assert (seen["x-trellis-integration-id"], seen["x-trellis-org-id"], seen["x-trellis-client-id"]) == (integration_id, org, client)
        assert seen["x-trellis-scopes"] == "inventory:read"  # finance:read was never granted

        # No scope claim: the integration's scopes.
        status, _, _ = await call(http, "GET", f"{base}/api/orders/1", headers={**headers, "Authorization": f"Bearer {tenant_token(client)}"})
        assert status == 200
        # The narrower token claim still narrows.
        status, _, body = await call(http, "GET", f"{base}/api/orders/1", headers=headers)
        assert (status, body["error"]) == (403, "insufficient_scope")
        # Another integration's key, or an unregistered client: not this pair.
        status, _, body = await call(http, "GET", f"{base}/api/lots", headers={**headers, "X-API-Key": other_key})
        assert (status, body["error"]) == (401, "credentials_mismatch")
        status, _, body = await call(http, "GET", f"{base}/api/lots",
                                     headers={**headers, "Authorization": f"Bearer {tenant_token('auth0_stranger')}"})
        assert (status, body["error"]) == (401, "credentials_mismatch")
        # Same scrutiny as our own tokens.
        status, _, body = await call(http, "GET", f"{base}/api/lots",
                                     headers={**headers, "Authorization": f"Bearer {tenant_token(client, aud='elsewhere')}"})
        assert (status, body["error"]) == (401, "invalid_token")
    finally:
        await edge.stop()
        await registry.stop(0)
        await identity.stop(0)
