"""Production sign-in: OpenID Connect authorization code flow with PKCE (S256), `state` and
`nonce`, against TRELLIS_ACTOR_ISSUER with Authlib's client (discovery, JWKS, token endpoint).

The ID token proves who signed in (signature from the issuer's JWKS, issuer, audience = our
client id, expiry, nonce, at_hash); the access token is the actor token every page sends to
the services, so it is verified as they verify it (services.kit.auth.ActorVerifier) before a
session is made. Tokens stay on the server (services.console.sessions).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx2
import jwt
from authlib.integrations.base_client import BaseApp, OAuthError
from authlib.integrations.base_client.async_app import AsyncOAuth2Mixin
from authlib.integrations.base_client.async_openid import AsyncOpenIDMixin
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc.errors import JoseError

from services.console.sessions import PendingSignIn, Session
from services.kit.auth import Actor, ActorVerifier
from services.kit.errors import Unauthenticated

if TYPE_CHECKING:
    from services.console.entrypoints.settings import ConsoleProcessSettings

log = logging.getLogger(__name__)

HTTP_TIMEOUT_SECONDS = 10.0
ID_TOKEN_LEEWAY_SECONDS = 30


class SignInFailed(Exception):
    """A sign-in that cannot be completed; the message is for the person signing in."""


class _OidcApp(AsyncOAuth2Mixin, AsyncOpenIDMixin, BaseApp):  # type: ignore[misc]  # Authlib has no stubs here: its bases are Any
    """Authlib's OAuth 2 / OpenID client without a web framework: the console keeps the state itself."""

    client_cls = AsyncOAuth2Client


