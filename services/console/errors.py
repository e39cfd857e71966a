"""The one place where a service's gRPC error becomes what a page says.

    ConsoleError
    ├── Refused            a service refused the call (a `Refusal` says why, in plain words)
    ├── SignInRequired     no session, or one that cannot be renewed: sign in, then come back
    └── BadForm            a form the console cannot read (CSRF token, size, a used action)

The services raise services.kit.errors classes; the kit's two-way map (services.kit.rpc_errors)
sends them as gRPC statuses with their structured fields, and `_decode` reads them back through
the same map: this module only decides what a page says about each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import grpc

from services.kit import rpc_errors

# A structured field of a refusal -> the form field it is shown beside.
_FIELD_OF = {
    "vendor_id": "vendor_id",
    "invalid_scopes": "scopes",
    "invalid_entries": "ip_allowlist",
    "entries": "ip_allowlist",
    "rate_limit_per_minute": "rate_limit_per_minute",
    "daily_quota": "daily_quota",
    # webhooks
    "url": "url",
    "activity_types": "activity_types",
}
# The field `field` names these directly.
_NAMED_FIELDS = frozenset({"name", "owner", "description", "url", "integration_id", "since", "until", "status",
                           "endpoint", "request_id", "window_days", "checkpoint", "actor_id", "action", "object_id",
                           "filter", "custom_headers", "client_certificate"})

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_UNAVAILABLE = "The service behind this page is not answering right now. Nothing was changed; try again in a moment."


@dataclass(frozen=True)
class Refusal:
    """Why a service refused, for a page: a title, the message, the form field it belongs to."""

    kind: str            # invalid, not_found, conflict, busy, limit, permission, duties, signed_out, unavailable
    title: str
    message: str
    status: int          # the HTTP status of the page that shows it
    field: str = ""      # the form field to show it beside ("" when it is about the whole page)
    fields: dict[str, str] = dataclasses.field(default_factory=dict)


class ConsoleError(Exception):
    """Base class of what a page turns into an answer."""


class Refused(ConsoleError):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class SignInRequired(ConsoleError):
    """The user must sign in (again); `return_to` is the local path to come back to."""

    def __init__(self, return_to: str = "/", reason: str = "") -> None:
        super().__init__(reason or "sign in to continue")
        self.return_to, self.reason = return_to, reason


class BadForm(ConsoleError):
    def __init__(self, title: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.title, self.message, self.status = title, message, status


def _decode(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Status code, message and structured fields of a gRPC error, through the kit's map."""
    code, error = rpc_errors.code_of(exc), rpc_errors.from_rpc_error(exc)
    fields = {key: str(value) for key, value in error.fields.items() if key != "grpc_status"}
    return code, "" if error.message == code.name else error.message, fields


def _sentence(message: str) -> str:
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def refusal(exc: grpc.RpcError) -> Refusal:
    """What a page says about this gRPC error."""
    code, details, fields = _decode(exc)
    status = _HTTP_STATUS.get(code, 503)
    message = _sentence(details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return Refusal("invalid", "Please correct the form", message, status, _form_field(fields), fields)
    if code is grpc.StatusCode.NOT_FOUND:
        return Refusal("not_found", "Not found", "There is no such item in your organisation. It may have been "
                       "mistyped, or it belongs to another organisation.", status, fields=fields)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        if "permission" in fields:
            return Refusal("permission", "You do not have access", f"Your account does not have the "
                           f"{fields['permission']} permission this needs. Ask an administrator of your "
                           "organisation to grant it.", status, fields=fields)
        # Separation of duties: the only other refusal of an allowed actor. A setup request's
        # steps are the platform team's, so the colleague to ask is another platform operator.
        if "setup_request_id" in fields:
            return Refusal("duties", "A different member of the platform team must do this", message + " This "
                           "separation of duties is a SOC 2 control: ask another platform operator to handle this "
                           "request.", status, fields=fields)
        return Refusal("duties", "A different administrator must do this", message + " This separation of duties "
                       "is a SOC 2 control: ask a colleague with administration access to do it.", status, fields=fields)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Refusal("limit", "Organisation limit reached", message, status, fields=fields)
    if code is grpc.StatusCode.ABORTED:
        return Refusal("busy", "Someone else changed this at the same time", message + " Reload the page to see the "
                       "latest version, then try again.", status, fields=fields)
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
        return Refusal("conflict", "Not possible in the current state", message, status, fields=fields)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Refusal("signed_out", "Please sign in again", "Your sign-in is no longer accepted.", status, fields=fields)
    return Refusal("unavailable", "Temporarily unavailable", _UNAVAILABLE, 503, fields=fields)


def _form_field(fields: dict[str, str]) -> str:
    named = fields.get("field", "")
    if named in _NAMED_FIELDS:
        return named
    for key, form_field in _FIELD_OF.items():
        if key in fields:
            return form_field
    return ""
