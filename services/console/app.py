"""The console as one Starlette application: the sign-in pages, the integration pages, the
other areas (webhooks, API logs, audit, review), health and metrics, the error pages, and the
page shell (services.console.web.PageShell) around it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from urllib.parse import quote

from services.console.errors import BadForm, Refused, SignInRequired
from services.console.integrations.routes import IntegrationPages
from services.console.metrics import ConsoleMetrics
from services.console.pages import STATIC, Renderer
from services.console.signin.routes import Auth, SignInPages
from services.console.web import PageShell, Scope, is_htmx

Ready = Callable[[], Awaitable[dict[str, bool]]]


class Pages(Protocol):
    def routes(self) -> list[Route]: ...


class Console:
    """Builds the ASGI application from parts bootstrap made."""

    def __init__(self, *, auth: Auth, renderer: Renderer, metrics: ConsoleMetrics, signin: SignInPages,
                 integrations: IntegrationPages, ready: Ready, csp: str, serve_metrics: bool,
                 areas: Sequence[Pages] = ()) -> None:
        self.auth, self.render, self.metrics = auth, renderer, metrics
        self._ready = ready
        routes: list[BaseRoute] = [
            Route("/", self.home, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            *signin.routes(),
            *integrations.routes(),
            *(route for area in areas for route in area.routes()),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        if serve_metrics:
            routes.append(Route("/metrics", self.metrics_text, methods=["GET"]))
        self._templates = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
        self.starlette = Starlette(routes=routes, exception_handlers={
            SignInRequired: self._sign_in_required, BadForm: self._bad_form, Refused: self._refused,
            HTTPException: self._http_error, Exception: self._server_error,
        })
        self.app = PageShell(self.starlette, metrics=metrics, csp=csp, route_of=self._route_of)

    def _route_of(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is not None and endpoint in self._templates:
            return self._templates[endpoint]
        return "/static" if str(scope.get("path", "")).startswith("/static/") else "unmatched"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # --- pages ------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return self.render.page(request, "home.html", session=session)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        checks = await self._ready()
        ready = all(checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(await self.metrics.render(), media_type=self.metrics.content_type)

    # --- errors -----------------------------------------------------------------------------

    async def _sign_in_required(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        target = "/signin?next=" + quote(exc.return_to, safe="/")
        if is_htmx(request):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    async def _bad_form(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadForm)
        return self.render.error(request, exc.title, exc.message, status=exc.status,
                                 session=await self.auth.current(request))

    async def _refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return self.render.error(request, exc.refusal.title, exc.refusal.message, status=exc.refusal.status,
                                 session=await self.auth.current(request))

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return self.render.error(request, "Page not found", "There is no such page in the console.", status=404)
        if exc.status_code == 405:
            return self.render.error(request, "Not allowed", "This page does not accept that kind of request.",
                                     status=405)
        return self.render.error(request, "Request refused", str(exc.detail)[:200], status=exc.status_code)

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        return self.render.error(request, "Something went wrong", "The console could not answer this request. "
                                 "Nothing is known to have changed; reload the page to check.", status=500)
