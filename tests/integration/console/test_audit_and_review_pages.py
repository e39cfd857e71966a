"""The audit trail and the quarterly review over HTTP, against the real registry, webhooks and
logs services: entries newest first with their filters, the chain check intact and then broken
by an entry changed in the database, the signed checkpoint as a file (the one `trellis audit`
reads) and a check against it; the review's checklist answered from its flags, its lines
matching `trellis review --json`, its CSV the same bytes as `trellis review --format csv`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from pathlib import Path

from nats.js import JetStreamContext

import pytest

from services.cli.commands.audit import read_checkpoint
from services.contracts.trellis.events.v1 import events_pb2
from tests.integration.logs.conftest import publish_batch, publish_integration, request_record, ts
from tests.support.console import ConsoleUser, assert_review_matches, create_integration, hidden_fields, new_org
from tests.support.console_services import (
    database_file,
    delete_audit_entry,
    insert_audit_entry,
    tamper_audit_entry,
    trellis_cli,
)
from tests.support.waiting import eventually

AUDIT_ROW = 'data-testid="audit-row"'


async def audited(user: ConsoleUser, count: int, query: str = "") -> str:
    async def enough() -> str:
        page = await user.page("/audit" + (f"?{query}" if query else ""))
        return page if page.count(AUDIT_ROW) >= count else ""

    return await eventually(enough, timeout=20, what=f"{count} audit entries")


async def test_audit_entries_are_filtered_and_the_chain_check_names_an_altered_entry(
        browser, logs_service, make_settings, tmp_path: Path) -> None:
    org = new_org()
    alice, bob = browser(), browser()
    await alice.sign_in("alice", org)
    await bob.sign_in("bob", org)
    first = await create_integration(alice, name="SAP Procurement Sync")
    second = await create_integration(alice, name="NetSuite Orders")
    await bob.submit(f"/integrations/{first}", f"/integrations/{first}/approve")
    page = await audited(alice, 3)
    assert re.findall(r'data-testid="audit-action">([^<]+)<', page) == [
        "integration.approved", "integration.created", "integration.created"]
    seqs = [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', page)]
    assert seqs == sorted(seqs, reverse=True)

    assert (await audited(alice, 2, f"integration={first}")).count(AUDIT_ROW) == 2
    assert (await alice.page(f"/audit?integration={second}")).count(AUDIT_ROW) == 1
    assert (await alice.page("/audit?actor=bob")).count(AUDIT_ROW) == 1
    assert (await alice.page("/audit?action=integration.created")).count(AUDIT_ROW) == 2
    tomorrow = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
    assert 'data-testid="empty"' in await alice.page(f"/audit?since={tomorrow}")
    assert (await alice.page(f"/audit?actor=bob&integration={first}&until={tomorrow}")).count(AUDIT_ROW) == 1
    bad = await alice.get("/audit?until=yesterday")
    assert bad.status_code == 422 and 'id="until-error"' in bad.text

    verified = await alice.page("/audit/verify")
    assert "Verified: 3 entries" in verified
    fragment = await alice.get("/audit/verify", headers={"HX-Request": "true"})
    assert "Verified: 3 entries" in fragment.text and "<html" not in fragment.text

    # The checkpoint: the file `trellis audit checkpoint` writes, and the check against it.
    download = await alice.get("/audit/checkpoint")
    assert download.status_code == 200 and download.headers["cache-control"] == "no-store"
    assert re.fullmatch(r'attachment; filename="audit-checkpoint-\d{8}T\d{6}Z\.json"',
                        download.headers["content-disposition"])
    saved = tmp_path / "checkpoint.json"
    saved.write_bytes(download.content)
    checkpoint = read_checkpoint(saved)
    assert checkpoint.org_id == org and checkpoint.count == 3 and len(checkpoint.signature) == 64
    listing = await alice.page("/audit")
    fields = hidden_fields(listing, "/audit/verify")
    against = await alice.client.post("/audit/verify", data=fields,
                                      files={"checkpoint": ("checkpoint.json", download.content, "application/json")})
    assert against.status_code == 200 and "still reaches the checkpoint" in against.text
    forged = json.loads(download.content)
    forged["checkpoint"]["count"] = 2
    refused = await alice.client.post("/audit/verify", data=fields,
                                      files={"checkpoint": ("c.json", json.dumps(forged).encode(), "application/json")})
    assert refused.status_code == 422 and "Verified" not in refused.text
    not_json = await alice.client.post("/audit/verify", data=fields, files={"checkpoint": ("c.json", b"hello", "text/plain")})
    assert not_json.status_code == 422 and "not a checkpoint" in not_json.text

    # Someone with write access to the logs database changes entry 2: the page names it.
    await tamper_audit_entry(database_file(make_settings(), "logs"), org, 2, reason="nothing to see")
    broken = await alice.page("/audit/verify")
    assert "Broken: entry 2 altered" in broken and "Verified" not in broken
    assert "1 entry before it verified" in broken


@pytest.mark.parametrize("variant", ["removed", "inserted inside the chain", "inserted past its head"])
async def test_the_chain_check_names_an_entry_removed_or_inserted_in_the_database(
        browser, logs_service, make_settings, variant: str) -> None:
    org = new_org()
    alice = browser()
    await alice.sign_in("alice", org)
    for name in ("SAP Procurement Sync", "NetSuite Orders", "Shopify Store"):
        await create_integration(alice, name=name)
    await audited(alice, 3)
    assert "Verified: 3 entries" in await alice.page("/audit/verify")

    database = database_file(make_settings(), "logs")
    forged = f"evt_forged_{org[4:]}"
    if variant == "removed":
        await delete_audit_entry(database, org, 2)
        expected = ("Broken: entry 2 removed", "entry 2 was removed: the chain goes from entry 1 straight to entry 3",
                    "1 entry before it verified")
    elif variant == "inserted inside the chain":
        await insert_audit_entry(database, org, 2, event_id=forged, action="integration.revoked")
        expected = ("Broken: entry 2 inserted", f"entry 2 ({forged}) was inserted: the entry after it continues "
                    "the chain without it", "1 entry before it verified")
    else:
        await insert_audit_entry(database, org, 4, event_id=forged, action="integration.revoked")
        expected = ("Broken: entry 4 inserted", f"entry 4 ({forged}) was inserted past the recorded chain head",
                    "3 entries before it verified")
    broken = await alice.page("/audit/verify")
    assert "Verified" not in broken
    for text in expected:
        assert text in broken, (text, re.search(r'data-testid="chain-result">(.*?)</div>', broken, re.S))


async def review_traffic(js: JetStreamContext, org: str) -> tuple[str, str]:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    busy, idle = "int_" + org[4:] + "a", "int_" + org[4:] + "b"
    await publish_integration(js, org=org, integration=busy, version=1, name="NetSuite orders", owner="olivia",
                              scopes=("orders:read", "crm:read"), credentials_issued_at=now - dt.timedelta(days=100))
    await publish_integration(js, org=org, integration=idle, version=1, name="Old <export>", owner="=HYPERLINK(x)",
                              scopes=("inventory:read",), allowlist=("10.0.0.0/24",),
                              credentials_issued_at=now - dt.timedelta(days=3), rate_limit=600)
    await publish_batch(js, [request_record(org=org, request_id=f"{org}-{i}", when=now - dt.timedelta(minutes=i),
                                            integration=busy, endpoint=f"/orders/{i}", category="orders",
                                            status=429 if i % 3 == 0 else 200,
                                            error="rate_limit_exceeded" if i % 3 == 0 else "") for i in range(30)],
                        batch_id=f"{org}-review")
    # The audit trail of the window: the busy one's owner changed and its credentials were issued.
    await publish_trail(js, org, busy, "integration.updated", "alice", before='{"owner": "oscar", "name": "x"}',
                        after='{"owner": "olivia", "name": "x"}', when=now - dt.timedelta(days=20))
    await publish_trail(js, org, idle, "integration.updated", "alice", before='{"owner": "=HYPERLINK(x)"}',
                        after='{"owner": "=HYPERLINK(x)", "rate_limit_per_minute": 600}', when=now - dt.timedelta(days=19))
    await publish_trail(js, org, busy, "credentials.issued", "ivan <it>", when=now - dt.timedelta(days=10))
    await publish_trail(js, org, busy, "integration.updated", "alice", before='{"owner": "ophelia"}',
                        after='{"owner": "oscar"}', when=now - dt.timedelta(days=200))  # before the window
    return busy, idle


async def publish_trail(js: JetStreamContext, org: str, integration: str, action: str, actor: str, *,
                        when: dt.datetime, before: str = "", after: str = "") -> None:
    """An audit event as the registry (integration.*) or the identity service (credentials.*) sends it."""
    event = events_pb2.AuditEvent(
        event_id=f"evt_{uuid.uuid4().hex}", occurred_at=ts(when), service=action.split(".")[0], org_id=org,
        actor_id=actor, action=action, object_type=action.split(".")[0], object_id=integration, before_json=before,
        after_json=after, reason="", request_id="")
    await js.publish(f"trellis.audit.registry.{action}", event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id})


async def test_the_review_answers_the_checklist_and_matches_the_cli(browser, logs_service, js, console_settings,
                                                                    actor_keys, tmp_path: Path) -> None:
    org = new_org()
    quinn = browser()
    await quinn.sign_in("quinn", org, role="qa")
    busy, idle = await review_traffic(js, org)

    async def ready() -> str:
        # Everything published that the review shows: the integrations, their requests and the
        # audit trail's owner change and credential issue (each arrives by its own stream; a
        # page read before the last of them would differ from the CLI's report read after).
        page = await quinn.page("/review")
        return page if (page.count('data-testid="review-row"') == 2 and 'data-field="requests">30<' in page
                        and "NetSuite orders" in page and "Old &lt;export&gt;" in page
                        and "issued to ivan" in page and "owner oscar → olivia" in page) else ""

    await eventually(ready, timeout=20, what="both integrations, their requests and audit trail in the review")
    settings = console_settings()
    code, out, err = await trellis_cli("review", "--json", "--logs-addr", settings.logs_addr, "--actor", "quinn",
                                       "--org", org, data_dir=tmp_path / "cli", private_pem=actor_keys[0],
                                       settings=settings)
    assert code == 0, err
    report = json.loads(out)["review"]
    assert report["org_id"] == org and len(report["integrations"]) == 2
    page = await quinn.page("/review")  # read after the report: it holds at least what the report does
    assert_review_matches(page, report)

    items = re.findall(r'data-testid="checklist-item">(.*?)</li>', page, re.S)
    assert len(items) == 7
    answer = dict((re.search(r"<strong>(.*?)</strong>", i).group(1), i) for i in items)  # type: ignore[union-attr]
    assert "Needs attention: NetSuite orders" in answer["Are credentials held only by authorised personnel?"]
    contacts = answer["Have partner contacts changed?"]
    assert "☐" in contacts and "confirm with each owner" in contacts and "Needs attention: NetSuite orders" in contacts
    assert re.search(r"<li>NetSuite orders: owner oscar → olivia by alice on \d{4}-\d\d-\d\dT[\d:]{8}Z", contacts)
    assert "ophelia" not in page and "Old &lt;export&gt;: owner" not in contacts  # outside the window; another field
    assert re.search(r"<li>NetSuite orders: issued to ivan &lt;it&gt; on \d{4}-",
                     answer["Are credentials held only by authorised personnel?"])
    busy_line = next(i for i in report["integrations"] if i["integration_id"] == busy)
    assert [(c["before"], c["after"]) for c in busy_line["owner_changes"]] == [("oscar", "olivia")]
    assert [c["actor_id"] for c in busy_line["credentials_issued"]] == ["ivan <it>"]
    assert "owner_changed_in_window" in busy_line["flags"]
    assert "Needs attention: NetSuite orders" in answer["Which integrations hold PII or Financial scopes?"]
    assert "Old &lt;export&gt;" in page and "<export>" not in page

    # The CSV is the CLI's, byte for byte; a formula in a cell is neutralised.
    download = await quinn.get("/review/csv")
    assert download.status_code == 200 and download.headers["cache-control"] == "no-store"
    code, out, err = await trellis_cli("review", "--format", "csv", "--logs-addr", settings.logs_addr, "--actor",
                                       "quinn", "--org", org, data_dir=tmp_path / "cli", private_pem=actor_keys[0],
                                       settings=settings)
    assert code == 0, err
    assert download.text == out
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert {r["owner"] for r in rows} == {"olivia", "'=HYPERLINK(x)"}

    printable = await quinn.page("/review/print")
    assert 'aria-label="Main"' not in printable and "Quarterly access review" in printable
    assert "<form" not in printable and 'data-testid="checklist"' in printable
    assert (await quinn.get("/review?window_days=500")).status_code == 422
