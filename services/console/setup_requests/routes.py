"""Administration > Integrations > Set Up an Integration, and the platform team's setup queue.
Each route reads a form or a query, calls the registry as the signed-in user, and renders a
template; the registry decides every rule (who may submit, see or handle a request, and which
step a state allows).

    GET  /setup-requests                   the organisation's setup requests (status filter)
    GET  /setup-requests/new               choose a pre-built integration (WooCommerce, Shopify, QuickBooks Online)
    GET  /setup-requests/new/{prebuilt}    its request form;  POST /setup-requests  submits it
    GET  /setup-requests/{id}              detail: status, connection details (secrets only "given, hidden"), history
    POST /setup-requests/{id}/start|complete|decline     the platform team's steps
    POST /setup-requests/{id}/secrets      the platform team reads the connection secrets (In
                                           progress only): shown on that answer alone, never cached
    GET  /setup-queue                      every organisation's requests, oldest first (platform operators)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.console.area import NO_STORE, Area
from services.console.errors import Refusal, Refused
from services.console.pages import Renderer
from services.console.peers import AsUser, Peers
from services.console.sessions import Session, new_secret
from services.console.setup_requests import views
from services.console.setup_requests.forms import FIELD_PREFIX, SetupForm
from services.console.signin.routes import Auth
from services.console.web import is_htmx
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION

PAGE_SIZE = 50
CATALOGUE_SECONDS = 300.0
DONE = {
    "submitted": "Request submitted. Follow it here, or in Setup requests.",
    "started": "Started. The organisation sees the request as In progress.",
    "configured": "Marked as configured. The organisation sees the request as Configured, with your note.",
    "declined": "Declined. The organisation sees the request as Declined, with your reason.",
}
# The form fields a refusal may name, besides the connection details.
_FORM_FIELDS = ("contact_email", "notes")


class Prebuilt:
    """The registry's catalogue of pre-built integrations (the same for everyone), kept a while."""

    def __init__(self) -> None:
        self._at = 0.0
        self.integrations: list[pb.PrebuiltIntegration] = []

    async def load(self, registry: AsUser) -> "Prebuilt":
        if time.monotonic() - self._at > CATALOGUE_SECONDS or not self.integrations:
            answer = await registry.ListPrebuiltIntegrations(pb.ListPrebuiltIntegrationsRequest())
            self.integrations = list(answer.integrations)
            self._at = time.monotonic()
        return self

    def entry(self, prebuilt_id: str) -> pb.PrebuiltIntegration | None:
        return next((p for p in self.integrations if p.id == prebuilt_id), None)

    def name(self, prebuilt_id: str) -> str:
        return views.prebuilt_name(self.integrations, prebuilt_id)


