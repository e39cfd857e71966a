"""The sign-in pages and the guard every page passes.

    GET  /signin            the sign-in page (local form in the embedded mode, a button otherwise)
    GET  /signin/oidc       starts an OIDC sign-in: state, nonce and PKCE kept, browser sent to the provider
    GET  /signin/callback   finishes it: one use per state, only in the browser that started it
    POST /signin/local      the embedded mode's local sign-in (absent otherwise)
    POST /signout           ends the session on every replica
"""

from __future__ import annotations

import hmac
import logging
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.console.errors import SignInRequired
from services.console.metrics import ConsoleMetrics
from services.console.pages import Renderer
from services.console.sessions import Session, SessionStore, new_secret
from services.console.signin.local import DEFAULT_ORG, ROLES, LocalSignIn, LocalSignInRefused
from services.console.signin.oidc import OidcSignIn, SignInFailed
from services.console.web import Cookies, check_csrf, read_form, safe_return

log = logging.getLogger(__name__)

# A token this close to its expiry is renewed before a page uses it.
RENEW_MARGIN_SECONDS = 60
SIGNIN_COOKIE_SECONDS = 600


class Auth:
    """Finds the signed-in user of a request, renewing their token when it is about to expire."""

    def __init__(self, store: SessionStore, cookies: Cookies, *, local: LocalSignIn | None, oidc: OidcSignIn | None,
                 session_ttl: int) -> None:
        self.store, self.cookies = store, cookies
        self.local, self.oidc = local, oidc
        self.session_ttl = session_ttl

    async def current(self, request: Request) -> Session | None:
        session = await self.store.load(request.cookies.get(self.cookies.session, ""))
        if session is None:
            return None
        if session.expires_at - RENEW_MARGIN_SECONDS > time.time():
            return session
        return await self._renew(session)

    async def require(self, request: Request) -> Session:
        """The signed-in user, or SignInRequired (back to this page afterwards)."""
        session = await self.current(request)
        if session is None:
            raise SignInRequired(return_to(request))
        return session

    async def _renew(self, session: Session) -> Session | None:
        if session.method == "local" and self.local is not None:
            self.local.renew(session)
            renewed = True
        elif session.method == "oidc" and self.oidc is not None:
            renewed = await self.oidc.refresh(session)
        else:
            renewed = False
        if not renewed:
            await self.store.end(session.id)
            return None
        if not await self.store.save(session):
            # Another replica renewed it at the same moment (a rotated refresh token is now
            # theirs): use what they stored.
            return await self.store.load(session.id)
        return session

    def start(self, response: Response, session: Session) -> None:
        """Give the browser the new session's id (a new id at every sign-in)."""
        response.set_cookie(self.cookies.session, session.id, **self.cookies.attributes(self.session_ttl))
        response.delete_cookie(self.cookies.signin, **self.cookies.attributes(None))


def return_to(request: Request) -> str:
    """Where to come back to after signing in: this page for a GET, the page the form was on otherwise."""
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return safe_return(target)
    referer = request.headers.get("referer", "")
    base = str(request.base_url)
    return safe_return("/" + referer[len(base):] if referer.startswith(base) else "")


