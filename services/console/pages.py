"""Rendering: one Jinja2 environment (autoescaped), the layout's shared context, and the
pages every area uses for a refusal or an error. A fragment is the same template rendered
without its layout (`fragment=`), for htmx."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from services.console import formats
from services.console.integrations import views
from services.console.setup_requests import views as setup
from services.console.webhooks import views as hooks
from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as wpb
from services.console.sessions import Session
from services.console.web import is_htmx
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, QA_PERMISSION

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def _static_versions() -> dict[str, str]:
    """File name -> a digest of its content, so a changed file gets a new URL and can be cached."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in STATIC.iterdir() if p.is_file()}


class Renderer:
    """Renders templates with the layout's context: the session, its CSRF token, the mode."""

    def __init__(self, *, embedded: bool) -> None:
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(default=True),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            # Templates ship with the code: no stat() of every template file on every page.
            auto_reload=False)
        versions = _static_versions()
        environment.globals.update(
            static=lambda name: f"/static/{name}?v={versions.get(name, '0')}",
            ADMIN=ADMIN_PERMISSION, QA=QA_PERMISSION, status_name=views.status_name, when=views.when,
            when_iso=views.when_iso, when_seconds=formats.when_seconds, when_ms=formats.when_ms, iso=formats.iso,
            plural=formats.plural, millis=formats.millis,
            webhook_status=hooks.status_name, scheme_label=hooks.scheme_label, types_label=hooks.types_label,
            attempt_error=hooks.attempt_error, next_attempt=hooks.next_attempt, delivery_status=hooks.delivery_status,
            HOOK_ACTIVE=wpb.SUBSCRIPTION_STATUS_ACTIVE, HOOK_PAUSED=wpb.SUBSCRIPTION_STATUS_PAUSED,
            HOOK_FAILING=wpb.SUBSCRIPTION_STATUS_FAILING, HOOK_DISABLED=wpb.SUBSCRIPTION_STATUS_DISABLED,
            DELIVERY_PENDING=wpb.DELIVERY_STATUS_PENDING, STANDARD_WEBHOOKS=wpb.SIGNATURE_SCHEME_STANDARD_WEBHOOKS,
            OVERLAPS=hooks.OVERLAPS,
            PLATFORM=PLATFORM_PERMISSION, setup_status=setup.status_name, setup_slug=setup.status_slug,
            SETUP_SUBMITTED=rpb.SETUP_REQUEST_STATUS_SUBMITTED, SETUP_IN_PROGRESS=rpb.SETUP_REQUEST_STATUS_IN_PROGRESS,
            SETUP_CONFIGURED=rpb.SETUP_REQUEST_STATUS_CONFIGURED, SETUP_DECLINED=rpb.SETUP_REQUEST_STATUS_DECLINED,
        )
        self.templates = Jinja2Templates(env=environment)
        self._embedded = embedded

    def page(self, request: Request, name: str, context: dict[str, Any] | None = None, *,
             session: Session | None = None, status: int = 200, headers: dict[str, str] | None = None,
             fragment: str | None = None) -> HTMLResponse:
        values = {"session": session, "embedded": self._embedded, "area": "", **(context or {})}
        if fragment is not None:
            html = self.templates.get_template(fragment).render(request=request, **values)
            return HTMLResponse(html, status_code=status, headers=headers)
        return self.templates.TemplateResponse(request, name, values, status_code=status, headers=headers)

    def error(self, request: Request, title: str, message: str, *, status: int, session: Session | None = None,
              back: str = "", back_label: str = "") -> HTMLResponse:
        context = {"title": title, "message": message, "back": back, "back_label": back_label}
        fragment = "errors/_message.html" if is_htmx(request) else None
        return self.page(request, "errors/page.html", context, session=session, status=status, fragment=fragment)
