"""Administration > Webhooks. Each route reads a form or a query, calls the webhooks service as
the signed-in user, and renders a template; the service decides every rule.

    GET  /webhooks                               the list (cards, status filter, last delivery)
    GET  /webhooks/new                           the create form;  POST /webhooks  creates (secret shown once)
    GET  /webhooks/{id}                          detail and its Delivery Logs (?log=all|succeeded|failed|filtered, &page=)
    GET  /webhooks/{id}/edit                     the edit form;  POST saves it
    POST /webhooks/{id}/test                     Send Test Webhook (htmx: the result in place; else PRG to ?tested=)
    POST /webhooks/{id}/pause|enable|delete
    POST /webhooks/{id}/regenerate-secret        a new secret, shown once
    POST /webhooks/{id}/recover                  send again the failed deliveries of a time range (a recovery)
    GET  /webhooks/{id}/deliveries/{delivery}    one delivery: every attempt, what the receiver answered
    POST /webhooks/{id}/deliveries/{delivery}/redeliver
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.console.area import NO_STORE, Area
from services.console.errors import Refusal, Refused
from services.console.formats import BadTime, parse_time, timestamp
from services.console.pages import Renderer
from services.console.peers import AsUser, Peers
from services.console.sessions import Session, SessionStore, new_secret
from services.console.signin.routes import Auth
from services.console.web import is_htmx
from services.console.webhooks import views
from services.console.webhooks.forms import SubscriptionForm
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.auth import ADMIN_PERMISSION

PAGE_SIZE = 50
LOG_PAGE_SIZE = 25
RECOVERIES_SHOWN = 10
CATALOGUE_SECONDS = 300.0
DONE = {
    "paused": "Paused. It receives no deliveries until you enable it; new events are not queued for it.",
    "enabled": "Enabled. Deliveries it held go out again.",
    "updated": "Saved. Changes take effect immediately for all subsequent events.",
    "redelivered": "Scheduled again: a new round of the retry schedule, with the same event id.",
    "recovered": "Recovery started: the failed deliveries of that range are queued again, oldest first, each with "
                 "its event id and a new round of the retry schedule. Its progress is under Recoveries.",
}


class ActivityTypes:
    """The webhooks service's catalogue of activity types (the same for everyone), kept a while."""

    def __init__(self) -> None:
        self._at = 0.0
        self.types: list[pb.ActivityType] = []

    async def load(self, webhooks: AsUser) -> "ActivityTypes":
        if time.monotonic() - self._at > CATALOGUE_SECONDS or not self.types:
            self.types = list((await webhooks.ListActivityTypes(pb.ListActivityTypesRequest())).types)
            self._at = time.monotonic()
        return self

    @property
    def names(self) -> dict[str, str]:
        return {t.id: t.name for t in self.types}


