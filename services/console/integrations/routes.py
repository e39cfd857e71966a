"""Administration > Integrations. Each route reads a form or a query, calls the registry as the
signed-in user, and renders a template; the registry decides every rule.

    GET  /integrations                      the list (cards, status filter, count against the limit)
    GET  /integrations/new                  the create form;  POST /integrations  creates
    GET  /integrations/{id}                 detail, lifecycle history, the actions its state offers
    GET  /integrations/{id}/edit            the update form;  POST  saves it
    POST /integrations/{id}/approve|suspend|revoke
    POST /integrations/{id}/activate|reactivate|regenerate-key   credentials, shown once
    POST /integrations/{id}/handoff         the hand-off document of credentials just shown, as a download
"""

from __future__ import annotations

import asyncio
import builtins  # the class below has a `list` route, which shadows the type in its annotations
import hmac
import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.console.errors import BadForm, Refused, Refusal
from services.console.integrations import views
from services.console.integrations.forms import FormProblems, IntegrationForm
from services.console.pages import Renderer
from services.console.peers import AsUser, Peers
from services.console.sessions import Session, SessionStore, new_secret
from services.console.signin.routes import Auth
from services.console.web import check_csrf, is_htmx, read_form
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.kit.auth import ADMIN_PERMISSION
from services.kit.handoff import KEY_KEYS, handoff_bytes, handoff_document, key_handoff_document
from services.kit.handoff import KEYS as HANDOFF_KEYS

PAGE_SIZE = 50
CATALOGUE_SECONDS = 300.0
DONE = {
    "created": "Integration requested. A different administrator must approve it before it can be activated.",
    "approved": "Approved. It can now be activated.",
    "updated": "Saved. Scope changes take effect on the integration's next API call.",
    "suspended": "Suspended. Its credentials stopped working at once; configuration and history are kept.",
    "revoked": "Revoked. This is permanent: the integration can never be reactivated.",
}
NO_STORE = {"Cache-Control": "no-store"}
# What an id may look like in a download's file name (a path parameter is whatever was typed).
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Catalogue:
    """The registry's vendors and scope categories (the same for every organisation), kept a while."""

    def __init__(self) -> None:
        self._at = 0.0
        self.vendors: list[pb.Vendor] = []
        self.categories: list[pb.ScopeCategory] = []

    async def load(self, registry: AsUser) -> "Catalogue":
        if time.monotonic() - self._at > CATALOGUE_SECONDS or not self.vendors:
            vendors, scopes = await asyncio.gather(registry.ListVendors(pb.ListVendorsRequest()),
                                                   registry.ListScopes(pb.ListScopesRequest()))
            self.vendors, self.categories = list(vendors.vendors), list(scopes.categories)
            self._at = time.monotonic()
        return self

    def vendor_name(self, vendor_id: str) -> str:
        return next((v.name for v in self.vendors if v.id == vendor_id), vendor_id)


