"""The partner routes onto the webhooks service: the built-ins `webhooks` (the integration's own
webhook subscriptions, their deliveries and attempts) and `activities` (the organisation's
activities). JSON in and out; one Webhooks RPC per operation (two where a delivery must be
checked to belong to the subscription in the path).

The edge acts for the integration it verified: every RPC carries that integration's org_id and
integration_id (the contract's rule for `trellis_edge` callers), so webhooks shows and changes
only what the integration owns; another integration's or organisation's object is 404.

Below the route's prefix (`/v1/webhooks`, `/v1/activities` in the shipped tables), `OPERATIONS`
is the one list of what answers: it routes requests, names the query parameters each takes,
and is what /openapi.json describes.

gRPC refusals become the edge's codes (`refusal`): INVALID_ARGUMENT -> 400 invalid_request with
the service's message, NOT_FOUND -> 404 not_found, FAILED_PRECONDITION / ABORTED /
ALREADY_EXISTS -> 409 conflict, a deadline -> 504 and anything else -> 502 upstream_unavailable.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import parse_qs

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.edge.adapters.peers import Peers
from services.edge.application.builtins import Builtin, BuiltinCall
from services.edge.domain.errors import EdgeError, too_large
from services.edge.http.asgi import read_body, send_json
from services.edge.http.proxy import check_content_length
from services.kit import errors
from services.kit.prototime import rfc3339

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 1024
WRITABLE_FIELDS = ("endpoint_url", "activity_types", "description", "signature_scheme", "filter", "custom_headers",
                   "client_certificate")
# Partner field name -> UpdateSubscriptionRequest field name.
_PROTO_FIELD = {"endpoint_url": "url", "activity_types": "activity_types", "description": "description",
                "signature_scheme": "signature_scheme", "filter": "filter", "custom_headers": "custom_headers",
                "client_certificate": "client_certificate"}


def _names(enum: Any, prefix: str) -> dict[str, Any]:
    """`SUBSCRIPTION_STATUS_ACTIVE` -> {"active": 1}, without the unspecified value (the numbers
    go into request fields the generated stubs type as the enum's class: Any here)."""
    return {name.removeprefix(prefix).lower(): value for name, value in enum.items() if value != 0}


STATUSES = _names(pb.SubscriptionStatus, "SUBSCRIPTION_STATUS_")
SCHEMES = _names(pb.SignatureScheme, "SIGNATURE_SCHEME_")
DELIVERY_STATUSES = _names(pb.DeliveryStatus, "DELIVERY_STATUS_")
OUTCOMES = _names(pb.Outcome, "OUTCOME_")
ATTEMPT_ERRORS = _names(pb.AttemptError, "ATTEMPT_ERROR_")

# What a partner reads when its endpoint's host name gave no address Trellis delivers to: one
# code and one text whether the name does not resolve (`dns`) or resolves only to refused
# networks (`ssrf_refused`), and never the addresses. Told apart, or with the addresses, they
# would let an outsider map which internal names exist and where. Administrators see both.
UNUSABLE_HOST = "unusable_host"
UNUSABLE_HOST_DETAIL = ("the endpoint's host name gives no address Trellis delivers to: it does not resolve, or it "
                        "resolves only to private, loopback, link-local or reserved networks; use a public HTTPS "
                        "endpoint")
_UNUSABLE_HOST_ERRORS = frozenset({pb.ATTEMPT_ERROR_DNS, pb.ATTEMPT_ERROR_SSRF_REFUSED})
PARTNER_ATTEMPT_ERRORS = [name for name, value in ATTEMPT_ERRORS.items() if value not in _UNUSABLE_HOST_ERRORS]
PARTNER_ATTEMPT_ERRORS.append(UNUSABLE_HOST)


def _partner_error(error: int) -> str | None:
    return UNUSABLE_HOST if error in _UNUSABLE_HOST_ERRORS else _label(ATTEMPT_ERRORS, error)


def _partner_detail(error: int, detail: str) -> str:
    return UNUSABLE_HOST_DETAIL if error in _UNUSABLE_HOST_ERRORS else detail


def _label(table: dict[str, int], value: int) -> str | None:
    return next((name for name, v in table.items() if v == value), None)


# --- gRPC refusals -> the edge's codes -----------------------------------------------------------

def refusal(exc: errors.TrellisError) -> EdgeError:
    """The partner's answer to a failed Webhooks call."""
    message = exc.message.replace("page_token", "cursor").replace("page_size", "limit")
    if isinstance(exc, errors.InvalidArgument):
        return EdgeError("invalid_request", message)
    if isinstance(exc, errors.NotFound):
        return EdgeError("not_found", message)
    if isinstance(exc, (errors.FailedPrecondition, errors.Aborted, errors.AlreadyExists)):
        return EdgeError("conflict", message)
    if isinstance(exc, (errors.PermissionDenied, errors.Unauthenticated)):
        # The edge's own service identity was refused: a deployment fault, not the partner's.
        log.error("webhooks refused the edge's service identity: %s", exc.message)
    if exc.fields.get("grpc_status") == "DEADLINE_EXCEEDED":
        return EdgeError("upstream_unavailable", "the webhooks service did not answer in time; retry later", status=504)
    return EdgeError("upstream_unavailable", "the webhooks service cannot be reached right now; retry later with backoff")


# --- proto -> JSON -----------------------------------------------------------------------------

def _time(ts: Timestamp) -> str | None:
    return rfc3339(ts, "milliseconds") or None


def subscription_json(s: pb.Subscription) -> dict[str, Any]:
    return {
        "id": s.id, "organisation_id": s.org_id, "integration_id": s.integration_id or None,
        "endpoint_url": s.url, "activity_types": list(s.activity_types), "description": s.description,
        "status": _label(STATUSES, s.status), "signature_scheme": _label(SCHEMES, s.signature_scheme),
        "integration_suspended": s.integration_suspended, "created_at": _time(s.created_at),
        "updated_at": _time(s.updated_at), "secret_created_at": _time(s.secret_created_at),
        "failing_since": _time(s.failing_since), "filter": s.filter or None,
        "previous_secret_expires_at": _time(s.previous_secret_expires_at),
        "custom_headers": [{"name": h.name, "hint": h.hint} for h in s.custom_headers],
        "client_certificate": {
            "subject": s.client_certificate.subject, "issuer": s.client_certificate.issuer,
            "not_before": _time(s.client_certificate.not_before), "not_after": _time(s.client_certificate.not_after),
            "sha256_fingerprint": s.client_certificate.sha256_fingerprint,
        } if s.HasField("client_certificate") else None,
    }


def delivery_json(d: pb.Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "subscription_id": d.subscription_id, "event_id": d.event_id, "event_type": d.event_type,
        "status": _label(DELIVERY_STATUSES, d.status), "attempts": d.attempts, "round": d.round,
        "next_attempt_at": _time(d.next_attempt_at), "created_at": _time(d.created_at), "updated_at": _time(d.updated_at),
        "last_status_code": d.last_status_code or None, "last_error": _partner_error(d.last_error),
        "last_error_detail": _partner_detail(d.last_error, d.last_error_detail), "test": d.test,
    }


def attempt_json(a: pb.Attempt) -> dict[str, Any]:
    return {
        "id": a.id, "delivery_id": a.delivery_id, "subscription_id": a.subscription_id, "event_id": a.event_id,
        "event_type": a.event_type, "attempt": a.attempt, "round": a.round, "attempted_at": _time(a.attempted_at),
        "duration_ms": round(a.duration_ms, 1), "status_code": a.status_code or None, "succeeded": a.succeeded,
        "error": _partner_error(a.error), "error_detail": _partner_detail(a.error, a.error_detail),
        "response_body": a.response_body,
        "endpoint_url": a.url, "test": a.test,
        **({"exchange": exchange_json(a.exchange)} if a.HasField("exchange") else {}),
    }


def exchange_json(e: pb.AttemptExchange) -> dict[str, Any]:
    """What the attempt sent and what the partner's receiver answered (secrets masked)."""
    return {
        "request_headers": [{"name": h.name, "value": h.value} for h in e.request_headers],
        "response_headers": [{"name": h.name, "value": h.value} for h in e.response_headers],
        "response_body": e.response_body, "response_body_truncated": e.response_body_truncated,
        "headers_omitted": e.headers_omitted,
    }


def activity_json(a: pb.Activity) -> dict[str, Any]:
    """An activity in the shape of a delivery's body, plus when webhooks received it."""
    try:
        data = json.loads(a.data_json) if a.data_json else {}
    except ValueError:
        data = None
    return {
        "id": a.event_id, "type": a.type, "created_at": _time(a.occurred_at), "organisation_id": a.org_id,
        "sender": {"type": a.sender_type, "id": a.sender_id}, "data": data, "received_at": _time(a.received_at),
    }


def recovery_json(r: pb.Recovery) -> dict[str, Any]:
    return {
        "id": r.id, "subscription_id": r.subscription_id, "since": _time(r.since), "until": _time(r.until),
        "queued": r.queued, "done": r.done, "succeeded": r.succeeded, "failed": r.failed,
        "finished": r.done >= r.queued, "waiting_for": r.waiting_for or None, "created_at": _time(r.created_at),
    }


RECOVERY_FIELDS = ("since", "until")


def _recovery_time(document: dict[str, Any], name: str) -> Timestamp | None:
    """An RFC 3339 time with its offset (`2026-12-01T08:00:00Z`), as the body's `name`."""
    value = document.get(name)
    if value is None:
        return None
    when = None
    if isinstance(value, str) and len(value) <= 64:
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        raise EdgeError("invalid_request", f"{name} must be an RFC 3339 time with its offset, like 2026-12-01T08:00:00Z")
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


# --- one request ---------------------------------------------------------------------------------

class CallerIds(TypedDict):
    """The view every Webhooks request carries for an edge caller."""

    integration_id: str
    org_id: str


@dataclass
class Ask:
    """A request to one operation: the call, the path parameters and the checked query."""

    call: BuiltinCall
    params: dict[str, str]
    query: dict[str, list[str]]
    max_body_bytes: int

    @property
    def ids(self) -> CallerIds:
        """The view every Webhooks request carries for an edge caller."""
        integration = self.call.caller.integration
        return {"integration_id": integration.id, "org_id": integration.org_id}

    def one(self, name: str) -> str:
        values = self.query.get(name, [])
        if len(values) > 1:
            raise EdgeError("invalid_request", f"the query parameter {name} is given {len(values)} times; give it once")
        return values[0] if values else ""

    def many(self, name: str, choices: Mapping[str, int] | None = None) -> list[str]:
        """Repeated or comma-separated values; each one of `choices` when given."""
        values = [v.strip() for raw in self.query.get(name, []) for v in raw.split(",") if v.strip()]
        unknown = [v for v in values if choices is not None and v not in choices]
        if unknown:
            raise EdgeError("invalid_request", f"unknown {name} {', '.join(unknown)}; choose from {', '.join(choices or ())}")
        return values

    def page(self) -> dict[str, Any]:
        """page_size and page_token from `limit` (capped at MAX_LIMIT) and `cursor`."""
        limit = self.one("limit")
        if limit and not (limit.isascii() and limit.isdigit() and len(limit) <= 9 and int(limit) > 0):
            raise EdgeError("invalid_request", f"limit must be a positive whole number (at most {MAX_LIMIT} are returned)")
        cursor = self.one("cursor")
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise EdgeError("invalid_request", "cursor is not one this API gave out; pass next_cursor unchanged")
        return {"page_size": min(int(limit), MAX_LIMIT) if limit else DEFAULT_LIMIT, "page_token": cursor}

    async def body(self) -> dict[str, Any]:
        """The request's JSON object, at most `max_body_bytes` long."""
        check_content_length(self.call.request, self.max_body_bytes)
        raw = await read_body(self.call.receive, self.max_body_bytes)
        if raw is None:
            raise too_large(self.max_body_bytes)
        try:
            document = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise EdgeError("invalid_request", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise EdgeError("invalid_request", "the body is nested too deeply to be a subscription") from None
        if not isinstance(document, dict):
            raise EdgeError("invalid_request", "send a JSON object (Content-Type: application/json) with the fields: "
                            + ", ".join(WRITABLE_FIELDS))
        if b"\\u" in raw and _holds_lone_surrogate(document):
            raise EdgeError("invalid_request", "the body holds a \\u escape of half a UTF-16 surrogate pair, which is "
                            "not text; send each character whole (or as UTF-8)")
        return document


def _holds_lone_surrogate(document: object) -> bool:
    """Whether JSON text decoded to a lone surrogate somewhere (`"\\ud800"` is valid JSON but no
    Unicode text can hold it: protobuf, and so the webhooks call, would fail on it)."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _fields(document: dict[str, Any]) -> dict[str, Any]:
    """The writable fields of a body, type-checked; the webhooks service checks their values."""
    unknown = sorted(set(document) - set(WRITABLE_FIELDS))
    if unknown:
        raise EdgeError("invalid_request", f"unknown field(s) {', '.join(unknown)}; the fields are: {', '.join(WRITABLE_FIELDS)}")
    if document.get("filter", "") is None:
        document = {**document, "filter": ""}  # null removes the filter, as "" does
    for name in ("endpoint_url", "description", "filter"):
        if name in document and not isinstance(document[name], str):
            raise EdgeError("invalid_request", f"{name} must be a string")
    types = document.get("activity_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise EdgeError("invalid_request", 'activity_types must be a list of strings, like ["lot.created"] or ["*"]')
    scheme = document.get("signature_scheme", "spec")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise EdgeError("invalid_request", f"signature_scheme must be one of {', '.join(SCHEMES)}")
    fields = dict(document)
    if "signature_scheme" in fields:
        fields["signature_scheme"] = SCHEMES[scheme]
    headers = document.get("custom_headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise EdgeError("invalid_request", 'custom_headers must be an object of header names to string values, like '
                        '{"X-Api-Key": "..."}')
    if "custom_headers" in fields:
        fields["custom_headers"] = [pb.CustomHeader(name=name, value=value) for name, value in headers.items()]
    if "client_certificate" in fields:
        upload = fields["client_certificate"]
        if upload is None:
            del fields["client_certificate"]  # an update naming it without one removes it
        elif not isinstance(upload, dict) or set(upload) != {"certificate_pem", "private_key_pem"} or \
                not all(isinstance(v, str) for v in upload.values()):
            raise EdgeError("invalid_request", "client_certificate must be null or an object with the strings "
                            "certificate_pem and private_key_pem")
        else:
            fields["client_certificate"] = pb.ClientCertificateUpload(**upload)
    return fields


# --- the operations -------------------------------------------------------------------------------

Handler = Callable[["PartnerWebhooks", Ask], Awaitable[Any]]


@dataclass(frozen=True)
class Operation:
    """One method on one path below a built-in route's prefix ({name} matches one segment)."""

    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    response: str = ""                     # the answer's schema (components.schemas)
    body: str = ""                         # the JSON body's schema
    query: tuple[str, ...] = ()            # the query parameters it takes
    secret: bool = False                   # the answer shows a signing secret: never cached
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(s for s in self.path.split("/") if s))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params = {}
        for pattern, segment in zip(self.segments, segments):
            if pattern.startswith("{"):
                params[pattern.strip("{}")] = segment
            elif pattern != segment:
                return None
        return params


class PartnerWebhooks:
    """The `webhooks` and `activities` built-ins, calling webhooks through `peers`."""

    def __init__(self, peers: Peers, *, max_body_bytes: int, test_timeout: float) -> None:
        self._peers = peers
        self._max_body_bytes = max_body_bytes
        self._test_timeout = test_timeout

    def builtins(self) -> dict[str, Builtin]:
        return {name: self._answerer(name) for name in OPERATIONS}

    def _answerer(self, name: str) -> Builtin:
        async def answer(call: BuiltinCall) -> None:
            await self._answer(OPERATIONS[name], call)

        return answer

    async def _answer(self, operations: tuple[Operation, ...], call: BuiltinCall) -> None:
        segments = call.subpath.strip("/").split("/") if call.subpath.strip("/") else []
        here = [(op, params) for op in operations if (params := op.match(segments)) is not None]
        if not here:
            raise EdgeError("not_found", f"no API route matches {call.request.path[:200]}; see the API reference")
        method = "GET" if call.request.method == "HEAD" else call.request.method
        chosen = next(((op, params) for op, params in here if op.method == method), None)
        if chosen is None:
            allowed = ", ".join(sorted({op.method for op, _ in here} | ({"HEAD"} if any(op.method == "GET" for op, _ in here) else set())))
            raise EdgeError("method_not_allowed", f"{call.request.path[:200]} accepts {allowed}",
                            headers=((b"allow", allowed.encode()),))
        op, params = chosen
        query = parse_qs(call.request.query_string.decode("latin-1"), keep_blank_values=True)
        unknown = sorted(set(query) - set(op.query))
        if unknown:
            takes = f"it takes {', '.join(op.query)}" if op.query else "it takes none"
            raise EdgeError("invalid_request", f"unknown query parameter(s) {', '.join(unknown)}; {takes}")
        payload = await op.handler(self, Ask(call, params, query, self._max_body_bytes))
        headers = [(b"cache-control", b"no-store")] if op.secret else []
        if op.status == 201:
            headers.append((b"location", f"{call.request.path.rstrip('/')}/{payload['id']}".encode()))
        await send_json(call.send, op.status, payload, headers)

    async def _call(self, method: str, request: Message, ask: Ask, *, timeout: float | None = None) -> Any:
        try:
            return await self._peers.call_webhooks(method, request, ask.call.request.request_id, timeout=timeout)
        except errors.TrellisError as exc:
            raise refusal(exc) from exc

    async def _delivery(self, ask: Ask) -> pb.GetDeliveryResponse:
        """The delivery in the path, 404 unless it belongs to the subscription in the path."""
        found: pb.GetDeliveryResponse = await self._call("GetDelivery", pb.GetDeliveryRequest(delivery_id=ask.params["delivery_id"], **ask.ids), ask)
        if found.delivery.subscription_id != ask.params["subscription_id"]:
            raise EdgeError("not_found", f"no delivery {ask.params['delivery_id']} of subscription {ask.params['subscription_id']}")
        return found

    # --- subscriptions -------------------------------------------------------------------------

    async def list_subscriptions(self, ask: Ask) -> dict[str, Any]:
        statuses = [STATUSES[s] for s in ask.many("status", STATUSES)]
        found = await self._call("ListSubscriptions", pb.ListSubscriptionsRequest(statuses=statuses, **ask.page(), **ask.ids), ask)
        return {"subscriptions": [subscription_json(s) for s in found.subscriptions], "next_cursor": found.next_page_token or None}

    async def create(self, ask: Ask) -> dict[str, Any]:
        fields = _fields(await ask.body())
        missing = [name for name in ("endpoint_url", "activity_types") if name not in fields]
        if missing:
            raise EdgeError("invalid_request", f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        created = await self._call("CreateSubscription", pb.CreateSubscriptionRequest(
            url=fields["endpoint_url"], activity_types=fields["activity_types"], description=fields.get("description", ""),
            signature_scheme=fields.get("signature_scheme", pb.SIGNATURE_SCHEME_SPEC), filter=fields.get("filter", ""),
            custom_headers=fields.get("custom_headers", []), client_certificate=fields.get("client_certificate"),
            **ask.ids), ask)
        return {**subscription_json(created.subscription), "signing_secret": created.signing_secret}

    async def get(self, ask: Ask) -> dict[str, Any]:
        found = await self._call("GetSubscription", pb.GetSubscriptionRequest(subscription_id=ask.params["subscription_id"], **ask.ids), ask)
        return subscription_json(found)

    async def update(self, ask: Ask) -> dict[str, Any]:
        body = await ask.body()
        fields = _fields(body)
        if not fields and "client_certificate" not in body:
            raise EdgeError("invalid_request", f"name at least one field to change: {', '.join(WRITABLE_FIELDS)}")
        changes = {_PROTO_FIELD[name]: value for name, value in fields.items()}
        mask = sorted({*changes, *(["client_certificate"] if "client_certificate" in body else [])})
        updated = await self._call("UpdateSubscription", pb.UpdateSubscriptionRequest(
            subscription_id=ask.params["subscription_id"], update_mask=mask, **changes, **ask.ids), ask)
        return subscription_json(updated)

    async def delete(self, ask: Ask) -> dict[str, Any]:
        sid = ask.params["subscription_id"]
        deleted = await self._call("DeleteSubscription", pb.DeleteSubscriptionRequest(subscription_id=sid, **ask.ids), ask)
        return {"id": sid, "deleted": True, "cancelled_deliveries": deleted.cancelled_deliveries}

    async def pause(self, ask: Ask) -> dict[str, Any]:
        paused = await self._call("PauseSubscription", pb.PauseSubscriptionRequest(subscription_id=ask.params["subscription_id"], **ask.ids), ask)
        return subscription_json(paused)

    async def resume(self, ask: Ask) -> dict[str, Any]:
        resumed = await self._call("ResumeSubscription", pb.ResumeSubscriptionRequest(subscription_id=ask.params["subscription_id"], **ask.ids), ask)
        return subscription_json(resumed)

    async def regenerate_secret(self, ask: Ask) -> dict[str, Any]:
        overlap = ask.one("overlap_seconds")
        if overlap and not (overlap.isascii() and overlap.isdigit() and len(overlap) <= 9):
            raise EdgeError("invalid_request", "overlap_seconds must be a whole number of seconds, at most 604800 (7 days)")
        answer = await self._call("RegenerateSecret", pb.RegenerateSecretRequest(
            subscription_id=ask.params["subscription_id"], overlap_seconds=int(overlap or 0), **ask.ids), ask)
        return {**subscription_json(answer.subscription), "signing_secret": answer.signing_secret}

    async def send_test(self, ask: Ask) -> dict[str, Any]:
        # The test POSTs to the receiver while we wait: allow the delivery timeout, not the peer timeout.
        result = await self._call("SendTestDelivery", pb.SendTestDeliveryRequest(subscription_id=ask.params["subscription_id"], **ask.ids),
                                  ask, timeout=self._test_timeout)
        return {"delivery": delivery_json(result.delivery), "attempt": attempt_json(result.attempt),
                "subscription": subscription_json(result.subscription)}

    # --- the delivery log ------------------------------------------------------------------------

    async def list_deliveries(self, ask: Ask) -> dict[str, Any]:
        outcome = ask.one("outcome")
        if outcome and outcome not in OUTCOMES:
            raise EdgeError("invalid_request", f"outcome must be one of {', '.join(OUTCOMES)}")
        found = await self._call("ListDeliveries", pb.ListDeliveriesRequest(
            subscription_id=ask.params["subscription_id"], outcome=OUTCOMES.get(outcome, 0), event_id=ask.one("event_id"),
            **ask.page(), **ask.ids), ask)
        return {"deliveries": [delivery_json(d) for d in found.deliveries], "next_cursor": found.next_page_token or None}

    async def get_delivery(self, ask: Ask) -> dict[str, Any]:
        found = await self._delivery(ask)
        return {**delivery_json(found.delivery), "attempts": [attempt_json(a) for a in found.attempts]}

    async def redeliver(self, ask: Ask) -> dict[str, Any]:
        await self._delivery(ask)
        delivery = await self._call("Redeliver", pb.RedeliverRequest(delivery_id=ask.params["delivery_id"], **ask.ids), ask)
        return delivery_json(delivery)

    async def list_attempts(self, ask: Ask) -> dict[str, Any]:
        outcome = ask.one("outcome")
        if outcome and outcome not in ("succeeded", "failed"):
            raise EdgeError("invalid_request", "outcome must be succeeded or failed (attempts are never pending)")
        found = await self._call("ListAttempts", pb.ListAttemptsRequest(
            subscription_id=ask.params["subscription_id"], outcome=OUTCOMES.get(outcome, 0), event_id=ask.one("event_id"),
            delivery_id=ask.one("delivery_id"), **ask.page(), **ask.ids), ask)
        return {"attempts": [attempt_json(a) for a in found.attempts], "next_cursor": found.next_page_token or None}

    # --- recovery after an outage -----------------------------------------------------------------

    async def recover(self, ask: Ask) -> dict[str, Any]:
        document = await ask.body()
        unknown = sorted(set(document) - set(RECOVERY_FIELDS))
        if unknown:
            raise EdgeError("invalid_request", f"unknown field(s) {', '.join(unknown)}; the fields are: since, until")
        since, until = _recovery_time(document, "since"), _recovery_time(document, "until")
        if since is None:
            raise EdgeError("invalid_request", "since is required: the failed deliveries whose event arrived since when?")
        request = pb.StartRecoveryRequest(subscription_id=ask.params["subscription_id"], since=since, **ask.ids)
        if until is not None:
            request.until.CopyFrom(until)
        return recovery_json(await self._call("StartRecovery", request, ask))

    async def list_recoveries(self, ask: Ask) -> dict[str, Any]:
        found = await self._call("ListRecoveries", pb.ListRecoveriesRequest(
            subscription_id=ask.params["subscription_id"], **ask.page(), **ask.ids), ask)
        return {"recoveries": [recovery_json(r) for r in found.recoveries], "next_cursor": found.next_page_token or None}

    async def get_recovery(self, ask: Ask) -> dict[str, Any]:
        found = await self._call("GetRecovery", pb.GetRecoveryRequest(recovery_id=ask.params["recovery_id"], **ask.ids), ask)
        if found.subscription_id != ask.params["subscription_id"]:
            raise EdgeError("not_found", f"no recovery {ask.params['recovery_id']} of subscription {ask.params['subscription_id']}")
        return recovery_json(found)

    async def get_attempt(self, ask: Ask) -> dict[str, Any]:
        found: pb.Attempt = await self._call("GetAttempt", pb.GetAttemptRequest(attempt_id=ask.params["attempt_id"], **ask.ids), ask)
        if found.subscription_id != ask.params["subscription_id"]:
            raise EdgeError("not_found", f"no attempt {ask.params['attempt_id']} of subscription {ask.params['subscription_id']}")
        return attempt_json(found)

    # --- activities --------------------------------------------------------------------------------

    async def list_activities(self, ask: Ask) -> dict[str, Any]:
        found = await self._call("ListActivities", pb.ListActivitiesRequest(types=ask.many("type"), **ask.page(), **ask.ids), ask)
        return {"activities": [activity_json(a) for a in found.activities], "next_cursor": found.next_page_token or None}

    async def event_types(self, ask: Ask) -> dict[str, Any]:
        """The activity types with the JSON Schema of each one's `data`."""
        found = await self._call("ListActivityTypes", pb.ListActivityTypesRequest(), ask)
        return {"event_types": [{"id": t.id, "name": t.name, "category": t.category, "schema": json.loads(t.schema_json)}
                                for t in found.types]}

    async def activity_types(self, ask: Ask) -> dict[str, Any]:
        found = await self._call("ListActivityTypes", pb.ListActivityTypesRequest(), ask)
        return {"activity_types": [{"id": t.id, "name": t.name, "category": t.category} for t in found.types]}


_S, _D = "/{subscription_id}", "/{subscription_id}/deliveries/{delivery_id}"
_PAGE = ("limit", "cursor")
W = PartnerWebhooks
OPERATIONS: dict[str, tuple[Operation, ...]] = {
    "webhooks": (
        Operation("GET", "", W.list_subscriptions, "List this integration's webhook subscriptions, oldest first",
                  response="SubscriptionList", query=("status", *_PAGE)),
        Operation("POST", "", W.create, "Create a webhook subscription; the answer shows its signing secret, this once",
                  status=201, response="SubscriptionWithSecret", body="SubscriptionCreate", secret=True),
        # Before `/{subscription_id}`, which would match it too: the first match answers.
        Operation("GET", "/event-types", W.event_types, "The activity types a subscription can choose, each with the "
                  "JSON Schema of its data", response="EventTypeList"),
        Operation("GET", _S, W.get, "One subscription", response="Subscription"),
        Operation("PATCH", _S, W.update, "Change the endpoint URL, activity types, description, signature scheme or "
                  "filter; takes effect for the next event", response="Subscription", body="SubscriptionUpdate"),
        Operation("DELETE", _S, W.delete, "Delete a subscription: pending deliveries are cancelled, nothing more is sent",
                  response="Deleted"),
        Operation("POST", _S + "/pause", W.pause, "Pause: no deliveries until resumed", response="Subscription"),
        Operation("POST", _S + "/resume", W.resume, "Resume a paused subscription", response="Subscription"),
        Operation("POST", _S + "/regenerate-secret", W.regenerate_secret, "A new signing secret, shown this once; "
                  "the old one stops signing at once, or with overlap_seconds (standard_webhooks only) signs too "
                  "until the overlap ends", response="SubscriptionWithSecret", secret=True, query=("overlap_seconds",)),
        Operation("POST", _S + "/test", W.send_test, "Send a webhook.test delivery now and answer with its attempt; "
                  "success returns a Failing subscription to Active", response="TestResult"),
        Operation("GET", _S + "/deliveries", W.list_deliveries, "The delivery log: one delivery per event, newest first",
                  response="DeliveryList", query=("outcome", "event_id", *_PAGE)),
        Operation("GET", _D, W.get_delivery, "One delivery with every attempt, oldest first", response="DeliveryWithAttempts"),
        Operation("POST", _D + "/redeliver", W.redeliver, "Send a failed delivery again: a new round of the retry "
                  "schedule, same event id", status=202, response="Delivery"),
        Operation("GET", _S + "/attempts", W.list_attempts, "Every attempt (one row per POST), newest first",
                  response="AttemptList", query=("outcome", "event_id", "delivery_id", *_PAGE)),
        Operation("POST", _S + "/recover", W.recover, "After an outage: send again every failed delivery whose event "
                  "arrived since a time (and before `until`), each with its event id and a new round of the retry "
                  "schedule; answers once all are queued", status=202, response="Recovery", body="RecoveryStart"),
        Operation("GET", _S + "/recoveries", W.list_recoveries, "The subscription's recoveries, newest first, each "
                  "with its progress", response="RecoveryList", query=_PAGE),
        Operation("GET", _S + "/recoveries/{recovery_id}", W.get_recovery, "A recovery's progress: how many were "
                  "queued and how many are done", response="Recovery"),
        Operation("GET", _S + "/attempts/{attempt_id}", W.get_attempt, "One attempt with what it sent and what your "
                  "receiver answered (headers, status, the first 4 KiB of the body; secrets masked)", response="Attempt"),
    ),
    "activities": (
        Operation("GET", "", W.list_activities, "The organisation's activities, newest first",
                  response="ActivityList", query=("type", *_PAGE)),
        Operation("GET", "/types", W.activity_types, "The activity types a subscription can choose (and * for all)",
                  response="ActivityTypeList"),
    ),
}
del W


# --- what /openapi.json says about the answers ------------------------------------------------------

def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **({"required": list(required)} if required else {})}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(key: str, item: str) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": _ref(item)}, "next_cursor": {
        "type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page."}},
        (key, "next_cursor"))


