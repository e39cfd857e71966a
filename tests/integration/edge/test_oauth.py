"""The token endpoint speaks RFC 6749 well enough for a stock OAuth client (Authlib) to work
unchanged with either client authentication method, and refuses in RFC 6749 section 5.2 terms."""

from __future__ import annotations

import aiohttp
import jwt
import pytest

from tests.integration.edge.conftest import Partner, ProvisionPartner, call


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Authlib announces a future httpx package
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_a_stock_oauth_client_gets_a_token_and_calls_the_api(edge: str, provision: ProvisionPartner, method: str) -> None:
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    partner = await provision()
    async with AsyncOAuth2Client(partner.client_id, partner.client_secret, token_endpoint_auth_method=method,
                                 scope="inventory:read") as client:
        token = await client.fetch_token(f"{edge}/oauth/token", grant_type="client_credentials")
        assert (token["token_type"], token["expires_in"], token["scope"]) == ("Bearer", 3600, "inventory:read")
        response = await client.get(f"{edge}/api/lots", headers={"X-API-Key": partner.api_key})
    assert response.status_code == 200, response.text


async def token_error(http: aiohttp.ClientSession, edge: str, **kw: object) -> tuple[int, dict[str, str], dict[str, str]]:
    status, headers, body = await call(http, "POST", f"{edge}/oauth/token", **kw)  # type: ignore[arg-type]
    assert set(body) <= {"error", "error_description"} and headers["cache-control"] == "no-store", body
    return status, headers, body


def basic(partner: Partner, secret: str | None = None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(partner.client_id, secret or partner.client_secret)}


async def test_token_errors_follow_rfc_6749(edge: str, http: aiohttp.ClientSession, provision: ProvisionPartner) -> None:
    partner = await provision(scopes=["inventory:read"])
    grant = {"grant_type": "client_credentials"}
    post = {**grant, "client_id": partner.client_id, "client_secret": partner.client_secret}

    status, headers, body = await token_error(http, edge, data=grant, headers=basic(partner, "wrong-secret"))
    assert (status, body["error"]) == (401, "invalid_client") and headers["www-authenticate"].startswith("Basic")

    status, headers, body = await token_error(http, edge, data={**post, "client_secret": "wrong-secret"})
    assert (status, body["error"]) == (401, "invalid_client") and "www-authenticate" not in headers

    status, _, body = await token_error(http, edge, data=grant)
    assert (status, body["error"]) == (401, "invalid_client")

    cases = [
        ({"data": {"client_id": partner.client_id, "client_secret": partner.client_secret}}, "invalid_request"),
        ({"data": {**post, "grant_type": "password"}}, "unsupported_grant_type"),
        ({"data": {**post, "scope": "inventory:read crm:write"}}, "invalid_scope"),
        ({"data": post, "headers": basic(partner)}, "invalid_request"),  # two authentication methods
        ({"data": "grant_type=client_credentials&grant_type=client_credentials", "headers": {
            **basic(partner), "Content-Type": "application/x-www-form-urlencoded"}}, "invalid_request"),
        ({"json": post}, "invalid_request"),
    ]
    for kw, error in cases:
        status, _, body = await token_error(http, edge, **kw)
        assert (status, body["error"]) == (400, error), (kw, body)
        assert body["error_description"]


async def test_discovery_and_jwks_let_a_partner_verify_a_token(edge: str, http: aiohttp.ClientSession,
                                                               provision: ProvisionPartner) -> None:
    partner = await provision()
    status, _, config = await call(http, "GET", f"{edge}/.well-known/openid-configuration")
    assert status == 200
    assert config["grant_types_supported"] == ["client_credentials"]
    assert config["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert config["token_endpoint"].endswith("/oauth/token") and config["jwks_uri"].endswith("/.well-known/jwks.json")

    status, _, body = await call(http, "POST", f"{edge}/oauth/token", data={"grant_type": "client_credentials"},
                                 headers=basic(partner))
    token = body["access_token"]
    status, _, jwks = await call(http, "GET", f"{edge}/.well-known/jwks.json")
    assert status == 200
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience="trellis-api",
                        issuer=config["issuer"])
    assert (claims["client_id"], claims["integration_id"]) == (partner.client_id, partner.integration_id)
    assert all(not {"d", "p", "q"} & set(k) for k in jwks["keys"])  # public halves only
