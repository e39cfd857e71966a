"""QA > Integration API Logs, the audit trail and the quarterly review in a real browser, after
real partner traffic through the edge: the log filtered by each filter, a request found by its
X-Request-ID, an export downloaded and read back, the chart; an audit chain tampered with in the
database shown as broken; the review matching `trellis review --json` for the same organisation."""

from __future__ import annotations

import csv
import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2
from playwright.async_api import expect

from services.contracts.trellis.registry.v1 import registry_pb2 as rpb
from services.contracts.trellis.registry.v1 import registry_pb2_grpc
from tests.support.console import assert_review_matches, new_org
from tests.support.console_services import database_file, tamper_audit_entry, trellis_cli
from tests.support.waiting import eventually

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@dataclass
class Call:
    method: str
    path: str
    status: int
    request_id: str


async def provision(registry_addr: str, mint, org: str, name: str, *, rate_limit: int) -> tuple[str, rpb.ActivateIntegrationResponse]:  # type: ignore[no-untyped-def]
    """An Active integration: alice requests it, bob approves and activates it."""
    alice = (("authorization", f"Bearer {mint('alice', org)}"),)
    bob = (("authorization", f"Bearer {mint('bob', org)}"),)
    async with grpc.aio.insecure_channel(registry_addr) as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)
        created = await registry.CreateIntegration(rpb.CreateIntegrationRequest(
            vendor_id="sap", name=name, owner="olivia", scopes=["inventory:read", "crm:read"],
            rate_limit_per_minute=rate_limit), metadata=alice)
        await registry.ApproveIntegration(rpb.ApproveIntegrationRequest(integration_id=created.id), metadata=bob)
        activated = await registry.ActivateIntegration(rpb.ActivateIntegrationRequest(
            integration_id=created.id, request_id=uuid.uuid4().hex), metadata=bob)
    return created.id, activated


async def partner_traffic(edge_url: str, activated: rpb.ActivateIntegrationResponse,
                          calls: list[tuple[str, str]]) -> list[Call]:
    c = activated.credentials
    async with httpx2.AsyncClient(base_url=edge_url, trust_env=False, timeout=15) as http:
        basic = base64.b64encode(f"{c.client_id}:{c.client_secret}".encode()).decode()
        token = await http.post("/oauth/token", data={"grant_type": "client_credentials"},
                                headers={"Authorization": f"Basic {basic}"})
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}", "X-API-Key": c.api_key}
        made = []
        for method, path in calls:
            answer = await http.request(method, path, headers=headers, json={} if method == "POST" else None)
            made.append(Call(method, path, answer.status_code, answer.headers["x-request-id"]))
        return made


