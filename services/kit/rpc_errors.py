"""The one two-way map between our errors (services.kit.errors) and gRPC statuses, with the
error's fields: the server interceptor sends with `to_status`, every client (a service's peer
clients, the edge, the CLI, the console) reads back with `from_rpc_error`.

On the wire a refusal is gRPC's richer error model (google.rpc.Status, as grpcio-status sends
it):

    status code          the class's code (CODES), e.g. NOT_FOUND for errors.NotFound
    status message       the error's message (`grpc-message`, percent-encoded by gRPC)
    grpc-status-details-bin
                         a serialized google.rpc.Status with the same code and message and one
                         google.rpc.ErrorInfo: reason = the class's code name ("NOT_FOUND"),
                         domain = "trellis", metadata = the error's fields, each as text

A `-bin` trailer carries any bytes, so a field may hold any text (non-ASCII, NUL, line breaks):
nothing a caller sends can make the answer unsendable. Message and fields are bounded
(MAX_MESSAGE_BYTES, MAX_FIELD_BYTES, MAX_FIELDS_BYTES, long text clipped in the middle with
"…") so the trailers stay well inside gRPC's 8 KiB metadata limit whatever the id was; control
characters in the message are written as escapes (`\\x1b`), as a terminal or a log line shows
it. A field's value arrives as the text `str(value)` gave.

A status with no ErrorInfo of ours (a deadline, a refused connection, INTERNAL from a handler's
crash, a server that is not ours) reads back by its code alone; any code outside the map is
errors.Unavailable with the field `grpc_status` naming the code (DEADLINE_EXCEEDED, ...).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.kit import errors

DOMAIN = "trellis"
DETAILS_KEY = "grpc-status-details-bin"
MAX_MESSAGE_BYTES = 1024
MAX_FIELD_BYTES = 256
MAX_FIELDS_BYTES = 1536
_ELLIPSIS = "…"

CODES: dict[type[errors.TrellisError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}
ERRORS: dict[grpc.StatusCode, type[errors.TrellisError]] = {code: cls for cls, code in CODES.items()}


def status_code_for(exc: errors.TrellisError) -> grpc.StatusCode:
    """The status of an error's class (or its nearest mapped base); UNKNOWN for the bare base."""
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.UNKNOWN


def error_class_for(code: grpc.StatusCode) -> type[errors.TrellisError]:
    """The class a status reads back as: Unavailable for any code outside the map."""
    return ERRORS.get(code, errors.Unavailable)


# --- sending ---------------------------------------------------------------------------------------

def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` UTF-8 bytes: the start and the end kept, "…" between."""
    raw = text.encode("utf-8", "replace")  # a lone surrogate cannot be sent; it becomes "?"
    if len(raw) <= limit:
        return raw.decode("utf-8")
    room = limit - len(_ELLIPSIS.encode())
    head, tail = room * 2 // 3, room - room * 2 // 3
    # "ignore" drops a character cut in two at either edge.
    return raw[:head].decode("utf-8", "ignore") + _ELLIPSIS + raw[len(raw) - tail:].decode("utf-8", "ignore")


def _printable(text: str) -> str:
    """Control characters as escapes (`\\n`, `\\x00`, `\\x1b`), everything else as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def sendable_message(exc: errors.TrellisError) -> str:
    return clip(_printable(exc.message), MAX_MESSAGE_BYTES)


def error_info(exc: errors.TrellisError) -> error_details_pb2.ErrorInfo:
    """The error's class and fields as a google.rpc.ErrorInfo, bounded in size."""
    info = error_details_pb2.ErrorInfo(reason=exc.code_name, domain=DOMAIN)
    budget = MAX_FIELDS_BYTES
    for key, value in exc.fields.items():
        name, text = clip(str(key), 64), clip(str(value), MAX_FIELD_BYTES)
        size = len(name.encode()) + len(text.encode())
        if size > budget:
            break  # later fields are dropped rather than the answer made unsendable
        info.metadata[name] = text
        budget -= size
    return info


def to_rich_status(exc: errors.TrellisError) -> status_pb2.Status:
    """The google.rpc.Status an error is sent as."""
    status = status_pb2.Status(code=status_code_for(exc).value[0], message=sendable_message(exc))
    status.details.add().Pack(error_info(exc))
    return status


def to_status(exc: errors.TrellisError) -> grpc.Status:
    """What a servicer aborts with (`context.abort_with_status`): code, message and details trailer."""
    return rpc_status.to_status(to_rich_status(exc))


# --- receiving -------------------------------------------------------------------------------------

def code_of(exc: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call, sync or asyncio (UNKNOWN when it has none)."""
    code = getattr(exc, "code", None)
    found = code() if callable(code) else None
    return found if isinstance(found, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return (details() if callable(details) else str(exc)) or ""


def _info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Our ErrorInfo from the call's details trailer, if it carries one."""
    trailing = getattr(exc, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # noqa: BLE001 - a malformed trailer reads as no details
            return None
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == DOMAIN:
                return info
    return None


def from_rpc_error(exc: grpc.RpcError, *, peer: str = "") -> errors.TrellisError:
    """The error a failed call (sync or asyncio) stands for: same class, message and fields as
    the server raised; `peer` (the service called), when given, is added as the field `peer`."""
    code, details = code_of(exc), _details(exc)
    info = _info(exc)
    cls = error_class_for(code)
    fields: dict[str, Any] = dict(info.metadata) if info is not None else {}
    if cls is errors.Unavailable and (info is None or code is not grpc.StatusCode.UNAVAILABLE):
        fields["grpc_status"] = code.name  # DEADLINE_EXCEEDED and UNAVAILABLE answer differently
    if peer:
        fields["peer"] = peer
    error = cls(details or code.name)
    error.fields = fields  # set, not passed: a field may be named like a constructor argument
    return error
