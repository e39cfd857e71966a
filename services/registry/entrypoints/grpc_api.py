"""`trellis.registry.v1.Registry` over gRPC: request message -> command, handler call,
result -> response message. No rule lives here; errors are services.kit.errors classes."""

from __future__ import annotations

import grpc

from services.contracts.trellis.identity.v1 import identity_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from services.kit.auth import current_actor
from services.kit.errors import InvalidArgument
from services.kit.ids import is_request_id
from services.kit.prototime import timestamp_or_none
from services.registry.application import commands
from services.registry.application.handlers import RegistryHandlers, SetupRequestHandlers
from services.registry.application.ports import IssuedCredentials
from services.registry.domain.model import UPDATABLE_FIELDS, HistoryEntry, Integration, Status
from services.registry.domain.setup import PrebuiltIntegration, SetupRequest, SetupStatus, SetupStep

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Registry"].full_name

_TO_PROTO = {status: pb.IntegrationStatus.Value(f"INTEGRATION_STATUS_{status.name}") for status in Status}
_FROM_PROTO = {value: status for status, value in _TO_PROTO.items()}
_SETUP_TO_PROTO = {s: pb.SetupRequestStatus.Value(f"SETUP_REQUEST_STATUS_{s.name}") for s in SetupStatus}
_SETUP_FROM_PROTO = {value: s for s, value in _SETUP_TO_PROTO.items()}


def integration_to_proto(i: Integration) -> pb.Integration:
    return pb.Integration(
        id=i.id, org_id=i.org_id, vendor_id=i.vendor_id, name=i.name, description=i.description, owner=i.owner,
        status=_TO_PROTO[i.status], scopes=i.scopes, rate_limit_per_minute=i.rate_limit_per_minute,
        daily_quota=i.daily_quota, ip_allowlist=i.ip_allowlist, requested_by=i.requested_by,
        approved_by=i.approved_by, suspended_by=i.suspended_by, suspension_reason=i.suspension_reason,
        api_key_prefix=i.api_key_prefix, client_id=i.client_id, created_at=timestamp_or_none(i.created_at),
        updated_at=timestamp_or_none(i.updated_at), activated_at=timestamp_or_none(i.activated_at),
        credentials_issued_at=timestamp_or_none(i.credentials_issued_at), version=i.version,
        sensitive_scopes=i.sensitive_scopes,
    )


def credentials_to_proto(c: IssuedCredentials) -> identity_pb2.Credentials:
    return identity_pb2.Credentials(
        api_key=c.api_key, api_key_prefix=c.api_key_prefix, client_id=c.client_id, client_secret=c.client_secret,
        token_url=c.token_url, issuer=c.issuer, audience=c.audience, scopes=list(c.scopes),
        issued_at=timestamp_or_none(c.issued_at),
    )


def _history_to_proto(e: HistoryEntry) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        id=e.id, integration_id=e.integration_id, action=e.action, actor_id=e.actor_id,
        from_status=_TO_PROTO[e.from_status] if e.from_status else pb.INTEGRATION_STATUS_UNSPECIFIED,
        to_status=_TO_PROTO[e.to_status], reason=e.reason, before_json=e.before_json, after_json=e.after_json,
        at=timestamp_or_none(e.at),
    )


def prebuilt_to_proto(p: PrebuiltIntegration) -> pb.PrebuiltIntegration:
    return pb.PrebuiltIntegration(
        id=p.id, name=p.name, description=p.description,
        fields=[pb.ConnectionField(name=f.name, label=f.label, help=f.help, required=f.required, secret=f.secret,
                                   max_length=f.max_length) for f in p.fields],
    )


def _step_to_proto(s: SetupStep) -> pb.SetupRequestStep:
    return pb.SetupRequestStep(
        action=s.action, actor_id=s.actor_id,
        from_status=_SETUP_TO_PROTO[s.from_status] if s.from_status else pb.SETUP_REQUEST_STATUS_UNSPECIFIED,
        to_status=_SETUP_TO_PROTO[s.to_status], note=s.note, at=timestamp_or_none(s.at),
    )


def setup_request_to_proto(r: SetupRequest) -> pb.SetupRequest:
    """The request as callers see it: secret fields by name only, never their values."""
    return pb.SetupRequest(
        id=r.id, org_id=r.org_id, prebuilt_id=r.prebuilt_id, status=_SETUP_TO_PROTO[r.status],
        connection=r.connection, secrets_given=r.secrets_given, contact_email=r.contact_email, notes=r.notes,
        requested_by=r.requested_by, handled_by=r.handled_by, decline_reason=r.decline_reason,
        configured_note=r.configured_note, created_at=timestamp_or_none(r.created_at),
        updated_at=timestamp_or_none(r.updated_at), version=r.version, history=[_step_to_proto(s) for s in r.history],
    )


