"""The edge's refusals: stable error codes, their HTTP status, and the JSON partners receive.

    EdgeError (code, status, message, headers)
    └── raised by every pipeline step; app.py turns it into
        {"error": "<code>", "message": "<why, and what to do>", "request_id": "..."}

`CODES` is the one list of codes: /openapi.json, /docs and docs/partners.md are checked
against it. The token endpoint answers in RFC 6749 terms instead (services.edge.entrypoints.oauth).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    status: int
    meaning: str
    action: str


CODES: dict[str, Code] = {
    "missing_credentials": Code(401, "A credential header is missing: every request needs both "
                                     "`Authorization: Bearer <token>` and `X-API-Key: <key>`.",
                                "Send both headers on every call."),
    "invalid_api_key": Code(401, "The API key is not recognised: mistyped, regenerated or revoked.",
                            "Use the current key; ask the administrator for a new one if it was regenerated."),
    "invalid_token": Code(401, "The access token is malformed, not signed by a trusted key, or for "
                               "another issuer or audience.",
                          "Request a new token from the token endpoint and send it unchanged."),
    "token_expired": Code(401, "The access token has expired (tokens live 1 hour).",
                          "Request a new token, ideally a little before the old one expires."),
    "credentials_mismatch": Code(401, "The token and the API key belong to different integrations.",
                                 "Use the client id, secret and API key of the same integration."),
    "integration_inactive": Code(401, "The integration is not Active (suspended, revoked, or not yet activated).",
                                 "Ask the administrator to check the integration's status."),
    "ip_not_allowed": Code(403, "The request came from an IP address outside the integration's allowlist.",
                           "Call from an allowed address, or ask the administrator to update the allowlist."),
    "insufficient_scope": Code(403, "The integration (or this token) lacks the scope this endpoint needs; "
                                    "the message names it.",
                               "Ask the administrator to grant the scope, then request a new token."),
    "not_found": Code(404, "No API route matches this path, or the object it names (a webhook subscription, a "
                           "delivery) does not exist or belongs to another integration.",
                      "Check the path against the API reference, and the id."),
    "method_not_allowed": Code(405, "This endpoint does not accept the HTTP method used.",
                               "Use a method listed in the Allow header."),
    "conflict": Code(409, "The object is not in a state that allows this (for example redelivering a delivery that "
                          "has not failed, or changing a subscription disabled with its integration).",
                     "Read the object again; the message says which state it is in."),
    "invalid_request": Code(400, "The request is malformed (for example its path, its Content-Length, its JSON body "
                                 "or a field's value).",
                            "Fix the request; the message says what is wrong."),
    "malformed_request": Code(400, "The request is not valid HTTP/1.1: its request line, a header's syntax, or its "
                                   "framing (two or unreadable Content-Length headers, Transfer-Encoding with "
                                   "Content-Length or on HTTP/1.0, a chunk size that is not hexadecimal). The edge "
                                   "closes the connection after this answer.",
                              "Fix the client that framed the request: HTTP/1.1, one Content-Length or chunked."),
    "request_timeout": Code(408, "The request's head or its body did not arrive in time (by default 10 s for the "
                                 "head, 60 s for the body); the connection is closed.",
                            "Send each request whole without pausing; retry on a new connection."),
    "payload_too_large": Code(413, "The request body is larger than the edge accepts.",
                              "Send a smaller body (split the batch)."),
    "request_headers_too_large": Code(431, "The request headers are larger than the edge accepts.",
                                      "Send fewer or shorter headers."),
    "rate_limit_exceeded": Code(429, "The integration sent more requests this minute than its rate limit.",
                                "Wait until X-RateLimit-Reset (or Retry-After seconds), then retry with backoff."),
    "quota_exceeded": Code(429, "The integration used up its daily quota.",
                           "Wait for the quota to reset (Retry-After says when) or ask for a higher quota."),
    "too_many_connections": Code(429, "This address already holds as many open connections to the API as it may "
                                      "(256 by default); this one is closed.",
                                 "Send requests over fewer keep-alive connections; retry once one of yours has closed."),
    "upstream_unavailable": Code(502, "The service behind this route could not be reached (502) or did not "
                                      "answer in time (504).",
                                 "Retry later with backoff; report the X-Request-ID if it persists."),
    "service_unavailable": Code(503, "The edge cannot verify credentials right now.",
                                "Retry later with backoff."),
    "internal_error": Code(500, "Something went wrong in the edge.",
                           "Retry later; report the X-Request-ID if it persists."),
    # Never sent (nginx's convention): what the API log records when the client went away first.
    "client_closed_request": Code(499, "Never sent: the API log's record of a request whose client closed the "
                                       "connection before its body or its answer was complete.",
                                  "Nothing to do; if your client gave up too early, raise its timeout."),
}


class EdgeError(Exception):
    """A refusal with a stable code; `status` defaults to the code's, `headers` are added."""

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else CODES[code].status
        self.headers = headers


def bearer_challenge(error: str | None = None, description: str = "", scope: str = "") -> tuple[bytes, bytes]:
    """A `WWW-Authenticate: Bearer` challenge (RFC 6750 section 3)."""
    parts = ['realm="trellis"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'").replace("\\", "")))
    if scope:
        parts.append(f'scope="{scope}"')
    return (b"www-authenticate", ("Bearer " + ", ".join(parts)).encode("latin-1", "replace"))


# The 401 codes whose fault is the access token itself (RFC 6750 section 3.1: "expired, revoked,
# malformed, or invalid for other reasons"), so that requesting a new token is the fix. The
# others name no error in their challenge: the API key is missing or unknown, the token belongs
# to another integration than the key, or the integration is not Active, where a new token
# changes nothing (the body's code says which).
TOKEN_ERRORS = frozenset({"invalid_token", "token_expired"})


def unauthorized(code: str, message: str, *, token_error: bool | None = None) -> EdgeError:
    """A 401 with its Bearer challenge: error="invalid_token" and the message as its description
    exactly for TOKEN_ERRORS (the code decides; `token_error=False`, which older callers pass
    for codes outside them, changes nothing)."""
    token_error = code in TOKEN_ERRORS and token_error is not False
    challenge = bearer_challenge("invalid_token" if token_error else None, message if token_error else "")
    return EdgeError(code, message, headers=(challenge,))


def error_body(code: str, message: str, request_id: str) -> bytes:
    return json.dumps({"error": code, "message": message, "request_id": request_id}).encode()


def too_large(limit: int) -> EdgeError:
    return EdgeError("payload_too_large", f"the request body is larger than {limit} bytes; send a smaller body")


class BodyTooLarge(Exception):
    """A request body grew past the limit while it was read (answered with `too_large`)."""


class RevokedKey(Exception):
    """A key identity announced as revoked: its integration is known, the key is dead."""

    def __init__(self, integration_id: str) -> None:
        super().__init__(integration_id)
        self.integration_id = integration_id
