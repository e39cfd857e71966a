"""Administration > Webhooks over HTTP, as a browser without JavaScript uses it, against the real
webhooks service and real HTTPS receivers: create with the secret shown once, the test delivery
and its result, the delivery log's tabs and pages, Failing and its recovery, pause and enable,
edit, regenerate, redeliver, recover a range of failed deliveries, delete; errors beside their
fields with the input kept."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import json
import re
import ssl

import grpc
import trustme

from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as wpb
from services.contracts.trellis.webhooks.v1 import webhooks_pb2_grpc
from tests.integration.webhooks.receiver import CERT_NAMES, Receiver, Tls
from tests.support.console import ConsoleUser, hidden_fields, new_org
from tests.support.console_services import publish_activity
from tests.support.waiting import eventually

SECRET = re.compile(r'id="signing-secret"[^>]*value="(whsec_[^"]+)"')


def webhook_form(url: str, **overrides: object) -> dict[str, object]:
    return {"url": url, "activity_types": ["lot.created", "order.created"], "scheme": "spec",
            "description": "Warehouse sync", **overrides}


async def create_webhook(user: ConsoleUser, url: str, **overrides: object) -> tuple[str, str]:
    """Create a subscription through the form; its id and the secret shown."""
    answer = await user.submit("/webhooks/new", "/webhooks", webhook_form(url, **overrides))
    assert answer.status_code == 200, answer.text[:3000]
    assert answer.headers["cache-control"] == "no-store"
    secret = SECRET.search(answer.text)
    assert secret, answer.text[:3000]
    subscription_id = re.search(r'href="/webhooks/([A-Za-z0-9_]+)">I have saved', answer.text)
    assert subscription_id, answer.text[:3000]
    return subscription_id.group(1), html.unescape(secret.group(1))


async def test_a_subscription_is_created_tested_and_its_secret_is_shown_once(browser, webhooks_service,
                                                                              start_receiver) -> None:
    receiver = await start_receiver()
    alice = browser()
    await alice.sign_in("alice", new_org())
    subscription_id, secret = await create_webhook(alice, receiver.url())
    detail = f"/webhooks/{subscription_id}"
    page = await alice.page(detail)
    assert secret not in page and ">Active<" in page
    assert "Lot created, Order created" in page and "No delivery attempts yet" in page
    assert secret not in await alice.page("/webhooks")

    # Send Test Webhook without JavaScript: the form posts, then the page shows the result.
    tested = await alice.submit(detail, f"{detail}/test", page=page)
    assert tested.status_code == 303 and "?tested=dlv_" in tested.headers["location"]
    shown = await alice.page(tested.headers["location"])
    assert 'data-testid="test-result"' in shown and "Test webhook succeeded" in shown
    [arrived] = await receiver.wait_for(1)
    signed = f"{arrived.headers['X-Webhook-Timestamp']}.".encode() + arrived.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(arrived.headers["X-Webhook-Signature"], expected)
    # …and the delivery log has it, with its attempt number and status code.
    assert "webhook.test" in shown and ">200<" in shown and "1 of 5" in shown

    # With htmx the result replaces the detail in place, as a fragment of the same template.
    fields = hidden_fields(page, f"{detail}/test")
    fragment = await alice.client.post(f"{detail}/test", data=fields, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "Test webhook succeeded" in fragment.text and 'id="delivery-log"' in fragment.text
    await receiver.wait_for(2)


async def test_a_refused_form_shows_the_message_beside_its_field_and_keeps_what_was_typed(
        browser, webhooks_service) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    answer = await alice.submit("/webhooks/new", "/webhooks", webhook_form("http://hooks.example.test/in",
                                                                           description="Keep <this>"))
    assert answer.status_code == 422, answer.text[:2000]
    assert 'id="url-error"' in answer.text and "HTTPS" in answer.text
    assert 'value="http://hooks.example.test/in"' in answer.text and "Keep &lt;this&gt;" in answer.text
    assert re.search(r'value="lot.created" checked', answer.text)
    answer = await alice.submit("/webhooks/new", "/webhooks", webhook_form("https://hooks.example.test/in",
                                                                           activity_types=[]))
    assert answer.status_code == 422 and 'id="activity_types-error"' in answer.text


async def _failing(browser, webhooks_service, start_receiver, mint) -> tuple[ConsoleUser, Receiver, str, str]:
    """A subscription to every type whose receiver answers 503, taken to Failing by one event:
    its user, the receiver, the detail page's path and the page once it shows Failing."""
    receiver = await start_receiver()
    receiver.behaviour = lambda _: (503, "down for maintenance")
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    subscription_id, _ = await create_webhook(alice, receiver.url(), activity_types=[], all_types="*")
    detail = f"/webhooks/{subscription_id}"
    await publish_activity(webhooks_service.port, mint("alice", org))
    page = await eventually(lambda: _page_with(alice, detail, ">Failing<"), timeout=20, what="Failing")
    return alice, receiver, detail, page