def _setup_statuses(values: list[int]) -> list[SetupStatus]:
    unknown = [v for v in values if v not in _SETUP_FROM_PROTO]
    if unknown:
        raise InvalidArgument(f"unknown status filter values {unknown}", statuses=",".join(map(str, unknown)))
    return [_SETUP_FROM_PROTO[v] for v in values]


def _request_id(context: grpc.aio.ServicerContext, given: str = "") -> str:
    """The caller's request id: the field when the message has one (checked by the handler),
    else `x-request-id` when it has the form of one (a new one is made otherwise)."""
    if given:
        return given
    forwarded = dict(context.invocation_metadata() or ()).get("x-request-id", "")
    return forwarded if is_request_id(forwarded) else ""


def _changes(request: pb.UpdateIntegrationRequest) -> dict[str, object]:
    """The fields `update_mask` names, with their values from the request."""
    unknown = sorted(set(request.update_mask) - set(UPDATABLE_FIELDS))
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown fields {', '.join(unknown)}; updatable fields are: {', '.join(UPDATABLE_FIELDS)}",
            fields=",".join(unknown),
        )
    repeated = {"scopes", "ip_allowlist"}
    return {
        name: list(getattr(request, name)) if name in repeated else getattr(request, name)
        for name in request.update_mask
    }


