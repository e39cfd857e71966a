"""The pages' security: CSRF tokens on every state change, the CSP and the other headers,
organisation isolation by any page or guessed id, sessions shared by replicas and ended
everywhere by sign-out, a new session id at each sign-in, and no open redirect after it."""

from __future__ import annotations

import re

import pytest

from tests.support.console import ConsoleUser, create_integration, hidden_fields, integration_form, new_org

STATE_CHANGES = ("approve", "activate", "reactivate", "regenerate-key", "suspend", "revoke", "edit", "handoff")


async def test_every_state_change_is_refused_without_this_sessions_csrf_token(browser) -> None:
    org = new_org()
    alice, bob = browser(), browser()
    await alice.sign_in("alice", org)
    await bob.sign_in("bob", org)
    integration_id = await create_integration(alice)
    detail = f"/integrations/{integration_id}"
    alice_token = hidden_fields(await alice.page(detail), "/signout")["csrf"]
    bobs_page = await bob.page(detail)
    bob_token = hidden_fields(bobs_page, f"{detail}/approve")["csrf"]
    assert bob_token != alice_token

    for action in STATE_CHANGES:
        for token in ("", alice_token, bob_token[:-2] + "xx"):
            answer = await bob.client.post(f"{detail}/{action}", data={"csrf": token, "intent": f"{action}{token[:4]}",
                                                                       "reason": "r", "confirm_name": "x"})
            assert answer.status_code == 403, (action, token, answer.status_code)
            assert "nothing was changed" in answer.text
    for path, data in (("/integrations", integration_form(intent="i1")), ("/signout", {})):
        answer = await bob.client.post(path, data={**data, "csrf": alice_token})
        assert answer.status_code == 403, path
    # A header is accepted in place of the field (htmx sends it), but only with the right value.
    answer = await bob.client.post(f"{detail}/approve", headers={"X-CSRF-Token": alice_token})
    assert answer.status_code == 403
    assert ">Requested<" in await bob.page(detail)
    answer = await bob.client.post(f"{detail}/approve", headers={"X-CSRF-Token": bob_token, "HX-Request": "true"})
    assert answer.status_code == 200 and ">Approved<" in answer.text and "<html" not in answer.text


