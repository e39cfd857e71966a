"""The `trellis.identity.v1.Identity` servicer: request message -> command -> handler -> response.

Permissions are checked by the handlers; errors are services.kit.errors classes that the
server's error interceptor maps to status codes.
"""

from __future__ import annotations

import grpc

from services.contracts.trellis.identity.v1 import identity_pb2 as pb
from services.contracts.trellis.identity.v1 import identity_pb2_grpc
from services.identity.application import commands
from services.identity.application.handlers import CredentialHandlers
from services.identity.application.tokens import TokenHandlers
from services.kit.auth import current_actor
from services.kit.prototime import timestamp_or_none

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Identity"].full_name
PUBLIC_METHODS = (f"/{SERVICE_NAME}/GetJwks",)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)[:128]
    return ""


class IdentityServicer(identity_pb2_grpc.IdentityServicer):
    def __init__(self, credentials: CredentialHandlers, tokens: TokenHandlers) -> None:
        self._credentials = credentials
        self._tokens = tokens

    async def IssueCredentials(self, request: pb.IssueCredentialsRequest, context: grpc.aio.ServicerContext) -> pb.IssueCredentialsResponse:
        issued = await self._credentials.issue_credentials(
            current_actor(),
            commands.IssueCredentials(
                integration_id=request.integration_id, scopes=tuple(request.scopes),
                request_id=request.request_id or _request_id(context),
            ),
        )
        return pb.IssueCredentialsResponse(
            credentials=pb.Credentials(
                api_key=issued.api_key, api_key_prefix=issued.api_key_prefix, client_id=issued.client_id,
                client_secret=issued.client_secret, token_url=issued.token_url, issuer=issued.issuer,
                audience=issued.audience, scopes=list(issued.scopes), issued_at=timestamp_or_none(issued.issued_at),
            )
        )

    async def RevokeCredentials(self, request: pb.RevokeCredentialsRequest, context: grpc.aio.ServicerContext) -> pb.RevokeCredentialsResponse:
        count = await self._credentials.revoke_credentials(
            current_actor(),
            commands.RevokeCredentials(integration_id=request.integration_id, reason=request.reason, request_id=_request_id(context)),
        )
        return pb.RevokeCredentialsResponse(revoked=count)

    async def RegenerateApiKey(self, request: pb.RegenerateApiKeyRequest, context: grpc.aio.ServicerContext) -> pb.RegenerateApiKeyResponse:
        key = await self._credentials.regenerate_api_key(
            current_actor(), commands.RegenerateApiKey(integration_id=request.integration_id, request_id=_request_id(context))
        )
        return pb.RegenerateApiKeyResponse(api_key=key.api_key, api_key_prefix=key.api_key_prefix)

    async def GetCredentialInfo(self, request: pb.GetCredentialInfoRequest, context: grpc.aio.ServicerContext) -> pb.CredentialInfo:
        info = await self._credentials.credential_info(current_actor(), request.integration_id)
        return pb.CredentialInfo(
            integration_id=info.integration_id,
            api_key_prefix=info.api_key_prefix,
            client_id=info.client_id,
            status=pb.CREDENTIAL_STATUS_ACTIVE if info.live else pb.CREDENTIAL_STATUS_REVOKED,
            issued_at=timestamp_or_none(info.issued_at),
            api_key_created_at=timestamp_or_none(info.api_key_created_at),
            external_client_ids=list(info.external_client_ids),
        )

    async def VerifyApiKey(self, request: pb.VerifyApiKeyRequest, context: grpc.aio.ServicerContext) -> pb.VerifyApiKeyResponse:
        verified = await self._credentials.verify_api_key(current_actor(), request.api_key)
        return pb.VerifyApiKeyResponse(
            integration_id=verified.integration_id, org_id=verified.org_id,
            api_key_prefix=verified.api_key_prefix, client_ids=list(verified.client_ids),
        )

    async def IssueToken(self, request: pb.IssueTokenRequest, context: grpc.aio.ServicerContext) -> pb.IssueTokenResponse:
        issued = await self._tokens.issue_token(
            current_actor(), commands.IssueToken(request.client_id, request.client_secret, request.scope)
        )
        return pb.IssueTokenResponse(
            access_token=issued.access_token, token_type="Bearer", expires_in=issued.expires_in, scope=" ".join(issued.scopes)
        )

    async def VerifyAccessToken(self, request: pb.VerifyAccessTokenRequest, context: grpc.aio.ServicerContext) -> pb.VerifyAccessTokenResponse:
        access = await self._tokens.verify_access_token(current_actor(), request.token)
        return pb.VerifyAccessTokenResponse(
            integration_id=access.integration_id, org_id=access.org_id, client_id=access.client_id,
            scopes=list(access.scopes), expires_at=timestamp_or_none(access.expires_at), issuer=access.issuer, jti=access.jti,
        )

    async def GetJwks(self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=await self._tokens.jwks())

    async def RotateSigningKey(self, request: pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext) -> pb.RotateSigningKeyResponse:
        rotated = await self._tokens.rotate_signing_key(current_actor(), commands.RotateSigningKey(_request_id(context)))
        return pb.RotateSigningKeyResponse(kid=rotated.kid, previous_kid=rotated.previous_kid)

    async def RegisterExternalClient(
        self, request: pb.RegisterExternalClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterExternalClientResponse:
        await self._credentials.register_external_client(
            current_actor(),
            commands.RegisterExternalClient(integration_id=request.integration_id, client_id=request.client_id, request_id=_request_id(context)),
        )
        return pb.RegisterExternalClientResponse()