async def test_eventually_failing_deliveries_take_it_to_failing_and_a_test_recovers_it(
        browser, webhooks_service, start_receiver, mint) -> None:
    alice, receiver, detail, page = await _failing(browser, webhooks_service, start_receiver, mint)
    assert "All current and future types" in page
    assert "All 5 delivery attempts of an event failed" in page
    # The list's status filter finds it among the Failing ones only.
    assert detail in await alice.page("/webhooks?status=failing")
    active = await alice.page("/webhooks?status=active")
    assert detail not in active and "No webhook subscriptions with this status" in active
    assert "Fix the underlying issue with your receiving endpoint" in page and "Send Test Webhook" in page
    failed = await alice.page(f"{detail}?log=failed")
    assert failed.count('data-testid="attempt-row"') == 5 and "5 of 5" in failed and ">503<" in failed
    assert "No succeeded attempts" in await alice.page(f"{detail}?log=succeeded")

    # The receiver is fixed; the test delivery brings the subscription back and the queue goes out.
    receiver.behaviour = None
    tested = await alice.submit(detail, f"{detail}/test")
    page = await alice.page(tested.headers["location"])
    assert "Test webhook succeeded" in page and ">Active<" in page and "Failing: deliveries" not in page

    # The failed delivery can be sent again from its page.
    row = re.search(rf'href="({detail}/deliveries/dlv_[a-z0-9]+)"', failed)
    assert row
    delivery = await alice.page(row.group(1))
    assert "Attempt 5 of 5" in delivery and "down for maintenance" in delivery and "POST https://" in delivery
    assert ">Failed<" in delivery
    again = await alice.submit(row.group(1), f"{row.group(1)}/redeliver", page=delivery)
    assert again.status_code == 303 and again.headers["location"].endswith("?done=redelivered")
    await receiver.wait_for(5 + 1 + 1)  # five failures, the test, the redelivery
    delivery = await eventually(lambda: _page_with(alice, row.group(1), ">Succeeded<"), what="redelivered")
    assert "round 2" in delivery and "Redeliver" not in delivery


async def _page_with(user: ConsoleUser, path: str, text: str) -> str:
    page = await user.page(path)
    return page if text in page else ""


