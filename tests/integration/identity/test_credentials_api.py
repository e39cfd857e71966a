"""Credentials through real gRPC: issue, verify, token, regenerate, revoke, and who may do what."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Callable

import grpc
import jwt
import pytest

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.kit.auth import ADMIN_PERMISSION, EDGE_PERMISSION, PLATFORM_PERMISSION, generate_actor_key, mint_actor_token
from tests.conftest import ACTOR_AUDIENCE, ACTOR_ISSUER
from tests.integration.identity.conftest import Identity, Metadata, issue, new_integration_id


async def refused(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def test_issue_verify_key_issue_token_verify_token(identity: Identity, admin: Metadata, edge: Metadata, org: str) -> None:
    stub, settings = identity.stub, identity.settings
    integration_id = new_integration_id()
    creds = await issue(stub, admin, integration_id, scopes=("inventory:read", "orders:write"))
    assert creds.api_key.startswith("grq_live_") and creds.api_key_prefix == creds.api_key[:16]
    assert creds.client_id.startswith("trc_") and len(creds.client_secret) >= 32
    assert (creds.token_url, creds.issuer, creds.audience) == (settings.token_url, settings.token_issuer, settings.token_audience)
    assert list(creds.scopes) == ["inventory:read", "orders:write"]

    key = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge)
    assert (key.integration_id, key.org_id, key.api_key_prefix) == (integration_id, org, creds.api_key_prefix)
    assert list(key.client_ids) == [creds.client_id]

    token = await stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge)
    assert token.token_type == "Bearer" and token.expires_in == 3600 and token.scope == "inventory:read orders:write"
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == creds.client_id
    assert claims["integration_id"] == integration_id and claims["org_id"] == org
    assert claims["iss"] == settings.token_issuer and claims["aud"] == settings.token_audience
    assert claims["exp"] - claims["iat"] == 3600 and claims["jti"]

    access = await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token.access_token), metadata=edge)
    assert (access.integration_id, access.org_id, access.client_id) == (integration_id, org, creds.client_id)
    assert list(access.scopes) == ["inventory:read", "orders:write"]
    assert access.issuer == settings.token_issuer and access.jti == claims["jti"]
    assert access.expires_at.ToDatetime(tzinfo=dt.timezone.utc) == dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc)


async def test_token_scope_can_be_narrowed_but_not_widened(identity: Identity, admin: Metadata, edge: Metadata) -> None:
    creds = await issue(identity.stub, admin, scopes=("inventory:read", "orders:write"))
    narrowed = await identity.stub.IssueToken(
        pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret, scope="orders:write"), metadata=edge
    )
    assert narrowed.scope == "orders:write"
    assert jwt.decode(narrowed.access_token, options={"verify_signature": False})["scope"] == "orders:write"
    details = await refused(
        identity.stub.IssueToken(
            pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret, scope="orders:write finance:read"),
            metadata=edge,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("invalid_scope")


async def test_unknown_client_and_wrong_secret_get_the_same_answer(identity: Identity, admin: Metadata, edge: Metadata) -> None:
    creds = await issue(identity.stub, admin)
    wrong_secret = await refused(
        identity.stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret + "x"), metadata=edge),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    unknown_client = await refused(
        identity.stub.IssueToken(pb.IssueTokenRequest(client_id="trc_" + "0" * 32, client_secret=creds.client_secret), metadata=edge),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert wrong_secret == unknown_client == "invalid_client"


async def test_regenerated_key_replaces_the_old_key_at_once(identity: Identity, admin: Metadata, edge: Metadata) -> None:
    integration_id = new_integration_id()
    creds = await issue(identity.stub, admin, integration_id)
    await identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge)

    new = await identity.stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=admin)
    assert new.api_key != creds.api_key and new.api_key_prefix == new.api_key[:16]

    details = await refused(identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge), grpc.StatusCode.UNAUTHENTICATED)
    assert details == "invalid_api_key"
    verified = await identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=new.api_key), metadata=edge)
    assert verified.integration_id == integration_id
    # The client is untouched by a key regeneration.
    await identity.stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge)
    info = await identity.stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=admin)
    assert info.api_key_prefix == new.api_key_prefix and info.status == pb.CREDENTIAL_STATUS_ACTIVE


async def test_revoke_kills_the_key_the_client_and_its_tokens(identity: Identity, admin: Metadata, edge: Metadata) -> None:
    integration_id = new_integration_id()
    creds = await issue(identity.stub, admin, integration_id)
    token = await identity.stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge)

    revoked = await identity.stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id, reason="incident"), metadata=admin)
    assert revoked.revoked == 2  # one key, one client

    assert await refused(identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge), grpc.StatusCode.UNAUTHENTICATED) == "invalid_api_key"
    details = await refused(
        identity.stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token.access_token), metadata=edge), grpc.StatusCode.UNAUTHENTICATED
    )
    assert details.startswith("invalid_token")
    assert await refused(
        identity.stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=edge),
        grpc.StatusCode.UNAUTHENTICATED,
    ) == "invalid_client"
    info = await identity.stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=admin)
    assert info.status == pb.CREDENTIAL_STATUS_REVOKED

    again = await identity.stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id), metadata=admin)
    assert again.revoked == 0
    await refused(
        identity.stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_reissuing_revokes_the_previous_set(identity: Identity, admin: Metadata, edge: Metadata) -> None:
    integration_id = new_integration_id()
    first = await issue(identity.stub, admin, integration_id)
    second = await issue(identity.stub, admin, integration_id)
    await refused(identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=first.api_key), metadata=edge), grpc.StatusCode.UNAUTHENTICATED)
    await refused(
        identity.stub.IssueToken(pb.IssueTokenRequest(client_id=first.client_id, client_secret=first.client_secret), metadata=edge),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    verified = await identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=second.api_key), metadata=edge)
    assert list(verified.client_ids) == [second.client_id]


async def test_a_retry_with_the_same_request_id_replaces_what_the_first_call_issued(identity: Identity, admin: Metadata, edge: Metadata) -> None:
    integration_id, request_id = new_integration_id(), uuid.uuid4().hex
    first = await issue(identity.stub, admin, integration_id, request_id=request_id)
    retry = await issue(identity.stub, admin, integration_id, request_id=request_id)
    assert retry.api_key != first.api_key
    await refused(identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=first.api_key), metadata=edge), grpc.StatusCode.UNAUTHENTICATED)
    await identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=retry.api_key), metadata=edge)

    # Once a later request has issued, a late retry of the first must not kill the newer set.
    later = await issue(identity.stub, admin, integration_id)
    await refused(issue(identity.stub, admin, integration_id, request_id=request_id), grpc.StatusCode.FAILED_PRECONDITION)
    await identity.stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=later.api_key), metadata=edge)


async def test_another_organisations_integration_is_not_found(identity: Identity, admin: Metadata, as_actor: Callable[..., Metadata]) -> None:
    integration_id = new_integration_id()
    await issue(identity.stub, admin, integration_id)
    stranger = as_actor("usr_stranger", f"org_{uuid.uuid4().hex[:8]}", [ADMIN_PERMISSION])
    stub = identity.stub
    await refused(stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id), metadata=stranger), grpc.StatusCode.NOT_FOUND)
    await refused(stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=stranger), grpc.StatusCode.NOT_FOUND)
    await refused(stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=stranger), grpc.StatusCode.NOT_FOUND)
    await refused(issue(stub, stranger, integration_id), grpc.StatusCode.NOT_FOUND)
    # The owner's credentials survived all of that.
    info = await stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=admin)
    assert info.status == pb.CREDENTIAL_STATUS_ACTIVE


async def test_unknown_integration_has_no_credential_info(identity: Identity, admin: Metadata) -> None:
    await refused(
        identity.stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=new_integration_id()), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    revoked = await identity.stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=new_integration_id()), metadata=admin)
    assert revoked.revoked == 0


async def test_each_method_needs_its_permission(identity: Identity, admin: Metadata, edge: Metadata, org: str,
                                               as_actor: Callable[..., Metadata]) -> None:
    integration_id = new_integration_id()
    creds = await issue(identity.stub, admin, integration_id)
    nobody = as_actor("usr_viewer", org, ["qa_access"])
    stub = identity.stub
    admin_calls = [
        lambda md: stub.IssueCredentials(pb.IssueCredentialsRequest(integration_id=integration_id, request_id="r"), metadata=md),
        lambda md: stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id), metadata=md),
        lambda md: stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=md),
        lambda md: stub.GetCredentialInfo(pb.GetCredentialInfoRequest(integration_id=integration_id), metadata=md),
        lambda md: stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=integration_id, client_id="x"), metadata=md),
    ]
    edge_calls = [
        lambda md: stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=md),
        lambda md: stub.IssueToken(pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret), metadata=md),
        lambda md: stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token="x.y.z"), metadata=md),
    ]
    for call in admin_calls:
        assert "administration_integrations_access" in await refused(call(nobody), grpc.StatusCode.PERMISSION_DENIED)
        await refused(call(edge), grpc.StatusCode.PERMISSION_DENIED)
    for call in edge_calls:
        assert EDGE_PERMISSION in await refused(call(nobody), grpc.StatusCode.PERMISSION_DENIED)
        await refused(call(admin), grpc.StatusCode.PERMISSION_DENIED)
    # Nothing above changed the credentials.
    await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge)


async def test_only_a_platform_operator_rotates_the_signing_keys_every_organisation_shares(
        identity: Identity, admin: Metadata, operator: Metadata, edge: Metadata) -> None:
    stub = identity.stub
    creds = await issue(stub, admin)
    grant = pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret)
    kid = jwt.get_unverified_header((await stub.IssueToken(grant, metadata=edge)).access_token)["kid"]
    for caller in (admin, edge):  # an organisation's administrator, the edge
        assert PLATFORM_PERMISSION in await refused(stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=caller),
                                                    grpc.StatusCode.PERMISSION_DENIED)
    assert jwt.get_unverified_header((await stub.IssueToken(grant, metadata=edge)).access_token)["kid"] == kid
    rotated = await stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=operator)
    assert (rotated.previous_kid, jwt.get_unverified_header((await stub.IssueToken(grant, metadata=edge)).access_token)["kid"]) \
        == (kid, rotated.kid)


async def test_actor_tokens_with_a_bad_signature_or_wrong_issuer_are_refused(identity: Identity, org: str, mint: Callable[..., str],
                                                                              actor_keys: tuple[bytes, object]) -> None:
    session_private, _ = actor_keys
    foreign_private, _ = generate_actor_key()

    def signed(private: bytes, issuer: str = ACTOR_ISSUER, audience: str = ACTOR_AUDIENCE) -> str:
        return mint_actor_token(private, issuer=issuer, audience=audience, user_id="usr_x", org_id=org, permissions=[ADMIN_PERMISSION])

    good = mint("usr_x", org)
    header, payload, signature = good.split(".")
    tampered_signature = f"{header}.{payload}.{signature[:-6]}{'AAAAAA' if signature[-6:] != 'AAAAAA' else 'BBBBBB'}"
    refused_tokens = {
        "signed by another key": signed(foreign_private),
        "tampered signature": tampered_signature,
        "wrong issuer": signed(session_private, issuer="someone-else"),
        "wrong audience": signed(session_private, audience="another-service"),
    }
    integration_id = new_integration_id()
    await issue(identity.stub, (("authorization", f"Bearer {good}"),), integration_id)
    request = pb.GetCredentialInfoRequest(integration_id=integration_id)
    for what, token in refused_tokens.items():
        details = await refused(identity.stub.GetCredentialInfo(request, metadata=(("authorization", f"Bearer {token}"),)), grpc.StatusCode.UNAUTHENTICATED)
        assert "actor token" in details, what
    await refused(identity.stub.GetCredentialInfo(request), grpc.StatusCode.UNAUTHENTICATED)
    # The same request with the genuine token works, so the refusals above are about the token.
    await identity.stub.GetCredentialInfo(request, metadata=(("authorization", f"Bearer {good}"),))


async def test_jwks_needs_no_actor_token(identity: Identity) -> None:
    response = await identity.stub.GetJwks(pb.GetJwksRequest())
    keys = json.loads(response.jwks_json)["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["use"] == "sig" and keys[0]["alg"] == "RS256"


async def test_the_shared_identity_fixture_serves_identity(identity_stub, as_actor: Callable[..., Metadata], org: str) -> None:
    creds = await issue(identity_stub, as_actor("usr_a", org))
    assert creds.api_key.startswith("grq_live_")
    assert json.loads((await identity_stub.GetJwks(pb.GetJwksRequest())).jwks_json)["keys"]


async def test_the_whole_cycle_on_each_database(start_identity, database_url: str, admin: Metadata, operator: Metadata,
                                                edge: Metadata, org: str) -> None:
    identity = await start_identity(identity_database_url=database_url)
    stub, integration_id = identity.stub, new_integration_id()
    creds = await issue(stub, admin, integration_id)
    assert (await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge)).org_id == org
    grant = pb.IssueTokenRequest(client_id=creds.client_id, client_secret=creds.client_secret)
    token = (await stub.IssueToken(grant, metadata=edge)).access_token
    assert (await stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token), metadata=edge)).integration_id == integration_id
    rotated = await stub.RotateSigningKey(pb.RotateSigningKeyRequest(), metadata=operator)
    assert jwt.get_unverified_header((await stub.IssueToken(grant, metadata=edge)).access_token)["kid"] == rotated.kid
    new_key = await stub.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id), metadata=admin)
    await refused(stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=creds.api_key), metadata=edge), grpc.StatusCode.UNAUTHENTICATED)
    assert (await stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=integration_id), metadata=admin)).revoked == 2
    await refused(stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=new_key.api_key), metadata=edge), grpc.StatusCode.UNAUTHENTICATED)
    await refused(stub.VerifyAccessToken(pb.VerifyAccessTokenRequest(token=token), metadata=edge), grpc.StatusCode.UNAUTHENTICATED)


async def test_concurrent_regenerations_leave_exactly_one_live_key(start_identity, database_url: str, admin: Metadata,
                                                                   edge: Metadata) -> None:
    identity = await start_identity(identity_database_url=database_url)
    stub, integration_id = identity.stub, new_integration_id()
    first = await issue(stub, admin, integration_id)
    request = pb.RegenerateApiKeyRequest(integration_id=integration_id)
    outcomes = await asyncio.gather(*(stub.RegenerateApiKey(request, metadata=admin) for _ in range(4)),
                                    return_exceptions=True)
    keys = [o.api_key for o in outcomes if isinstance(o, pb.RegenerateApiKeyResponse)]
    losers = [o for o in outcomes if not isinstance(o, pb.RegenerateApiKeyResponse)]
    assert keys and all(isinstance(o, grpc.aio.AioRpcError) and o.code() == grpc.StatusCode.ABORTED for o in losers)
    live = []
    for key in [first.api_key, *keys]:
        try:
            await stub.VerifyApiKey(pb.VerifyApiKeyRequest(api_key=key), metadata=edge)
            live.append(key)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(live) == 1 and live[0] in keys  # one of the new keys, never two, never the old one