class IntegrationPages:
    def __init__(self, peers: Peers, auth: Auth, renderer: Renderer, store: SessionStore, *,
                 max_live: int, api_docs_url: str) -> None:
        self.peers, self.auth, self.render, self.store = peers, auth, renderer, store
        self.max_live, self.api_docs_url = max_live, api_docs_url
        self.catalogue = Catalogue()

    def routes(self) -> list[Route]:
        one = "/integrations/{integration_id:str}"
        return [
            Route("/integrations", self.list, methods=["GET"]),
            Route("/integrations", self.create, methods=["POST"]),
            Route("/integrations/new", self.new, methods=["GET"]),
            Route(one, self.detail, methods=["GET"]),
            Route(f"{one}/edit", self.edit_form, methods=["GET"]),
            Route(f"{one}/edit", self.edit, methods=["POST"]),
            Route(f"{one}/approve", self.approve, methods=["POST"]),
            Route(f"{one}/suspend", self.suspend, methods=["POST"]),
            Route(f"{one}/revoke", self.revoke, methods=["POST"]),
            Route(f"{one}/activate", self.activate, methods=["POST"]),
            Route(f"{one}/reactivate", self.reactivate, methods=["POST"]),
            Route(f"{one}/regenerate-key", self.regenerate_key, methods=["POST"]),
            Route(f"{one}/handoff", self.handoff, methods=["POST"]),
        ]

    def _registry(self, session: Session) -> AsUser:
        return self.peers.as_user("registry", session.access_token)

    def _page(self, request: Request, name: str, session: Session, context: dict[str, Any], *, status: int = 200,
              fragment: str | None = None, headers: dict[str, str] | None = None) -> Response:
        return self.render.page(request, name, {"area": "integrations", **context}, session=session, status=status,
                                fragment=fragment, headers=headers)

    def _refused(self, request: Request, session: Session, refusal: Refusal, back: str = "/integrations") -> Response:
        return self.render.error(request, refusal.title, refusal.message, status=refusal.status, session=session,
                                 back=back, back_label="Back to integrations")

    # --- list -------------------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        session = await self.auth.require(request)
        registry = self._registry(session)
        chosen = [s for s in request.query_params.getlist("status") if s in views.STATUS_BY_SLUG]
        token = request.query_params.get("page", "")[:500]
        try:
            page, live, catalogue = await asyncio.gather(
                registry.ListIntegrations(pb.ListIntegrationsRequest(
                    statuses=[views.STATUS_BY_SLUG[s] for s in chosen], page_size=PAGE_SIZE, page_token=token)),
                registry.ListIntegrations(pb.ListIntegrationsRequest(statuses=views.LIVE, page_size=500)),
                self.catalogue.load(registry))
        except Refused as exc:
            return self._refused(request, session, exc.refusal, back="/")
        context = {"integrations": page.integrations, "next_page": page.next_page_token, "chosen": chosen,
                   "statuses": list(views.STATUS_BY_SLUG), "live": len(live.integrations), "max_live": self.max_live,
                   "vendor_name": catalogue.vendor_name}
        fragment = "integrations/_list.html" if is_htmx(request) else None
        return self._page(request, "integrations/list.html", session, context, fragment=fragment)

    # --- create -----------------------------------------------------------------------------

    async def new(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return await self._form(request, session, IntegrationForm(owner=session.user_id), {})

    async def _form(self, request: Request, session: Session, form: IntegrationForm, errors: dict[str, str], *,
                    integration: pb.Integration | None = None, refusal: Refusal | None = None,
                    status: int = 200) -> Response:
        try:
            catalogue = await self.catalogue.load(self._registry(session))
        except Refused as exc:
            return self._refused(request, session, exc.refusal)
        return self._page(request, "integrations/form.html", session, {
            "form": form, "errors": errors, "refusal": refusal, "integration": integration,
            "vendors": catalogue.vendors, "groups": views.scope_groups(catalogue.categories, form.scopes),
            "intent": new_secret()}, status=status)

    async def create(self, request: Request) -> Response:
        session = await self.auth.require(request)
        raw = await read_form(request)
        check_csrf(request, raw, session)
        form = IntegrationForm.read(raw)
        try:
            created_request = form.create_request()
        except FormProblems as exc:
            return await self._form(request, session, form, exc.problems, status=422)
        if not await self.store.claim_intent(session, str(raw.get("intent") or "")):
            return self.render.error(request, "Already submitted", "This form was already submitted once, so it "
                                     "was not submitted again. Find the integration in the list.", status=409,
                                     session=session, back="/integrations", back_label="Back to integrations")
        try:
            created = await self._registry(session).CreateIntegration(created_request)
        except Refused as exc:
            return await self._form(request, session, form, _beside(exc.refusal), refusal=exc.refusal,
                                    status=exc.refusal.status)
        return RedirectResponse(f"/integrations/{created.id}?done=created", status_code=303)

    # --- detail -----------------------------------------------------------------------------

    async def _load(self, session: Session, integration_id: str) -> tuple[pb.Integration, builtins.list[pb.HistoryEntry], Catalogue]:
        registry = self._registry(session)
        integration, history, catalogue = await asyncio.gather(
            registry.GetIntegration(pb.GetIntegrationRequest(integration_id=integration_id)),
            registry.GetIntegrationHistory(pb.GetIntegrationHistoryRequest(integration_id=integration_id)),
            self.catalogue.load(registry))
        return integration, list(history.entries), catalogue

    async def _detail(self, request: Request, session: Session, integration_id: str, *, done: str = "",
                      refusal: Refusal | None = None, errors: dict[str, str] | None = None, open_form: str = "",
                      status: int = 200) -> Response:
        try:
            integration, history, catalogue = await self._load(session, integration_id)
        except Refused as exc:
            return self._refused(request, session, exc.refusal)
        context = {
            "integration": integration, "history": list(reversed(history)), "done": DONE.get(done, ""),
            "refusal": refusal, "errors": errors or {}, "open_form": open_form,
            "actions": views.actions(integration.status) if session.can(ADMIN_PERMISSION) else (),
            "vendor_name": catalogue.vendor_name(integration.vendor_id),
            "sensitivity": views.sensitivity_of(catalogue.categories), "history_names": views.HISTORY_ACTIONS,
            "intent": new_secret(),
        }
        fragment = "integrations/_detail.html" if is_htmx(request) else None
        return self._page(request, "integrations/detail.html", session, context, status=status, fragment=fragment)

    async def detail(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return await self._detail(request, session, request.path_params["integration_id"],
                                  done=request.query_params.get("done", ""))

    # --- update -----------------------------------------------------------------------------

    async def edit_form(self, request: Request) -> Response:
        session = await self.auth.require(request)
        try:
            integration = await self._registry(session).GetIntegration(
                pb.GetIntegrationRequest(integration_id=request.path_params["integration_id"]))
        except Refused as exc:
            return self._refused(request, session, exc.refusal)
        return await self._form(request, session, IntegrationForm.of(integration), {}, integration=integration)

    async def edit(self, request: Request) -> Response:
        session = await self.auth.require(request)
        integration_id = request.path_params["integration_id"]
        raw = await read_form(request)
        check_csrf(request, raw, session)
        form = IntegrationForm.read(raw)
        registry = self._registry(session)
        try:
            integration = await registry.GetIntegration(pb.GetIntegrationRequest(integration_id=integration_id))
        except Refused as exc:
            return self._refused(request, session, exc.refusal)
        try:
            update = form.update_request(integration_id)
        except FormProblems as exc:
            return await self._form(request, session, form, exc.problems, integration=integration, status=422)
        try:
            await registry.UpdateIntegration(update)
        except Refused as exc:
            return await self._form(request, session, form, _beside(exc.refusal), integration=integration,
                                    refusal=exc.refusal, status=exc.refusal.status)
        return RedirectResponse(f"/integrations/{integration_id}?done=updated", status_code=303)

    # --- lifecycle --------------------------------------------------------------------------

    async def _act(self, request: Request, action: str, call: Any, *, open_form: str = "") -> Response:
        """Run a lifecycle call from a form; on success back to the detail page (or its fragment)."""
        session = await self.auth.require(request)
        integration_id = request.path_params["integration_id"]
        form = await read_form(request)
        check_csrf(request, form, session)
        try:
            await call(self._registry(session), integration_id, form)
        except Refused as exc:
            return await self._detail(request, session, integration_id, refusal=exc.refusal, status=exc.refusal.status,
                                      errors=_beside(exc.refusal, default=open_form and "reason"), open_form=open_form)
        except BadForm as exc:
            return await self._detail(request, session, integration_id, errors={"confirm_name": exc.message},
                                      open_form=open_form, status=exc.status)
        if is_htmx(request):
            return await self._detail(request, session, integration_id, done=action)
        return RedirectResponse(f"/integrations/{integration_id}?done={action}", status_code=303)

    async def approve(self, request: Request) -> Response:
        async def call(registry: AsUser, integration_id: str, form: Any) -> None:
            await registry.ApproveIntegration(pb.ApproveIntegrationRequest(integration_id=integration_id))

        return await self._act(request, "approved", call)

    async def suspend(self, request: Request) -> Response:
        async def call(registry: AsUser, integration_id: str, form: Any) -> None:
            await registry.SuspendIntegration(pb.SuspendIntegrationRequest(integration_id=integration_id,
                                                                           reason=str(form.get("reason") or "")))

        return await self._act(request, "suspended", call, open_form="suspend")

    async def revoke(self, request: Request) -> Response:
        async def call(registry: AsUser, integration_id: str, form: Any) -> None:
            integration = await registry.GetIntegration(pb.GetIntegrationRequest(integration_id=integration_id))
            typed = str(form.get("confirm_name") or "").strip()
            if not hmac.compare_digest(typed.encode(), integration.name.strip().encode()):
                raise BadForm("Not revoked", "Type the integration's name exactly as shown to confirm; nothing was "
                              "revoked.", 422)
            await registry.RevokeIntegration(pb.RevokeIntegrationRequest(integration_id=integration_id,
                                                                         reason=str(form.get("reason") or "")))

        return await self._act(request, "revoked", call, open_form="revoke")

    # --- credentials, shown once --------------------------------------------------------------

    async def _credentials(self, request: Request, verb: str, call: Any) -> Response:
        session = await self.auth.require(request)
        integration_id = request.path_params["integration_id"]
        form = await read_form(request)
        check_csrf(request, form, session)
        intent = str(form.get("intent") or "")
        if not await self.store.claim_intent(session, intent):
            # A reload, the back button or a second click: the credentials were shown once already.
            return await self._detail(request, session, integration_id, status=409, refusal=Refusal(
                "conflict", "Already done", "This action already ran from this page, and its credentials were shown "
                "then. They are never shown again: if they were not saved, issue new ones.", 409))
        try:
            result = await call(self._registry(session), integration_id, intent)
        except Refused as exc:
            return await self._detail(request, session, integration_id, refusal=exc.refusal, status=exc.refusal.status)
        return self._page(request, "integrations/credentials.html", session, {"verb": verb, **result},
                          headers=NO_STORE)

    async def activate(self, request: Request) -> Response:
        async def call(registry: AsUser, integration_id: str, intent: str) -> dict[str, Any]:
            answer = await registry.ActivateIntegration(pb.ActivateIntegrationRequest(integration_id=integration_id,
                                                                                      request_id=intent[:64]))
            return self._issued(answer)

        return await self._credentials(request, "Activated", call)

    async def reactivate(self, request: Request) -> Response:
        async def call(registry: AsUser, integration_id: str, intent: str) -> dict[str, Any]:
            answer = await registry.ReactivateIntegration(pb.ReactivateIntegrationRequest(
                integration_id=integration_id, request_id=intent[:64]))
            return self._issued(answer)

        return await self._credentials(request, "Reactivated", call)

    async def regenerate_key(self, request: Request) -> Response:
        async def call(registry: AsUser, integration_id: str, intent: str) -> dict[str, Any]:
            answer = await registry.RegenerateApiKey(pb.RegenerateApiKeyRequest(integration_id=integration_id))
            document = key_handoff_document(answer.integration, answer.api_key, api_docs_url=self.api_docs_url)
            return {"integration": answer.integration, "api_key": answer.api_key, "credentials": None,
                    "api_docs_url": self.api_docs_url, "document": json.dumps(document)}

        return await self._credentials(request, "Regenerated the API key of", call)

    def _issued(self, answer: pb.ActivateIntegrationResponse) -> dict[str, Any]:
        document = handoff_document(answer.integration, answer.credentials, api_docs_url=self.api_docs_url)
        return {"integration": answer.integration, "credentials": answer.credentials,
                "api_key": answer.credentials.api_key, "api_docs_url": self.api_docs_url,
                "document": json.dumps(document)}

    async def handoff(self, request: Request) -> Response:
        """The hand-off document of the credentials on the page the user is looking at, as a file.

        The console keeps no copy of credentials, so the page sends the document back (in a POST
        body, never a URL); it is checked to be a hand-off document of this integration and
        returned as the same bytes `trellis integrations activate --handoff` (or, after a key
        regeneration, `trellis integrations regenerate-key --handoff`) writes."""
        session = await self.auth.require(request)
        integration_id = request.path_params["integration_id"]
        form = await read_form(request)
        check_csrf(request, form, session)
        try:
            document = json.loads(str(form.get("document") or ""))
        except ValueError:
            document = None
        if not _is_handoff(document, integration_id):
            raise BadForm("No hand-off document", "This download only works from the page that showed the "
                          "credentials; nothing was downloaded.", 400)
        name = f"{integration_id}-handoff.json" if _SAFE_ID.fullmatch(integration_id) else "handoff.json"
        return Response(handoff_bytes(document), media_type="application/json", headers={
            **NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'})


def _is_handoff(document: Any, integration_id: str) -> bool:
    if not isinstance(document, dict) or tuple(document) not in (HANDOFF_KEYS, KEY_KEYS):
        return False
    if document["integration_id"] != integration_id:
        return False
    scopes = document["scopes"]
    return (all(isinstance(value, str) for key, value in document.items() if key != "scopes")
            and isinstance(scopes, list) and all(isinstance(s, str) for s in scopes))


def _beside(refusal: Refusal, default: str = "") -> dict[str, str]:
    """The refusal as a field error when it names a field (or `default`), else nothing."""
    field = refusal.field or (default if refusal.kind == "invalid" else "")
    return {field: refusal.message} if field else {}
