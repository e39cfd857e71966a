"""What a browser does with the console's pages: nothing a value holds ever runs, the core
flow works with JavaScript off, htmx updates parts of a page, and a user without the
administration permission sees no button they cannot use."""

from __future__ import annotations

from playwright.async_api import expect

from tests.support.console import new_org

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"


async def test_an_integration_named_like_a_script_runs_nothing(people) -> None:
    org = new_org()
    alice = await people.person("alice")
    await alice.sign_in(org)
    await alice.go("/integrations/new")
    await alice.choose("Vendor", "Custom (Any other system)")
    await alice.fill("Name", EVIL)
    await alice.fill("Description", EVIL)
    await alice.fill("Owner", EVIL)
    await alice.tick("inventory:read")
    await alice.click("Submit")
    await alice.expect_status("Requested")
    await expect(alice.page.get_by_test_id("integration-title")).to_have_text(EVIL)
    await expect(alice.page.get_by_test_id("owner")).to_have_text(EVIL)
    await alice.click("Integrations")
    await expect(alice.page.get_by_test_id("integration-name")).to_have_text(EVIL)
    await alice.page.get_by_text(EVIL).first.click()
    await alice.click("Edit")
    await expect(alice.page.get_by_label("Name", exact=True)).to_have_value(EVIL)
    assert await alice.page.locator("main img").count() == 0
    assert await alice.page.evaluate("document.querySelectorAll('main script').length") == 0
    assert alice.dialogs == [], alice.dialogs
    assert not alice.console_errors, alice.console_errors


async def test_the_core_flow_works_with_javascript_off(people) -> None:
    org = new_org()
    alice = await people.person("alice", javascript=False)
    bob = await people.person("bob", javascript=False)
    await alice.sign_in(org)
    await bob.sign_in(org)
    await alice.go("/integrations/new")
    await alice.choose("Vendor", "NetSuite (ERP)")
    await alice.fill("Name", "NetSuite Orders")
    await alice.fill("Owner", "alice")
    await alice.tick("orders:read")
    await alice.fill("IP allowlist", "10.0.0.300/24")
    await alice.click("Submit")
    await expect(alice.page.locator("#ip_allowlist-error")).to_contain_text("10.0.0.300/24")
    await expect(alice.page.get_by_label("Name", exact=True)).to_have_value("NetSuite Orders")
    await alice.fill("IP allowlist", "10.0.0.0/24")
    await alice.click("Submit")
    await alice.expect_status("Requested")
    detail = alice.page.url.split("?")[0]
    await bob.go(detail)
    await bob.click("Approve")
    await bob.expect_status("Approved")
    await bob.click("Activate")
    await bob.expect_text("Save Your Credentials Immediately")
    assert (await bob.value_of("api-key")).startswith("grq_live_")
    await expect(bob.page.get_by_role("button", name="Copy")).to_have_count(0)  # no script, no copy button
    await alice.go(detail)
    await alice.click("Suspend")
    await alice.click("Confirm suspension")  # no reason: the browser itself asks for one first
    assert await alice.page.locator("#reason").evaluate("field => field.validity.valueMissing")
    await alice.expect_status("Active")
    await alice.fill("Reason for the suspension (required, kept in the audit trail)", "offboarding")
    await alice.click("Confirm suspension")
    await alice.expect_status("Suspended")
    await alice.click("Integrations")
    await alice.page.get_by_label("Suspended").check()
    await alice.click("Filter")
    await expect(alice.page.get_by_test_id("integration-card")).to_have_count(1)


async def test_the_status_filter_updates_the_list_in_place(people) -> None:
    org = new_org()
    alice = await people.person("alice")
    await alice.sign_in(org)
    for name in ("Xero Ledger", "Sage Books"):
        await alice.go("/integrations/new")
        await alice.choose("Vendor", "Xero (Accounting)")
        await alice.fill("Name", name)
        await alice.fill("Owner", "alice")
        await alice.tick("finance:read")
        await alice.click("Submit")
        await alice.expect_status("Requested")
    await alice.click("Integrations")
    await expect(alice.page.get_by_test_id("integration-card")).to_have_count(2)
    await expect(alice.page.get_by_role("button", name="Filter")).to_be_hidden()  # htmx filters on change
    marker = await alice.page.evaluate("window.__samePage = 1")
    await alice.page.get_by_label("Active").check()
    await expect(alice.page.get_by_test_id("empty")).to_contain_text("No integrations with this status")
    assert alice.page.url.endswith("/integrations?status=active")
    assert await alice.page.evaluate("window.__samePage") == 1, marker  # no full page load
    await alice.page.get_by_label("Active").uncheck()
    await expect(alice.page.get_by_test_id("integration-card")).to_have_count(2)
    await alice.snapshot("list-filter")


async def test_a_user_without_the_administration_permission_sees_no_administration(people) -> None:
    org = new_org()
    quinn = await people.person("quinn")
    await quinn.sign_in(org, role="qa")
    await quinn.go("/")
    await quinn.expect_text("Your account has no administration permission")
    await expect(quinn.page.get_by_role("link", name="Integrations")).to_have_count(0)
    await quinn.go("/integrations")
    await expect(quinn.page.get_by_test_id("error-message")).to_contain_text("administration_integrations_access")
    for button in ("Create Integration", "Approve", "Suspend", "Revoke"):
        await expect(quinn.page.get_by_text(button, exact=True)).to_have_count(0)


async def test_the_sign_in_page_says_it_is_for_local_development(people) -> None:
    visitor = await people.person("visitor")
    await visitor.go("/integrations")
    await expect(visitor.page.get_by_role("heading", name="Local development sign-in")).to_be_visible()
    await visitor.expect_text("For local development only.")
    await visitor.snapshot("sign-in-local")
