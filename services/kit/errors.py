"""Errors every service raises from its domain and use cases.

Each class has one gRPC status code, in one two-way map (services.kit.rpc_errors) that the
server's error interceptor and every client (peers, the edge, the CLI) use; nothing else in a
service picks a status code. The fields travel with the error and come back as text.

    TrellisError
    ├── InvalidArgument       INVALID_ARGUMENT
    ├── NotFound              NOT_FOUND (also: another organisation's object)
    ├── AlreadyExists         ALREADY_EXISTS
    ├── FailedPrecondition    FAILED_PRECONDITION (illegal transition, wrong state)
    ├── PermissionDenied      PERMISSION_DENIED (missing permission, separation of duties)
    ├── Unauthenticated       UNAUTHENTICATED (no or bad actor token, bad client credentials)
    ├── ResourceExhausted     RESOURCE_EXHAUSTED (organisation limits)
    ├── Aborted               ABORTED (concurrent modification; retry)
    └── Unavailable           UNAVAILABLE (a peer service or the bus is down)
"""

from __future__ import annotations

from typing import Any


class TrellisError(Exception):
    """Base class: a message a caller can act on, plus structured fields."""

    code_name = "UNKNOWN"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message

    def rephrased(self, message: str) -> TrellisError:
        """The same error (class and fields) saying `message` instead."""
        other = type(self)(message)
        other.fields = dict(self.fields)
        return other


class InvalidArgument(TrellisError):
    code_name = "INVALID_ARGUMENT"


class NotFound(TrellisError):
    code_name = "NOT_FOUND"


class AlreadyExists(TrellisError):
    code_name = "ALREADY_EXISTS"


class FailedPrecondition(TrellisError):
    code_name = "FAILED_PRECONDITION"


class PermissionDenied(TrellisError):
    code_name = "PERMISSION_DENIED"


class Unauthenticated(TrellisError):
    code_name = "UNAUTHENTICATED"


class ResourceExhausted(TrellisError):
    code_name = "RESOURCE_EXHAUSTED"


class Aborted(TrellisError):
    code_name = "ABORTED"


class Unavailable(TrellisError):
    code_name = "UNAVAILABLE"