_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_TYPES = {"type": "array", "items": _STR, "description": 'Activity type ids (GET /v1/activities/types), or ["*"] for all '
          "current and future types."}
_SUBSCRIPTION = {
    "id": _STR, "organisation_id": _STR, "integration_id": {"type": ["string", "null"], "description": "The owning integration."},
    "endpoint_url": {"type": "string", "format": "uri"}, "activity_types": _TYPES, "description": _STR,
    "status": {"enum": list(STATUSES)}, "signature_scheme": {"enum": list(SCHEMES)},
    "integration_suspended": {**_BOOL, "description": "Deliveries wait while the owning integration is suspended."},
    "created_at": _TIME, "updated_at": _TIME, "secret_created_at": _TIME, "failing_since": _TIME,
    "filter": {"type": ["string", "null"], "description": "The JMESPath filter over the delivery body; null: none."},
    "previous_secret_expires_at": {**_TIME, "description": "After a rotation with an overlap: until then the previous "
                                   "secret signs too."},
    "custom_headers": {"type": "array", "items": _obj({"name": _STR, "hint": _STR}),
                       "description": "The custom headers every delivery sends: names and a hint, never the values."},
    "client_certificate": {"type": ["object", "null"], "description": "Presented in every delivery's TLS handshake "
                           "(mutual TLS); never its key.", "properties": {
                               "subject": _STR, "issuer": _STR, "not_before": _TIME, "not_after": _TIME,
                               "sha256_fingerprint": _STR}},
}
_SECRET = {"type": "string", "description": "The signing secret (`whsec_...`), shown in this answer only: store it now."}
_WRITABLE = {"endpoint_url": {"type": "string", "format": "uri", "description": "https:// only."}, "activity_types": _TYPES,
             "description": _STR, "signature_scheme": {"enum": list(SCHEMES), "default": "spec"},
             "filter": {"type": ["string", "null"], "maxLength": 1024, "description": (
                 "A JMESPath expression over the delivery body, e.g. `data.facility_id == 'fac_1'`: events it does "
                 "not pass are recorded as `filtered` deliveries, not sent. \"\" or null: every event.")},
             "custom_headers": {"type": "object", "additionalProperties": _STR, "maxProperties": 20,
                                "description": "Header name -> value, sent with every delivery (say, your gateway's "
                                "X-Api-Key); values are stored sealed and never shown back. On update, the whole new "
                                "set ({} for none). Not Host, Content-Length, Content-Type, Transfer-Encoding, "
                                "hop-by-hop headers or the signature and timestamp headers."},
             "client_certificate": {"type": ["object", "null"], "required": ["certificate_pem", "private_key_pem"],
                                    "properties": {"certificate_pem": _STR, "private_key_pem": _STR},
                                    "description": "Mutual TLS: a PEM certificate (leaf first) and its unencrypted PEM "
                                    "key, sealed at rest; refused if either does not parse, they do not match or the "
                                    "certificate is not valid now. null on update removes it."}}