class OidcSignIn:
    """Starts and finishes sign-ins, and refreshes access tokens, for one client of one issuer."""

    def __init__(self, settings: ConsoleProcessSettings, verifier: ActorVerifier) -> None:
        if not settings.console_oidc_client_id:
            raise ValueError("TRELLIS_CONSOLE_OIDC_CLIENT_ID must be set: the console's client at the identity provider")
        secret = settings.console_oidc_client_secret.get_secret_value()
        self._issuer = settings.actor_issuer
        discovery = settings.console_oidc_discovery_url or (
            settings.actor_issuer.rstrip("/") + "/.well-known/openid-configuration")
        self._app = _OidcApp(
            framework=None, name="trellis", client_id=settings.console_oidc_client_id, client_secret=secret or None,
            server_metadata_url=discovery,
            client_kwargs={"scope": settings.console_oidc_scopes, "code_challenge_method": "S256",
                           "timeout": HTTP_TIMEOUT_SECONDS,
                           "token_endpoint_auth_method": "client_secret_basic" if secret else "none"},
        )
        self._audience = settings.console_oidc_audience
        self._redirect_uri = settings.console_public_url.rstrip("/") + "/signin/callback"
        self._verifier = verifier

    async def metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (fetched once); it must name our issuer."""
        try:
            metadata: dict[str, Any] = await self._app.load_server_metadata()
        except (httpx2.HTTPError, ValueError) as exc:
            self._app.server_metadata.clear()
            raise SignInFailed("The identity provider cannot be reached right now; try again in a moment.") from exc
        if metadata.get("issuer") != self._issuer:
            self._app.server_metadata.clear()
            raise SignInFailed("The identity provider's discovery document names another issuer than the one "
                               "configured (TRELLIS_ACTOR_ISSUER); sign-in is refused.")
        return metadata

    async def end_session_url(self, session: Session, after: str) -> str:
        """Where to send the browser to sign out at the provider too, or "" if it has no such page."""
        try:
            metadata = await self.metadata()
        except SignInFailed:
            return ""
        if not metadata.get("end_session_endpoint"):
            return ""
        result = await self._app.create_logout_url(post_logout_redirect_uri=after, id_token_hint=session.id_token or None)
        return str(result["url"])

    async def start(self, return_to: str) -> tuple[str, PendingSignIn]:
        """The provider's authorization URL to send the browser to, and what the callback will need."""
        await self.metadata()
        extra = {"audience": self._audience} if self._audience else {}
        made = await self._app.create_authorization_url(self._redirect_uri, **extra)
        return str(made["url"]), PendingSignIn(state=made["state"], nonce=made["nonce"],
                                               code_verifier=made["code_verifier"], return_to=return_to)

    async def finish(self, code: str, pending: PendingSignIn) -> Session:
        """Exchange the code (with the PKCE verifier), check both tokens, and make the session."""
        if not code:
            raise SignInFailed("The identity provider sent no authorization code back; start again.")
        try:
            token = await self._app.fetch_access_token(redirect_uri=self._redirect_uri, code=code,
                                                       code_verifier=pending.code_verifier)
        except (OAuthError, httpx2.HTTPError, ValueError) as exc:
            log.warning("the identity provider refused the code exchange: %s", exc)
            raise SignInFailed("The identity provider refused to complete this sign-in; start again.") from exc
        if "id_token" not in token or "access_token" not in token:
            raise SignInFailed("The identity provider returned no ID token; is `openid` among "
                               "TRELLIS_CONSOLE_OIDC_SCOPES?")
        try:
            claims = await self._app.parse_id_token(token, nonce=pending.nonce, leeway=ID_TOKEN_LEEWAY_SECONDS)
        except (JoseError, OAuthError, ValueError, KeyError, httpx2.HTTPError) as exc:
            log.warning("an ID token was refused: %s", type(exc).__name__)
            raise SignInFailed("The identity provider's answer did not prove who signed in (its ID token was "
                               "refused); sign-in is refused.") from exc
        actor, expires_at = await self._actor(str(token["access_token"]))
        if actor.user_id != claims.get("sub"):
            raise SignInFailed("The access token and the ID token name different users; sign-in is refused.")
        name = claims.get("name") or claims.get("preferred_username") or claims.get("email") or actor.user_id
        return Session(user_id=actor.user_id, org_id=actor.org_id, permissions=sorted(actor.permissions),
                       access_token=actor.token, expires_at=expires_at, method="oidc", display_name=str(name),
                       refresh_token=str(token.get("refresh_token") or ""), id_token=str(token["id_token"]))

    async def refresh(self, session: Session) -> bool:
        """Renew the session's access token with its refresh token; False when that is not possible."""
        if not session.refresh_token:
            return False
        try:
            metadata = await self.metadata()
            async with self._app._get_oauth_client(**metadata) as client:  # Authlib's own client factory
                token = await client.refresh_token(metadata["token_endpoint"], refresh_token=session.refresh_token)
            actor, expires_at = await self._actor(str(token["access_token"]))
        except (SignInFailed, OAuthError, httpx2.HTTPError, KeyError, ValueError) as exc:
            log.info("a session's token could not be refreshed: %s", type(exc).__name__)
            return False
        if (actor.user_id, actor.org_id) != (session.user_id, session.org_id):
            return False
        session.access_token, session.expires_at = actor.token, expires_at
        session.permissions = sorted(actor.permissions)
        session.refresh_token = str(token.get("refresh_token") or session.refresh_token)
        return True

    async def _actor(self, access_token: str) -> tuple[Actor, float]:
        """The access token verified as the services will verify it, and when it expires."""
        try:
            # PyJWKClient fetches the JWKS with blocking I/O: off the event loop.
            actor = await asyncio.to_thread(self._verifier.verify, access_token)
        except Unauthenticated as exc:
            raise SignInFailed("The identity provider's access token is not one Trellis accepts (" + exc.message +
                               "); check the issuer, the audience and the org and permissions claims.") from exc
        expires_at = float(jwt.decode(access_token, options={"verify_signature": False})["exp"])
        if expires_at <= time.time():
            raise SignInFailed("The identity provider's access token has already expired; check the clocks.")
        return actor, expires_at
