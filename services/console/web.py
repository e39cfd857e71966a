"""What every page shares: security headers (CSP, framing, caching), request ids, a bound on
request bodies, per-request metrics, traces and log lines, CSRF checks, cookies, and the check
that keeps a "return to" address on this site.

No business rule lives here: this is the transport of the console.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from starlette.datastructures import FormData
from starlette.requests import Request

from services.console.errors import BadForm
from services.console.metrics import ConsoleMetrics
from services.console.sessions import Session
from services.kit.logcontext import request_id_var
from services.kit.telemetry import current_span

log = logging.getLogger("services.console.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Forms are a few kilobytes (a 4,000-character description, 50 CIDRs); anything far larger is
# refused before it is read.
MAX_BODY_BYTES = 256 * 1024
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def content_security_policy(form_targets: tuple[str, ...] = ()) -> str:
    """No inline script or style, nothing from elsewhere, never framed. `form_targets` are the
    other origins a form may lead to (the identity provider's sign-out page)."""
    forms = " ".join(("'self'", *form_targets))
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            f"font-src 'self'; form-action {forms}; frame-ancestors 'none'; base-uri 'none'")


class PageShell:
    """ASGI middleware around the whole console: request id, security headers, body bound,
    one metric, one span and one log line per request (the route's template, never the query)."""

    def __init__(self, app: ASGIApp, *, metrics: ConsoleMetrics, csp: str, route_of: Callable[[Scope], str]) -> None:
        self._app, self._metrics, self._route_of = app, metrics, route_of
        self._tracer = trace.get_tracer("services.console")
        self._headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        given = headers.get("x-request-id", "")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
        request_id_var.set(request_id)
        static = scope["path"].startswith("/static/")
        status = 0
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            receive = _refuse_body
        else:
            receive = _bounded(receive)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Server-Timing: the time the console took, as browsers' developer tools show it.
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                extra = list(self._headers) + [(b"x-request-id", request_id.encode()), (b"server-timing", took)]
                present = {k.lower() for k, _ in message.get("headers", ())}
                if b"cache-control" not in present:
                    # Every page is one user's view of their organisation: never kept by a cache.
                    extra.append((b"cache-control", b"public, max-age=3600" if static else b"no-store"))
                message["headers"] = list(message.get("headers", ())) + extra
            await send(message)

        context = propagate.extract(headers)
        with current_span(self._tracer, f"{scope['method']} console", context=context, kind=trace.SpanKind.SERVER) as span:
            try:
                await self._app(scope, receive, send_with_headers)
            finally:
                route = self._route_of(scope)
                elapsed = time.perf_counter() - started
                self._metrics.observe(route, scope["method"], status or 500, elapsed)
                if span.is_recording():
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attributes({"http.request.method": scope["method"], "http.route": route,
                                         "http.response.status_code": status or 500, "trellis.request_id": request_id})
                if not static:
                    log.info("%s %s %d %.1fms", scope["method"], route, status or 500, elapsed * 1000)


class BodyTooLarge(Exception):
    pass


async def _refuse_body() -> Message:
    raise BodyTooLarge()


def _bounded(receive: Receive) -> Receive:
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge()
        return message

    return bounded


async def read_form(request: Request, *, files: int = 0) -> FormData:
    """The request's form (URL-encoded, or multipart with at most `files` files), bounded in size."""
    try:
        return await request.form(max_files=files, max_fields=400, max_part_size=MAX_BODY_BYTES)
    except BodyTooLarge:
        raise BadForm("Form too large", f"This form is larger than {MAX_BODY_BYTES // 1024} KiB, so it was not read "
                      "and nothing was saved. Go back, shorten what you entered, and submit again.", 413) from None
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
        raise BadForm("Form not readable", f"The form could not be read ({type(exc).__name__}); nothing was saved.") from None


def check_csrf(request: Request, form: FormData, session: Session) -> None:
    """Refuse a state change whose CSRF token is not this session's (form field or htmx header)."""
    given = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")
    if not given or not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
        raise BadForm("Request refused", "This form was not sent by this console page for your current sign-in (its "
                      "security token is missing or out of date), so nothing was changed. Reload the page and try "
                      "again.", 403)


def safe_return(target: str | None, default: str = "/integrations") -> str:
    """`target` when it is a path on this site, else `default`: never another site (no open
    redirect through `//host`, `/\\host`, a scheme, or control characters)."""
    if not target or len(target) > 2000:
        return default
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x20 or c == "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def is_htmx(request: Request) -> bool:
    """An htmx request wants the fragment of the page, not the whole page."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


class Cookies:
    """Names and attributes of the console's two cookies: the session id and the sign-in binding.

    HttpOnly, SameSite=Lax and Path=/ always; Secure and the `__Host-` prefix unless the console
    is served over plain HTTP in the embedded mode (a laptop's http://127.0.0.1:8081)."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        prefix = "__Host-" if secure else ""
        self.session = f"{prefix}trellis_session"
        self.signin = f"{prefix}trellis_signin"

    def attributes(self, max_age: int | None) -> dict[str, Any]:
        values: dict[str, Any] = {"httponly": True, "samesite": "lax", "path": "/", "secure": self.secure}
        if max_age is not None:
            values["max_age"] = max_age
        return values