async def test_the_api_log_after_real_traffic_is_filtered_searched_exported_and_charted(
        people, edge_url: str, suite_settings, mint, tmp_path: Path) -> None:
    org = new_org()
    sap_id, sap = await provision(suite_settings.registry_addr, mint, org, "SAP Procurement Sync", rate_limit=6)
    xero_id, xero = await provision(suite_settings.registry_addr, mint, org, EVIL, rate_limit=60)
    sap_calls = await partner_traffic(edge_url, sap, [
        ("GET", "/v1/inventory/lots"), ("GET", "/v1/inventory/lots"), ("POST", "/v1/inventory/lots"),
        ("GET", "/v1/inventory/lots/L-1"), ("GET", "/v1/inventory/lots"), ("GET", "/v1/inventory/lots"),
        ("GET", "/v1/inventory/lots"), ("GET", "/v1/inventory/lots"), ("GET", "/v1/inventory/lots")])
    xero_calls = await partner_traffic(edge_url, xero, [("GET", "/v1/inventory/lots")] * 2)
    statuses = [c.status for c in sap_calls]
    assert 429 in statuses and 403 in statuses, statuses  # over its limit of 6; POST needs inventory:write
    # The log also holds each partner's token request (POST /oauth/token).
    everything = len(sap_calls) + len(xero_calls) + 2

    quinn = await people.person("quinn")
    await quinn.sign_in(org, role="qa")
    await quinn.click("Integration API Logs")
    rows = quinn.page.get_by_test_id("log-row")

    async def all_logged() -> bool:
        # Named too: the names come with the integrations' facts, another stream and consumer
        # than the records (the Integration filter, the export and the chart show them).
        await quinn.page.reload()
        return (await rows.count() == everything
                and await rows.filter(has_text="SAP Procurement Sync").count() == len(sap_calls) + 1
                and await rows.filter(has_text=EVIL).count() == len(xero_calls) + 1)

    await eventually(all_logged, timeout=30, what="every partner request in the API log")
    await expect(quinn.page.locator("thead th")).to_have_text(
        ["Timestamp", "Integration", "Method", "Endpoint", "Status", "Duration", "IP Address", "Request ID", "Error"])
    await quinn.snapshot("logs-grid")

    # Each filter, in place (htmx), then all four together.
    await quinn.page.evaluate("window.__samePage = 1")
    await quinn.choose("Integration", "SAP Procurement Sync")
    await expect(rows).to_have_count(len(sap_calls) + 1)
    await quinn.choose("Status", "429 Too Many Requests")
    await expect(rows).to_have_count(statuses.count(429))
    await expect(quinn.page.get_by_test_id("log-error").first).to_have_text("rate_limit_exceeded")
    await quinn.choose("Status", "Any status")
    await quinn.fill("Endpoint contains", "lots/L-1")
    await quinn.page.get_by_label("Endpoint contains", exact=True).press("Enter")
    await expect(rows).to_have_count(1)
    await quinn.fill("Endpoint contains", "")
    await quinn.choose("Status", "Error (4xx, 5xx)")
    await expect(rows).to_have_count(sum(1 for s in statuses if s >= 400))
    today = dt.datetime.now(dt.timezone.utc).date()
    await quinn.page.get_by_label("From (UTC)").fill(str(today + dt.timedelta(days=1)))
    await expect(quinn.page.get_by_test_id("empty")).to_contain_text("No requests match these filters")
    await quinn.page.get_by_label("From (UTC)").fill(str(today - dt.timedelta(days=1)))
    await quinn.page.get_by_label("To (UTC, inclusive)").fill(str(today + dt.timedelta(days=1)))
    await expect(rows).to_have_count(sum(1 for s in statuses if s >= 400))
    assert await quinn.page.evaluate("window.__samePage") == 1
    assert f"integration={sap_id}" in quinn.page.url and "status=error" in quinn.page.url

    # The export of what is filtered, downloaded and read back.
    exported = await quinn.download_file("CSV")
    table = list(csv.DictReader(exported.read_text().splitlines()))
    assert sorted(r["request_id"] for r in table) == sorted(c.request_id for c in sap_calls if c.status >= 400)
    assert {r["integration_name"] for r in table} == {"SAP Procurement Sync"}

    # The chart of all of it: both integrations, told apart without colour.
    await quinn.click("Clear")
    await expect(rows).to_have_count(everything)
    await quinn.click("Show the chart")
    await expect(quinn.page.get_by_test_id("chart-series")).to_have_count(2)
    await expect(quinn.page.get_by_test_id("legend-item")).to_contain_text(["SAP Procurement Sync", EVIL])
    await quinn.snapshot("logs-chart")

    # A request found by the X-Request-ID its answer carried.
    limited = next(c for c in sap_calls if c.status == 429)
    await quinn.fill("Request ID", limited.request_id)
    await quinn.click("Find")
    await expect(quinn.page.get_by_test_id("request-id")).to_have_text(limited.request_id)
    await expect(quinn.page.get_by_test_id("request-status")).to_have_text("429")
    await quinn.snapshot("logs-request")

    # A QA user: no administration anywhere; nothing a name holds ran.
    await expect(quinn.page.get_by_role("link", name="Webhooks")).to_have_count(0)
    await expect(quinn.page.get_by_role("link", name="Integrations", exact=True)).to_have_count(0)
    assert quinn.dialogs == [] and not quinn.console_errors, (quinn.dialogs, quinn.console_errors)
    assert xero_id


