"""The spec's whole integration lifecycle in a real browser, as two administrators in two
browser sessions, with a partner calling through the edge with the credentials shown."""

from __future__ import annotations

import httpx2
import pytest
from playwright.async_api import Error as PlaywrightError

from tests.support.browser import Person
from tests.support.console import new_org

SAP = "SAP Procurement Sync"


async def partner_token(edge_url: str, client_id: str, client_secret: str) -> str:
    async with httpx2.AsyncClient(trust_env=False, timeout=15) as http:
        answer = await http.post(f"{edge_url}/oauth/token", data={"grant_type": "client_credentials"},
                                 auth=(client_id, client_secret))
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]


async def partner_call(edge_url: str, token: str, api_key: str) -> int:
    async with httpx2.AsyncClient(trust_env=False, timeout=15) as http:
        answer = await http.get(f"{edge_url}/v1/inventory/lots",
                                headers={"Authorization": f"Bearer {token}", "X-API-Key": api_key})
        return answer.status_code


def shows(page: str, secrets: tuple[str, ...]) -> bool:
    return any(secret in page for secret in secrets)


async def shown_credentials(person: Person) -> dict[str, str]:
    await person.expect_text("Save Your Credentials Immediately")
    return {"api_key": await person.value_of("api-key"), "client_id": await person.value_of("client-id"),
            "client_secret": await person.value_of("client-secret")}


async def test_two_administrators_take_an_integration_through_its_whole_lifecycle(people, edge_url: str) -> None:
    org = new_org()
    alice, bob = await people.person("alice"), await people.person("bob")
    await alice.sign_in(org)
    await bob.sign_in(org)

    # Alice requests it.
    await alice.click("Integrations")
    await alice.expect_text("0 of 20 live integrations")
    await alice.click("Create Integration")
    await alice.choose("Vendor", "SAP (ERP, procurement)")
    await alice.fill("Name", SAP)
    await alice.fill("Description", "Purchase orders and inventory into SAP")
    await alice.fill("Owner", "alice")
    await alice.tick("inventory:read")
    await alice.tick("orders:read")
    await alice.snapshot("create")
    await alice.click("Submit")
    await alice.expect_status("Requested")
    detail = alice.page.url.split("?")[0]

    # Her own approval is refused, in words an administrator understands.
    await alice.click("Approve")
    await alice.expect_refusal("A different administrator must do this")
    await alice.expect_refusal("You requested this integration, so you cannot approve it")
    await alice.snapshot("separation-of-duties")
    await alice.expect_status("Requested")

    # Bob approves and activates; the credentials are shown once.
    await bob.go(detail)
    await bob.click("Approve")
    await bob.expect_status("Approved")
    await bob.click("Activate")
    first = await shown_credentials(bob)
    assert first["api_key"].startswith("grq_live_")
    await bob.snapshot("credentials")
    await bob.page.get_by_role("button", name="Copy").first.click()
    await bob.expect_text("Copied")
    assert await bob.page.evaluate("navigator.clipboard.readText()") == first["api_key"]
    handoff = await bob.download("Download hand-off file")
    assert (handoff["api_key"], handoff["client_id"], handoff["client_secret"]) == tuple(first.values())
    assert handoff["integration_name"] == SAP and handoff["scopes"] == ["inventory:read", "orders:read"]

    # Never again: not going back, not coming forward again, not on reload, not in another tab.
    secrets = (first["api_key"], first["client_secret"])  # the client id is no secret
    await bob.page.go_back()
    await bob.expect_status("Active")  # the page before, fetched again (no-store): now Active
    assert not shows(await bob.html(), secrets)
    with pytest.raises(PlaywrightError, match="ERR_CACHE_MISS"):
        await bob.page.go_forward()  # no-store: Chromium will not show the answer again
    await bob.page.wait_for_load_state()
    assert not shows(await bob.html(), secrets)
    await bob.page.reload()  # sends the form again: its one-time id is spent
    await bob.expect_text("Already done")
    assert not shows(await bob.html(), secrets)
    other_tab = await bob.new_tab()
    await other_tab.goto(detail)
    page = await other_tab.content()
    assert first["api_key"] not in page and first["client_secret"] not in page
    assert first["api_key"][:16] in page
    await other_tab.close()

    # The partner gets a token from the edge and calls through it.
    token = await partner_token(edge_url, first["client_id"], first["client_secret"])
    assert await partner_call(edge_url, token, first["api_key"]) == 200

    # Alice suspends: the partner's next call is refused.
    await alice.go(detail)
    await alice.expect_status("Active")
    await alice.snapshot("detail")
    await alice.click("Suspend")
    await alice.fill("Reason for the suspension (required, kept in the audit trail)", "Unexpected API behaviour")
    await alice.click("Confirm suspension")
    await alice.expect_status("Suspended")
    assert await partner_call(edge_url, token, first["api_key"]) == 401

    # Her own reactivation is refused; Bob reactivates with new credentials.
    await alice.click("Reactivate")
    await alice.expect_refusal("You suspended this integration, so you cannot reactivate it")
    await bob.go(detail)
    await bob.click("Reactivate")
    second = await shown_credentials(bob)
    assert second["api_key"] != first["api_key"]
    token = await partner_token(edge_url, second["client_id"], second["client_secret"])
    assert await partner_call(edge_url, token, second["api_key"]) == 200

    # Bob regenerates the key: the old one fails at once, the new one works.
    await bob.click("I have saved them — close")
    await bob.click("Regenerate API Key")
    await bob.expect_text("The new API key is shown only once")
    third_key = await bob.value_of("api-key")
    assert await partner_call(edge_url, token, second["api_key"]) == 401
    assert await partner_call(edge_url, token, third_key) == 200
    key_handoff = await bob.download("Download hand-off file")
    assert key_handoff["api_key"] == third_key and key_handoff["client_id"] == second["client_id"]
    assert "client_secret" not in key_handoff

    # Alice revokes, typing the name to confirm.
    await alice.go(detail)
    await alice.click("Revoke")
    await alice.fill("Type the integration's name, SAP Procurement Sync, to confirm", SAP)
    await alice.click("Revoke permanently")
    await alice.expect_status("Revoked")
    assert await partner_call(edge_url, token, third_key) == 401
    rows = await alice.page.get_by_test_id("history").locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[1].innerText, r.cells[2].innerText, r.cells[4].innerText])")
    assert [tuple(r) for r in reversed(rows)] == [
        ("Requested", "alice", ""), ("Approved", "bob", ""), ("Activated", "bob", ""),
        ("Suspended", "alice", "Unexpected API behaviour"), ("Reactivated", "bob", ""),
        ("API key regenerated", "bob", ""), ("Revoked", "alice", "")]
    await alice.click("Integrations")
    await alice.expect_text("0 of 20 live integrations")
    assert not alice.console_errors and not bob.console_errors, (alice.console_errors, bob.console_errors)
