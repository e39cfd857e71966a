"""An OpenID Connect provider for tests, at the console's I/O seam: the console signs in against
it exactly as against Keycloak, Auth0 or Entra ID (discovery, JWKS, authorization code with PKCE
and nonce, refresh tokens).

Built on Authlib's authorization-server components (rfc6749 AuthorizationServer and grants,
rfc7636 CodeChallenge, OpenID Connect's OpenIDCode, rfc9068 JWT access tokens) behind a small
Starlette app served by uvicorn on 127.0.0.1:0. Its access tokens are actor tokens (claims
`org` and `permissions`, audience `trellis`), signed with the key whose JWKS the services use.

The login page is a form (user name); `Tamper` makes the provider misbehave the ways an
attacker would need it to: an ID token for another nonce, from another issuer, already expired,
or signed by a key the JWKS does not hold.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class User:
    sub: str
    name: str
    org: str
    permissions: list[str]

    def get_user_id(self) -> str:
        return self.sub


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "profile", "email", "offline_access"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    nonce: str
    code_challenge: str
    code_challenge_method: str
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class RefreshToken:
    token: str
    client_id: str
    user: str
    scope: str
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 86400

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user


@dataclass
class Tamper:
    """Ways to make the provider's next answers wrong (all off by default)."""

    id_token_nonce: str | None = None      # an ID token for another nonce
    id_token_issuer: str | None = None     # ... from another issuer
    id_token_expired: bool = False         # ... that expired an hour ago
    foreign_key: bool = False              # ... signed by a key the JWKS does not hold
    access_token_issuer: str | None = None  # an access token from another issuer


class _Payload(OAuth2Payload):
    def __init__(self, data: dict[str, list[str]]) -> None:
        self._datalist = data

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._datalist.items() if v}

    @property
    def datalist(self) -> dict[str, list[str]]:  # type: ignore[override]
        return self._datalist


class _Request(OAuth2Request):
    """An Authlib request made from a Starlette request already read."""

    def __init__(self, method: str, url: str, headers: dict[str, str], query: dict[str, list[str]],
                 form: dict[str, list[str]]) -> None:
        super().__init__(method, url, headers=headers)
        self._args = {k: v[0] for k, v in query.items()}
        self._form = {k: v[0] for k, v in form.items()}
        self.payload = _Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


async def _request(request: Request) -> _Request:
    form = await request.form() if request.method == "POST" else None
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    posted: dict[str, list[str]] = {}
    for key, value in (form.multi_items() if form is not None else ()):
        posted.setdefault(key, []).append(str(value))
    return _Request(request.method, str(request.url), request.headers, query, posted)  # type: ignore[arg-type]


