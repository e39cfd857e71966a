"""The webhooks, API log, audit and review pages keep part 1's security rules: CSRF tokens on
every state change, the strict CSP with no inline script or style (the chart's SVG included),
every value escaped, another organisation's objects "not found" by any page or guessed id, and a
QA user who sees the logs but no administration."""

from __future__ import annotations

import datetime as dt
import re

from tests.integration.console.test_webhook_pages import create_webhook, webhook_form
from tests.integration.logs.conftest import publish_batch, publish_integration, request_record
from tests.support.console import create_integration, hidden_fields, new_org
from tests.support.console_services import publish_activity
from tests.support.waiting import eventually

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"


async def test_every_webhook_state_change_is_refused_without_this_sessions_csrf_token(
        browser, webhooks_service, logs_service, start_receiver) -> None:
    receiver = await start_receiver()
    org = new_org()
    alice, bob = browser(), browser()
    await alice.sign_in("alice", org)
    await bob.sign_in("bob", org)
    subscription_id, _ = await create_webhook(alice, receiver.url())
    detail = f"/webhooks/{subscription_id}"
    alice_token = hidden_fields(await alice.page(detail), "/signout")["csrf"]
    posts = [f"{detail}/{action}" for action in ("test", "pause", "enable", "regenerate-secret", "delete", "edit")]
    posts += ["/webhooks", f"{detail}/deliveries/dlv_x/redeliver", "/audit/verify"]
    for path in posts:
        for token in ("", alice_token):
            answer = await bob.client.post(path, data={"csrf": token, "intent": f"i-{path}-{token[:3]}",
                                                       "confirm": "delete", "url": "https://evil.example/in",
                                                       "activity_types": "lot.created"})
            assert answer.status_code == 403, (path, token, answer.status_code)
            assert "nothing was changed" in answer.text
    assert receiver.received == []  # no test delivery was sent
    page = await alice.page(detail)
    assert ">Active<" in page and "evil.example" not in page


async def test_another_organisation_sees_none_of_our_webhooks_deliveries_logs_audit_or_review(
        browser, webhooks_service, logs_service, start_receiver, js, mint) -> None:
    receiver = await start_receiver()
    org_a = new_org()
    alice, eve = browser(), browser()
    await alice.sign_in("alice", org_a)
    await eve.sign_in("eve", new_org())
    integration_id = await create_integration(alice, name="Org A secret integration")
    subscription_id, _ = await create_webhook(alice, receiver.url("/org-a-hook"), description="Org A hook")
    detail = f"/webhooks/{subscription_id}"
    await alice.submit(detail, f"{detail}/test")
    await publish_activity(webhooks_service.port, mint("alice", org_a))
    delivery = re.search(rf'href="{detail}/deliveries/(dlv_[a-z0-9]+)"',
                         await eventually(lambda: _when(alice, detail, "lot.created"), what="a delivery"))
    assert delivery
    delivery_id = delivery.group(1)
    await publish_integration(js, org=org_a, integration=integration_id, version=99, name="Org A secret integration")
    await publish_batch(js, [request_record(org=org_a, request_id=f"{org_a}-secret-request",
                                            when=dt.datetime.now(dt.timezone.utc), integration=integration_id,
                                            endpoint="/v1/org-a-secret")], batch_id=f"{org_a}-b")
    await eventually(lambda: _when(alice, "/logs", "/v1/org-a-secret"), what="org A's request in its log")
    await eventually(lambda: _when(alice, "/audit", "integration.created"), what="org A's audit entry")

    eve_subscription, _ = await create_webhook(eve, receiver.url("/eve"))
    secret_words = ("Org A", "org-a", org_a)
    for path in ("/webhooks", "/logs", "/logs/chart", "/audit", "/audit/verify", "/review",
                 f"/logs?integration={integration_id}", "/review/csv",
                 "/logs/export?format=csv", "/logs/export?format=jsonl"):
        answer = await eve.get(path)
        assert answer.status_code == 200, path
        assert not any(word in answer.text for word in secret_words), path
    # Eve's chain holds her own subscription's entry only, never org A's two.
    await eventually(lambda: _when(eve, "/audit/verify", "Verified: 1 entry"), what="eve's one audit entry")
    eve_token = hidden_fields(await eve.page("/webhooks"), "/signout")["csrf"]
    for path in (detail, f"{detail}/edit", f"{detail}/deliveries/{delivery_id}",
                 f"/webhooks/{eve_subscription}/deliveries/{delivery_id}", f"/logs/requests/{org_a}-secret-request"):
        answer = await eve.get(path)
        assert answer.status_code == 404, path
        assert not any(word in answer.text for word in secret_words), path
    for action in ("test", "pause", "enable", "regenerate-secret", "delete", "edit"):
        answer = await eve.client.post(f"{detail}/{action}", data={
            "csrf": eve_token, "intent": f"eve-{action}", "confirm": "delete", "url": "https://evil.example/in",
            "activity_types": "lot.created"})
        assert answer.status_code == 404, (action, answer.status_code)
    for path in (f"{detail}/deliveries/{delivery_id}/redeliver", f"/webhooks/{eve_subscription}/deliveries/{delivery_id}/redeliver"):
        answer = await eve.client.post(path, data={"csrf": eve_token})
        assert answer.status_code == 404, path
    page = await alice.page(detail)
    assert ">Active<" in page and "evil.example" not in page
    # A made-up id answers exactly like another organisation's.
    missing = await eve.get("/webhooks/whk_000000000000000000000000")
    assert missing.text.replace("whk_000000000000000000000000", "X") == (await eve.get(detail)).text.replace(subscription_id, "X")