class WebhookPages(Area):
    name = "webhooks"
    home = "/webhooks"
    home_label = "Back to webhooks"

    def __init__(self, peers: Peers, auth: Auth, renderer: Renderer, store: SessionStore, *,
                 test_timeout: float) -> None:
        super().__init__(peers, auth, renderer)
        self.store = store
        self.catalogue = ActivityTypes()
        # A test delivery waits for the receiver's answer (the service's own timeout) and a bit more.
        self.test_timeout = test_timeout

    def routes(self) -> list[Route]:
        one = "/webhooks/{subscription_id:str}"
        delivery = one + "/deliveries/{delivery_id:str}"
        return [
            Route("/webhooks", self.list, methods=["GET"]),
            Route("/webhooks", self.create, methods=["POST"]),
            Route("/webhooks/new", self.new, methods=["GET"]),
            Route(one, self.detail, methods=["GET"]),
            Route(f"{one}/edit", self.edit_form, methods=["GET"]),
            Route(f"{one}/edit", self.edit, methods=["POST"]),
            Route(f"{one}/test", self.test, methods=["POST"]),
            Route(f"{one}/pause", self.pause, methods=["POST"]),
            Route(f"{one}/enable", self.enable, methods=["POST"]),
            Route(f"{one}/regenerate-secret", self.regenerate_secret, methods=["POST"]),
            Route(f"{one}/delete", self.delete, methods=["POST"]),
            Route(f"{one}/recover", self.recover, methods=["POST"]),
            Route(delivery, self.delivery, methods=["GET"]),
            Route(f"{delivery}/redeliver", self.redeliver, methods=["POST"]),
        ]

    def _webhooks(self, session: Session) -> AsUser:
        return self.stub("webhooks", session)

    # --- list -------------------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        session = await self.auth.require(request)
        webhooks = self._webhooks(session)
        chosen = [s for s in request.query_params.getlist("status") if s in views.STATUS_BY_SLUG]
        token = request.query_params.get("page", "")[:500]
        try:
            page, catalogue = await asyncio.gather(
                webhooks.ListSubscriptions(pb.ListSubscriptionsRequest(
                    statuses=[views.STATUS_BY_SLUG[s] for s in chosen], page_size=PAGE_SIZE, page_token=token,
                    with_last_attempts=True)),
                self.catalogue.load(webhooks))
        except Refused as exc:
            return self.refused(request, session, exc.refusal, back="/")
        # Each card's last delivery comes in the same answer (a call per card cost 265 ms for 50).
        latest = {a.subscription_id: a for a in page.last_attempts}
        last = {s.id: latest.get(s.id) for s in page.subscriptions}
        done = request.query_params.get("done", "")
        cancelled = request.query_params.get("cancelled", "")
        context = {"subscriptions": page.subscriptions, "next_page": page.next_page_token, "chosen": chosen,
                   "statuses": list(views.STATUS_BY_SLUG), "last": last, "names": catalogue.names,
                   "deleted": done == "deleted", "cancelled": int(cancelled) if cancelled.isdigit() else 0}
        fragment = "webhooks/_list.html" if is_htmx(request) else None
        return self.page(request, "webhooks/list.html", session, context, fragment=fragment)

    # --- create and edit --------------------------------------------------------------------

    async def new(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return self.lacks(request, session, ADMIN_PERMISSION) or await self._form(request, session,
                                                                                   SubscriptionForm(), {})

    async def _form(self, request: Request, session: Session, form: SubscriptionForm, errors: dict[str, str], *,
                    subscription: pb.Subscription | None = None, refusal: Refusal | None = None,
                    status: int = 200) -> Response:
        try:
            catalogue = await self.catalogue.load(self._webhooks(session))
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        return self.page(request, "webhooks/form.html", session, {
            "form": form, "errors": errors, "refusal": refusal, "subscription": subscription,
            "groups": views.type_groups(catalogue.types, form.activity_types), "schemes": views.SCHEMES,
            "intent": new_secret()}, status=status)

    async def create(self, request: Request) -> Response:
        session, raw = await self.posted(request)
        form = SubscriptionForm.read(raw)
        if not await self.store.claim_intent(session, str(raw.get("intent") or "")):
            return self.render.error(request, "Already submitted", "This form was already submitted once, so it was "
                                     "not submitted again. Find the subscription in the list.", status=409,
                                     session=session, back="/webhooks", back_label="Back to webhooks")
        try:
            created = await self._webhooks(session).CreateSubscription(form.create_request())
        except Refused as exc:
            return await self._form(request, session, form.shown_back(), _beside(exc.refusal), refusal=exc.refusal,
                                    status=exc.refusal.status)
        return self._secret(request, session, "Created", created.subscription, created.signing_secret)

    async def edit_form(self, request: Request) -> Response:
        session = await self.auth.require(request)
        try:
            subscription = await self._get(session, request.path_params["subscription_id"])
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        return await self._form(request, session, SubscriptionForm.of(subscription), {}, subscription=subscription)

    async def edit(self, request: Request) -> Response:
        session, raw = await self.posted(request)
        subscription_id = request.path_params["subscription_id"]
        form = SubscriptionForm.read(raw)
        webhooks = self._webhooks(session)
        try:
            subscription = await self._get(session, subscription_id)
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        try:
            await webhooks.UpdateSubscription(form.update_request(subscription_id))
        except Refused as exc:
            return await self._form(request, session, form.shown_back(), _beside(exc.refusal), subscription=subscription,
                                    refusal=exc.refusal, status=exc.refusal.status)
        return RedirectResponse(f"/webhooks/{subscription_id}?done=updated", status_code=303)

    def _secret(self, request: Request, session: Session, verb: str, subscription: pb.Subscription,
                secret: str) -> Response:
        """The signing secret, shown this once (never cached, never kept by the console)."""
        return self.page(request, "webhooks/secret.html", session, {"verb": verb, "subscription": subscription,
                                                                    "secret": secret}, headers=NO_STORE)

    # --- detail -----------------------------------------------------------------------------

    async def _get(self, session: Session, subscription_id: str) -> pb.Subscription:
        subscription: pb.Subscription = await self._webhooks(session).GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=subscription_id))
        return subscription

    async def _detail(self, request: Request, session: Session, subscription_id: str, *, done: str = "",
                      refusal: Refusal | None = None, tested: pb.SendTestDeliveryResponse | None = None,
                      tested_delivery: str = "", status: int = 200, fragment: bool | None = None) -> Response:
        webhooks = self._webhooks(session)
        tab = request.query_params.get("log", "all")
        tab = tab if tab in views.TABS else "all"
        token = request.query_params.get("page", "")[:500]
        try:
            # The Filtered tab lists deliveries (they have no attempts); the others list attempts.
            log_call = (webhooks.ListDeliveries(pb.ListDeliveriesRequest(
                subscription_id=subscription_id, outcome=pb.OUTCOME_FILTERED, page_size=LOG_PAGE_SIZE, page_token=token))
                if tab == views.FILTERED_TAB else
                webhooks.ListAttempts(pb.ListAttemptsRequest(subscription_id=subscription_id,
                                                             outcome=views.TABS[tab][1], page_size=LOG_PAGE_SIZE,
                                                             page_token=token)))
            subscription, log, catalogue, recoveries = await asyncio.gather(
                self._get(session, subscription_id), log_call, self.catalogue.load(webhooks),
                webhooks.ListRecoveries(pb.ListRecoveriesRequest(subscription_id=subscription_id,
                                                                 page_size=RECOVERIES_SHOWN)))
            failure = None
            if subscription.status == pb.SUBSCRIPTION_STATUS_FAILING:
                failed = await webhooks.ListAttempts(pb.ListAttemptsRequest(
                    subscription_id=subscription_id, outcome=pb.OUTCOME_FAILED, page_size=1))
                failure = failed.attempts[0] if failed.attempts else None
            test_result = None
            if tested is not None:
                test_result = {"delivery": tested.delivery, "attempt": tested.attempt}
            elif tested_delivery:
                shown = await webhooks.GetDelivery(pb.GetDeliveryRequest(delivery_id=tested_delivery))
                if shown.delivery.subscription_id == subscription_id and shown.delivery.test and shown.attempts:
                    test_result = {"delivery": shown.delivery, "attempt": shown.attempts[-1]}
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        context = {
            "subscription": subscription, "next_page": log.next_page_token, "page": token,
            "attempts": log.attempts if tab != views.FILTERED_TAB else [],
            "filtered": log.deliveries if tab == views.FILTERED_TAB else [], "filter_help": views.FILTER_HELP_URL,
            "tab": tab, "tabs": views.TABS, "names": catalogue.names, "failure": failure, "test_result": test_result,
            "done": DONE.get(done, ""), "refusal": refusal, "intent": new_secret(),
            "recoveries": recoveries.recoveries, "more_recoveries": bool(recoveries.next_page_token),
            "actions": views.actions(subscription.status) if session.can(ADMIN_PERMISSION) else (),
        }
        target = request.headers.get("hx-target", "")
        if fragment is None:
            fragment = is_htmx(request)
        name = None
        if fragment:
            name = "webhooks/_log.html" if target == "delivery-log" else "webhooks/_detail.html"
        return self.page(request, "webhooks/detail.html", session, context, status=status, fragment=name)

    async def detail(self, request: Request) -> Response:
        session = await self.auth.require(request)
        return await self._detail(request, session, request.path_params["subscription_id"],
                                  done=request.query_params.get("done", ""),
                                  tested_delivery=request.query_params.get("tested", "")[:64])

    # --- actions ----------------------------------------------------------------------------

    async def _act(self, request: Request, done: str, call: Any) -> Response:
        """Run one call from a form; back to the detail page (or its fragment, for htmx)."""
        session, form = await self.posted(request)
        subscription_id = request.path_params["subscription_id"]
        try:
            await call(self._webhooks(session), subscription_id, form)
        except Refused as exc:
            return await self._detail(request, session, subscription_id, refusal=exc.refusal, status=exc.refusal.status)
        if is_htmx(request):
            return await self._detail(request, session, subscription_id, done=done)
        return RedirectResponse(f"/webhooks/{subscription_id}?done={done}", status_code=303)

    async def pause(self, request: Request) -> Response:
        async def call(webhooks: AsUser, subscription_id: str, form: Any) -> None:
            await webhooks.PauseSubscription(pb.PauseSubscriptionRequest(subscription_id=subscription_id))

        return await self._act(request, "paused", call)

    async def enable(self, request: Request) -> Response:
        async def call(webhooks: AsUser, subscription_id: str, form: Any) -> None:
            await webhooks.ResumeSubscription(pb.ResumeSubscriptionRequest(subscription_id=subscription_id))

        return await self._act(request, "enabled", call)

    async def test(self, request: Request) -> Response:
        """Send Test Webhook: the service sends it now and answers with its attempt. With htmx the
        result replaces the detail in place; without, the page is fetched again showing it."""
        session, _ = await self.posted(request)
        subscription_id = request.path_params["subscription_id"]
        try:
            answer = await self._webhooks(session).SendTestDelivery(
                pb.SendTestDeliveryRequest(subscription_id=subscription_id), timeout=self.test_timeout)
        except Refused as exc:
            return await self._detail(request, session, subscription_id, refusal=exc.refusal, status=exc.refusal.status)
        if is_htmx(request):
            return await self._detail(request, session, subscription_id, tested=answer)
        query = urlencode({"tested": answer.delivery.id})
        return RedirectResponse(f"/webhooks/{subscription_id}?{query}", status_code=303)

    async def recover(self, request: Request) -> Response:
        """Start a recovery: every failed delivery whose event arrived in [since, until) is sent
        again. The times are UTC, as typed into datetime-local fields (or a date); the service
        refuses a range in the future or an empty one."""
        async def call(webhooks: AsUser, subscription_id: str, form: Any) -> None:
            try:
                since = parse_time(str(form.get("since") or ""))
                until = parse_time(str(form.get("until") or ""), end_of_day=True)
            except BadTime as exc:
                raise Refused(Refusal("invalid", "Recovery not started", f"{exc} Nothing was sent again.", 422,
                                      field="since")) from None
            if since is None:
                raise Refused(Refusal("invalid", "Recovery not started", "Give the time from which failed deliveries "
                                      "are sent again (UTC). Nothing was sent again.", 422, field="since"))
            await webhooks.StartRecovery(pb.StartRecoveryRequest(subscription_id=subscription_id,
                                                                 since=timestamp(since), until=timestamp(until)))

        return await self._act(request, "recovered", call)

    async def regenerate_secret(self, request: Request) -> Response:
        session, form = await self.posted(request)
        subscription_id = request.path_params["subscription_id"]
        if not await self.store.claim_intent(session, str(form.get("intent") or "")):
            return await self._detail(request, session, subscription_id, status=409, fragment=False, refusal=Refusal(
                "conflict", "Already done", "This secret was already regenerated from this page and shown then. It is "
                "never shown again: if it was not saved, regenerate it again.", 409))
        try:
            answer = await self._webhooks(session).RegenerateSecret(pb.RegenerateSecretRequest(
                subscription_id=subscription_id, overlap_seconds=views.overlap_seconds(form.get("overlap"))))
        except Refused as exc:
            return await self._detail(request, session, subscription_id, refusal=exc.refusal, status=exc.refusal.status,
                                      fragment=False)
        return self._secret(request, session, "Regenerated the signing secret of", answer.subscription,
                            answer.signing_secret)

    async def delete(self, request: Request) -> Response:
        session, form = await self.posted(request)
        subscription_id = request.path_params["subscription_id"]
        if str(form.get("confirm") or "") != "delete":
            return await self._detail(request, session, subscription_id, status=422, refusal=Refusal(
                "invalid", "Not deleted", "Tick the box to confirm that pending deliveries are cancelled and that this "
                "cannot be undone; nothing was deleted.", 422), fragment=False)
        try:
            answer = await self._webhooks(session).DeleteSubscription(
                pb.DeleteSubscriptionRequest(subscription_id=subscription_id))
        except Refused as exc:
            return await self._detail(request, session, subscription_id, refusal=exc.refusal, status=exc.refusal.status,
                                      fragment=False)
        return RedirectResponse(f"/webhooks?done=deleted&cancelled={answer.cancelled_deliveries}", status_code=303)

    # --- one delivery -----------------------------------------------------------------------

    async def _delivery(self, session: Session, subscription_id: str, delivery_id: str) -> pb.GetDeliveryResponse:
        answer: pb.GetDeliveryResponse = await self._webhooks(session).GetDelivery(pb.GetDeliveryRequest(delivery_id=delivery_id))
        if answer.delivery.subscription_id != subscription_id:
            # The same answer as an id that does not exist: the URL names another subscription.
            raise Refused(Refusal("not_found", "Not found", "There is no such item in your organisation. It may have "
                                  "been mistyped, or it belongs to another organisation.", 404))
        return answer

    async def delivery(self, request: Request, *, done: str = "", refusal: Refusal | None = None,
                       status: int = 200) -> Response:
        session = await self.auth.require(request)
        subscription_id, delivery_id = request.path_params["subscription_id"], request.path_params["delivery_id"]
        try:
            subscription, answer = await asyncio.gather(self._get(session, subscription_id),
                                                        self._delivery(session, subscription_id, delivery_id))
        except Refused as exc:
            return self.refused(request, session, exc.refusal)
        done = done or request.query_params.get("done", "")
        return self.page(request, "webhooks/delivery.html", session, {
            "subscription": subscription, "delivery": answer.delivery, "attempts": list(reversed(answer.attempts)),
            "delivery_request": views.sent_request(answer.request),
            "done": DONE.get(done, ""), "refusal": refusal,
            "can_redeliver": session.can(ADMIN_PERMISSION) and answer.delivery.status == pb.DELIVERY_STATUS_FAILED
            and subscription.status != pb.SUBSCRIPTION_STATUS_DISABLED}, status=status)

    async def redeliver(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        subscription_id, delivery_id = request.path_params["subscription_id"], request.path_params["delivery_id"]
        try:
            await self._delivery(session, subscription_id, delivery_id)
            await self._webhooks(session).Redeliver(pb.RedeliverRequest(delivery_id=delivery_id))
        except Refused as exc:
            if exc.refusal.kind == "not_found":
                return self.refused(request, session, exc.refusal)
            return await self.delivery(request, refusal=exc.refusal, status=exc.refusal.status)
        return RedirectResponse(f"/webhooks/{subscription_id}/deliveries/{delivery_id}?done=redelivered",
                                status_code=303)


def _beside(refusal: Refusal) -> dict[str, str]:
    """The refusal as a field error when it names a field of this form, else nothing."""
    if refusal.field in ("url", "activity_types", "description", "filter", "custom_headers", "client_certificate"):
        return {refusal.field: refusal.message}
    if refusal.kind == "invalid" and "activity type" in refusal.message:
        return {"activity_types": refusal.message}
    if refusal.kind == "invalid" and "description" in refusal.message:
        return {"description": refusal.message}
    if refusal.kind == "invalid" and "URL" in refusal.message:
        return {"url": refusal.message}
    return {}
