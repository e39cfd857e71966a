"""`trellis logs|audit|review` through the CLI's main() against a real logs service (in this
process, on port 0), with the actor tokens the CLI signs from its data directory."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from services.cli.embedded import ensure_secrets
from services.cli.main import run
from tests.support.console_services import change_behind_the_service
from tests.support.settings import Settings
from tests.integration.logs.conftest import (
    LogsRunner,
    publish_audit,
    publish_batch,
    publish_integration,
    publish_request,
    request_record,
    unique,
)
from tests.support.waiting import eventually

@dataclass
class Cli:
    data_dir: Path
    logs_addr: str
    org: str
    database: Path
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str, org: str | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(run, [*argv, "--data-dir", str(self.data_dir), "--logs-addr", self.logs_addr,
                                             "--actor", "quinn", "--org", org or self.org])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
async def cli(tmp_path: Path, make_settings: Callable[..., Settings], logs_runner: Callable[..., LogsRunner],
              js: JetStreamContext, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Cli]:
    data_dir = tmp_path / "cli-data"
    local = ensure_secrets(data_dir)
    defaults = Settings()
    runner = logs_runner(actor_public_key_file=str(local.public_key_file), actor_issuer=defaults.actor_issuer,
                         actor_audience=defaults.actor_audience, audit_hmac_key=local.audit_hmac_key)
    await runner.start()
    assert runner.service is not None
    org = unique("org")
    integration = unique("int")
    # Taken now, not at import: `--since 20m` counts back from when the test runs.
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    await publish_integration(js, org=org, integration=integration, version=1, name="NetSuite orders",
                              scopes=("orders:read", "crm:read"), credentials_issued_at=now - dt.timedelta(days=100))
    for i in range(30):
        await publish_request(js, org=org, request_id=f"{org}-{i:02d}", when=now - dt.timedelta(minutes=i),
                              integration=integration, endpoint=f"/orders/{i}", category="orders",
                              status=429 if i % 3 == 0 else 200, error="rate_limit_exceeded" if i % 3 == 0 else "")
    for i in range(4):
        await publish_audit(js, org=org, event_id=f"{org}-e{i}", object_id=integration,
                            action="integration.suspended" if i == 3 else "integration.updated")
    database = Path(runner.settings.database_url("logs").split("///", 1)[1])
    cli = Cli(data_dir, f"127.0.0.1:{runner.service.port}", org, database, capsys)

    async def ready() -> bool:
        # The integration's event travels apart from the records (another stream and consumer):
        # every record naming it means its projection has arrived too.
        code, out, _ = await cli("logs", "query", "--json", "--limit", "100")
        code2, audit, _ = await cli("audit", "query", "--json")
        records = json.loads(out)["records"] if code == 0 else []
        return (len(records) == 30 and all(r["integration_name"] == "NetSuite orders" for r in records)
                and code2 == 0 and len(json.loads(audit)["entries"]) == 4)

    await eventually(ready, timeout=20, what="records, the integration and audit entries in the logs service")
    yield cli


async def test_logs_query_prints_a_filtered_table(cli: Cli) -> None:
    code, out, err = await cli("logs", "query", "--status", "429", "--since", "20m")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["TIME", "INTEGRATION", "METHOD", "ENDPOINT", "STATUS", "MS", "IP", "REQUEST", "ID", "ERROR"]
    assert len(lines) == 1 + 7  # 429s at minutes 0, 3, ..., 18
    assert all("NetSuite orders" in line and "rate_limit_exceeded" in line for line in lines[1:])

    code, out, err = await cli("logs", "query", "--limit", "5")
    assert code == 0 and len(out.strip().splitlines()) == 6 and "--page-token" in err


async def test_logs_show_prints_one_request_and_refuses_another_organisations(cli: Cli) -> None:
    code, out, _ = await cli("logs", "show", f"{cli.org}-03")
    assert code == 0
    assert "/orders/3" in out and "rate_limit_exceeded" in out and "NetSuite orders" in out
    code, _, err = await cli("logs", "show", f"{cli.org}-03", org=unique("org"))
    assert code == 1 and "NOT_FOUND" in err


async def test_logs_export_writes_every_row_with_progress(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "out" / "requests.csv"
    target.parent.mkdir()
    code, out, err = await cli("logs", "export", "--format", "csv", "--output", str(target))
    assert code == 0, err
    assert "100%" in err and "30/30 requests" in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["request_id"] for r in rows] == [f"{cli.org}-{i:02d}" for i in range(30)]
    assert list(target.parent.iterdir()) == [target]  # no partial file left behind

    jsonl = tmp_path / "out" / "errors.jsonl"
    code, out, err = await cli("logs", "export", "--format", "jsonl", "--status", "error", "--output", str(jsonl))
    assert code == 0, err
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 10 and all(line["status"] == 429 for line in lines)
    assert "Exported 10 requests" in out


async def test_audit_query_checkpoint_and_verify(cli: Cli, tmp_path: Path) -> None:
    code, out, err = await cli("audit", "query", "--action", "integration.suspended")
    assert code == 0, err
    assert "integration.suspended" in out and "integration.updated" not in out

    checkpoint = tmp_path / "checkpoint.json"
    code, out, err = await cli("audit", "checkpoint", "--output", str(checkpoint))
    assert code == 0, err
    assert json.loads(checkpoint.read_text())["checkpoint"]["count"] == 4
    code, out, err = await cli("audit", "verify", "--checkpoint", str(checkpoint))
    assert code == 0, err
    assert "intact: 4 entries verified" in out

    # An administrator with database access edits one entry, then cuts the tail and its head.
    await change_behind_the_service(cli.database, lambda db: db.execute(
        "UPDATE audit_entries SET actor_id = 'mallory' WHERE org_id = ? AND seq = 2", (cli.org,)))
    code, out, err = await cli("audit", "verify")
    assert code == 1 and "altered at entry 2" in err

    def cut_the_tail(db: sqlite3.Connection) -> None:
        db.execute("UPDATE audit_entries SET actor_id = 'alice' WHERE org_id = ? AND seq = 2", (cli.org,))
        db.execute("DELETE FROM audit_entries WHERE org_id = ? AND seq = 4", (cli.org,))
        db.execute("UPDATE audit_chains SET count = 3, last_seq = 3, head_mac = (SELECT mac FROM audit_entries "
                   "WHERE org_id = ? AND seq = 3) WHERE org_id = ?", (cli.org, cli.org))
    await change_behind_the_service(cli.database, cut_the_tail)
    assert (await cli("audit", "verify"))[0] == 0
    code, out, err = await cli("audit", "verify", "--checkpoint", str(checkpoint))
    assert code == 1 and "truncated at entry 4" in err


async def test_review_prints_a_table_markdown_and_csv(cli: Cli, tmp_path: Path) -> None:
    code, out, err = await cli("review")
    assert code == 0, err
    assert "NetSuite orders" in out and "pii_scope_granted" in out and "credentials_older_than_90_days" in out

    code, out, err = await cli("review", "--format", "markdown")
    assert code == 0, err
    assert out.startswith(f"# Quarterly access review: {cli.org}")
    assert "- [ ] Do assigned scopes still match actual usage? Needs attention: NetSuite orders." in out

    report = tmp_path / "review.csv"
    code, out, err = await cli("review", "--format", "csv", "--output", str(report))
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(report.read_text())))
    assert row["integration"] == "NetSuite orders" and row["exercised scopes"] == "orders:read"
    assert row["unused scopes"] == "crm:read" and row["requests"] == "30"


async def test_logs_query_refuses_filters_that_could_never_match_instead_of_finding_nothing(cli: Cli, tmp_path: Path) -> None:
    for flags, message in ((("--ip", "999.1.1.1"), "'999.1.1.1' is not an IP address"),
                           (("--error-code", "nope"), "error code 'nope' is not one a request can carry"),
                           (("--integration", "NetSuite orders"), "is not an integration id")):
        code, out, err = await cli("logs", "query", *flags)
        assert code != 0 and "No requests match" not in out + err, (out, err)
        assert "INVALID_ARGUMENT" in err and message in err, err
    target = tmp_path / "refused.csv"
    code, _, err = await cli("logs", "export", "--ip", "999.1.1.1", "--output", str(target))
    assert code != 0 and "is not an IP address" in err and not target.exists()


async def test_logs_platform_shows_unattributed_requests_and_how_many_a_row_stands_for(
    cli: Cli, js: JetStreamContext, tmp_path: Path
) -> None:
    path = f"/probe/{unique('p')}"  # the platform log is every test's: find this test's rows by path
    now = dt.datetime.now(dt.timezone.utc)
    single = request_record(org="", request_id=unique("req"), when=now - dt.timedelta(seconds=5), integration="",
                            endpoint=path, status=401, error="invalid_api_key", category="")
    folded = request_record(org="", request_id=unique("req"), when=now, integration="", endpoint=path, status=401,
                            error="invalid_api_key", category="")
    folded.repeats = 12
    await publish_batch(js, [single, folded], batch_id=unique("bat"))

    async def listed() -> list[str] | None:
        code, out, _ = await cli("logs", "query", "--platform", "--endpoint", path)
        lines = out.strip().splitlines()
        return lines if code == 0 and len(lines) == 3 else None

    lines = await eventually(listed, timeout=20, what="both platform rows")
    assert lines[0].split() == ["TIME", "METHOD", "ENDPOINT", "STATUS", "MS", "IP", "REQUEST", "ID", "ERROR", "REQUESTS"]
    assert lines[1].split()[-1] == "12" and folded.request_id in lines[1]
    assert lines[2].split()[-1] == "1" and single.request_id in lines[2]
    # Not an organisation's: the same query without --platform finds nothing.
    code, out, _ = await cli("logs", "query", "--endpoint", path)
    assert code == 0 and "No requests match." in out

    code, out, _ = await cli("logs", "show", "--platform", folded.request_id)
    assert code == 0 and "12 (the last of them shown" in out
    target = tmp_path / "platform.csv"
    code, _, err = await cli("logs", "export", "--platform", "--endpoint", path, "--output", str(target))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["request_id"], r["repeats"]) for r in rows] == [(folded.request_id, "12"), (single.request_id, "1")]


async def test_review_flags_a_new_integration_s_unused_scopes_and_the_checklist_says_so(cli: Cli, js: JetStreamContext) -> None:
    # Activated two days ago, it read inventory once and never wrote orders.
    fresh = unique("int")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    await publish_integration(js, org=cli.org, integration=fresh, version=1, name="SAP Procurement Sync",
                              scopes=("inventory:read", "orders:write"), credentials_issued_at=now - dt.timedelta(days=2))
    await publish_request(js, org=cli.org, request_id=f"{cli.org}-fresh", when=now, integration=fresh,
                          endpoint="/inventory/lots", category="inventory", status=200, error="")

    async def reviewed() -> dict | None:
        code, out, _ = await cli("review", "--json")
        lines = {r["integration_id"]: r for r in json.loads(out)["review"]["integrations"]} if code == 0 else {}
        line = lines.get(fresh)
        # The request and the integration's facts travel apart (another stream and consumer): a
        # line with the request but no name is the request alone, its grants not yet known.
        return line if line and line["requests"] == 1 and line["name"] == "SAP Procurement Sync" else None

    line = await eventually(reviewed, timeout=20, what="the new integration, its facts and its request in the review")
    assert line["unused_scopes"] == ["orders:write"]
    assert "granted_scopes_never_used" in line["flags"] and "unused_30_days" not in line["flags"]
    code, out, err = await cli("review", "--format", "markdown")
    assert code == 0, err
    assert "- [ ] Do assigned scopes still match actual usage? Needs attention: " in out
    assert "SAP Procurement Sync" in out.split("Do assigned scopes still match actual usage?", 1)[1].splitlines()[0]
    code, out, _ = await cli("review")
    assert "2 integrations" in out and "granted_scopes_never_used" in out.split("SAP Procurement Sync", 1)[1].splitlines()[0]
