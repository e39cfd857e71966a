"""Administration > Integrations > Set Up an Integration over HTTP, as a browser without
JavaScript uses it, against the real registry: a request submitted through the catalogue's form,
the organisation's list and detail, the platform team's queue taking it through Start and
Complete (or Decline, with its reason required), secrets never on any page, errors beside their
fields keeping what was typed except secrets, one request from a double submit, another
organisation's request not found by a guessed id, CSRF, and what a user who is not a platform
operator sees; the team revealing the secrets on one uncached answer and nowhere else, the read
and the erasure in the history, and the requester refused their own request in words."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.support.console import ConsoleUser, hidden_fields, new_org

CONSUMER_KEY = "ck_live_5d1f0a9b7c3e4d2f8a6b1c0e9d7f3a2b"
CONSUMER_SECRET = "cs_live_9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
SECRETS = (CONSUMER_KEY, CONSUMER_SECRET)
NEW = "/setup-requests/new/woocommerce"


def woocommerce(**overrides: Any) -> dict[str, Any]:
    """A valid WooCommerce request form; `overrides` replace fields."""
    return {"connection.store_url": "https://shop.example.com", "connection.consumer_key": CONSUMER_KEY,
            "connection.consumer_secret": CONSUMER_SECRET, "contact_email": "ops@example.com",
            "notes": "Two stores: <b>north</b> & south", **overrides}


async def submit_request(user: ConsoleUser, **overrides: Any) -> str:
    """Submit a WooCommerce setup request through the form; its id."""
    answer = await user.submit(NEW, "/setup-requests", woocommerce(**overrides))
    assert answer.status_code == 303, (answer.status_code, answer.text[:3000])
    location = answer.headers["location"]
    assert location.endswith("?done=submitted"), location
    return location.split("/setup-requests/")[1].split("?")[0]


def no_secret_in(page: str) -> None:
    for secret in SECRETS:
        assert secret not in page


def history(page: str) -> str:
    return re.sub(r"\s+", " ", page.split('data-testid="history"')[1].split("</ol>")[0])


async def test_a_request_goes_from_the_form_through_the_queue_to_configured(browser) -> None:
    org = new_org()
    alice, olga = browser(), browser()
    await alice.sign_in("alice", org, role="org_administrator")
    await olga.sign_in("olga", new_org(), role="platform_operator")
    shown: list[str] = []

    integrations = await alice.page("/integrations")
    assert 'href="/setup-requests/new">Set Up an Integration</a>' in integrations
    assert 'href="/integrations/new">Create Integration</a>' in integrations
    choose = html.unescape(await alice.page("/setup-requests/new"))
    assert choose.count('data-testid="prebuilt-card"') == 3
    for name, href in (("WooCommerce", "woocommerce"), ("Shopify", "shopify"), ("QuickBooks Online", "quickbooks_online")):
        assert f'<span class="name">{name}</span>' in choose and f'href="/setup-requests/new/{href}"' in choose
    assert "through the store's REST API" in choose and "within one business day" in choose

    form = await alice.get(NEW)
    assert form.status_code == 200 and form.headers["cache-control"] == "no-store"
    for secret in ("consumer_key", "consumer_secret"):
        tag = re.search(rf'<input id="connection\.{secret}"[^>]*>', form.text)
        assert tag and 'type="password"' in tag.group(0) and 'autocomplete="off"' in tag.group(0), secret
    assert "Store URL" in form.text and "(required)" in form.text and "starts with ck_" in form.text

    setup_id = await submit_request(alice)
    detail = f"/setup-requests/{setup_id}"
    page = await alice.page(detail + "?done=submitted")
    shown.append(page)
    assert ">Submitted<" in page and "within one business day" in page and 'data-testid="eta"' in page
    assert "https://shop.example.com" in page and page.count("given, hidden") == 2
    assert "ops@example.com" in page and "Two stores: &lt;b&gt;north&lt;/b&gt; &amp; south" in page
    assert "Platform team" not in page and "/start" not in page and "Setup queue" not in page
    assert "<strong>Submitted</strong> by alice" in history(page)

    listing = await alice.page("/setup-requests")
    shown.append(listing)
    assert listing.count('data-testid="setup-request"') == 1 and f'href="/setup-requests/{setup_id}"' in listing
    assert "WooCommerce" in listing and ">Submitted<" in listing and "<td>alice</td>" in listing
    assert (await alice.get("/setup-queue")).status_code == 403

    # The platform team: every organisation's queue, oldest first, with the organisation shown.
    queue = await olga.page("/setup-queue?status=submitted")
    shown.append(queue)
    fragment = await olga.get("/setup-queue?status=submitted", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and f'href="/setup-requests/{setup_id}"' in fragment.text
    assert f'href="/setup-requests/{setup_id}"' in queue and org in queue and 'aria-current="page">Setup queue' in queue
    assert f'href="/setup-requests/{setup_id}"' not in await olga.page("/setup-queue?status=configured")
    page = await olga.page(detail)
    shown.append(page)
    assert org in page and f'action="{detail}/start"' in page and f'action="{detail}/decline"' in page
    assert f'action="{detail}/complete"' not in page

    started = await olga.submit(detail, f"{detail}/start", page=page)
    assert started.status_code == 303 and started.headers["location"] == f"{detail}?done=started"
    page = await olga.page(detail)
    shown.append(page)
    assert ">In progress<" in page and f'action="{detail}/complete"' in page and f'action="{detail}/start"' not in page
    # A second Start (a stale page) is the registry's refusal, in words.
    stale = await olga.client.post(f"{detail}/start", data=hidden_fields(page, f"{detail}/complete"))
    assert stale.status_code == 409 and "Cannot start setup request" in html.unescape(stale.text)
    assert "only submitted requests allow this" in stale.text
    assert "Not possible in the current state" in stale.text
    shown.append(stale.text)

    completed = await olga.submit(detail, f"{detail}/complete", {"note": "Connected; orders sync every 5 minutes."})
    assert completed.status_code == 303 and completed.headers["location"] == f"{detail}?done=configured"
    page = await alice.page(detail)
    shown.append(page)
    assert ">Configured<" in page and "Connected; orders sync every 5 minutes." in page
    assert "within one business day" not in page
    steps = history(page)
    assert steps.index("<strong>Submitted</strong> by alice") < steps.index("<strong>Started</strong> by olga: Submitted → In progress") \
        < steps.index("<strong>Configured</strong> by olga: In progress → Configured")
    assert ">Configured<" in await alice.page("/setup-requests?status=configured")
    operator_view = await olga.page(detail)
    shown.append(operator_view)
    assert "Platform team" not in operator_view  # final: no step is offered
    for text in shown:
        no_secret_in(text)


async def test_errors_sit_beside_their_fields_and_keep_what_was_typed_but_never_a_secret(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    answer = await alice.submit(NEW, "/setup-requests", woocommerce(**{"connection.store_url": "http://shop.example.com"}))
    assert answer.status_code == 422 and answer.headers["cache-control"] == "no-store"
    text = answer.text
    no_secret_in(text)
    error = html.unescape(text.split('id="connection.store_url-error" role="alert">')[1].split("</p>")[0])
    assert error.startswith("Store URL must be an https:// URL")
    assert 'value="http://shop.example.com"' in text and "Two stores: &lt;b&gt;north&lt;/b&gt; &amp; south" in text
    assert 'value="ops@example.com"' in text
    assert text.count('data-testid="enter-again"') == 2 and "enter it again" in text
    assert re.search(r'<input id="connection\.store_url"[^>]*aria-invalid="true"', text)

    missing = await alice.submit(NEW, "/setup-requests", woocommerce(**{"connection.consumer_secret": ""}))
    assert missing.status_code == 422
    no_secret_in(missing.text)
    assert 'id="connection.consumer_secret-error"' in missing.text and "Consumer secret is required" in missing.text
    assert missing.text.count('data-testid="enter-again"') == 1  # the key was typed; the secret was not

    bad_email = await alice.submit(NEW, "/setup-requests", woocommerce(contact_email="not an email"))
    assert bad_email.status_code == 422 and 'id="contact_email-error"' in bad_email.text
    assert 'value="not an email"' in bad_email.text
    no_secret_in(bad_email.text)

    # Nothing was created by the refused forms; the corrected one is.
    assert 'data-testid="empty"' in await alice.page("/setup-requests")
    page = html.unescape(await alice.page("/setup-requests/new/shopify"))
    assert "Admin API access token" in page and "acme.myshopify.com" in page
    unknown = await alice.get("/setup-requests/new/sap")
    assert unknown.status_code == 404 and "no such pre-built integration" in unknown.text


async def test_a_double_submit_makes_one_request(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    form = await alice.page(NEW)
    first = await alice.submit(NEW, "/setup-requests", woocommerce(), page=form)
    second = await alice.submit(NEW, "/setup-requests", woocommerce(), page=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert (await alice.page("/setup-requests")).count('data-testid="setup-request"') == 1
    # A new page of the form is a new request.
    await submit_request(alice)
    assert (await alice.page("/setup-requests")).count('data-testid="setup-request"') == 2


async def test_declining_needs_a_reason_and_the_organisation_reads_it(browser) -> None:
    org = new_org()
    alice, olga = browser(), browser()
    await alice.sign_in("alice", org, role="org_administrator")
    await olga.sign_in("olga", new_org(), role="platform_operator")
    setup_id = await submit_request(alice)
    detail = f"/setup-requests/{setup_id}"

    blank = await olga.submit(detail, f"{detail}/decline", {"reason": "   "})
    assert blank.status_code == 422
    assert 'id="reason-error"' in blank.text and "a reason is required" in html.unescape(blank.text).lower()
    assert "<details class=\"confirm\" open>" in blank.text and ">Submitted<" in blank.text
    assert ">Submitted<" in await alice.page(detail)

    declined = await olga.submit(detail, f"{detail}/decline", {"reason": "The store URL does not answer over HTTPS."})
    assert declined.status_code == 303 and declined.headers["location"] == f"{detail}?done=declined"
    page = await alice.page(detail)
    assert ">Declined<" in page and "The store URL does not answer over HTTPS." in page
    assert 'data-testid="decline-reason"' in page and "within one business day" not in page
    operator = await olga.page(detail)
    assert "Platform team" not in operator
    refused = await olga.client.post(f"{detail}/start", data={"csrf": hidden_fields(operator, "/signout")["csrf"]})
    assert refused.status_code == 409 and "declined is final" in html.unescape(refused.text)


async def test_another_organisation_cannot_see_or_handle_our_request(browser) -> None:
    alice, eve = browser(), browser()
    await alice.sign_in("alice", new_org(), role="org_administrator")
    await eve.sign_in("eve", new_org(), role="org_administrator")
    setup_id = await submit_request(alice, notes="Org A private notes")
    detail = f"/setup-requests/{setup_id}"
    listing = await eve.page("/setup-requests")
    assert setup_id not in listing and 'data-testid="empty"' in listing
    answer = await eve.get(detail)
    assert answer.status_code == 404 and "Not found" in answer.text and "Org A" not in answer.text
    guessed = await eve.get("/setup-requests/setup_000000000000000000000000")
    assert guessed.status_code == 404
    assert guessed.text.replace("setup_000000000000000000000000", "X") == answer.text.replace(setup_id, "X")
    token = hidden_fields(listing, "/signout")["csrf"]
    for action in ("start", "complete", "decline"):
        posted = await eve.client.post(f"{detail}/{action}", data={"csrf": token, "reason": "r", "note": "n"})
        assert posted.status_code in (403, 404), (action, posted.status_code)
        assert "Org A" not in posted.text
    assert ">Submitted<" in await alice.page(detail)


async def test_every_state_change_needs_this_sessions_csrf_token(browser) -> None:
    alice, olga = browser(), browser()
    await alice.sign_in("alice", new_org(), role="org_administrator")
    await olga.sign_in("olga", new_org(), role="platform_operator")
    form = await alice.page(NEW)
    fields = hidden_fields(form, "/setup-requests")
    alice_token = fields["csrf"]
    for token in ("", "x" * 43, hidden_fields(await olga.page("/setup-queue"), "/signout")["csrf"]):
        answer = await alice.client.post("/setup-requests", data={**fields, **woocommerce(), "csrf": token})
        assert answer.status_code == 403 and "nothing was changed" in answer.text
        no_secret_in(answer.text)
    assert 'data-testid="empty"' in await alice.page("/setup-requests")
    setup_id = await submit_request(alice)
    detail = f"/setup-requests/{setup_id}"
    for action in ("start", "complete", "decline"):
        for token in ("", alice_token):
            answer = await olga.client.post(f"{detail}/{action}", data={"csrf": token, "reason": "r"})
            assert answer.status_code == 403 and "nothing was changed" in answer.text, (action, token)
    assert ">Submitted<" in await alice.page(detail)
    # htmx sends the token as a header and gets the detail's fragment back.
    page = await olga.page(detail)
    token = hidden_fields(page, f"{detail}/start")["csrf"]
    answer = await olga.client.post(f"{detail}/start", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert answer.status_code == 200 and ">In progress<" in answer.text and "<html" not in answer.text


async def test_someone_who_is_not_a_platform_operator_sees_no_queue_and_no_buttons(browser) -> None:
    alice, nora = browser(), browser()
    await alice.sign_in("alice", new_org(), role="org_administrator")
    await nora.sign_in("nora", new_org(), role="none")
    setup_id = await submit_request(alice)
    detail = f"/setup-requests/{setup_id}"
    for path in ("/", "/integrations", "/setup-requests", detail):
        page = await alice.page(path)
        assert "/setup-queue" not in page and "Platform team" not in page, path
    queue = await alice.get("/setup-queue")
    assert queue.status_code == 403 and "trellis_platform_operations" in queue.text
    page = await alice.page(detail)
    refused = await alice.client.post(f"{detail}/start", data={"csrf": hidden_fields(page, "/signout")["csrf"]})
    assert refused.status_code == 403 and "trellis_platform_operations" in refused.text
    assert ">Submitted<" in await alice.page(detail)
    # Without administration: no button to set one up, and the form is refused in words.
    assert "Set Up an Integration" not in await nora.page("/")
    for path in ("/setup-requests/new", NEW):
        answer = await nora.get(path)
        assert answer.status_code == 403 and "administration_integrations_access" in answer.text, path
    token = hidden_fields(await nora.page("/"), "/signout")["csrf"]
    posted = await nora.client.post("/setup-requests", data={**woocommerce(), "prebuilt_id": "woocommerce",
                                                             "csrf": token, "intent": "nora-1"})
    assert posted.status_code == 403 and "administration_integrations_access" in posted.text
    no_secret_in(posted.text)
    assert (await nora.get("/setup-requests")).status_code == 403


async def test_the_new_pages_have_no_inline_script_or_style_and_are_never_cached(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())  # the CLI's administrator: also a platform operator
    setup_id = await submit_request(alice)
    for path in ("/setup-requests", "/setup-requests/new", NEW, f"/setup-requests/{setup_id}", "/setup-queue"):
        answer = await alice.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["cache-control"] == "no-store", path
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        page = answer.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), ("inline script", path)
        assert "style=" not in page and "<style" not in page, ("inline style", path)
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", page), ("inline event handler", path)
        no_secret_in(page)


# --- the platform team reads the secrets; erasure; separation of duties ---------------------------


async def test_the_team_reveals_the_secrets_on_one_uncached_answer_and_the_organisation_sees_the_read(browser) -> None:
    org = new_org()
    alice, olga, eve = browser(), browser(), browser()
    await alice.sign_in("alice", org, role="org_administrator")
    await olga.sign_in("olga", new_org(), role="platform_operator")
    await eve.sign_in("eve", new_org(), role="org_administrator")
    setup_id = await submit_request(alice)
    detail = f"/setup-requests/{setup_id}"
    elsewhere: list[str] = []

    submitted = await olga.page(detail)
    elsewhere.append(submitted)
    assert f'action="{detail}/secrets"' not in submitted  # only In progress offers it
    early = await olga.client.post(f"{detail}/secrets", data=hidden_fields(submitted, f"{detail}/start"))
    assert early.status_code == 409 and "start it first" in html.unescape(early.text)
    elsewhere.append(early.text)
    await olga.submit(detail, f"{detail}/start")
    page = await olga.page(detail)
    elsewhere.append(page)
    assert f'action="{detail}/secrets"' in page and "Reveal connection secrets" in page
    own = await alice.page(detail)
    elsewhere.append(own)
    assert f'action="{detail}/secrets"' not in own

    # The organisation's administrator and another organisation are refused, and see no value.
    token = hidden_fields(own, "/signout")["csrf"]
    refused_admin = await alice.client.post(f"{detail}/secrets", data={"csrf": token})
    assert refused_admin.status_code == 403 and "trellis_platform_operations" in refused_admin.text
    refused_other = await eve.client.post(f"{detail}/secrets",
                                          data={"csrf": hidden_fields(await eve.page("/"), "/signout")["csrf"]})
    assert refused_other.status_code in (403, 404) and org not in refused_other.text
    no_csrf = await olga.client.post(f"{detail}/secrets", data={"csrf": ""})
    assert no_csrf.status_code == 403 and "nothing was changed" in no_csrf.text
    elsewhere += [refused_admin.text, refused_other.text, no_csrf.text]

    too_long = await olga.submit(detail, f"{detail}/secrets", {"reveal_reason": "x" * 2001}, page=page)
    assert too_long.status_code == 422 and 'id="reveal_reason-error"' in too_long.text
    assert "Reason must be at most 2000 characters" in too_long.text and "<details class=\"confirm\" open>" in too_long.text
    elsewhere.append(too_long.text)
    answer = await olga.submit(detail, f"{detail}/secrets", {"reveal_reason": "Adding the order webhook"}, page=page)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    shown = answer.text
    for name, value in (("consumer_key", CONSUMER_KEY), ("consumer_secret", CONSUMER_SECRET)):
        assert re.search(rf'<input id="secret-{name}"[^>]*value="{value}"[^>]*readonly', shown), name
        assert f'data-copy="secret-{name}"' in shown
    assert "Shown for configuring the connection only" in shown and "audit trail" in shown
    assert not re.search(r"<script(?![^>]*\bsrc=)", shown) and "style=" not in shown
    assert "unsafe-inline" not in answer.headers["content-security-policy"]

    # Everywhere else: no value, and the read in the history, with who, when and why.
    after = await olga.page(detail)
    seen = await alice.page(detail)
    elsewhere += [after, seen, await alice.page("/setup-requests"), await olga.page("/setup-queue"),
                  (await alice.get(detail, headers={"HX-Request": "true"})).text]
    for steps in (history(seen), history(after)):
        assert "<strong>Connection secrets read</strong> by olga" in steps and "Adding the order webhook" in steps
        assert "In progress → In progress" not in steps
    for text in elsewhere:
        no_secret_in(text)

    await olga.submit(detail, f"{detail}/complete", {"note": "Live"})
    final = await alice.page(detail)
    assert "<strong>Connection secrets erased</strong> by olga" in history(final) and final.count("given, hidden") == 2
    gone = await olga.client.post(f"{detail}/secrets", data=hidden_fields(await olga.page(detail), "/signout"))
    assert gone.status_code == 409 and "erased" in gone.text
    no_secret_in(final + gone.text)


async def test_the_requester_cannot_handle_their_own_request_and_is_told_why_in_words(browser) -> None:
    # The embedded "Administrator" holds both permissions; the rule is about the person.
    org = new_org()
    alice, ada = browser(), browser()
    await alice.sign_in("alice", org)
    await ada.sign_in("ada", org)
    setup_id = await submit_request(alice)
    detail = f"/setup-requests/{setup_id}"
    refused = await alice.submit(detail, f"{detail}/start")
    text = html.unescape(refused.text)
    assert refused.status_code == 403 and "A different member of the platform team must do this" in text
    assert "You submitted this setup request, so you cannot start it" in text and "separation of duties" in text
    assert "ask another platform operator" in text and ">Submitted<" in text
    started = await ada.submit(detail, f"{detail}/start")
    assert started.status_code == 303
    reveal = await alice.submit(detail, f"{detail}/secrets")
    assert reveal.status_code == 403 and "cannot read its connection secrets" in html.unescape(reveal.text)
    no_secret_in(reveal.text)
    shown = await ada.submit(detail, f"{detail}/secrets")
    assert shown.status_code == 200 and CONSUMER_SECRET in shown.text