async def test_the_local_sign_in_form_is_refused_without_its_token(browser) -> None:
    mallory = browser()
    answer = await mallory.client.post("/signin/local", data={"user": "alice", "org": new_org(), "role": "administrator"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers or "trellis_session" not in answer.headers.get("set-cookie", "")
    assert (await mallory.get("/integrations")).status_code == 303


async def test_pages_carry_a_strict_csp_and_are_never_cached(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    for path in ("/integrations", "/integrations/new", "/signin", "/", "/integrations/int_missing"):
        answer = await alice.get(path)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "default-src 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store", path
        assert answer.headers["x-request-id"]
    page = await alice.page("/integrations/new")
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert "style=" not in page and "<style" not in page, "inline style"
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", page), "inline event handler"
    static = await alice.get("/static/console.css")
    assert static.status_code == 200 and "max-age" in static.headers["cache-control"]


async def test_another_organisation_sees_nothing_of_ours_by_any_page_or_guessed_id(browser) -> None:
    alice, bob, eve = browser(), browser(), browser()
    org_a = new_org()
    await alice.sign_in("alice", org_a)
    await bob.sign_in("bob", org_a)
    await eve.sign_in("eve", new_org())
    integration_id = await create_integration(alice, name="Org A secret integration")
    detail = f"/integrations/{integration_id}"
    await bob.submit(detail, f"{detail}/approve")

    listing = await eve.page("/integrations")
    assert "Org A secret integration" not in listing and "0 of 20 live" in listing
    assert "Org A secret integration" not in await eve.page("/integrations?status=approved")
    eve_token = hidden_fields(listing, "/signout")["csrf"]
    for path in (detail, f"{detail}/edit"):
        answer = await eve.get(path)
        assert answer.status_code == 404 and "Org A" not in answer.text, path
    for action in STATE_CHANGES:
        answer = await eve.client.post(f"{detail}/{action}", data={
            "csrf": eve_token, "intent": f"eve-{action}", "reason": "r", "confirm_name": "Org A secret integration",
            **(integration_form(name="hijacked") if action == "edit" else {})})
        assert answer.status_code in (400, 404), (action, answer.status_code)
        assert "Org A secret integration" not in answer.text
    page = await alice.page(detail)
    assert ">Approved<" in page and "hijacked" not in page
    # A made-up id looks exactly like another organisation's: nothing to learn from guessing.
    missing = await eve.get("/integrations/int_000000000000000000000000")
    assert missing.status_code == 404
    assert missing.text.replace("int_000000000000000000000000", "X") == (await eve.get(detail)).text.replace(integration_id, "X")


async def test_sessions_are_shared_by_replicas_and_sign_out_ends_them_everywhere(start_console) -> None:
    first, second = await start_console(), await start_console()
    alice = ConsoleUser(f"http://127.0.0.1:{first.port}")
    other = ConsoleUser(f"http://127.0.0.1:{second.port}")
    try:
        await alice.sign_in("alice", new_org())
        cookie = alice.client.cookies.get("trellis_session")
        assert cookie and len(cookie) >= 43
        other.client.cookies.set("trellis_session", cookie)
        assert (await other.get("/integrations")).status_code == 200
        answer = await alice.submit("/integrations", "/signout")
        assert answer.status_code == 303
        other.client.cookies.set("trellis_session", cookie)
        assert (await other.get("/integrations")).status_code == 303
    finally:
        await alice.close()
        await other.close()


async def test_the_session_id_changes_at_sign_in_and_the_old_one_stops_working(browser) -> None:
    alice = browser()
    planted = "P" * 43  # an id someone else chose for this browser (session fixation)
    alice.client.cookies.set("trellis_session", planted)
    answer = await alice.sign_in("alice", new_org())
    first = answer.cookies.get("trellis_session")
    assert first and first != planted
    await alice.submit("/", "/signout")
    answer = await alice.sign_in("alice", new_org())
    second = answer.cookies.get("trellis_session")
    assert second and second != first
    stale = browser()
    stale.client.cookies.set("trellis_session", first)
    assert (await stale.get("/integrations")).status_code == 303
    forged = browser()
    forged.client.cookies.set("trellis_session", "A" * 43)
    assert (await forged.get("/integrations")).headers["location"] == "/signin?next=/integrations"


async def test_the_session_cookie_is_httponly_and_samesite_lax(browser) -> None:
    alice = browser()
    answer = await alice.sign_in("alice", new_org())
    header = answer.headers["set-cookie"].lower()
    assert "trellis_session=" in header and "httponly" in header and "samesite=lax" in header and "path=/" in header


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)",
                                    "http:/evil.example", " //evil.example", "/\t/evil.example", "\\\\evil.example"])
async def test_signing_in_never_leads_to_another_site(browser, target: str) -> None:
    alice = browser()
    form = await alice.client.get("/signin", params={"next": target})
    fields = hidden_fields(form.text, "/signin/local")
    answer = await alice.client.post("/signin/local", data={**fields, "user": "alice", "org": new_org(),
                                                            "role": "administrator"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/integrations"


async def test_a_page_asked_for_while_signed_out_comes_back_after_sign_in(browser) -> None:
    alice = browser()
    answer = await alice.get("/integrations/new")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=/integrations/new"
    form = await alice.client.get(answer.headers["location"])
    fields = hidden_fields(form.text, "/signin/local")
    answer = await alice.client.post("/signin/local", data={**fields, "user": "alice", "org": new_org(),
                                                            "role": "administrator"})
    assert answer.headers["location"] == "/integrations/new"
    htmx = await browser().get("/integrations", headers={"HX-Request": "true"})
    assert htmx.headers["hx-redirect"] == "/signin?next=/integrations"


async def test_health_readiness_and_metrics(browser, webhooks_service, logs_service, console_url: str) -> None:
    alice = browser()
    assert (await alice.get("/healthz")).json() == {"status": "alive"}
    ready = (await alice.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["checks"] == {"registry": True, "webhooks": True, "logs": True, "nats": True}
    await alice.sign_in("alice", new_org())
    await alice.get("/integrations/int_x")
    metrics = (await alice.get("/metrics")).text
    assert 'trellis_console_requests_total{method="GET",route="/integrations/{integration_id:str}",status="404"}' in metrics
    assert 'trellis_console_sign_ins_total{method="local",outcome="ok"}' in metrics


async def test_the_console_is_not_ready_while_a_service_its_pages_call_is_down(browser, webhooks_service) -> None:
    answer = await browser().get("/readyz")  # no logs service in this test
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"registry": True, "webhooks": True, "logs": False, "nats": True}
