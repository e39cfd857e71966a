"""Administration > Integrations over HTTP, as a browser without JavaScript uses it: the whole
lifecycle through the forms, credentials shown once, the hand-off download, errors beside
their fields with the input kept, and what a user without the permission sees."""

from __future__ import annotations

import html
import json

from services.kit.handoff import KEY_KEYS, KEYS
from tests.support.console import create_integration, hidden_fields, integration_form, new_org


async def test_an_integration_goes_through_its_lifecycle_in_the_console(browser) -> None:
    org = new_org()
    alice, bob = browser(), browser()
    await alice.sign_in("alice", org)
    await bob.sign_in("bob", org)
    integration_id = await create_integration(alice, name="SAP Procurement Sync")
    detail = f"/integrations/{integration_id}"
    page = await alice.page(detail + "?done=created")
    assert "Requested" in page and "A different administrator must approve it" in page

    refused = await alice.submit(detail, f"{detail}/approve")
    assert refused.status_code == 403
    assert "A different administrator must do this" in refused.text
    assert "You requested this integration, so you cannot approve it" in html.unescape(refused.text)

    approved = await bob.submit(detail, f"{detail}/approve")
    assert approved.status_code == 303 and approved.headers["location"] == f"{detail}?done=approved"
    page = await bob.page(detail)
    assert ">Approved<" in page and "Activate" in page and ">Approve<" not in page

    activated = await bob.submit(detail, f"{detail}/activate", page=page)
    assert activated.status_code == 200, activated.text[:2000]
    assert activated.headers["cache-control"] == "no-store"
    assert "Save Your Credentials Immediately" in activated.text
    fields = hidden_fields(activated.text, f"{detail}/handoff")
    document = json.loads(fields["document"])
    api_key, secret = document["api_key"], document["client_secret"]
    assert api_key.startswith("grq_live_") and api_key in activated.text and secret in activated.text

    # The same form sent again (a reload, the back button, a second click) shows them no more.
    again = await bob.submit(detail, f"{detail}/activate", page=page)
    assert again.status_code == 409 and api_key not in again.text and secret not in again.text
    page = await bob.page(detail)
    assert api_key not in page and secret not in page
    assert api_key[:16] in page  # the prefix, as the spec says

    download = await bob.client.post(f"{detail}/handoff", data=fields)
    assert download.status_code == 200
    assert download.headers["cache-control"] == "no-store"
    assert download.headers["content-disposition"] == f'attachment; filename="{integration_id}-handoff.json"'
    assert tuple(json.loads(download.content)) == KEYS
    assert download.content == (json.dumps(document, indent=2) + "\n").encode()

    no_reason = await alice.submit(detail, f"{detail}/suspend", {"reason": "  "})
    assert no_reason.status_code == 422
    assert 'id="reason-error"' in no_reason.text and "reason is required" in no_reason.text
    suspended = await alice.submit(detail, f"{detail}/suspend", {"reason": "security review"})
    assert suspended.status_code == 303

    refused = await alice.submit(detail, f"{detail}/reactivate")
    assert refused.status_code == 403 and "You suspended this integration, so you cannot reactivate it" in html.unescape(refused.text)
    reactivated = await bob.submit(detail, f"{detail}/reactivate")
    assert reactivated.status_code == 200 and "Save Your Credentials Immediately" in reactivated.text
    new_key = json.loads(hidden_fields(reactivated.text, f"{detail}/handoff")["document"])["api_key"]
    assert new_key != api_key

    regenerated = await bob.submit(detail, f"{detail}/regenerate-key")
    assert regenerated.status_code == 200 and regenerated.headers["cache-control"] == "no-store"
    assert "grq_live_" in regenerated.text and new_key not in regenerated.text
    fields = hidden_fields(regenerated.text, f"{detail}/handoff")
    key_document = json.loads(fields["document"])
    assert key_document["api_key"].startswith("grq_live_") and key_document["api_key"] in regenerated.text
    assert "client_secret" not in key_document  # the partner keeps the secret it has; it is never shown again
    download = await bob.client.post(f"{detail}/handoff", data=fields)
    assert download.status_code == 200 and download.headers["cache-control"] == "no-store"
    assert tuple(json.loads(download.content)) == KEY_KEYS
    assert download.content == (json.dumps(key_document, indent=2) + "\n").encode()
    assert "trellis integrations regenerate-key --handoff" in regenerated.text

    wrong = await alice.submit(detail, f"{detail}/revoke", {"confirm_name": "SAP"})
    assert wrong.status_code == 422 and 'id="confirm_name-error"' in wrong.text
    assert ">Active<" in wrong.text
    revoked = await alice.submit(detail, f"{detail}/revoke", {"confirm_name": "SAP Procurement Sync",
                                                              "reason": "contract ended"})
    assert revoked.status_code == 303
    page = await alice.page(detail)
    assert ">Revoked<" in page and "<h2>Actions</h2>" not in page
    history = page.split('data-testid="history"')[1]
    for action, who in (("Requested", "alice"), ("Approved", "bob"), ("Activated", "bob"), ("Suspended", "alice"),
                        ("Reactivated", "bob"), ("API key regenerated", "bob"), ("Revoked", "alice")):
        assert f"<td>{action}</td>\n    <td>{who}</td>" in history, (action, who)
    assert "security review" in history and "contract ended" in history