async def _when(user, path: str, text: str) -> str:  # type: ignore[no-untyped-def]
    page = await user.page(path)
    return page if text in page else ""


async def test_a_qa_user_sees_the_logs_but_no_administration(browser, webhooks_service, logs_service,
                                                             start_receiver) -> None:
    receiver = await start_receiver()
    org = new_org()
    alice, quinn = browser(), browser()
    await alice.sign_in("alice", org)
    await quinn.sign_in("quinn", org, role="qa")
    integration_id = await create_integration(alice, name="SAP Procurement Sync")
    subscription_id, _ = await create_webhook(alice, receiver.url())
    await eventually(lambda: _when(quinn, "/audit", integration_id), what="the audit entry")
    for path in ("/", "/logs", "/audit", "/review", "/logs/chart"):
        page = await quinn.page(path)
        assert 'href="/webhooks"' not in page and 'href="/integrations"' not in page, path
        assert f'href="/integrations/{integration_id}"' not in page, path
        assert "<button" not in page.replace('<button type="submit" class="link">Sign out</button>', "").replace(
            '<button type="submit" class="primary">Filter</button>', "").replace(
            '<button type="submit" class="secondary">Find</button>', "").replace(
            '<button type="submit" class="secondary">Verify against it</button>', "").replace(
            '<button type="submit" class="secondary">Show</button>', ""), path
    for path in ("/webhooks", f"/webhooks/{subscription_id}", "/webhooks/new"):
        answer = await quinn.get(path)
        assert answer.status_code == 403, path
        assert "Create Webhook" not in answer.text and "Send Test Webhook" not in answer.text
    token = hidden_fields(await quinn.page("/logs"), "/signout")["csrf"]
    for action in ("pause", "recover"):
        answer = await quinn.client.post(f"/webhooks/{subscription_id}/{action}",
                                         data={"csrf": token, "since": "2026-01-01T00:00"})
        assert answer.status_code == 403, action
    assert ">Active<" in await alice.page(f"/webhooks/{subscription_id}")


