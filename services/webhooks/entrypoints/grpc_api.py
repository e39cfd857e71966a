"""`trellis.webhooks.v1.Webhooks` over gRPC: request message -> command, handler call,
result -> response message. No rule lives here; errors are services.kit.errors classes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

import grpc

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from services.kit.auth import current_actor
from services.kit.errors import InvalidArgument
from services.kit.prototime import field_datetime, now_timestamp, timestamp_or_none
from services.webhooks.application import commands
from services.webhooks.domain.client_tls import ClientCertificate
from services.webhooks.domain.schemas import schema_json
from services.webhooks.domain.model import (
    AttemptError, AttemptExchange, DeliveryStatus, Recovery, SignatureScheme, Subscription, SubscriptionStatus,
)
from services.webhooks.adapters.events import STATUS_TO_PROTO
from services.webhooks.application.handlers import RetentionView, WebhookHandlers
from services.webhooks.application.ports import ActivityRecord, AttemptRecord, DeliveryRecord

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Webhooks"].full_name
UPDATABLE_FIELDS = ("url", "activity_types", "description", "signature_scheme", "filter", "custom_headers",
                    "client_certificate")

_STATUS_FROM_PROTO: dict[int, SubscriptionStatus] = {value: status for status, value in STATUS_TO_PROTO.items()}
_SCHEME_TO_PROTO = {SignatureScheme.SPEC: pb.SIGNATURE_SCHEME_SPEC,
                    SignatureScheme.STANDARD_WEBHOOKS: pb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS}
_SCHEME_FROM_PROTO: dict[int, SignatureScheme] = {pb.SIGNATURE_SCHEME_UNSPECIFIED: SignatureScheme.SPEC,
                      **{value: scheme for scheme, value in _SCHEME_TO_PROTO.items()}}
_DELIVERY_STATUS = {status: pb.DeliveryStatus.Value(f"DELIVERY_STATUS_{status.name}") for status in DeliveryStatus}
_ERRORS = {error: pb.AttemptError.Value(f"ATTEMPT_ERROR_{error.name}") for error in AttemptError}


def subscription_to_proto(s: Subscription) -> pb.Subscription:
    return pb.Subscription(
        id=s.id, org_id=s.org_id, integration_id=s.integration_id, url=s.url, activity_types=list(s.activity_types),
        description=s.description, status=STATUS_TO_PROTO[s.status], signature_scheme=_SCHEME_TO_PROTO[s.scheme],
        integration_suspended=s.integration_suspended, created_by=s.created_by, created_at=timestamp_or_none(s.created_at),
        updated_at=timestamp_or_none(s.updated_at), secret_created_at=timestamp_or_none(s.secret_created_at),
        failing_since=timestamp_or_none(s.failing_since), version=s.version, filter=s.filter,
        custom_headers=[pb.CustomHeaderHint(name=h.name, hint=h.hint) for h in s.custom_headers],
        client_certificate=client_certificate_to_proto(s.client_certificate),
        previous_secret_expires_at=timestamp_or_none(s.previous_secret_expires_at),
    )


def client_certificate_to_proto(c: ClientCertificate | None) -> pb.ClientCertificateInfo | None:
    if c is None:
        return None
    return pb.ClientCertificateInfo(subject=c.subject, issuer=c.issuer, not_before=timestamp_or_none(c.not_before),
                                    not_after=timestamp_or_none(c.not_after), sha256_fingerprint=c.sha256_fingerprint)


def client_tls(request: pb.CreateSubscriptionRequest | pb.UpdateSubscriptionRequest) -> commands.ClientTls | None:
    if not request.HasField("client_certificate"):
        return None
    upload = request.client_certificate
    return commands.ClientTls(upload.certificate_pem, upload.private_key_pem)


def delivery_to_proto(d: DeliveryRecord) -> pb.Delivery:
    return pb.Delivery(
        id=d.id, org_id=d.org_id, subscription_id=d.subscription_id, event_id=d.event_id, event_type=d.event_type,
        status=_DELIVERY_STATUS[d.status], attempts=d.attempts, round=d.round,
        next_attempt_at=timestamp_or_none(d.next_attempt_at if d.status is DeliveryStatus.PENDING else None),
        created_at=timestamp_or_none(d.created_at), updated_at=timestamp_or_none(d.updated_at),
        last_status_code=d.last_status_code,
        last_error=_ERRORS[d.last_error], last_error_detail=d.last_error_detail, test=d.test,
    )


def attempt_to_proto(a: AttemptRecord) -> pb.Attempt:
    return pb.Attempt(
        id=a.id, delivery_id=a.delivery_id, subscription_id=a.subscription_id, event_id=a.event_id,
        event_type=a.event_type, attempt=a.attempt, round=a.round, attempted_at=timestamp_or_none(a.attempted_at),
        duration_ms=a.duration_ms, status_code=a.status_code, succeeded=a.succeeded, error=_ERRORS[a.error],
        error_detail=a.error_detail, response_body=a.response_body, url=a.url, test=a.test,
        next_attempt_at=timestamp_or_none(a.next_attempt_at), exchange=exchange_to_proto(a.exchange),
    )


def exchange_to_proto(e: AttemptExchange | None) -> pb.AttemptExchange | None:
    if e is None:
        return None
    return pb.AttemptExchange(
        request_headers=[pb.HttpHeader(name=n, value=v) for n, v in e.request_headers],
        response_headers=[pb.HttpHeader(name=n, value=v) for n, v in e.response_headers],
        response_body=e.response_body, response_body_truncated=e.response_body_truncated,
        headers_omitted=e.headers_omitted,
    )


def activity_to_proto(a: ActivityRecord) -> pb.Activity:
    return pb.Activity(
        event_id=a.event_id, type=a.type, org_id=a.org_id, occurred_at=timestamp_or_none(a.occurred_at),
        received_at=timestamp_or_none(a.received_at), sender_type=a.sender_type, sender_id=a.sender_id, data_json=a.data_json,
    )


def _view(request: _ViewFields, context: grpc.aio.ServicerContext) -> commands.View:
    request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
    return commands.View(org_id=request.org_id, integration_id=request.integration_id, request_id=request_id)


class _ViewFields(Protocol):
    """The fields every request of an edge-callable method has."""

    @property
    def org_id(self) -> str: ...

    @property
    def integration_id(self) -> str: ...


def _scheme(value: int) -> SignatureScheme:
    if value not in _SCHEME_FROM_PROTO:
        raise InvalidArgument(f"unknown signature scheme {value}")
    return _SCHEME_FROM_PROTO[value]


def custom_headers(entries: Iterable[pb.CustomHeader]) -> dict[str, str]:
    """The request's custom headers by name; a name given twice is refused, not dropped."""
    found: dict[str, str] = {}
    for entry in entries:
        if entry.name.strip().lower() in {n.lower() for n in found}:
            raise InvalidArgument(f"custom header {entry.name.strip()[:64]} is given twice (names are case-insensitive)",
                                  field="custom_headers")
        found[entry.name.strip()] = entry.value
    return found