async def test_pause_enable_edit_regenerate_and_delete(browser, webhooks_service, start_receiver, mint) -> None:
    receiver = await start_receiver()
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    subscription_id, first_secret = await create_webhook(alice, receiver.url())
    detail = f"/webhooks/{subscription_id}"

    paused = await alice.submit(detail, f"{detail}/pause")
    assert paused.status_code == 303 and paused.headers["location"] == f"{detail}?done=paused"
    page = await alice.page(detail)
    assert ">Paused<" in page and ">Enable<" in page and ">Pause<" not in page
    assert "Paused" in await alice.page("/webhooks?status=paused")
    assert 'data-testid="webhook-card"' not in await alice.page("/webhooks?status=active")
    enabled = await alice.submit(detail, f"{detail}/enable", page=page)
    assert enabled.headers["location"] == f"{detail}?done=enabled"
    assert ">Active<" in await alice.page(detail)

    edited = await alice.submit(f"{detail}/edit", f"{detail}/edit", webhook_form(
        receiver.url("/hook2"), activity_types=["harvest.recorded"], scheme="standard_webhooks", description="New"))
    assert edited.status_code == 303, edited.text[:2000]
    page = await alice.page(edited.headers["location"])
    assert "/hook2" in page and "Harvest recorded" in page and "Standard Webhooks" in page
    assert "Changes take effect immediately" in page

    # Regenerate: the spec's warning beside the button, the new secret shown once, never again.
    assert "Regeneration invalidates the previous secret" in page
    regenerated = await alice.submit(detail, f"{detail}/regenerate-secret", page=page)
    assert regenerated.status_code == 200 and regenerated.headers["cache-control"] == "no-store"
    second = SECRET.search(regenerated.text)
    assert second and html.unescape(second.group(1)) != first_secret
    again = await alice.submit(detail, f"{detail}/regenerate-secret", page=page)
    assert again.status_code == 409 and not SECRET.search(again.text)
    assert html.unescape(second.group(1)) not in await alice.page(detail)

    # Standard Webhooks offers an overlap: the old secret signs too until it ends, as the page says.
    page = await alice.page(detail)
    assert 'name="overlap"' in page and "7 days (the most)" in page
    overlapped = await alice.submit(detail, f"{detail}/regenerate-secret", {"overlap": "86400"}, page=page)
    assert overlapped.status_code == 200 and 'data-testid="overlap"' in overlapped.text
    assert "the previous secret signs too until" in await alice.page(detail)

    # What the console shows of custom headers and a client certificate: names and hints, never values.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{webhooks_service.port}") as channel:
        await webhooks_pb2_grpc.WebhooksStub(channel).UpdateSubscription(wpb.UpdateSubscriptionRequest(
            subscription_id=subscription_id, update_mask=["custom_headers"],
            custom_headers=[wpb.CustomHeader(name="X-Api-Key", value="gateway-key-0123456789")]),
            metadata=(("authorization", f"Bearer {mint('alice', org)}"),))
    page = await alice.page(detail)
    shown = page.split('data-testid="custom-headers"')[1].split("</dd>")[0]
    assert "X-Api-Key" in shown and "…6789 (22 characters)" in html.unescape(shown)
    assert "gateway-key-0123456789" not in page
    assert "(no mutual TLS)" in page

    # Delete asks for the confirmation; a pending delivery is cancelled.
    unconfirmed = await alice.submit(detail, f"{detail}/delete")
    assert unconfirmed.status_code == 422 and "nothing was deleted" in unconfirmed.text
    seen = len(receiver.received)
    receiver.hang()  # its attempts time out one after another: the delivery stays pending meanwhile
    await publish_activity(webhooks_service.port, mint("alice", org), "harvest.recorded")
    await receiver.wait_for(seen + 1)
    deleted = await alice.submit(detail, f"{detail}/delete", {"confirm": "delete"})
    assert deleted.status_code == 303
    listing = await alice.page(deleted.headers["location"])
    assert "Deleted. 1 pending delivery cancelled" in listing and subscription_id not in listing
    assert (await alice.get(detail)).status_code == 404


async def test_the_delivery_log_is_paged_newest_first(browser, webhooks_service, start_receiver) -> None:
    receiver = await start_receiver()
    alice = browser()
    await alice.sign_in("alice", new_org())
    subscription_id, _ = await create_webhook(alice, receiver.url())
    detail = f"/webhooks/{subscription_id}"
    page = await alice.page(detail)
    for _ in range(27):
        await alice.submit(detail, f"{detail}/test", page=page)
    first = await alice.page(detail)
    assert first.count('data-testid="attempt-row"') == 25
    times = re.findall(r'<time datetime="([^"]+)"', first)
    assert times == sorted(times, reverse=True)
    older = re.search(r'href="(/webhooks/[^"]+&amp;page=[^"#]+)#delivery-logs"', first)
    assert older
    second = await alice.page(html.unescape(older.group(1)))
    assert second.count('data-testid="attempt-row"') == 2 and "Newest" in second
    assert max(re.findall(r'<time datetime="([^"]+)"', second)) <= min(times)
    # htmx asks for the log alone when a tab or a page link is clicked.
    fragment = await alice.get(f"{detail}?log=succeeded", headers={"HX-Request": "true", "HX-Target": "delivery-log"})
    assert fragment.status_code == 200 and "<h1" not in fragment.text and 'aria-current="page">Succeeded<' in fragment.text


async def test_a_card_shows_no_deliveries_then_its_last_delivery(browser, webhooks_service, start_receiver) -> None:
    receiver = await start_receiver()
    alice = browser()
    await alice.sign_in("alice", new_org())
    subscription_id, _ = await create_webhook(alice, receiver.url())
    [card] = _cards(await alice.page("/webhooks"))
    assert f'href="/webhooks/{subscription_id}"' in card and "No deliveries yet" in card
    detail = f"/webhooks/{subscription_id}"
    await alice.submit(detail, f"{detail}/test")
    await receiver.wait_for(1)
    [card] = _cards(await alice.page("/webhooks"))
    last = re.search(r'data-testid="last-delivery">([^<]*)<', card)
    assert last and last.group(1).startswith("Last delivery ") and last.group(1).endswith(": succeeded (HTTP 200)"), card
    assert "No deliveries yet" not in card