class SignInPages:
    def __init__(self, auth: Auth, renderer: Renderer, metrics: ConsoleMetrics, *, issuer: str,
                 public_url: str) -> None:
        self.auth, self.render, self.metrics = auth, renderer, metrics
        self.issuer, self.public_url = issuer, public_url.rstrip("/")

    def routes(self) -> list[Route]:
        routes = [Route("/signin", self.page, methods=["GET"]), Route("/signout", self.signout, methods=["POST"])]
        if self.auth.oidc is not None:
            routes += [Route("/signin/oidc", self.start_oidc, methods=["GET"]),
                       Route("/signin/callback", self.callback, methods=["GET"])]
        if self.auth.local is not None:
            routes.append(Route("/signin/local", self.sign_in_locally, methods=["POST"]))
        return routes

    async def page(self, request: Request) -> Response:
        target = safe_return(request.query_params.get("next"))
        if await self.auth.current(request) is not None:
            return RedirectResponse(target, status_code=303)
        if self.auth.local is not None:
            return self._local_form(request, target, {"user": "", "org": DEFAULT_ORG, "role": "administrator"}, {})
        return self.render.page(request, "signin/oidc.html", {"issuer": self.issuer, "next": target, "problem": "",
                                                              "signed_out": request.query_params.get("signed_out") == "1"})

    # --- OpenID Connect ---------------------------------------------------------------------

    async def start_oidc(self, request: Request) -> Response:
        assert self.auth.oidc is not None
        target = safe_return(request.query_params.get("next"))
        try:
            url, pending = await self.auth.oidc.start(target)
        except SignInFailed as exc:
            return self._refused(request, target, str(exc), 503)
        browser = new_secret()
        await self.auth.store.begin_signin(browser, pending)
        response = RedirectResponse(url, status_code=302)
        response.set_cookie(self.auth.cookies.signin, browser, **self.auth.cookies.attributes(SIGNIN_COOKIE_SECONDS))
        return response

    async def callback(self, request: Request) -> Response:
        assert self.auth.oidc is not None
        params = request.query_params
        if params.get("error"):
            self.metrics.sign_ins.labels("oidc", "provider_error").inc()
            return self._refused(request, "/integrations", "The identity provider did not sign you in "
                                 f"({params.get('error', '')[:100]}). Start again.", 400)
        pending = await self.auth.store.finish_signin(request.cookies.get(self.auth.cookies.signin, ""),
                                                      params.get("state", ""))
        if pending is None:
            self.metrics.sign_ins.labels("oidc", "bad_state").inc()
            return self._refused(request, "/integrations", "This sign-in cannot be completed: it was already used, "
                                 "it expired, or it was started in another browser. Start again.", 400)
        try:
            session = await self.auth.oidc.finish(params.get("code", ""), pending)
        except SignInFailed as exc:
            self.metrics.sign_ins.labels("oidc", "refused").inc()
            return self._refused(request, pending.return_to, str(exc), 400)
        return await self._signed_in(request, session, pending.return_to)

    def _refused(self, request: Request, target: str, problem: str, status: int) -> Response:
        response = self.render.page(request, "signin/oidc.html", {"issuer": self.issuer, "next": target,
                                                                  "problem": problem, "signed_out": False}, status=status)
        response.delete_cookie(self.auth.cookies.signin, **self.auth.cookies.attributes(None))
        return response

    # --- local (embedded) -------------------------------------------------------------------

    def _local_form(self, request: Request, target: str, form: dict[str, str], errors: dict[str, str],
                    status: int = 200) -> Response:
        token = request.cookies.get(self.auth.cookies.signin) or new_secret()
        response = self.render.page(request, "signin/local.html", {
            "next": target, "form": form, "errors": errors, "roles": ROLES, "orgs": [DEFAULT_ORG],
            "signin_token": token}, status=status)
        # Double submit: the form's token must equal this cookie, so no other site can sign a
        # browser in as someone else (login CSRF).
        response.set_cookie(self.auth.cookies.signin, token, **self.auth.cookies.attributes(SIGNIN_COOKIE_SECONDS))
        return response

    async def sign_in_locally(self, request: Request) -> Response:
        assert self.auth.local is not None
        form = await read_form(request)
        target = safe_return(str(form.get("next") or ""))
        typed = {k: str(form.get(k) or "") for k in ("user", "org", "role")}
        cookie, given = request.cookies.get(self.auth.cookies.signin, ""), str(form.get("csrf") or "")
        if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
            self.metrics.sign_ins.labels("local", "bad_token").inc()
            return self._local_form(request, target, typed, {"user": "This sign-in form was out of date or came from "
                                                             "another site; check the details and sign in again."}, 403)
        try:
            session = self.auth.local.sign_in(typed["user"], typed["org"], typed["role"])
        except LocalSignInRefused as exc:
            return self._local_form(request, target, typed, {exc.field: exc.message}, 422)
        return await self._signed_in(request, session, target)

    # --- both -------------------------------------------------------------------------------

    async def _signed_in(self, request: Request, session: Session, target: str) -> Response:
        previous = request.cookies.get(self.auth.cookies.session)
        if previous:
            await self.auth.store.end(previous)  # whatever id the browser had is never reused
        session = await self.auth.store.create(session)
        self.metrics.sign_ins.labels(session.method, "ok").inc()
        log.info("signed in: user %s of %s (%s)", session.user_id, session.org_id, session.method)
        response = RedirectResponse(target, status_code=303)
        self.auth.start(response, session)
        return response

    async def signout(self, request: Request) -> Response:
        session = await self.auth.current(request)
        response: Response = RedirectResponse("/signin?signed_out=1", status_code=303)
        if session is not None:
            check_csrf(request, await read_form(request), session)
            await self.auth.store.end(session.id)
            if self.auth.oidc is not None:
                url = await self.auth.oidc.end_session_url(session, f"{self.public_url}/signin?signed_out=1")
                if url:
                    response = RedirectResponse(url, status_code=303)
        response.delete_cookie(self.auth.cookies.session, **self.auth.cookies.attributes(None))
        return response