def _statuses(values: list[int]) -> list[SubscriptionStatus]:
    unknown = [v for v in values if v not in _STATUS_FROM_PROTO]
    if unknown:
        raise InvalidArgument(f"unknown status filter values {unknown}")
    return [_STATUS_FROM_PROTO[v] for v in values]


def _delivery_statuses(outcome: int) -> list[DeliveryStatus]:
    by_outcome: dict[int, list[DeliveryStatus]] = {
        pb.OUTCOME_UNSPECIFIED: [], pb.OUTCOME_SUCCEEDED: [DeliveryStatus.SUCCEEDED],
        pb.OUTCOME_FAILED: [DeliveryStatus.FAILED], pb.OUTCOME_PENDING: [DeliveryStatus.PENDING],
        pb.OUTCOME_FILTERED: [DeliveryStatus.FILTERED],
    }
    statuses = by_outcome.get(outcome)
    if statuses is None:
        raise InvalidArgument(f"unknown outcome {outcome}", outcome=outcome)
    return statuses


def _changes(request: pb.UpdateSubscriptionRequest) -> dict[str, object]:
    unknown = sorted(set(request.update_mask) - set(UPDATABLE_FIELDS))
    if unknown:
        raise InvalidArgument(f"update_mask names unknown fields {', '.join(unknown)}; updatable fields are: "
                              f"{', '.join(UPDATABLE_FIELDS)}", fields=",".join(unknown))
    changes: dict[str, object] = {}
    for name in request.update_mask:
        if name == "activity_types":
            changes[name] = list(request.activity_types)
        elif name == "signature_scheme":
            # "Unspecified" means the spec's scheme on create only; an update names the one it wants.
            if request.signature_scheme == pb.SIGNATURE_SCHEME_UNSPECIFIED:
                raise InvalidArgument("update_mask names signature_scheme: set it to SIGNATURE_SCHEME_SPEC or "
                                      "SIGNATURE_SCHEME_STANDARD_WEBHOOKS", field="signature_scheme")
            changes[name] = _scheme(request.signature_scheme)
        elif name == "custom_headers":
            changes[name] = custom_headers(request.custom_headers)
        elif name == "client_certificate":
            changes[name] = client_tls(request)
        else:
            changes[name] = getattr(request, name)
    return changes