class OidcProvider:
    """The provider: start() serves it on loopback; `issuer` is its URL."""

    def __init__(self, *, audience: str = "trellis", access_token_ttl: int = 600) -> None:
        self.audience, self.access_token_ttl = audience, access_token_ttl
        self.key = ECKey.generate_key("P-256", parameters={"kid": "test-1", "use": "sig", "alg": "ES256"},
                                      private=True)
        self.foreign = ECKey.generate_key("P-256", parameters={"kid": "test-1", "alg": "ES256"}, private=True)
        self.users: dict[str, User] = {}
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.nonces: set[str] = set()
        self.tamper = Tamper()
        self.token_requests = 0
        self.issuer = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._authorization = self._make_server()

    # --- what tests set up ------------------------------------------------------------------

    def add_user(self, name: str, org: str, permissions: list[str]) -> User:
        user = self.users[name] = User(sub=f"usr_{name}", name=name.capitalize(), org=org, permissions=permissions)
        return user

    def add_client(self, client_id: str, client_secret: str, redirect_uri: str) -> Client:
        client = self.clients[client_id] = Client(client_id, client_secret, [redirect_uri])
        return client

    def public_key_pem(self) -> bytes:
        """The signing key's public half as PEM (for services verifying actor tokens from a file)."""
        key = serialization.load_pem_private_key(self.key.as_pem(private=True), password=None)
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # --- serving ----------------------------------------------------------------------------

    async def start(self) -> "OidcProvider":
        """Serve on 127.0.0.1 in a thread of its own: the services under test fetch its JWKS with
        blocking I/O (PyJWKClient), which would otherwise wait on the loop that must answer it."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._authorization = self._make_server()
        app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize, methods=["GET", "POST"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/logout", self._logout),
        ])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True,
                                        name="oidc-provider")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test OIDC provider did not start")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            await asyncio.to_thread(self._thread.join, 10)

    # --- Authlib's server, wired to this provider ---------------------------------------------

    def _make_server(self) -> AuthorizationServer:
        provider = self

        class Server(AuthorizationServer):
            def query_client(self, client_id: str) -> Client | None:
                return provider.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
                if token.get("refresh_token"):
                    provider.refresh_tokens[token["refresh_token"]] = RefreshToken(
                        token["refresh_token"], request.client.client_id, request.user.sub, token.get("scope", ""))

            def create_oauth2_request(self, request: Any) -> Any:
                return request

            def create_json_request(self, request: Any) -> Any:
                return request

            def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
                return status, body, headers

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                pass

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                data = request.payload.data
                provider.codes[code] = AuthCode(code, request.client.client_id, data.get("redirect_uri", ""),
                                                data.get("scope", ""), request.user.sub, data.get("nonce", ""),
                                                data.get("code_challenge", ""), data.get("code_challenge_method", ""))
                provider.nonces.add(data.get("nonce", ""))

            def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
                found = provider.codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: AuthCode) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: AuthCode) -> User:
                return next(u for u in provider.users.values() if u.sub == authorization_code.user)

        class Refresh(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
                found = provider.refresh_tokens.get(refresh_token)
                return found if found is not None and not found.revoked else None

            def authenticate_user(self, refresh_token: RefreshToken) -> User:
                return next(u for u in provider.users.values() if u.sub == refresh_token.user)

            def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
                refresh_token.revoked = True

        class IdTokens(OpenIDCode):
            def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
                return nonce in provider.nonces

            def resolve_client_private_key(self, client: Client) -> ECKey:
                return provider.foreign if provider.tamper.foreign_key else provider.key

            def get_client_algorithm(self, client: Client) -> str:
                return "ES256"

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "ES256", "kid": "test-1"}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                now = int(time.time())
                exp = now - 3600 if provider.tamper.id_token_expired else now + 300
                return {"iss": provider.tamper.id_token_issuer or provider.issuer, "aud": [client.client_id],
                        "iat": now - 7200 if provider.tamper.id_token_expired else now, "exp": exp}

            def get_authorization_code_claims(self, authorization_code: AuthCode) -> dict[str, Any]:
                claims = super().get_authorization_code_claims(authorization_code)
                if provider.tamper.id_token_nonce is not None:
                    claims["nonce"] = provider.tamper.id_token_nonce
                return claims

            def generate_user_info(self, user: User, scope: str) -> UserInfo:
                return UserInfo(sub=user.sub, name=user.name, email=f"{user.sub}@example.test")

        class AccessTokens(JWTBearerTokenGenerator):
            def get_jwks(self) -> KeySet:
                return KeySet([provider.key])

            def get_audiences(self, client: Client, user: User, scope: str) -> str:
                return provider.audience

            def get_extra_claims(self, client: Client, grant_type: str, user: User, scope: str) -> dict[str, Any]:
                extra: dict[str, Any] = {"org": user.org, "permissions": user.permissions}
                if provider.tamper.access_token_issuer:
                    extra["iss"] = provider.tamper.access_token_issuer
                return extra

        server = Server()
        server.register_token_generator("default", AccessTokens(
            provider.issuer or "http://unset", alg="ES256", refresh_token_generator=lambda *a, **k: secrets.token_urlsafe(32),
            expires_generator=lambda client, grant_type: provider.access_token_ttl))
        server.register_grant(CodeGrant, [CodeChallenge(required=True), IdTokens(require_nonce=True)])
        server.register_grant(Refresh)
        return server

    # --- endpoints --------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "end_session_endpoint": f"{self.issuer}/logout", "response_types_supported": ["code"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"], "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        })

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: Request) -> Response:
        oauth_request = await _request(request)
        if request.method == "GET":
            query = urlencode(list(request.query_params.multi_items()))
            return HTMLResponse(f"""<!doctype html><title>Test identity provider</title>
<h1>Test identity provider</h1>
<form method="post" action="/authorize?{query.replace('&', '&amp;')}">
<label for="username">User name</label><input id="username" name="username">
<button type="submit">Sign in</button></form>""")
        user = self.users.get(oauth_request.form.get("username", ""))
        oauth_request.user = user
        status, body, headers = self._authorization.create_authorization_response(oauth_request, grant_user=user)
        return Response(body if isinstance(body, str) else json.dumps(body) if body else b"", status_code=status,
                        headers=dict(headers))

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        status, body, headers = self._authorization.create_token_response(await _request(request))
        return Response(json.dumps(body), status_code=status, headers=dict(headers))

    async def _logout(self, request: Request) -> Response:
        target = request.query_params.get("post_logout_redirect_uri", "/")
        return RedirectResponse(target, status_code=302)
