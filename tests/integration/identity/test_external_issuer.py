"""External issuer mode: tokens from an external tenant (an Auth0 one, say), verified against its
JWKS served on loopback, are accepted for the integration their client is registered to."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import jwt
import pytest

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.identity.adapters import signing
from services.kit.auth import ADMIN_PERMISSION
from tests.integration.identity.conftest import Identity, Metadata, issue, new_integration_id

ISSUER = "https://tenant.auth0.test/"
AUDIENCE = "https://api.trellis.test"
EXTERNAL_KID = "auth0-key-1"


class Tenant:
    """A stand-in external issuer: one RSA key, its JWKS over HTTP on loopback."""

    def __init__(self) -> None:
        self.key = signing.generate_private_key("RS256")
        jwks = json.dumps({"keys": [signing.public_jwk(self.key, EXTERNAL_KID)]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def token(self, azp: str, *, key: signing.PrivateKey | None = None, drop: tuple[str, ...] = (), **extra: object) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"{azp}@clients", "azp": azp, "iat": now, "exp": now + 600,
                  "scope": "inventory:read", "gty": "client-credentials", **extra}
        claims = {k: v for k, v in claims.items() if k not in drop}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": EXTERNAL_KID})


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    tenant = Tenant()
    tenant.thread.start()
    yield tenant
    tenant.server.shutdown()
    tenant.server.server_close()


@pytest.fixture
async def external_identity(start_identity, tenant: Tenant) -> Identity:
    return await start_identity(external_issuer=ISSUER, external_jwks_url=tenant.jwks_url, external_audience=AUDIENCE)


async def test_external_token_is_accepted_for_the_registered_integration(
    external_identity: Identity, tenant: Tenant, admin: Metadata, edge: Metadata, org: str
) -> None:
    stub = external_identity.stub
    integration_id, external_client = new_integration_id(), f"auth0_{uuid.uuid4().hex[:12]}"
    creds = await issue(stub, admin, integration_id, scopes=("inventory:read", "orders:write"))
    await stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=integration_id, client_id=external_client), metadata=admin)
    # Registering the same binding again changes nothing.
    await stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=integration_id, client_id=external_client), metadata=admin)

    access = await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=tenant.token(external_client)), metadata=edge)
    assert (access.integration_id, access.org_id, access.client_id) == (integration_id, org, external_client)
    assert access.issuer == ISSUER and list(access.scopes) == ["inventory:read"]

    key = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge)
    assert set(key.client_ids) == {creds.client_id, external_client}
    info = await stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=admin)
    assert list(info.external_client_ids) == [external_client]

    # Scopes the integration was not granted are not passed through from the external token.
    wide = await stub.VerifyAccessToken(
        pb.VerifyAccessTokenRequest(token=tenant.token(external_client, scope="inventory:read finance:write")), metadata=edge
    )
    assert list(wide.scopes) == ["inventory:read"]

    # Revoking the integration's credentials ends the external client's access too.
    await stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=tenant.token(external_client)), metadata=edge)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_external_token_of_an_unregistered_client_is_refused(
    external_identity: Identity, tenant: Tenant, admin: Metadata, edge: Metadata
) -> None:
    stub = external_identity.stub
    integration_id = new_integration_id()
    await issue(stub, admin, integration_id)
    await stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=integration_id, client_id="auth0_known"), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=tenant.token("auth0_unknown")), metadata=edge)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details().startswith("invalid_token")


@pytest.mark.parametrize("change", ["foreign_key", "wrong_audience", "expired", "no_azp"])
async def test_external_tokens_get_the_same_scrutiny(
    external_identity: Identity, tenant: Tenant, admin: Metadata, edge: Metadata, change: str
) -> None:
    stub = external_identity.stub
    integration_id, external_client = new_integration_id(), f"auth0_{uuid.uuid4().hex[:12]}"
    await issue(stub, admin, integration_id)
    await stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=integration_id, client_id=external_client), metadata=admin)
    now = int(time.time())
    token = {
        "foreign_key": lambda: tenant.token(external_client, key=signing.generate_private_key("RS256")),
        "wrong_audience": lambda: tenant.token(external_client, aud="https://elsewhere.test"),
        "expired": lambda: tenant.token(external_client, iat=now - 7200, exp=now - 3600),
        "no_azp": lambda: tenant.token(external_client, drop=("azp",)),
    }[change]()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token), metadata=edge)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details().startswith(("invalid_token", "token_expired"))
    # The same client with an honest token is accepted.
    await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=tenant.token(external_client)), metadata=edge)


async def test_external_client_cannot_be_bound_to_another_organisations_integration(
    external_identity: Identity, admin: Metadata, as_actor
) -> None:
    stub = external_identity.stub
    integration_id = new_integration_id()
    await issue(stub, admin, integration_id)
    stranger = as_actor("usr_stranger", f"org_{uuid.uuid4().hex[:8]}", [ADMIN_PERMISSION])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=integration_id, client_id="auth0_x"), metadata=stranger)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_without_external_mode_tokens_from_elsewhere_are_refused(
    identity: Identity, tenant: Tenant, admin: Metadata, edge: Metadata
) -> None:
    integration_id = new_integration_id()
    await issue(identity.stub, admin, integration_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.stub.RegisterExternalClient(
            pb.RegisterExternalClientRequest(integration_id=integration_id, client_id="auth0_x"), metadata=admin
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=tenant.token("auth0_x")), metadata=edge)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
