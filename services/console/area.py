"""What the pages of an area share: the signed-in user, their stubs, a form read with its CSRF
check, rendering in the area's layout, and a refusal shown as the area's error page."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from services.console.errors import Refusal
from services.console.pages import Renderer
from services.console.peers import AsUser, Peers
from services.console.sessions import Session
from services.console.signin.routes import Auth
from services.console.web import check_csrf, read_form

NO_STORE = {"Cache-Control": "no-store"}


class Area:
    """One area of the console (webhooks, logs, audit, review): its name in the navigation, where
    its refusals lead back to, and the helpers every route of it uses."""

    name = ""
    home = "/"
    home_label = "Back to the console"

    def __init__(self, peers: Peers, auth: Auth, renderer: Renderer) -> None:
        self.peers, self.auth, self.render = peers, auth, renderer

    def stub(self, service: str, session: Session) -> AsUser:
        """The service's stub calling as this user (their actor token)."""
        return self.peers.as_user(service, session.access_token)

    async def posted(self, request: Request) -> tuple[Session, FormData]:
        """The user and the form of a state change, refused without this session's CSRF token."""
        session = await self.auth.require(request)
        form = await read_form(request)
        check_csrf(request, form, session)
        return session, form

    def page(self, request: Request, name: str, session: Session, context: dict[str, Any], *, status: int = 200,
             fragment: str | None = None, headers: dict[str, str] | None = None) -> Response:
        return self.render.page(request, name, {"area": self.name, **context}, session=session, status=status,
                                fragment=fragment, headers=headers)

    def lacks(self, request: Request, session: Session, permission: str) -> Response | None:
        """The page a user without `permission` gets in place of a form they could not send (the
        service would refuse it: the same words as its refusal)."""
        if session.can(permission):
            return None
        return self.refused(request, session, Refusal(
            "permission", "You do not have access", f"Your account does not have the {permission} permission this "
            "needs. Ask an administrator of your organisation to grant it.", 403))

    def refused(self, request: Request, session: Session, refusal: Refusal, *, back: str = "",
                back_label: str = "") -> Response:
        return self.render.error(request, refusal.title, refusal.message, status=refusal.status, session=session,
                                 back=back or self.home, back_label=back_label or self.home_label)