async def test_a_tampered_audit_chain_is_shown_broken_and_the_review_matches_the_cli(
        people, edge_url: str, suite_settings, make_settings, mint, actor_keys, tmp_path: Path) -> None:
    org = new_org()
    sap_id, sap = await provision(suite_settings.registry_addr, mint, org, "SAP Procurement Sync", rate_limit=60)
    await partner_traffic(edge_url, sap, [("GET", "/v1/inventory/lots")] * 3)
    alice = await people.person("alice")
    await alice.sign_in(org)

    # The audit trail: the registry's three entries (requested, approved, activated), then more.
    await alice.click("Audit trail")
    entries = alice.page.get_by_test_id("audit-row")

    async def audited() -> bool:
        await alice.page.reload()
        return await entries.count() >= 3

    await eventually(audited, timeout=30, what="the audit entries")
    await alice.click("Verify the chain")
    await expect(alice.page.get_by_test_id("chain-result")).to_contain_text("Verified:")
    checkpoint = json.loads((await alice.download_file("Download signed checkpoint")).read_text())["checkpoint"]
    assert checkpoint["org_id"] == org and checkpoint["count"] >= 3
    await alice.snapshot("audit")
    await tamper_audit_entry(database_file(make_settings(), "logs"), org, 2, reason="nothing to see here")
    await alice.click("Verify the chain")
    await expect(alice.page.get_by_test_id("chain-result")).to_contain_text("Broken: entry 2 altered")
    await alice.snapshot("audit-broken")

    # The quarterly review, beside `trellis review --json` for the same organisation.
    await alice.click("Quarterly review")

    async def used() -> bool:
        # Everything the review shows, each by its own stream and consumer: the requests (and its
        # token request), the integration's facts as activated, and identity's credentials.issued
        # audit entry; a page read before the last of them would differ from the report read after.
        await alice.page.reload()
        card = alice.page.locator(f'[data-integration="{sap_id}"]')

        async def shown(name: str) -> str:
            return " ".join((await card.locator(f'[data-field="{name}"]').first.text_content() or "").split())

        return (await card.count() == 1 and await shown("requests") == "4" and await shown("name") == "SAP Procurement Sync"
                and await shown("status") == "Active" and "issued to " in await shown("credentials_issued"))

    await eventually(used, timeout=30, what="the integration's requests, facts and credential issue in the review")
    code, out, err = await trellis_cli("review", "--json", "--logs-addr", suite_settings.logs_addr, "--actor", "alice",
                                       "--org", org, data_dir=tmp_path / "cli", private_pem=actor_keys[0],
                                       settings=suite_settings)
    assert code == 0, err
    report = json.loads(out)["review"]
    assert [line["integration_id"] for line in report["integrations"]] == [sap_id]
    await alice.page.reload()  # read after the report: it holds at least what the report does
    assert_review_matches(await alice.html(), report)
    await expect(alice.page.get_by_test_id("checklist-item")).to_have_count(7)
    await alice.snapshot("review")
    exported = await alice.download_file("Export CSV")
    code, out, err = await trellis_cli("review", "--format", "csv", "--logs-addr", suite_settings.logs_addr, "--actor",
                                       "alice", "--org", org, data_dir=tmp_path / "cli", private_pem=actor_keys[0],
                                       settings=suite_settings)
    assert code == 0, err
    assert exported.read_text() == out
    await alice.click("Printable page")
    await expect(alice.page.get_by_role("button", name="Print")).to_be_visible()
    await expect(alice.page.locator("nav")).to_have_count(0)