async def test_the_list_shows_cards_filters_by_status_and_counts_against_the_limit(browser) -> None:
    org = new_org()
    alice, bob = browser(), browser()
    await alice.sign_in("alice", org)
    await bob.sign_in("bob", org)
    first = await create_integration(alice, name="Xero Ledger", vendor_id="xero", scopes=["finance:read"])
    await create_integration(alice, name="HubSpot Contacts", vendor_id="hubspot")
    detail = f"/integrations/{first}"
    await bob.submit(detail, f"{detail}/approve")
    await bob.submit(detail, f"{detail}/activate")

    page = await alice.page("/integrations")
    assert "1 of 20 live integrations" in page
    assert page.count('data-testid="integration-card"') == 2
    card = page.split("Xero Ledger")[0].rsplit('data-testid="integration-card"', 1)[1] + page.split("Xero Ledger")[1][:400]
    assert "Xero" in card and "Active" in card and "Owner alice" in card and "1 scope<" in card

    active = await alice.page("/integrations?status=active")
    assert "Xero Ledger" in active and "HubSpot Contacts" not in active
    fragment = await alice.get("/integrations?status=requested", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "HubSpot Contacts" in fragment.text and "Xero Ledger" not in fragment.text
    assert "<html" not in fragment.text  # a fragment of the same template, for htmx


async def test_the_create_form_offers_the_vendors_and_scopes_with_their_warnings(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    page = html.unescape(await alice.page("/integrations/new"))
    for vendor in ("SAP", "Salesforce", "QuickBooks Online", "Xero", "Shopify", "HubSpot", "NetSuite", "Sage",
                   "Zapier", "Microsoft Dynamics 365", "Power Automate", "Custom"):
        assert f">{vendor} (" in page, vendor
    assert 'value="crm:write"' in page and 'value="sensors:write"' in page and 'value="webhooks:manage"' in page
    assert "personally identifiable information (PII)" in page
    assert "The Finance scope exposes transaction and invoice data" in page
    assert 'name="rate_limit_per_minute" inputmode="numeric" value="60"' in page
    assert ">PII<" in page and ">Financial<" in page and ">Regulatory<" in page


async def test_refused_input_is_shown_beside_its_field_and_nothing_typed_is_lost(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    cases = [
        ({"name": "N" * 300}, "name", "at most 200 characters"),
        ({"description": "d" * 4500}, "description", "at most 4000 characters"),
        ({"ip_allowlist": "10.0.0.1/32\n10.0.0.300/24"}, "ip_allowlist", "10.0.0.300/24"),
        ({"ip_allowlist": "\n".join(f"10.0.{n}.0/24" for n in range(51))}, "ip_allowlist", "at most 50 entries"),
        ({"scopes": ["inventory:read", "payroll:read"]}, "scopes", "unknown scope category"),
        ({"rate_limit_per_minute": "lots"}, "rate_limit_per_minute", "must be a whole number"),
        ({"rate_limit_per_minute": "20000"}, "rate_limit_per_minute", "between 1 and 10,000"),
        ({"vendor_id": "woocommerce_typo"}, "vendor_id", "unknown vendor"),
        ({"owner": ""}, "owner", "owner is required"),
    ]
    for change, field, words in cases:
        form = integration_form(**{"description": "kept description", **change})
        answer = await alice.submit("/integrations/new", "/integrations", form)
        assert answer.status_code == 422, (change, answer.status_code, answer.text[:1500])
        text = html.unescape(answer.text)
        error = text.split(f'id="{field}-error" role="alert">')[1].split("</p>")[0]
        assert words.lower() in error.lower(), (field, error)
        for name in ("name", "owner"):
            assert f'name="{name}" value="{form[name]}"' in text, name
        assert f">{form['description']}</textarea>" in text
        assert f">{form['ip_allowlist']}</textarea>" in text
        for scope in form["scopes"]:
            if scope == "inventory:read":
                assert 'value="inventory:read" checked' in text
    assert "No integrations" in await alice.page("/integrations")

    huge = await alice.client.post("/integrations", data={"name": "x" * (300 * 1024)})
    assert huge.status_code == 413 and "nothing was saved" in huge.text


async def test_every_value_is_escaped_on_every_page(browser) -> None:
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    integration_id = await create_integration(alice, name=evil, description=evil, owner=evil)
    for path in ("/integrations", f"/integrations/{integration_id}", f"/integrations/{integration_id}/edit"):
        page = await alice.page(path)
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page, path


async def test_a_user_without_the_administration_permission_sees_no_buttons(browser) -> None:
    org = new_org()
    admin, qa = browser(), browser()
    await admin.sign_in("alice", org)
    await qa.sign_in("quinn", org, role="qa")
    integration_id = await create_integration(admin)

    home = await qa.page("/")
    assert 'data-testid="no-pages"' in home and 'href="/integrations"' not in home
    for path in ("/integrations", f"/integrations/{integration_id}"):
        answer = await qa.get(path)
        assert answer.status_code == 403, path
        assert "administration_integrations_access" in answer.text
        for button in ("Create Integration", "Approve", "Suspend", "Revoke", "Edit"):
            assert button not in answer.text, (path, button)
    # The button is not there, and the service refuses the request all the same.
    token = hidden_fields(await qa.page("/"), "/signout")["csrf"]
    refused = await qa.client.post("/integrations", data={**integration_form(), "csrf": token, "intent": "x1"})
    assert refused.status_code == 403
    refused = await qa.client.post(f"/integrations/{integration_id}/approve", data={"csrf": token})
    assert refused.status_code == 403
    assert ">Requested<" in await admin.page(f"/integrations/{integration_id}")


async def test_the_edit_form_changes_scopes_limits_owner_description_and_allowlist(browser) -> None:
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    integration_id = await create_integration(alice)
    edit = f"/integrations/{integration_id}/edit"
    answer = await alice.submit(edit, edit, integration_form(
        name="SAP Procurement Sync", owner="carol", description="now with reports", scopes=["reports:read", "reports:execute"],
        rate_limit_per_minute="120", daily_quota="5000", ip_allowlist="10.0.0.1\n192.168.1.0/24"))
    assert answer.status_code == 303, answer.text[:2000]
    page = await alice.page(f"/integrations/{integration_id}")
    for expected in ("carol", "now with reports", "reports:execute", "120 requests per minute", "5000 requests per day",
                     "10.0.0.1/32", "192.168.1.0/24"):
        assert expected in page, expected
    assert "inventory:read" not in page

    stale = await alice.page(edit)
    await alice.submit(edit, edit, integration_form(owner="dave"), page=stale)
    conflict = await alice.submit(edit, edit, integration_form(owner="erin"), page=stale)
    assert conflict.status_code == 409 and "Reload the page" in conflict.text
    assert 'name="owner" value="erin"' in conflict.text
