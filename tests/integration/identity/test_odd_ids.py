"""Ids, keys and secrets that are not ours (non-ASCII, NUL, spaces, line breaks, 100 kB) get a
clean refusal from every identity method that takes one, on SQLite and PostgreSQL, over a real
channel: NOT_FOUND or INVALID_ARGUMENT for ids, UNAUTHENTICATED for credentials; never INTERNAL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from tests.integration.identity.conftest import Identity, Metadata
from tests.support.odd_ids import answered_or_refused, expected, odd_ids, refusal

UNAUTHENTICATED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT})


async def test_every_method_refuses_odd_ids_and_credentials_cleanly(start_identity: Callable[..., Awaitable[Identity]],
                                                                    database_url: str, admin: Metadata, edge: Metadata) -> None:
    identity = await start_identity(identity_database_url=database_url)
    stub = identity.stub
    for label, odd in odd_ids("int").items():
        for method, request in {
            "GetCredentialInfo": pb.GetCredentialInfoRequest(integration_id=odd),
            "RegenerateApiKey": pb.RegenerateApiKeyRequest(integration_id=odd),
        }.items():
            error = await refusal(getattr(stub, method)(request, metadata=admin, timeout=20), what=f"{method} {label}")
            assert error.code() in expected(odd), (method, label)
        # Without an external issuer configured, registering any client is refused as such.
        await refusal(stub.RegisterExternalClient(pb.RegisterExternalClientRequest(integration_id=odd, client_id=odd),
                                                  metadata=admin, timeout=20),
                      frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT}), what=label)
        # Revoking is idempotent: nothing live under an id that is not ours, nothing revoked.
        revoke = stub.RevokeCredentials(pb.RevokeCredentialsRequest(integration_id=odd), metadata=admin, timeout=20)
        if "\x00" in odd or len(odd) > 64:
            await refusal(revoke, frozenset({grpc.StatusCode.INVALID_ARGUMENT}), what=f"RevokeCredentials {label}")
        else:
            assert (await revoke).revoked == 0, label
        for method, request in {
            "VerifyApiKey": pb.VerifyApiKeyRequest(api_key=odd),
            "IssueToken": pb.IssueTokenRequest(client_id=odd, client_secret=odd),
            "VerifyAccessToken": pb.VerifyAccessTokenRequest(token=odd),
        }.items():
            await refusal(getattr(stub, method)(request, metadata=edge, timeout=20), UNAUTHENTICATED, what=f"{method} {label}")


async def test_issuing_for_an_odd_id_is_answered_or_refused_never_a_server_error(
        start_identity: Callable[..., Awaitable[Identity]], database_url: str, admin: Metadata) -> None:
    identity = await start_identity(identity_database_url=database_url)
    for label, odd in odd_ids("int").items():
        request = pb.IssueCredentialsRequest(integration_id=odd, scopes=["orders:read"], request_id=odd[:128])
        issued = await answered_or_refused(identity.stub.IssueCredentials(request, metadata=admin, timeout=20),
                                           frozenset({grpc.StatusCode.INVALID_ARGUMENT}), what=label)
        assert issued is None or issued.credentials.api_key, label
