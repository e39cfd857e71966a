"""With the edge listening on a port of its own (not 8080) and no URL set, what partners are told
follows that address in every process: identity's credentials and token `iss`, the edge's
discovery document, its OpenAPI servers, and the issuer the edge requires of tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.edge.entrypoints.main import RunningEdge, bootstrap
from tests.support.settings import Settings
from tests.integration.edge.conftest import ProvisionPartner, call, new_org, partner_headers
from tests.support.ports import free_port


@pytest.fixture
def edge_port() -> int:
    return free_port()


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings], edge_port: int) -> Callable[..., Settings]:
    """Every process of this test (identity, registry, the edge) told the edge's address only."""

    def _make(**overrides: Any) -> Settings:
        return make_settings(**{"edge_addr": f"127.0.0.1:{edge_port}", **overrides})

    return _make


@pytest.fixture
async def edge_on_its_address(edge_settings: Callable[..., Settings]) -> AsyncIterator[RunningEdge]:
    edge = await (await bootstrap(edge_settings())).start()  # bound to settings.edge_addr
    yield edge
    await edge.stop()


async def test_discovery_credentials_and_tokens_name_the_address_the_edge_listens_on(
        edge_on_its_address: RunningEdge, edge_port: int, provision: ProvisionPartner, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{edge_port}"
    assert edge_on_its_address.port == edge_port
    status, _, config = await call(http, "GET", f"{base}/.well-known/openid-configuration")
    assert status == 200
    assert (config["issuer"], config["token_endpoint"], config["jwks_uri"], config["service_documentation"]) == (
        base, f"{base}/oauth/token", f"{base}/.well-known/jwks.json", f"{base}/docs")
    _, _, spec = await call(http, "GET", f"{base}/openapi.json")
    assert spec["servers"] == [{"url": base}]

    partner = await provision()
    # A stock client follows the discovery document: the token endpoint it names, the JWKS it names.
    status, _, body = await call(http, "POST", config["token_endpoint"], data={"grant_type": "client_credentials"},
                                 headers={"Authorization": aiohttp.encode_basic_auth(partner.client_id, partner.client_secret)})
    assert status == 200, body
    token = body["access_token"]
    _, _, jwks = await call(http, "GET", config["jwks_uri"])
    jwk = next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience="trellis-api", issuer=config["issuer"])
    assert claims["iss"] == base
    # ... and the edge accepts the token identity signed: both derived the same issuer.
    status, _, body = await call(http, "GET", f"{base}/v1/whoami", headers=partner_headers(token, partner))
    assert status == 200, body


async def test_the_credentials_identity_hands_out_name_the_edges_address(
        edge_port: int, registry_stub: registry_pb2_grpc.RegistryStub, as_actor: Callable[..., Any]) -> None:
    org = new_org()
    alice, bob = as_actor("alice", org), as_actor("bob", org)
    created = await registry_stub.CreateIntegration(rpb.CreateIntegrationRequest(
        vendor_id="sap", name="SAP sync", owner="alice", description="public address", scopes=["inventory:read"]),
        metadata=alice)
    await registry_stub.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
    activated = await registry_stub.ActivateIntegration(
        rpb.ActivateIntegrationRequest(integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob)
    base = f"http://127.0.0.1:{edge_port}"
    assert (activated.credentials.token_url, activated.credentials.issuer) == (f"{base}/oauth/token", base)