class SetupRequestPages(Area):
    name = "setup_requests"
    home = "/setup-requests"
    home_label = "Back to setup requests"

    def __init__(self, peers: Peers, auth: Auth, renderer: Renderer) -> None:
        super().__init__(peers, auth, renderer)
        self.catalogue = Prebuilt()

    def routes(self) -> list[Route]:
        one = "/setup-requests/{setup_request_id:str}"
        return [
            Route("/setup-requests", self.list, methods=["GET"]),
            Route("/setup-requests", self.create, methods=["POST"]),
            Route("/setup-requests/new", self.choose, methods=["GET"]),
            Route("/setup-requests/new/{prebuilt_id:str}", self.new, methods=["GET"]),
            Route(one, self.detail, methods=["GET"]),
            Route(f"{one}/start", self.start, methods=["POST"]),
            Route(f"{one}/complete", self.complete, methods=["POST"]),
            Route(f"{one}/decline", self.decline, methods=["POST"]),
            Route(f"{one}/secrets", self.reveal, methods=["POST"]),
            Route("/setup-queue", self.queue, methods=["GET"]),
        ]

    def _registry(self, session: Session) -> AsUser:
        return self.stub("registry", session)

    # --- lists ------------------------------------------------------------------------------

    async def _listed(self, request: Request, session: Session, *, queue: bool) -> Response:
        registry = self._registry(session)
        chosen = [s for s in request.query_params.getlist("status") if s in views.STATUS_BY_SLUG]
        token = request.query_params.get("page", "")[:500]
        try:
            page, catalogue = await asyncio.gather(
                registry.ListSetupRequests(pb.ListSetupRequestsRequest(
                    statuses=[views.STATUS_BY_SLUG[s] for s in chosen], all_organisations=queue,
                    page_size=PAGE_SIZE, page_token=token)),
                self.catalogue.load(registry))
        except Refused as exc:
            return self.refused(request, session, exc.refusal, back="/")
        path = "/setup-queue" if queue else "/setup-requests"
        context = {"requests": page.setup_requests, "next_page": page.next_page_token, "chosen": chosen,
                   "statuses": views.STATUS_BY_SLUG, "prebuilt_name": catalogue.name, "queue": queue, "path": path,
                   "area": "setup_queue" if queue else self.name}
        name = "setup_requests/queue.html" if queue else "setup_requests/list.html"
        fragment = "setup_requests/_table.html" if is_htmx(request) else None
        return self.page(request, name, session, context, fragment=fragment)

    async def list(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return await self._listed(request, session, queue=False)

    async def queue(self, request: Request) -> Response:
        session = await self.auth.require(request)
        if not session.can(PLATFORM_PERMISSION):
            return self.refused(request, session, Refusal(
                "permission", "You do not have access", f"The setup queue is the platform team's: it needs the "
                f"{PLATFORM_PERMISSION} permission, which only the Trellis platform team holds. Your organisation's "
                "own requests are under Setup requests.", 403), back="/setup-requests", back_label="Setup requests")
        return await self._listed(request, session, queue=True)

    # --- submit -----------------------------------------------------------------------------

    async def choose(self, request: Request) -> Response:
        session = await self.auth.require(request)
        if (refused := self.lacks(request, session, ADMIN_PERMISSION)) is not None:
            return refused
        try:
            catalogue = await self.catalogue.load(self._registry(session))
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        return self.page(request, "setup_requests/choose.html", session, {"integrations": catalogue.integrations})

    async def new(self, request: Request) -> Response:
        session = await self.auth.require(request)
        if (refused := self.lacks(request, session, ADMIN_PERMISSION)) is not None:
            return refused
        return await self._form(request, session, request.path_params["prebuilt_id"], None, {})

    async def _form(self, request: Request, session: Session, prebuilt_id: str, form: SetupForm | None,
                    errors: dict[str, str], *, refusal: Refusal | None = None, status: int = 200) -> Response:
        try:
            catalogue = await self.catalogue.load(self._registry(session))
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        entry = catalogue.entry(prebuilt_id)
        if entry is None:
            return self.refused(request, session, Refusal(
                "not_found", "Not found", "There is no such pre-built integration. Choose one of those offered.", 404),
                back="/setup-requests/new", back_label="Choose a pre-built integration")
        form = form if form is not None else SetupForm(prebuilt_id=entry.id)
        return self.page(request, "setup_requests/form.html", session, {
            "entry": entry, "form": form.without_secrets(entry), "errors": errors, "refusal": refusal,
            "prefix": FIELD_PREFIX, "intent": form.intent or new_secret()}, status=status, headers=NO_STORE)

    async def create(self, request: Request) -> Response:
        session, raw = await self.posted(request)
        prebuilt_id = str(raw.get("prebuilt_id") or "")
        try:
            catalogue = await self.catalogue.load(self._registry(session))
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        entry = catalogue.entry(prebuilt_id)
        if entry is None:
            return await self._form(request, session, prebuilt_id, None, {})  # the "no such one" page
        form = SetupForm.read(raw, entry)
        try:
            created = await self._registry(session).CreateSetupRequest(form.create_request())
        except Refused as exc:
            shown = _scrubbed(exc.refusal, form, entry)
            errors = _beside(shown, entry)
            # A refused form gets a new one-time id: what it sends next is a new request.
            form.intent = ""
            return await self._form(request, session, entry.id, form, errors, refusal=shown, status=shown.status)
        return RedirectResponse(f"/setup-requests/{created.id}?done=submitted", status_code=303)

    # --- detail -----------------------------------------------------------------------------

    async def _detail(self, request: Request, session: Session, setup_request_id: str, *, done: str = "",
                      refusal: Refusal | None = None, errors: dict[str, str] | None = None, open_form: str = "",
                      status: int = 200) -> Response:
        registry = self._registry(session)
        try:
            setup, catalogue = await asyncio.gather(
                registry.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=setup_request_id)),
                self.catalogue.load(registry))
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        entry = catalogue.entry(setup.prebuilt_id)
        operator = session.can(PLATFORM_PERMISSION)
        context = {
            "setup": setup, "prebuilt_name": catalogue.name(setup.prebuilt_id),
            "details": views.connection_details(entry, setup), "history": list(setup.history),
            "history_names": views.HISTORY_ACTIONS, "done": DONE.get(done, ""), "refusal": refusal,
            "errors": errors or {}, "open_form": open_form, "operator": operator,
            "actions": views.actions(setup.status) if operator else (),
            "offers_reveal": operator and views.offers_reveal(setup),
            "area": "setup_queue" if operator and setup.org_id != session.org_id else self.name,
        }
        fragment = "setup_requests/_detail.html" if is_htmx(request) else None
        return self.page(request, "setup_requests/detail.html", session, context, status=status, fragment=fragment,
                         headers=NO_STORE)

    async def detail(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return await self._detail(request, session, request.path_params["setup_request_id"],
                                  done=request.query_params.get("done", ""))

    # --- the platform team's steps ----------------------------------------------------------

    async def _act(self, request: Request, done: str, call: Any, *, open_form: str = "", field: str = "") -> Response:
        """Run one step from a form; back to the detail page (or its fragment, for htmx)."""
        session, form = await self.posted(request)
        setup_request_id = request.path_params["setup_request_id"]
        try:
            await call(self._registry(session), setup_request_id, form)
        except Refused as exc:
            return await self._refused_step(request, session, setup_request_id, exc.refusal, open_form, field)
        if is_htmx(request):
            return await self._detail(request, session, setup_request_id, done=done)
        return RedirectResponse(f"/setup-requests/{setup_request_id}?done={done}", status_code=303)

    async def _refused_step(self, request: Request, session: Session, setup_request_id: str, refusal: Refusal,
                            open_form: str, field: str) -> Response:
        """A refused step: not found as its own page, a bad field beside it, else above the detail."""
        if refusal.kind == "not_found":
            return self.refused(request, session, refusal)
        beside = {field: refusal.message} if field and refusal.kind == "invalid" else {}
        return await self._detail(request, session, setup_request_id, refusal=None if beside else refusal,
                                  errors=beside, open_form=open_form if beside else "", status=refusal.status)

    async def start(self, request: Request) -> Response:
        async def call(registry: AsUser, setup_request_id: str, form: Any) -> None:
            await registry.StartSetupRequest(pb.StartSetupRequestRequest(setup_request_id=setup_request_id))

        return await self._act(request, "started", call)

    async def complete(self, request: Request) -> Response:
        async def call(registry: AsUser, setup_request_id: str, form: Any) -> None:
            await registry.CompleteSetupRequest(pb.CompleteSetupRequestRequest(
                setup_request_id=setup_request_id, note=str(form.get("note") or "")))

        return await self._act(request, "configured", call, open_form="complete", field="note")

    async def decline(self, request: Request) -> Response:
        async def call(registry: AsUser, setup_request_id: str, form: Any) -> None:
            await registry.DeclineSetupRequest(pb.DeclineSetupRequestRequest(
                setup_request_id=setup_request_id, reason=str(form.get("reason") or "")))

        return await self._act(request, "declined", call, open_form="decline", field="reason")

    async def reveal(self, request: Request) -> Response:
        """The connection secrets, opened by the registry (which records the read), on this answer
        alone: never cached, never kept by the console; closing it leads back to the detail,
        whose history shows the read."""
        session, form = await self.posted(request)
        setup_request_id = request.path_params["setup_request_id"]
        registry = self._registry(session)
        try:
            answer = await registry.RevealSetupRequestSecrets(pb.RevealSetupRequestSecretsRequest(
                setup_request_id=setup_request_id, reason=str(form.get("reveal_reason") or "")))
            setup, catalogue = await asyncio.gather(
                registry.GetSetupRequest(pb.GetSetupRequestRequest(setup_request_id=setup_request_id)),
                self.catalogue.load(registry))
        except Refused as exc:
            return await self._refused_step(request, session, setup_request_id, exc.refusal, "reveal", "reveal_reason")
        return self.page(request, "setup_requests/secrets.html", session, {
            "setup": setup, "prebuilt_name": catalogue.name(setup.prebuilt_id),
            "secrets": views.revealed(catalogue.entry(setup.prebuilt_id), answer.secrets),
            "area": "setup_queue" if setup.org_id != session.org_id else self.name,
        }, headers=NO_STORE)


def _scrubbed(refusal: Refusal, form: SetupForm, entry: pb.PrebuiltIntegration) -> Refusal:
    """The refusal in the form's words (the field's label for `connection.<name>`), and never
    holding a secret the user typed, should a message ever quote what it was given."""
    message = views.in_words(refusal.message, entry)
    for name in form.secrets_typed:
        value = form.connection.get(name, "")
        if value:
            message = message.replace(value, "(hidden)")
    return Refusal(refusal.kind, refusal.title, message, refusal.status, refusal.field, refusal.fields)


def _beside(refusal: Refusal, entry: pb.PrebuiltIntegration) -> dict[str, str]:
    """The refusal as an error beside the form field it names, else nothing (then it is shown
    above the form)."""
    named = refusal.fields.get("field", "") or refusal.field
    connection = views.connection_field(named)
    if connection and any(f.name == connection for f in entry.fields):
        return {FIELD_PREFIX + connection: refusal.message}
    if named in _FORM_FIELDS:
        return {named: refusal.message}
    return {}