def _cards(page: str) -> list[str]:
    return re.findall(r'<li class="card" data-testid="webhook-card">.*?</li>', page, flags=re.S)


async def test_the_delivery_page_shows_the_request_body_sent_and_its_headers(browser, webhooks_service, start_receiver,
                                                                             mint) -> None:
    receiver = await start_receiver()
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    subscription_id, secret = await create_webhook(alice, receiver.url())
    detail = f"/webhooks/{subscription_id}"
    await publish_activity(webhooks_service.port, mint("alice", org), data_json='{"lot_id": "L-<1>", "note": "a & b"}')
    [got] = await receiver.wait_for(1)
    log = await eventually(lambda: _page_with(alice, detail, f"{detail}/deliveries/dlv_"), what="the delivery in the log")
    row = re.search(rf'href="({detail}/deliveries/dlv_[a-z0-9]+)"', log)
    assert row
    page = await alice.page(row.group(1))
    assert "Request body sent" in page
    sent = re.search(r'<pre class="body" data-testid="sent-body">(.*?)</pre>', page, flags=re.S)
    assert sent and html.unescape(sent.group(1)).encode() == got.body
    assert "L-&lt;1&gt;" in sent.group(1) and "a &amp; b" in sent.group(1)
    headers = re.search(r'data-testid="sent-headers">(.*?)</table>', page, flags=re.S)
    assert headers
    for name in ("Content-Type", "X-Webhook-Timestamp", "X-Webhook-Signature", "X-Webhook-Id"):
        assert f'<td class="mono">{name}</td>' in headers.group(1), name
    assert "application/json" in headers.group(1)
    assert secret not in page and got.headers["X-Webhook-Signature"] not in headers.group(1)
    # What the attempt itself sent: the signature as the receiver saw it.
    recorded = re.search(r'data-testid="attempt-request-headers">(.*?)</table>', page, flags=re.S)
    assert recorded and got.headers["X-Webhook-Signature"] in recorded.group(1)


async def test_the_delivery_page_shows_each_attempts_recorded_answer_escaped(browser, webhooks_service, start_receiver,
                                                                            mint) -> None:
    receiver = await start_receiver()
    receiver.answer_headers = {"X-Evil": "<script>alert(1)</script>"}
    receiver.behaviour = lambda _: (500, "<img src=x onerror=alert(2)> down")
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    subscription_id, secret = await create_webhook(alice, receiver.url())
    detail = f"/webhooks/{subscription_id}"
    await publish_activity(webhooks_service.port, mint("alice", org), data_json='{"lot_id": "L-2"}')
    await receiver.wait_for(1)
    log = await eventually(lambda: _page_with(alice, detail, f"{detail}/deliveries/dlv_"), what="the delivery in the log")
    row = re.search(rf'href="({detail}/deliveries/dlv_[a-z0-9]+)"', log)
    assert row
    page = await alice.page(row.group(1))
    answered = re.search(r'data-testid="attempt-response-headers">(.*?)</table>', page, flags=re.S)
    assert answered and "&lt;script&gt;alert(1)&lt;/script&gt;" in answered.group(1) and "<script>" not in answered.group(1)
    body = re.search(r'data-testid="attempt-response-body">(.*?)</pre>', page, flags=re.S)
    assert body and body.group(1) == "&lt;img src=x onerror=alert(2)&gt; down"
    assert secret not in page


