"""Administration > Webhooks in a real browser: a subscription to an HTTPS receiver the test runs,
its secret shown once, a test delivery seen in the log without a reload, a failing receiver
taking the subscription to Failing and the test button recovering it, pause and enable, delete;
the same core flow with JavaScript off."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from tests.support.console import new_org
from tests.support.console_services import publish_activity
from tests.support.waiting import eventually

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"


async def test_a_subscription_from_creation_through_failing_and_recovery_to_deletion(
        people, start_receiver, webhooks_service, mint) -> None:
    receiver = await start_receiver()
    org = new_org()
    alice = await people.person("alice")
    await alice.sign_in(org)
    await alice.click("Webhooks")
    await alice.expect_text("No webhook subscriptions")
    await alice.click("Create Webhook")
    await alice.fill("Endpoint URL", receiver.url())
    await alice.tick("lot.created")
    await alice.tick("order.created")
    await alice.fill("Description", EVIL)
    await alice.snapshot("webhook-create")
    await alice.click("Create")

    # The secret, shown once, with a copy button.
    await alice.expect_text("Save your signing secret immediately")
    secret = await alice.value_of("signing-secret")
    assert secret.startswith("whsec_")
    await alice.page.get_by_role("button", name="Copy").click()
    await alice.expect_text("Copied")
    assert await alice.page.evaluate("navigator.clipboard.readText()") == secret
    await alice.snapshot("webhook-secret")
    await alice.click("I have saved it — close")
    await alice.expect_status("Active")
    assert secret not in await alice.html()
    with pytest.raises(PlaywrightError, match="ERR_CACHE_MISS"):
        await alice.page.go_back()  # the answer that showed it was never kept (no-store)
    await alice.page.wait_for_load_state()
    assert secret not in await alice.html()

    # Send Test Webhook: the result and the log's new row appear in place.
    await alice.go("/webhooks")
    await alice.page.get_by_test_id("webhook-url").first.click()
    await alice.expect_status("Active")
    await alice.page.evaluate("window.__samePage = 1")
    await alice.click("Send Test Webhook")
    await expect(alice.page.get_by_test_id("test-result")).to_contain_text("Test webhook succeeded")
    await expect(alice.page.get_by_test_id("attempt-row")).to_have_count(1)
    await expect(alice.page.get_by_test_id("attempt-status").first).to_have_text("200")
    assert await alice.page.evaluate("window.__samePage") == 1  # no reload
    [arrived] = await receiver.wait_for(1)
    signed = f"{arrived.headers['X-Webhook-Timestamp']}.".encode() + arrived.body
    assert arrived.headers["X-Webhook-Signature"] == "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    await alice.snapshot("webhook-detail")

    # The receiver fails every attempt of an event: the subscription goes to Failing.
    receiver.behaviour = lambda _: (503, "maintenance")
    await publish_activity(webhooks_service.port, mint("alice", org))
    await receiver.wait_for(1 + 5, timeout=20)

    async def failing() -> bool:
        await alice.page.reload()
        return await alice.page.get_by_test_id("status").first.text_content() == "Failing"

    await eventually(failing, timeout=20, what="Failing")
    await alice.expect_text("All 5 delivery attempts of an event failed")
    await alice.expect_text("Fix the underlying issue with your receiving endpoint.")
    await alice.click("Failed")
    await expect(alice.page.get_by_test_id("attempt-row")).to_have_count(5)
    await expect(alice.page.get_by_test_id("attempt-number").first).to_have_text("5 of 5")
    await alice.snapshot("webhook-failing")

    # Fixed, the test button brings it back to Active.
    receiver.behaviour = None
    await alice.click("Send Test Webhook")
    await expect(alice.page.get_by_test_id("test-result")).to_contain_text("Test webhook succeeded")
    await alice.expect_status("Active")
    await alice.expect_no_text("Failing: deliveries are on hold")

    # The failed event is recovered from the detail page, in place; it goes out again at once.
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    await alice.page.evaluate("window.__samePage = 2")
    await alice.fill("Events that arrived from (UTC)", since)
    await alice.click("Recover failed deliveries")
    await alice.expect_text("Recovery started")
    await expect(alice.page.get_by_test_id("recovery-row")).to_have_count(1)
    assert await alice.page.evaluate("window.__samePage") == 2  # no reload
    await receiver.wait_for(1 + 5 + 1 + 1, timeout=20)

    async def finished() -> bool:
        await alice.page.reload()
        return "Finished" in (await alice.page.get_by_test_id("recovery-row").first.text_content() or "")

    await eventually(finished, timeout=20, what="the recovery finished")

    # Pause and enable.
    await alice.click("Pause")
    await alice.expect_status("Paused")
    await alice.click("Enable")
    await alice.expect_status("Active")

    # Delete, with its confirmation.
    await alice.click("Delete")
    await alice.expect_text("Deleting a subscription cancels any pending deliveries")
    await alice.click("Delete permanently")  # unticked: the browser asks for the box first
    await alice.expect_status("Active")
    await alice.page.get_by_label("Cancel its pending deliveries and delete it").check()
    await alice.click("Delete permanently")
    await alice.expect_text("Deleted.")
    await expect(alice.page.get_by_test_id("webhook-card")).to_have_count(0)
    assert alice.dialogs == [] and not alice.console_errors, (alice.dialogs, alice.console_errors)


async def test_what_a_receiver_answers_runs_no_script_in_the_test_result_or_the_delivery_page(
        people, start_receiver, webhooks_service) -> None:
    receiver = await start_receiver()
    receiver.behaviour = lambda _: (200, EVIL)
    receiver.answer_headers = {"X-Evil": EVIL}
    alice = await people.person("alice")
    await alice.sign_in(new_org())
    await alice.go("/webhooks/new")
    await alice.fill("Endpoint URL", receiver.url(f"/in?x={EVIL}"))
    await alice.tick("lot.created")
    await alice.click("Create")
    await alice.expect_text("Save your signing secret immediately")
    await alice.expect_text(EVIL)  # the URL, as text
    await alice.click("I have saved it — close")
    await alice.click("Send Test Webhook")  # htmx puts the receiver's answer in place
    await expect(alice.page.get_by_test_id("test-response")).to_have_text(EVIL)
    await alice.page.get_by_role("link", name="Details").first.click()
    await alice.expect_text("Request body sent")
    await expect(alice.page.locator("pre.body").last).to_have_text(EVIL)
    await alice.page.get_by_text("What this attempt sent and what came back").click()
    await expect(alice.page.get_by_test_id("attempt-response-headers")).to_contain_text(EVIL)
    await expect(alice.page.get_by_test_id("attempt-response-body")).to_have_text(EVIL)
    await expect(alice.page.locator("main img")).to_have_count(0)
    assert alice.dialogs == [] and not alice.console_errors, (alice.dialogs, alice.console_errors)


async def test_the_webhook_list_filters_in_place_and_shows_each_card(people, start_receiver) -> None:
    receiver = await start_receiver()
    alice = await people.person("alice")
    await alice.sign_in(new_org())
    for path in ("/one", "/two"):
        await alice.go("/webhooks/new")
        await alice.fill("Endpoint URL", receiver.url(path))
        await alice.page.get_by_label("All current and future types").check()
        await alice.click("Create")
        await alice.click("I have saved it — close")
    await alice.click("Pause")
    await alice.expect_status("Paused")
    await alice.click("Webhooks")
    await expect(alice.page.get_by_test_id("webhook-card")).to_have_count(2)
    await alice.page.evaluate("window.__samePage = 1")
    await alice.page.get_by_label("Paused").check()
    await expect(alice.page.get_by_test_id("webhook-card")).to_have_count(1)
    assert await alice.page.evaluate("window.__samePage") == 1
    await alice.page.get_by_label("Paused").uncheck()
    await expect(alice.page.get_by_test_id("webhook-card")).to_have_count(2)
    await alice.snapshot("webhooks-list")


async def test_the_webhook_core_flow_works_with_javascript_off(people, start_receiver) -> None:
    receiver = await start_receiver()
    alice = await people.person("alice", javascript=False)
    await alice.sign_in(new_org())
    await alice.go("/webhooks/new")
    await alice.fill("Endpoint URL", "http://" + receiver.url().removeprefix("https://"))
    await alice.tick("lot.created")
    await alice.click("Create")
    await expect(alice.page.locator("#url-error")).to_contain_text("HTTPS")
    await alice.fill("Endpoint URL", receiver.url())
    await alice.click("Create")
    await alice.expect_text("Save your signing secret immediately")
    await expect(alice.page.get_by_role("button", name="Copy")).to_have_count(0)
    await alice.click("I have saved it — close")
    await alice.click("Send Test Webhook")
    await expect(alice.page.get_by_test_id("test-result")).to_contain_text("Test webhook succeeded")
    await expect(alice.page.get_by_test_id("attempt-row")).to_have_count(1)
    await alice.click("Regenerate Secret")
    await alice.expect_text("Regeneration invalidates the previous secret")
    await alice.click("Regenerate the signing secret")
    await alice.expect_text("Save your signing secret immediately")
    await alice.click("I have saved it — close")
    await alice.click("Delete")
    await alice.page.get_by_label("Cancel its pending deliveries and delete it").check()
    await alice.click("Delete permanently")
    await alice.expect_text("Deleted.")


async def test_custom_headers_are_typed_into_the_form_and_shown_back_by_name_only(people, start_receiver) -> None:
    receiver = await start_receiver()
    alice = await people.person("alice")
    await alice.sign_in(new_org())
    await alice.go("/webhooks/new")
    await alice.fill("Endpoint URL", receiver.url())
    await alice.tick("lot.created")
    headers = alice.page.get_by_label("Headers sent with every delivery, one a line as Name: value")
    await headers.fill("X-Tenant: north-facility-01\nContent-Type: text/plain")
    await alice.click("Create")
    await expect(alice.page.locator("#custom_headers-error")).to_contain_text("Content-Type")  # Trellis sets it
    await expect(headers).to_have_value("X-Tenant: \nContent-Type: ")  # the names kept, never a value
    await headers.fill(f"X-Tenant: {EVIL}")
    await alice.click("Create")
    await alice.click("I have saved it — close")
    await expect(alice.page.get_by_test_id("custom-headers")).to_contain_text("X-Tenant")
    await alice.expect_no_text(EVIL)
    await alice.click("Send Test Webhook")
    await expect(alice.page.get_by_test_id("test-result")).to_contain_text("Test webhook succeeded")
    [got] = await receiver.wait_for(1)
    assert got.headers["X-Tenant"] == EVIL
    await alice.click("Edit")
    await alice.page.get_by_label("Remove all custom headers").check()
    await alice.click("Save")
    await expect(alice.page.get_by_test_id("custom-headers")).to_have_text("—")
    assert alice.dialogs == [] and not alice.console_errors, (alice.dialogs, alice.console_errors)
