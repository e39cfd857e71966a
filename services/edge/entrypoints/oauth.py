"""The OAuth 2.0 token endpoint (client credentials, RFC 6749 section 4.4) and the discovery
documents partners and stock OAuth clients read.

POST /oauth/token takes a form-encoded body with `grant_type=client_credentials` and an
optional `scope`; the client authenticates with HTTP Basic (client_secret_basic) or with
`client_id` and `client_secret` in the body (client_secret_post), not both. Identity checks the
secret and signs the token; errors follow RFC 6749 section 5.2. A token is handed out only to an
address inside its integration's IP allowlist, as every API call is.

Every call is one API log record (the `Trail`): in the client's organisation's log once identity
has told which integration the client is of (its secret was right, or wrong for a client that
exists), otherwise in the platform log.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt

from services.contracts.trellis.identity.v1 import identity_pb2
from services.edge.adapters.credentials import KeySet
from services.edge.adapters.integrations import Integrations
from services.edge.adapters.peers import Peers
from services.edge.application.pipeline import Trail
from services.edge.domain.errors import EdgeError
from services.edge.domain.model import check_ip
from services.edge.http.asgi import Receive, Request, Send, read_body, send_bytes
from services.kit import errors
from services.kit.settings import PartnerSettings

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 16 * 1024
FORM = b"application/x-www-form-urlencoded"
NO_STORE = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
BASIC_CHALLENGE = (b"www-authenticate", b'Basic realm="trellis", charset="UTF-8"')


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, *, status: int = 400, challenge: bool = False) -> None:
        super().__init__(description)
        self.error, self.description, self.status, self.challenge = error, description, status, challenge


def _basic_credentials(header: bytes) -> tuple[str, str]:
    """client id and secret from `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 2.3.1)."""
    try:
        decoded = base64.b64decode(header.split(None, 1)[1], validate=True).decode()
    except (IndexError, binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "the Basic authorization header is malformed", status=401, challenge=True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "the Basic authorization header is malformed", status=401, challenge=True)
    return unquote_plus(client_id), unquote_plus(secret)


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the body must be form-encoded UTF-8") from exc
    repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"parameters must not be repeated: {', '.join(repeated)}")
    return {k: v[0] for k, v in parsed.items()}


def _issued_to(access_token: str) -> tuple[str, str]:
    """The integration and organisation a token identity has just signed names. Read without
    verifying: it comes straight from identity, over the edge's own authenticated channel."""
    try:
        claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        claims = {}
    integration_id, org_id = claims.get("integration_id"), claims.get("org_id")
    if not (isinstance(integration_id, str) and integration_id and isinstance(org_id, str) and org_id):
        log.error("identity issued a token that names no integration and organisation")
        raise OAuthError("server_error", "the token service answered what the edge cannot check; retry later", status=500)
    return integration_id, org_id


def _attribute(exc: errors.TrellisError, trail: Trail) -> None:
    """Identity names the integration of a client that exists, even when refusing its secret."""
    integration_id, org_id = exc.fields.get("integration_id"), exc.fields.get("org_id")
    if isinstance(integration_id, str) and integration_id and isinstance(org_id, str) and org_id:
        trail.attribute(integration_id, org_id)


class TokenEndpoint:
    """POST /oauth/token."""

    def __init__(self, peers: Peers, integrations: Integrations) -> None:
        self._peers = peers
        self._integrations = integrations

    async def __call__(self, request: Request, receive: Receive, send: Send, trail: Trail) -> None:
        """Answers the request; the trail gets the error code ("" on success) and whose it is."""
        try:
            answer = await self._token(request, receive, trail)
        except OAuthError as exc:
            trail.error_code = exc.error
            headers = [*NO_STORE] + ([BASIC_CHALLENGE] if exc.challenge else [])
            body = json.dumps({"error": exc.error, "error_description": exc.description}).encode()
            await send_bytes(send, exc.status, body, headers)
            return
        await send_bytes(send, 200, json.dumps(answer).encode(), NO_STORE)

    async def _token(self, request: Request, receive: Receive, trail: Trail) -> dict[str, object]:
        content_type = (request.header(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != FORM:
            raise OAuthError("invalid_request", "send the parameters form-encoded (Content-Type: application/x-www-form-urlencoded)")
        body = await read_body(receive, MAX_FORM_BYTES)
        if body is None:
            raise OAuthError("invalid_request", f"the request body is larger than {MAX_FORM_BYTES} bytes")
        form = _form(body)
        authorization = request.header(b"authorization") or b""
        basic = authorization[:6].lower() == b"basic "
        if basic and ("client_secret" in form or ("client_id" in form and form["client_id"] != _basic_credentials(authorization)[0])):
            raise OAuthError("invalid_request", "authenticate the client with one method only: Basic or client_secret in the body")
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required (use grant_type=client_credentials)")
        if grant_type != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only grant_type=client_credentials is supported")
        if basic:
            client_id, secret = _basic_credentials(authorization)
        elif "client_id" in form or "client_secret" in form:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        else:
            raise OAuthError("invalid_client", "client authentication is required: HTTP Basic, or client_id and "
                             "client_secret in the body", status=401, challenge=True)
        if not client_id or not secret:
            raise OAuthError("invalid_client", "client_id and client_secret are both required", status=401, challenge=basic)
        issued = await self._issue(client_id, secret, form.get("scope", ""), request.request_id, basic, trail)
        await self._check_ip(request, *_issued_to(issued.access_token), trail)
        return {"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
                "scope": issued.scope}

    async def _check_ip(self, request: Request, integration_id: str, org_id: str, trail: Trail) -> None:
        """The token's integration must allow the caller's address, as every API call checks."""
        trail.attribute(integration_id, org_id)
        try:
            check_ip(await self._integrations.get(integration_id, request.request_id), request.client_ip)
        except EdgeError as exc:
            if exc.code == "ip_not_allowed":
                # RFC 6749 section 8.5 allows codes beyond section 5.2's; this is the API's own
                # 403 code, so a client treats both alike and the log says what the client got.
                raise OAuthError("ip_not_allowed", exc.message, status=403) from None
            if exc.code == "integration_inactive":  # the registry does not know the integration
                raise OAuthError("invalid_client", "client authentication failed: unknown client, wrong secret, or "
                                 "credentials no longer valid", status=401) from None
            raise OAuthError("temporarily_unavailable", "the token service is unavailable; retry shortly",
                             status=503) from None

    async def _issue(self, client_id: str, secret: str, scope: str, request_id: str, basic: bool,
                     trail: Trail) -> identity_pb2.IssueTokenResponse:
        try:
            issued = await self._peers.issue_token(client_id, secret, scope, request_id)
        except errors.Unauthenticated as exc:
            _attribute(exc, trail)
            raise OAuthError("invalid_client", "client authentication failed: unknown client, wrong secret, or "
                             "credentials no longer valid", status=401, challenge=basic) from exc
        except errors.InvalidArgument as exc:
            _attribute(exc, trail)
            if exc.fields.get("error") == "invalid_scope":
                raise OAuthError("invalid_scope", str(exc).removeprefix("invalid_scope: ")) from exc
            raise OAuthError("invalid_request", str(exc)) from exc
        except errors.PermissionDenied as exc:
            log.error("identity refused the edge's service token: %s", exc)
            raise OAuthError("server_error", "the token service is misconfigured; retry later", status=500) from exc
        except errors.TrellisError as exc:
            raise OAuthError("temporarily_unavailable", "the token service is unavailable; retry shortly", status=503) from exc
        return issued


def openid_configuration(settings: PartnerSettings) -> dict[str, object]:
    """Discovery metadata (OpenID Connect Discovery / RFC 8414 fields for this server). Each URL
    is the setting's, which follows the edge's public address unless set (services.kit.settings);
    the JWKS is the one this edge serves."""
    return {
        "issuer": settings.token_issuer,
        "token_endpoint": settings.token_url,
        "jwks_uri": f"{settings.edge_public_url.rstrip('/')}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        # The algorithm access tokens are signed with (they are JWTs; verify them with jwks_uri).
        "access_token_signing_alg_values_supported": [settings.token_algorithm],
        "service_documentation": settings.api_docs_url,
    }


async def jwks_response(keys: KeySet, send: Send) -> None:
    document = (await keys.document()).encode()
    await send_bytes(send, 200, document, ((b"cache-control", b"public, max-age=60"),))