async def test_the_list_of_50_cards_asks_the_webhooks_service_once_for_their_last_deliveries(
        browser, webhooks_service, start_receiver, mint) -> None:
    """A call per card (ListAttempts) made this page 265 ms; their last deliveries now come with
    ListSubscriptions' answer (11-27 ms on the same machine)."""
    receiver = await start_receiver()
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{webhooks_service.port}") as channel:
        stub, admin = webhooks_pb2_grpc.WebhooksStub(channel), (("authorization", f"Bearer {mint('alice', org)}"),)
        ids = [(await stub.CreateSubscription(wpb.CreateSubscriptionRequest(
            url=receiver.url(f"/card-{n}"), activity_types=["lot.created"]), metadata=admin)).subscription.id
            for n in range(50)]
        for subscription_id in ids[::2]:  # every other one has had a delivery, answered 200
            await stub.SendTestDelivery(wpb.SendTestDeliveryRequest(subscription_id=subscription_id), metadata=admin)
    await alice.page("/webhooks")  # the catalogue of activity types, loaded once and kept

    def calls() -> dict[str, float]:
        return {method: _served(webhooks_service, method) for method in ("ListSubscriptions", "ListAttempts")}

    before = calls()
    answer = await alice.get("/webhooks")
    after = calls()
    cards = _cards(answer.text)
    assert len(cards) == 50
    for subscription_id, card in zip(ids, cards, strict=True):
        assert f'href="/webhooks/{subscription_id}"' in card
        expected = ": succeeded (HTTP 200)" if ids.index(subscription_id) % 2 == 0 else "No deliveries yet"
        assert expected in card, card
    assert after["ListSubscriptions"] - before["ListSubscriptions"] == 1
    assert after["ListAttempts"] == before["ListAttempts"]


def _served(service, method: str) -> float:  # type: ignore[no-untyped-def]
    """How many calls of a method the service has answered OK (its trellis_grpc_server_requests)."""
    total = 0.0
    for metric in service.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "trellis_grpc_server_requests_total" and sample.labels["method"].endswith(method):
                total += sample.value
    return total


