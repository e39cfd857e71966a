"""Set Up an Integration in a real browser: an organisation's administrator requests WooCommerce
through the catalogue's form, a platform operator in another browser takes it from the setup
queue through Start, reads the connection secrets on their own page (copying one) and Complete,
and the organisation sees it Configured, with the read and the erasure in its history; then the same with
JavaScript off (plain forms, no htmx). The secrets typed are on no other page either saw."""

from __future__ import annotations

from tests.support.browser import Person
from tests.support.console import new_org

CONSUMER_KEY = "ck_live_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CONSUMER_SECRET = "cs_live_f9e8d7c6b5a40312f1e2d3c4b5a69788"


async def request_woocommerce(alice: Person, *, store_url: str = "https://shop.example.com") -> None:
    await alice.click("Integrations")
    await alice.click("Set Up an Integration")
    await alice.expect_text("Most pre-built integrations are configured within one business day")
    await alice.click("Request WooCommerce")
    await alice.fill("Store URL (required)", store_url)
    await alice.fill("Consumer key (required)", CONSUMER_KEY)
    await alice.fill("Consumer secret (required)", CONSUMER_SECRET)
    await alice.fill("Contact email", "ops@example.com")
    await alice.fill("Notes", "North and south stores; go live on Monday.")


async def never_shown(*people: Person) -> None:
    for person in people:
        page = await person.html()
        assert CONSUMER_KEY not in page and CONSUMER_SECRET not in page, person.name


async def test_an_organisation_requests_woocommerce_and_the_platform_team_configures_it(people) -> None:
    org = new_org()
    alice = await people.person("alice")
    olga = await people.person("olga")
    await alice.sign_in(org, role="org_administrator")
    await olga.sign_in(new_org(), role="platform_operator")

    await alice.click("Integrations")
    await alice.click("Set Up an Integration")
    await alice.expect_text("WooCommerce")
    await alice.expect_text("Shopify")
    await alice.expect_text("QuickBooks Online")
    await alice.snapshot("setup-choose")

    # A store URL that is not HTTPS: refused beside the field, the secrets to be entered again.
    await request_woocommerce(alice, store_url="http://shop.example.com")
    await alice.click("Submit request")
    await alice.expect_text("Store URL must be an https:// URL")
    await alice.expect_text("enter it again")
    assert await alice.page.locator('input[name="connection.store_url"]').input_value() == "http://shop.example.com"
    assert await alice.page.locator('input[name="connection.consumer_key"]').input_value() == ""
    await never_shown(alice)
    await alice.snapshot("setup-form-error")
    await alice.fill("Store URL (required)", "https://shop.example.com")
    await alice.fill("Consumer key (required)", CONSUMER_KEY)
    await alice.fill("Consumer secret (required)", CONSUMER_SECRET)
    await alice.click("Submit request")
    await alice.expect_status("Submitted")
    await alice.expect_text("Most pre-built integrations are configured within one business day")
    await alice.expect_text("given, hidden")
    await alice.expect_no_text("Setup queue")
    await never_shown(alice)
    await alice.snapshot("setup-submitted")
    detail = alice.page.url.split("?")[0]

    # The platform team's queue: every organisation's, oldest first, the organisation shown.
    await olga.click("Setup queue")
    await olga.expect_text(org)
    await olga.page.get_by_label("Submitted").check()  # htmx filters in place
    await olga.expect_text(org)
    await olga.snapshot("setup-queue")
    await olga.go(detail)
    await olga.expect_status("Submitted")
    await olga.click("Start")
    await olga.expect_status("In progress")
    await olga.expect_text("Started. The organisation sees the request as In progress.")
    # Configuring it: the connection secrets, read once on their own page and copied.
    await olga.click("Reveal connection secrets")
    await olga.fill("Reason (optional)", "Registering the order webhook")
    await olga.click("Show connection secrets")
    await olga.expect_text("Shown for configuring the connection only")
    assert await olga.value_of("secret-consumer_key") == CONSUMER_KEY
    assert await olga.value_of("secret-consumer_secret") == CONSUMER_SECRET
    await olga.page.get_by_role("button", name="Copy").last.click()
    await olga.expect_text("Copied")
    assert await olga.page.evaluate("navigator.clipboard.readText()") == CONSUMER_SECRET
    await olga.snapshot("setup-secrets")
    await olga.click("Done — close")
    await olga.expect_status("In progress")
    await olga.expect_text("Connection secrets read by olga")
    await never_shown(olga)
    await olga.click("Complete")
    await olga.fill("Note to the organisation (optional)", "Connected; orders sync every 5 minutes.")
    await olga.snapshot("setup-operator")
    await olga.click("Mark as configured")
    await olga.expect_status("Configured")
    await never_shown(olga)

    await alice.click("Setup requests")
    await alice.expect_status("Configured")
    await alice.click("WooCommerce")
    await alice.expect_status("Configured")
    await alice.expect_text("Connected; orders sync every 5 minutes.")
    await alice.expect_text("Configured by olga")
    await alice.expect_text("Connection secrets read by olga")
    await alice.expect_text("Registering the order webhook")
    await alice.expect_text("Connection secrets erased by olga")
    await alice.snapshot("setup-configured")
    await never_shown(alice)
    assert not alice.console_errors and not olga.console_errors, (alice.console_errors, olga.console_errors)


async def test_the_same_works_with_javascript_off(people) -> None:
    org = new_org()
    alice = await people.person("alice", javascript=False)
    olga = await people.person("olga", javascript=False)
    await alice.sign_in(org, role="org_administrator")
    await olga.sign_in(new_org(), role="platform_operator")
    await request_woocommerce(alice)
    await alice.click("Submit request")
    await alice.expect_status("Submitted")
    detail = alice.page.url.split("?")[0]

    await olga.click("Setup queue")
    await olga.page.get_by_label("Submitted").check()
    await olga.click("Filter")  # no htmx: the plain form's button
    await olga.expect_text(org)
    await olga.go(detail)
    await olga.click("Decline")
    await olga.click("Decline request")  # the browser asks for the required reason first
    await olga.expect_status("Submitted")
    await olga.fill("Reason (required: the organisation reads it)", "Use the store's https:// address.")
    await olga.click("Decline request")
    await olga.expect_status("Declined")

    await alice.go(detail)
    await alice.expect_status("Declined")
    await alice.expect_text("Use the store's https:// address.")
    await never_shown(alice, olga)