_DELIVERY = {
    "id": _STR, "subscription_id": _STR, "event_id": _STR, "event_type": _STR, "status": {"enum": list(DELIVERY_STATUSES)},
    "attempts": _INT, "round": _INT, "next_attempt_at": _TIME, "created_at": _TIME, "updated_at": _TIME,
    "last_status_code": {"type": ["integer", "null"]}, "last_error": {"enum": [*PARTNER_ATTEMPT_ERRORS, None]},
    "last_error_detail": _STR, "test": _BOOL,
}
_ATTEMPT = {
    "id": _STR, "delivery_id": _STR, "subscription_id": _STR, "event_id": _STR, "event_type": _STR, "attempt": _INT,
    "round": _INT, "attempted_at": _TIME, "duration_ms": {"type": "number"}, "status_code": {"type": ["integer", "null"]},
    "succeeded": _BOOL, "error": {"enum": [*PARTNER_ATTEMPT_ERRORS, None]}, "error_detail": _STR,
    "response_body": {"type": "string", "description": "The first 2 KB the receiver answered."},
    "endpoint_url": _STR, "test": _BOOL,
    "exchange": {**_obj({
        "request_headers": {"type": "array", "items": _obj({"name": _STR, "value": _STR})},
        "response_headers": {"type": "array", "items": _obj({"name": _STR, "value": _STR})},
        "response_body": _STR, "response_body_truncated": _BOOL, "headers_omitted": _INT}),
        "description": "What the attempt sent (every header, the signature as your receiver saw it) and what your "
                       "receiver answered (its headers, the first 4 KiB of the body), bounded; the signing secret and "
                       "custom header values are \"[masked]\". On one delivery or one attempt, not in lists; absent "
                       "when not recorded."},
}
SCHEMAS: dict[str, Any] = {
    "Subscription": _obj(_SUBSCRIPTION, ("id", "endpoint_url", "activity_types", "status")),
    "SubscriptionWithSecret": _obj({**_SUBSCRIPTION, "signing_secret": _SECRET}, ("id", "signing_secret")),
    "SubscriptionList": _list_of("subscriptions", "Subscription"),
    "SubscriptionCreate": _obj(_WRITABLE, ("endpoint_url", "activity_types")),
    "SubscriptionUpdate": {**_obj(_WRITABLE), "minProperties": 1},
    "Deleted": _obj({"id": _STR, "deleted": {"const": True}, "cancelled_deliveries": _INT}),
    "Delivery": _obj(_DELIVERY, ("id", "status")),
    "DeliveryWithAttempts": _obj({**_DELIVERY, "attempts": {"type": "array", "items": _ref("Attempt")}}),
    "DeliveryList": _list_of("deliveries", "Delivery"),
    "Attempt": _obj(_ATTEMPT, ("id", "attempt", "succeeded")),
    "AttemptList": _list_of("attempts", "Attempt"),
    "TestResult": _obj({"delivery": _ref("Delivery"), "attempt": _ref("Attempt"), "subscription": _ref("Subscription")}),
    "Activity": _obj({"id": _STR, "type": _STR, "created_at": _TIME, "organisation_id": _STR,
                      "sender": _obj({"type": {"enum": ["integration", "user"]}, "id": _STR}),
                      "data": {"type": ["object", "null"]}, "received_at": _TIME}, ("id", "type", "created_at")),
    "ActivityList": _list_of("activities", "Activity"),
    "EventTypeList": _obj({"event_types": {"type": "array", "items": _obj(
        {"id": _STR, "name": _STR, "category": _STR,
         "schema": {"type": "object", "description": "The JSON Schema (draft 2020-12) of the type's `data`."}})}}),
    "RecoveryStart": _obj({"since": {"type": "string", "format": "date-time", "description": "Events that arrived "
                                     "from this time (not in the future)."},
                           "until": {"type": "string", "format": "date-time", "description": "... and before this "
                                     "time; default: now."}}, ("since",)),
    "Recovery": _obj({"id": _STR, "subscription_id": _STR, "since": _TIME, "until": _TIME, "queued": _INT, "done": _INT,
                      "succeeded": _INT, "failed": _INT, "finished": _BOOL,
                      "waiting_for": {"type": ["string", "null"], "description": "What the queued deliveries wait "
                                      "for (a Failing or paused subscription holds them)."},
                      "created_at": _TIME}, ("id", "queued", "done")),
    "RecoveryList": _list_of("recoveries", "Recovery"),
    "ActivityTypeList": _obj({"activity_types": {"type": "array", "items": _obj({"id": _STR, "name": _STR, "category": _STR})}}),
}
QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "limit": ({"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}, f"Page size; at most {MAX_LIMIT} are returned."),
    "cursor": (_STR, "`next_cursor` of the previous page."),
    "status": ({"type": "string"}, f"Only these statuses (comma separated or repeated): {', '.join(STATUSES)}."),
    "outcome": ({"type": "string"}, "succeeded or failed (deliveries also: pending, filtered)."),
    "event_id": (_STR, "Only this event's."),
    "delivery_id": (_STR, "Only this delivery's."),
    "type": ({"type": "string"}, "Only these activity types (comma separated or repeated)."),
    "overlap_seconds": ({"type": "integer", "minimum": 0, "maximum": 604800, "default": 0},
                        "Keep signing with the previous secret too for this long (standard_webhooks only: both "
                        "signatures in webhook-signature); refused on the spec scheme, which has room for one."),
}