class WebhooksServicer(webhooks_pb2_grpc.WebhooksServicer):
    """Thin translation between the Webhooks contract and `WebhookHandlers`."""

    def __init__(self, handlers: WebhookHandlers) -> None:
        self._h = handlers

    async def ListActivityTypes(self, request: pb.ListActivityTypesRequest, context: grpc.aio.ServicerContext) -> pb.ListActivityTypesResponse:
        types = self._h.activity_types(current_actor())
        return pb.ListActivityTypesResponse(types=[pb.ActivityType(id=t.id, name=t.name, category=t.category,
                                                                   schema_json=schema_json(t.id)) for t in types])

    async def CreateSubscription(self, request: pb.CreateSubscriptionRequest, context: grpc.aio.ServicerContext) -> pb.CreateSubscriptionResponse:
        subscription, secret = await self._h.create(current_actor(), commands.CreateSubscription(
            url=request.url, activity_types=list(request.activity_types), description=request.description,
            scheme=_scheme(request.signature_scheme), view=_view(request, context), filter=request.filter,
            custom_headers=custom_headers(request.custom_headers), client_tls=client_tls(request),
        ))
        return pb.CreateSubscriptionResponse(subscription=subscription_to_proto(subscription), signing_secret=secret)

    async def GetSubscription(self, request: pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext) -> pb.Subscription:
        ref = commands.SubscriptionRef(request.subscription_id, _view(request, context))
        return subscription_to_proto(await self._h.get(current_actor(), ref))

    async def ListSubscriptions(self, request: pb.ListSubscriptionsRequest, context: grpc.aio.ServicerContext) -> pb.ListSubscriptionsResponse:
        page = await self._h.list(current_actor(), commands.ListSubscriptions(
            statuses=_statuses(list(request.statuses)), page_size=request.page_size, page_token=request.page_token,
            view=_view(request, context), with_last_attempts=request.with_last_attempts,
        ))
        return pb.ListSubscriptionsResponse(subscriptions=[subscription_to_proto(s) for s in page.subscriptions],
                                            next_page_token=page.next_page_token,
                                            last_attempts=[attempt_to_proto(a) for a in page.last_attempts])

    async def UpdateSubscription(self, request: pb.UpdateSubscriptionRequest, context: grpc.aio.ServicerContext) -> pb.Subscription:
        cmd = commands.UpdateSubscription(request.subscription_id, _changes(request), _view(request, context))
        return subscription_to_proto(await self._h.update(current_actor(), cmd))

    async def PauseSubscription(self, request: pb.PauseSubscriptionRequest, context: grpc.aio.ServicerContext) -> pb.Subscription:
        ref = commands.SubscriptionRef(request.subscription_id, _view(request, context))
        return subscription_to_proto(await self._h.pause(current_actor(), ref))

    async def ResumeSubscription(self, request: pb.ResumeSubscriptionRequest, context: grpc.aio.ServicerContext) -> pb.Subscription:
        ref = commands.SubscriptionRef(request.subscription_id, _view(request, context))
        return subscription_to_proto(await self._h.resume(current_actor(), ref))

    async def DeleteSubscription(self, request: pb.DeleteSubscriptionRequest, context: grpc.aio.ServicerContext) -> pb.DeleteSubscriptionResponse:
        ref = commands.SubscriptionRef(request.subscription_id, _view(request, context))
        cancelled = await self._h.delete(current_actor(), ref)
        return pb.DeleteSubscriptionResponse(subscription_id=request.subscription_id, cancelled_deliveries=cancelled)

    async def RegenerateSecret(self, request: pb.RegenerateSecretRequest, context: grpc.aio.ServicerContext) -> pb.RegenerateSecretResponse:
        ref = commands.SubscriptionRef(request.subscription_id, _view(request, context))
        if not 0 <= request.overlap_seconds <= 7 * 86400:
            raise InvalidArgument(f"overlap_seconds must be between 0 and 604800 (7 days), got {request.overlap_seconds}",
                                  field="overlap_seconds")
        subscription, secret = await self._h.regenerate_secret(current_actor(), ref,
                                                               dt.timedelta(seconds=request.overlap_seconds))
        return pb.RegenerateSecretResponse(subscription=subscription_to_proto(subscription), signing_secret=secret)

    async def SendTestDelivery(self, request: pb.SendTestDeliveryRequest, context: grpc.aio.ServicerContext) -> pb.SendTestDeliveryResponse:
        ref = commands.SubscriptionRef(request.subscription_id, _view(request, context))
        result = await self._h.send_test(current_actor(), ref)
        return pb.SendTestDeliveryResponse(delivery=delivery_to_proto(result.delivery), attempt=attempt_to_proto(result.attempt),
                                           subscription=subscription_to_proto(result.subscription))

    async def ListDeliveries(self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext) -> pb.ListDeliveriesResponse:
        found, token = await self._h.list_deliveries(current_actor(), commands.ListDeliveries(
            subscription_id=request.subscription_id, statuses=_delivery_statuses(request.outcome), event_id=request.event_id,
            page_size=request.page_size, page_token=request.page_token, view=_view(request, context),
        ))
        return pb.ListDeliveriesResponse(deliveries=[delivery_to_proto(d) for d in found], next_page_token=token)

    async def GetDelivery(self, request: pb.GetDeliveryRequest, context: grpc.aio.ServicerContext) -> pb.GetDeliveryResponse:
        shown = await self._h.get_delivery(current_actor(), commands.DeliveryRef(request.delivery_id, _view(request, context)))
        sent = pb.SentRequest(body=shown.request.body, body_truncated=shown.request.truncated, body_size=shown.request.size,
                              headers=[pb.SentHeader(name=h.name, value=h.value, per_attempt=h.per_attempt)
                                       for h in shown.request.headers])
        return pb.GetDeliveryResponse(delivery=delivery_to_proto(shown.delivery),
                                      attempts=[attempt_to_proto(a) for a in shown.attempts], request=sent)

    async def ListAttempts(self, request: pb.ListAttemptsRequest, context: grpc.aio.ServicerContext) -> pb.ListAttemptsResponse:
        if request.outcome in (pb.OUTCOME_PENDING, pb.OUTCOME_FILTERED):
            raise InvalidArgument("attempts are succeeded or failed; pending and filtered apply to deliveries")
        outcomes = {pb.OUTCOME_UNSPECIFIED: None, pb.OUTCOME_SUCCEEDED: True, pb.OUTCOME_FAILED: False}
        if request.outcome not in outcomes:
            raise InvalidArgument(f"unknown outcome {request.outcome}", outcome=request.outcome)
        succeeded = outcomes[request.outcome]
        found, token = await self._h.list_attempts(current_actor(), commands.ListAttempts(
            subscription_id=request.subscription_id, succeeded=succeeded, event_id=request.event_id,
            delivery_id=request.delivery_id, page_size=request.page_size, page_token=request.page_token,
            view=_view(request, context),
        ))
        return pb.ListAttemptsResponse(attempts=[attempt_to_proto(a) for a in found], next_page_token=token)

    async def Redeliver(self, request: pb.RedeliverRequest, context: grpc.aio.ServicerContext) -> pb.Delivery:
        delivery = await self._h.redeliver(current_actor(), commands.DeliveryRef(request.delivery_id, _view(request, context)))
        return delivery_to_proto(delivery)

    async def PublishActivity(self, request: pb.PublishActivityRequest, context: grpc.aio.ServicerContext) -> pb.PublishActivityResponse:
        occurred = field_datetime(request, "occurred_at")
        accepted = await self._h.publish(current_actor(), commands.PublishActivity(
            type=request.type, data_json=request.data_json, event_id=request.event_id, sender_type=request.sender_type,
            sender_id=request.sender_id, occurred_at=occurred, view=_view(request, context),
        ))
        return pb.PublishActivityResponse(event_id=accepted.event_id, accepted_at=now_timestamp(), duplicate=accepted.duplicate,
                                          deliveries=accepted.deliveries, filtered=accepted.filtered)

    async def ListActivities(self, request: pb.ListActivitiesRequest, context: grpc.aio.ServicerContext) -> pb.ListActivitiesResponse:
        found, token = await self._h.list_activities(current_actor(), commands.ListActivities(
            types=list(request.types), page_size=request.page_size, page_token=request.page_token,
            view=_view(request, context),
        ))
        return pb.ListActivitiesResponse(activities=[activity_to_proto(a) for a in found], next_page_token=token)

    async def GetAttempt(self, request: pb.GetAttemptRequest, context: grpc.aio.ServicerContext) -> pb.Attempt:
        found = await self._h.get_attempt(current_actor(), commands.AttemptRef(request.attempt_id, _view(request, context)))
        return attempt_to_proto(found)

    async def StartRecovery(self, request: pb.StartRecoveryRequest, context: grpc.aio.ServicerContext) -> pb.Recovery:
        recovery = await self._h.start_recovery(current_actor(), commands.StartRecovery(
            subscription_id=request.subscription_id, since=field_datetime(request, "since"),
            until=field_datetime(request, "until"), view=_view(request, context),
        ))
        return recovery_to_proto(recovery)

    async def GetRecovery(self, request: pb.GetRecoveryRequest, context: grpc.aio.ServicerContext) -> pb.Recovery:
        recovery = await self._h.get_recovery(current_actor(), commands.RecoveryRef(request.recovery_id, _view(request, context)))
        return recovery_to_proto(recovery)

    async def ListRecoveries(self, request: pb.ListRecoveriesRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListRecoveriesResponse:
        found, token = await self._h.list_recoveries(current_actor(), commands.ListRecoveries(
            subscription_id=request.subscription_id, page_size=request.page_size, page_token=request.page_token,
            view=_view(request, context),
        ))
        return pb.ListRecoveriesResponse(recoveries=[recovery_to_proto(r) for r in found], next_page_token=token)

    async def GetRetention(self, request: pb.GetRetentionRequest, context: grpc.aio.ServicerContext) -> pb.Retention:
        return retention_to_proto(await self._h.get_retention(current_actor(), commands.View()))

    async def SetRetention(self, request: pb.SetRetentionRequest, context: grpc.aio.ServicerContext) -> pb.Retention:
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        shown = await self._h.set_retention(current_actor(), commands.SetRetention(request.days, commands.View(request_id=request_id)))
        return retention_to_proto(shown)


def recovery_to_proto(r: Recovery) -> pb.Recovery:
    return pb.Recovery(
        id=r.id, subscription_id=r.subscription_id, since=timestamp_or_none(r.since), until=timestamp_or_none(r.until),
        queued=r.queued, done=r.done, succeeded=r.succeeded, failed=r.failed, created_by=r.created_by,
        created_at=timestamp_or_none(r.created_at), waiting_for=r.waiting_for,
    )


def retention_to_proto(r: RetentionView) -> pb.Retention:
    return pb.Retention(days=r.days, overridden=r.overridden, default_days=r.default_days)