def _statuses(values: list[int]) -> list[Status]:
    unknown = [v for v in values if v not in _FROM_PROTO]
    if unknown:
        raise InvalidArgument(f"unknown status filter values {unknown}", statuses=",".join(map(str, unknown)))
    return [_FROM_PROTO[v] for v in values]


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """Thin translation between the Registry contract and `RegistryHandlers`."""

    def __init__(self, handlers: RegistryHandlers, setup: SetupRequestHandlers) -> None:
        self._h = handlers
        self._setup = setup

    async def ListVendors(self, request: pb.ListVendorsRequest, context: grpc.aio.ServicerContext) -> pb.ListVendorsResponse:
        vendors = self._h.list_vendors(current_actor())
        return pb.ListVendorsResponse(vendors=[pb.Vendor(id=v.id, name=v.name, category=v.category) for v in vendors])

    async def ListScopes(self, request: pb.ListScopesRequest, context: grpc.aio.ServicerContext) -> pb.ListScopesResponse:
        categories = self._h.list_scopes(current_actor())
        return pb.ListScopesResponse(
            categories=[
                pb.ScopeCategory(
                    id=c.id, name=c.name, actions=c.actions, grants=c.grants, sensitivity=c.sensitivity,
                    read_only=c.read_only,
                )
                for c in categories
            ]
        )

    async def CreateIntegration(self, request: pb.CreateIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        command = commands.CreateIntegration(
            vendor_id=request.vendor_id, name=request.name, owner=request.owner, description=request.description,
            scopes=list(request.scopes),
            rate_limit_per_minute=request.rate_limit_per_minute if request.HasField("rate_limit_per_minute") else None,
            daily_quota=request.daily_quota, ip_allowlist=list(request.ip_allowlist), request_id=_request_id(context),
        )
        return integration_to_proto(await self._h.create(current_actor(), command))

    async def ApproveIntegration(self, request: pb.ApproveIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        command = commands.ApproveIntegration(request.integration_id, request_id=_request_id(context))
        return integration_to_proto(await self._h.approve(current_actor(), command))

    async def ActivateIntegration(
        self, request: pb.ActivateIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActivateIntegrationResponse:
        command = commands.ActivateIntegration(request.integration_id, request_id=_request_id(context, request.request_id))
        integration, credentials = await self._h.activate(current_actor(), command)
        return pb.ActivateIntegrationResponse(
            integration=integration_to_proto(integration), credentials=credentials_to_proto(credentials)
        )

    async def UpdateIntegration(self, request: pb.UpdateIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        command = commands.UpdateIntegration(
            request.integration_id, changes=_changes(request), expected_version=request.expected_version,
            request_id=_request_id(context),
        )
        return integration_to_proto(await self._h.update(current_actor(), command))

    async def SuspendIntegration(self, request: pb.SuspendIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        command = commands.SuspendIntegration(request.integration_id, request.reason, request_id=_request_id(context))
        return integration_to_proto(await self._h.suspend(current_actor(), command))

    async def ReactivateIntegration(
        self, request: pb.ReactivateIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActivateIntegrationResponse:
        command = commands.ReactivateIntegration(request.integration_id, request_id=_request_id(context, request.request_id))
        integration, credentials = await self._h.reactivate(current_actor(), command)
        return pb.ActivateIntegrationResponse(
            integration=integration_to_proto(integration), credentials=credentials_to_proto(credentials)
        )

    async def RevokeIntegration(self, request: pb.RevokeIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        command = commands.RevokeIntegration(request.integration_id, request.reason, request_id=_request_id(context))
        return integration_to_proto(await self._h.revoke(current_actor(), command))

    async def RegenerateApiKey(
        self, request: pb.RegenerateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegenerateApiKeyResponse:
        command = commands.RegenerateApiKey(request.integration_id, request_id=_request_id(context))
        integration, key = await self._h.regenerate_api_key(current_actor(), command)
        return pb.RegenerateApiKeyResponse(
            integration=integration_to_proto(integration), api_key=key.api_key, api_key_prefix=key.api_key_prefix
        )

    async def GetIntegration(self, request: pb.GetIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        return integration_to_proto(await self._h.get(current_actor(), request.integration_id))

    async def LookupIntegration(self, request: pb.LookupIntegrationRequest, context: grpc.aio.ServicerContext) -> pb.Integration:
        return integration_to_proto(await self._h.lookup(current_actor(), request.integration_id))

    async def ListIntegrations(
        self, request: pb.ListIntegrationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIntegrationsResponse:
        query = commands.ListIntegrations(
            statuses=_statuses(list(request.statuses)), vendor_id=request.vendor_id,
            page_size=request.page_size, page_token=request.page_token,
        )
        page = await self._h.list_integrations(current_actor(), query)
        return pb.ListIntegrationsResponse(
            integrations=[integration_to_proto(i) for i in page.integrations], next_page_token=page.next_page_token
        )

    async def GetIntegrationHistory(
        self, request: pb.GetIntegrationHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetIntegrationHistoryResponse:
        entries = await self._h.history(current_actor(), request.integration_id)
        return pb.GetIntegrationHistoryResponse(entries=[_history_to_proto(e) for e in entries])

    # --- pre-built integrations and their setup requests ---------------------------------------

    async def ListPrebuiltIntegrations(
        self, request: pb.ListPrebuiltIntegrationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPrebuiltIntegrationsResponse:
        catalogue = self._setup.catalogue(current_actor())
        return pb.ListPrebuiltIntegrationsResponse(integrations=[prebuilt_to_proto(p) for p in catalogue])

    async def CreateSetupRequest(self, request: pb.CreateSetupRequestRequest, context: grpc.aio.ServicerContext) -> pb.SetupRequest:
        command = commands.CreateSetupRequest(
            prebuilt_id=request.prebuilt_id, connection=dict(request.connection), contact_email=request.contact_email,
            notes=request.notes, request_id=request.request_id,
        )
        return setup_request_to_proto(await self._setup.create(current_actor(), command))

    async def GetSetupRequest(self, request: pb.GetSetupRequestRequest, context: grpc.aio.ServicerContext) -> pb.SetupRequest:
        return setup_request_to_proto(await self._setup.get(current_actor(), request.setup_request_id))

    async def ListSetupRequests(
        self, request: pb.ListSetupRequestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSetupRequestsResponse:
        query = commands.ListSetupRequests(
            statuses=_setup_statuses(list(request.statuses)), all_organisations=request.all_organisations,
            page_size=request.page_size, page_token=request.page_token,
        )
        page = await self._setup.list_requests(current_actor(), query)
        return pb.ListSetupRequestsResponse(
            setup_requests=[setup_request_to_proto(r) for r in page.setup_requests], next_page_token=page.next_page_token
        )

    async def StartSetupRequest(self, request: pb.StartSetupRequestRequest, context: grpc.aio.ServicerContext) -> pb.SetupRequest:
        command = commands.StartSetupRequest(request.setup_request_id, request_id=_request_id(context))
        return setup_request_to_proto(await self._setup.start(current_actor(), command))

    async def CompleteSetupRequest(
        self, request: pb.CompleteSetupRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetupRequest:
        command = commands.CompleteSetupRequest(request.setup_request_id, request.note, request_id=_request_id(context))
        return setup_request_to_proto(await self._setup.complete(current_actor(), command))

    async def DeclineSetupRequest(self, request: pb.DeclineSetupRequestRequest, context: grpc.aio.ServicerContext) -> pb.SetupRequest:
        command = commands.DeclineSetupRequest(request.setup_request_id, request.reason, request_id=_request_id(context))
        return setup_request_to_proto(await self._setup.decline(current_actor(), command))

    async def RevealSetupRequestSecrets(
        self, request: pb.RevealSetupRequestSecretsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevealSetupRequestSecretsResponse:
        command = commands.RevealSetupRequestSecrets(request.setup_request_id, request.reason,
                                                     request_id=_request_id(context))
        revealed = await self._setup.reveal_secrets(current_actor(), command)
        return pb.RevealSetupRequestSecretsResponse(secrets=revealed.secrets)