async def test_values_are_escaped_and_the_new_pages_keep_the_strict_csp(browser, webhooks_service, logs_service,
                                                                      start_receiver, js) -> None:
    receiver = await start_receiver()
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    subscription_id, _ = await create_webhook(alice, receiver.url("/in"), description=EVIL)
    integration = f"int_{org[4:]}"
    await publish_integration(js, org=org, integration=integration, version=1, name=EVIL)
    await publish_batch(js, [request_record(org=org, request_id="req-evil", when=dt.datetime.now(dt.timezone.utc),
                                            integration=integration, endpoint=f"/v1/inventory/{EVIL}")],
                        batch_id=f"{org}-evil")
    await eventually(lambda: _when(alice, "/logs", "onerror=alert(2)&gt;</a>"), what="the named request")
    pages = ["/webhooks", f"/webhooks/{subscription_id}", f"/webhooks/{subscription_id}/edit", "/webhooks/new",
             "/logs", "/logs/chart", "/logs/requests/req-evil", "/audit", "/review", "/review/print"]
    for path in pages:
        answer = await alice.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        assert "<script>alert" not in answer.text and "<img" not in answer.text, path
        assert answer.headers["cache-control"] == "no-store", path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", answer.text), (path, "inline script")
        assert "style=" not in answer.text and "<style" not in answer.text, (path, "inline style")
        unquoted = re.sub(r'"[^"]*"', '""', answer.text)  # an attribute's (escaped) value is no attribute
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", unquoted), (path, "inline event handler")
    assert ESCAPED in await alice.page(f"/webhooks/{subscription_id}")
    assert ESCAPED in await alice.page("/logs/chart")
    assert ESCAPED in await alice.page("/review")


def _strict(answer, path: str) -> str:  # type: ignore[no-untyped-def]
    """The answer's page, after checking it is escaped and served under the strict CSP."""
    assert answer.status_code == 200, (path, answer.status_code)
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp, path
    assert EVIL not in answer.text and "<script>alert" not in answer.text and "<img" not in answer.text, path
    assert not re.search(r"<script(?![^>]*\bsrc=)", answer.text), (path, "inline script")
    unquoted = re.sub(r'"[^"]*"', '""', answer.text)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", unquoted), (path, "inline event handler")
    return str(answer.text)


async def test_what_a_receiver_answers_is_escaped_on_the_delivery_page_the_test_result_and_the_secret_page(
        browser, webhooks_service, start_receiver) -> None:
    receiver = await start_receiver()
    receiver.behaviour = lambda _: (200, EVIL)
    receiver.answer_headers = {"X-Evil": EVIL}
    alice = browser()
    await alice.sign_in("alice", new_org())
    # The endpoint URL, shown on the secret page and with every attempt, carries the same text.
    created = await alice.submit("/webhooks/new", "/webhooks", webhook_form(receiver.url(f"/in?x={EVIL}")))
    secret_page = _strict(created, "the secret page")
    assert created.headers["cache-control"] == "no-store" and ESCAPED in secret_page
    found = re.search(r'href="/webhooks/([A-Za-z0-9_]+)">I have saved', secret_page)
    assert found
    detail = f"/webhooks/{found.group(1)}"

    # Send Test Webhook with htmx: the fragment shows what the receiver answered, escaped.
    fields = hidden_fields(await alice.page(detail), f"{detail}/test")
    fragment = await alice.client.post(f"{detail}/test", data=fields, headers={"HX-Request": "true"})
    text = _strict(fragment, "the test result fragment")
    response = re.search(r'<pre class="body" data-testid="test-response">(.*?)</pre>', text, flags=re.S)
    assert response and response.group(1) == ESCAPED
    [got] = await receiver.wait_for(1)
    assert got.path == "/in"

    # The delivery page: the answer received and the URL sent to, escaped.
    delivery = re.search(rf'href="({detail}/deliveries/dlv_[a-z0-9]+)"', text)
    assert delivery
    page = _strict(await alice.get(delivery.group(1)), "the delivery page")
    # (the answer as the attempt recorded it, in its exchange; escaped either way)
    assert re.search(rf'<pre class="body"[^>]*>{re.escape(ESCAPED)}</pre>', page) and f"{ESCAPED}</dd>" in page
    # Regenerating shows the secret page again, as strict.
    fields = hidden_fields(await alice.page(detail), f"{detail}/regenerate-secret")
    regenerated = await alice.client.post(f"{detail}/regenerate-secret", data=fields)
    assert ESCAPED in _strict(regenerated, "the regenerated secret page")