async def test_failed_deliveries_of_a_range_are_recovered_and_the_recovery_shows_its_progress(
        browser, webhooks_service, start_receiver, mint) -> None:
    alice, receiver, detail, page = await _failing(browser, webhooks_service, start_receiver, mint)
    assert 'data-testid="no-recoveries"' in page
    [first, *_] = await receiver.wait_for(5)
    event_id = json.loads(first.body)["id"]

    # Bad input is refused beside the field, and nothing is sent again.
    for since, why in (("yesterday", "is not a date"), ("", "Give the time from which")):
        refused = await alice.submit(detail, f"{detail}/recover", {"since": since, "until": ""}, page=page)
        assert refused.status_code == 422 and "Recovery not started" in refused.text and why in refused.text
        assert 'aria-invalid="true"' in refused.text and 'data-testid="no-recoveries"' in refused.text

    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    started = await alice.submit(detail, f"{detail}/recover", {"since": since, "until": ""}, page=page)
    assert started.status_code == 303 and started.headers["location"] == f"{detail}?done=recovered"
    page = await alice.page(started.headers["location"])
    assert "Recovery started" in page
    [row] = re.findall(r'<tr data-testid="recovery-row">(.*?)</tr>', page, re.S)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[2:6] == ["1", "0", "0", "0"], cells  # queued, done, succeeded, failed again
    assert "by alice" in cells[0] and "they wait, the subscription is failing" in cells[6]

    # The receiver is fixed and a test brings the subscription back: the recovered delivery goes out.
    receiver.behaviour = None
    await alice.submit(detail, f"{detail}/test", page=page)
    arrived = await receiver.wait_for(5 + 1 + 1)  # five failures, the test, the recovered delivery
    assert [json.loads(a.body)["id"] for a in arrived].count(event_id) == 6  # the same event, sent again
    page = await eventually(lambda: _page_with(alice, detail, "Finished"), timeout=20, what="the recovery finished")
    [row] = re.findall(r'<tr data-testid="recovery-row">(.*?)</tr>', page, re.S)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[2:7] == ["1", "1", "1", "0", "Finished"], cells

    # With htmx the form's answer is the detail fragment, the new recovery listed first.
    fields = hidden_fields(page, f"{detail}/recover")
    fragment = await alice.client.post(f"{detail}/recover", data={**fields, "since": since},
                                       headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "Recovery started" in fragment.text
    assert fragment.text.count('data-testid="recovery-row"') == 2


async def test_another_organisations_subscription_cannot_be_recovered(browser, webhooks_service,
                                                                     start_receiver) -> None:
    receiver = await start_receiver()
    alice, mallory = browser(), browser()
    await alice.sign_in("alice", new_org())
    await mallory.sign_in("mallory", new_org())
    subscription_id, _ = await create_webhook(alice, receiver.url())
    token = hidden_fields(await mallory.page("/webhooks"), "/signout")["csrf"]
    answer = await mallory.client.post(f"/webhooks/{subscription_id}/recover",
                                       data={"csrf": token, "since": "2026-01-01T00:00"})
    assert answer.status_code == 404
    assert 'data-testid="no-recoveries"' in await alice.page(f"/webhooks/{subscription_id}")


def _mtls_receiver(tls: Tls) -> Receiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert(*CERT_NAMES).configure_cert(context)
    tls.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    return Receiver(context)


def _pems(cert: trustme.LeafCert) -> dict[str, str]:
    return {"certificate_pem": b"".join(p.bytes() for p in cert.cert_chain_pems).decode(),
            "private_key_pem": cert.private_key_pem.bytes().decode()}


async def _tested(user: ConsoleUser, detail: str) -> str:
    tested = await user.submit(detail, f"{detail}/test")
    assert tested.status_code == 303, tested.text[:2000]
    return await user.page(tested.headers["location"])


async def test_custom_headers_and_a_client_certificate_are_set_replaced_and_removed_with_the_form(
        browser, webhooks_service, tls) -> None:
    receiver = await _mtls_receiver(tls).start()
    try:
        alice = browser()
        await alice.sign_in("alice", new_org())
        client = tls.ca.issue_cert("acme-hooks.example.test", common_name="acme-hooks")
        token = "Bearer tok_" + "7" * 24
        key = client.private_key_pem.bytes().decode().splitlines()[1]  # a line of the key itself
        subscription_id, _ = await create_webhook(
            alice, receiver.url(), custom_headers=f"X-Tenant: north\nAuthorization: {token}", **_pems(client))
        detail, edit = f"/webhooks/{subscription_id}", f"/webhooks/{subscription_id}/edit"
        page = await alice.page(detail)
        assert "<code>Authorization</code>" in page and "<code>X-Tenant</code>" in page and token not in page
        assert "CN=acme-hooks" in page and key not in page
        # The receiver asks for a client certificate: the test succeeds only if it was presented.
        assert "Test webhook succeeded" in await _tested(alice, detail)
        [got] = await receiver.wait_for(1)
        assert got.headers["X-Tenant"] == "north" and got.headers["Authorization"] == token

        # The edit form says what is set, shows no value, and keeps both when left empty.
        form = await alice.page(edit)
        assert token not in form and key not in form and "CN=acme-hooks" in form
        saved = await alice.submit(edit, edit, webhook_form(receiver.url(), description="Kept both"), page=form)
        assert saved.status_code == 303, saved.text[:2000]
        assert "Test webhook succeeded" in await _tested(alice, detail)
        got = (await receiver.wait_for(2))[-1]
        assert got.headers["X-Tenant"] == "north" and got.headers["Authorization"] == token

        # Refused, beside the field; a refused form shows no header value or private key back.
        for typed, extra, field_id, why in (
                (f"Authorization: {token}\nno colon here", {}, "custom_headers", "line 2"),
                ("Content-Type: text/plain", {}, "custom_headers", "Content-Type"),
                ("X-Tenant: south", {"remove_headers": "yes"}, "custom_headers", "not both"),
                ("", {"certificate_pem": "garbage", "private_key_pem": client.private_key_pem.bytes().decode()},
                 "client_certificate", "PEM")):
            refused = await alice.submit(edit, edit, {**webhook_form(receiver.url()), "custom_headers": typed, **extra},
                                         page=form)
            assert refused.status_code == 422, (typed, refused.text[:2000])
            assert f'id="{field_id}-error"' in refused.text and why in html.unescape(refused.text), typed
            assert token not in refused.text and key not in refused.text
            if why == "line 2":  # the names are kept for typing the values again
                assert re.search(r'name="custom_headers"[^>]*>Authorization: </textarea>', refused.text)

        # Replaced: the new set only. Then both removed: the receiver refuses the handshake.
        saved = await alice.submit(edit, edit, {**webhook_form(receiver.url()), "custom_headers": "X-Tenant: south"})
        assert saved.status_code == 303, saved.text[:2000]
        assert "Test webhook succeeded" in await _tested(alice, detail)
        got = (await receiver.wait_for(3))[-1]
        assert got.headers["X-Tenant"] == "south" and "Authorization" not in got.headers
        saved = await alice.submit(edit, edit, {**webhook_form(receiver.url()), "remove_headers": "yes",
                                                "remove_certificate": "yes"})
        assert saved.status_code == 303, saved.text[:2000]
        page = await _tested(alice, detail)
        assert "(no mutual TLS)" in page and 'data-testid="custom-headers">—' in page
        assert "Test webhook succeeded" not in page and len(receiver.received) == 3
    finally:
        await receiver.stop()
