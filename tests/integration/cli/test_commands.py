"""CLI commands against real identity and registry services (in this process, on port 0),
with the actor tokens the CLI signs from its data directory."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli.embedded import ensure_secrets
from services.cli.main import run
from tests.support.settings import Settings
from tests.support.services import start_service


@dataclass
class Cli:
    """`trellis …` with the data directory and addresses of the services under test."""

    data_dir: Path
    identity_addr: str
    registry_addr: str
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str, actor: str = "alice", org: str = "org_cli") -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(run, [
            "--data-dir", str(self.data_dir), "--identity-addr", self.identity_addr,
            "--registry-addr", self.registry_addr, "--actor", actor, "--org", org, *argv,
        ])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def json(self, *argv: str, **kw: str) -> dict:
        code, out, err = await self(*argv, "--json", **kw)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
async def cli(tmp_path: Path, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Cli]:
    data_dir = tmp_path / "cli-data"
    local = ensure_secrets(data_dir)
    defaults = Settings()
    trust_cli = {"actor_public_key_file": str(local.public_key_file), "actor_issuer": defaults.actor_issuer,
                 "actor_audience": defaults.actor_audience, "data_dir": data_dir}
    identity = await start_service("identity", make_settings(**trust_cli))
    registry = await start_service("registry", make_settings(**trust_cli, identity_addr=f"127.0.0.1:{identity.port}"))
    try:
        yield Cli(data_dir, f"127.0.0.1:{identity.port}", f"127.0.0.1:{registry.port}", capsys)
    finally:
        await registry.stop(0)
        await identity.stop(0)


async def _active(cli: Cli, tmp_path: Path) -> str:
    created = await cli.json("integrations", "create", "--vendor", "netsuite", "--name", "NetSuite orders",
                             "--description", "orders", "--owner", "alice", "--scope", "orders:read,inventory:read")
    integration_id = created["integration"]["id"]
    await cli.json("integrations", "approve", integration_id, actor="bob")
    activated = await cli.json("integrations", "activate", integration_id, actor="bob")
    assert activated["integration"]["status"] == "active"
    assert activated["credentials"]["api_key"].startswith("grq_live_") and activated["credentials"]["client_secret"]
    return integration_id


async def test_update_adds_and_removes_scopes_and_replaces_then_clears_the_allowlist(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    updated = await cli.json("integrations", "update", integration_id, "--add-scope", "crm:read",
                             "--remove-scope", "orders:read", "--rate-limit", "240", "--allow", "10.0.0.0/8,2001:db8::/32")
    integration = updated["integration"]
    assert integration["scopes"] == ["crm:read", "inventory:read"]
    assert integration["sensitive_scopes"] == ["crm:read"]
    assert integration["rate_limit_per_minute"] == 240
    assert integration["ip_allowlist"] == ["10.0.0.0/8", "2001:db8::/32"]
    cleared = await cli.json("integrations", "update", integration_id, "--clear-allowlist")
    assert cleared["integration"]["ip_allowlist"] == [] and cleared["integration"]["rate_limit_per_minute"] == 240


async def test_refused_scope_is_one_error_line_naming_the_allowed_set(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    code, out, err = await cli("integrations", "update", integration_id, "--add-scope", "finance:write")
    assert code == 1 and out == ""
    assert err.startswith("error: INVALID_ARGUMENT: ") and err.count("\n") == 1
    assert "finance:read" in err


async def test_reactivation_needs_a_second_admin_and_writes_a_new_handoff(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    await cli.json("integrations", "suspend", integration_id, "--reason", "security review", actor="carol")
    code, _, err = await cli("integrations", "reactivate", integration_id, actor="carol")
    assert code == 1 and err.startswith("error: PERMISSION_DENIED: ")

    handoff = tmp_path / "again.json"
    code, out, err = await cli("integrations", "reactivate", integration_id, "--handoff", str(handoff), actor="dave")
    assert code == 0, err
    data = json.loads(handoff.read_text())
    assert stat.S_IMODE(handoff.stat().st_mode) == 0o600
    assert data["api_key"] in out and data["client_secret"] in out
    assert "Reactivated" in out and "secrets manager" in out


async def test_show_lists_the_lifecycle_history_in_order(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    await cli.json("integrations", "suspend", integration_id, "--reason", "paused contract", actor="carol")
    shown = await cli.json("integrations", "show", integration_id)
    assert [e["action"] for e in shown["history"]] == ["created", "approved", "activated", "suspended"]
    assert shown["history"][-1]["reason"] == "paused contract"
    code, out, _ = await cli("integrations", "show", integration_id)
    assert code == 0 and "paused contract" in out and "Suspended" in out


async def test_list_filters_by_status_and_vendor(cli: Cli, tmp_path: Path) -> None:
    active_id = await _active(cli, tmp_path)
    requested = await cli.json("integrations", "create", "--vendor", "shopify", "--name", "Shop", "--description", "d",
                               "--owner", "o", "--scope", "orders:read")
    requested_id = requested["integration"]["id"]
    by_status = await cli.json("integrations", "list", "--status", "active")
    assert [i["id"] for i in by_status["integrations"]] == [active_id]
    by_vendor = await cli.json("integrations", "list", "--vendor", "shopify")
    assert [i["id"] for i in by_vendor["integrations"]] == [requested_id]
    code, out, _ = await cli("integrations", "list", "--status", "requested,approved")
    assert code == 0 and requested_id in out and active_id not in out


async def test_regenerated_key_is_shown_once_and_replaces_the_prefix(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    before = (await cli.json("integrations", "show", integration_id))["integration"]["api_key_prefix"]
    regenerated = await cli.json("integrations", "regenerate-key", integration_id)
    assert regenerated["api_key"].startswith(regenerated["api_key_prefix"])
    assert regenerated["api_key_prefix"] != before
    shown = await cli.json("integrations", "show", integration_id)
    assert regenerated["api_key"] not in json.dumps(shown)


async def test_handoffs_go_under_the_data_directory_and_regenerate_key_writes_the_new_key(cli: Cli, tmp_path: Path) -> None:
    created = await cli.json("integrations", "create", "--vendor", "sap", "--name", "SAP", "--description", "d",
                             "--owner", "alice", "--scope", "inventory:read")
    integration_id = created["integration"]["id"]
    await cli.json("integrations", "approve", integration_id, actor="bob")
    code, out, err = await cli("integrations", "activate", integration_id, "--handoff", actor="bob")
    assert code == 0, err
    first = cli.data_dir / "handoffs" / f"{integration_id}.json"
    assert f"Partner hand-off written to {first} (mode 0600)." in out
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    activated = json.loads(first.read_text())

    code, out, err = await cli("integrations", "regenerate-key", integration_id, "--handoff")
    assert code == 0, err
    second = cli.data_dir / "handoffs" / f"{integration_id}-2.json"  # the first is never overwritten
    assert stat.S_IMODE(second.stat().st_mode) == 0o600
    rotated = json.loads(second.read_text())
    assert rotated["api_key"] in out and rotated["api_key"] != activated["api_key"]
    assert rotated["api_key"].startswith("grq_live_")
    assert (rotated["integration_id"], rotated["client_id"], rotated["scopes"]) == (
        integration_id, activated["client_id"], ["inventory:read"])
    assert "client_secret" not in rotated and "unchanged" in rotated["note"]
    # The key in the hand-off is the live one: the detail view shows its prefix.
    shown = await cli.json("integrations", "show", integration_id)
    assert rotated["api_key"].startswith(shown["integration"]["api_key_prefix"])
    assert json.loads(first.read_text()) == activated


async def test_a_refused_regeneration_leaves_no_handoff_file(cli: Cli, tmp_path: Path) -> None:
    handoff = tmp_path / "never.json"
    code, _, err = await cli("integrations", "regenerate-key", "int_doesnotexist", "--handoff", str(handoff))
    assert code == 1 and err.startswith("error: NOT_FOUND: ")
    assert not handoff.exists()


async def test_revoke_is_terminal(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    code, out, err = await cli("integrations", "revoke", integration_id, "--reason", "retired", "--yes")
    assert code == 0 and "Revoked" in out, err
    code, _, err = await cli("integrations", "reactivate", integration_id, actor="bob")
    assert code == 1 and err.startswith("error: FAILED_PRECONDITION: ")


async def test_another_organisations_integration_is_not_found(cli: Cli, tmp_path: Path) -> None:
    integration_id = await _active(cli, tmp_path)
    code, _, err = await cli("integrations", "show", integration_id, org="org_other")
    assert code == 1 and err.startswith("error: NOT_FOUND: ")


async def test_catalogues_and_key_rotation(cli: Cli) -> None:
    vendors = await cli.json("vendors")
    assert len(vendors["vendors"]) == 12
    code, out, _ = await cli("scopes")
    assert code == 0 and "crm:read crm:write" in out and "PII" in out
    first = await cli.json("keys", "rotate")
    second = await cli.json("keys", "rotate")
    assert second["previous_kid"] == first["kid"] != second["kid"]


# --- setup requests of pre-built integrations -----------------------------------------------------


async def test_setup_request_catalogue_lists_the_fields_and_marks_the_secrets(cli: Cli) -> None:
    shown = await cli.json("setup-requests", "catalogue")
    assert [p["id"] for p in shown["integrations"]] == ["woocommerce", "shopify", "quickbooks_online"]
    code, out, _ = await cli("setup-requests", "catalogue")
    assert code == 0 and "consumer_secret" in out and "Admin API access token" in out
    vendors = await cli.json("vendors")
    assert "woocommerce" not in [v["id"] for v in vendors["vendors"]]


async def test_setup_request_secrets_come_from_stdin_and_are_never_printed(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "shpat_" + "f" * 32
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    created = await cli.json("setup-requests", "create", "--prebuilt", "shopify", "--field", "shop_domain=acme.myshopify.com",
                             "--secret", "admin_api_access_token", "--contact-email", "ops@example.com")
    request = created["setup_request"]
    assert request["status"] == "submitted" and request["connection"] == {"shop_domain": "acme.myshopify.com"}
    assert request["secrets_given"] == ["admin_api_access_token"]
    code, out, err = await cli("setup-requests", "show", request["id"])
    assert code == 0 and "Submitted" in out and "admin_api_access_token" in out and secret not in out + err
    listed = await cli.json("setup-requests", "list")
    assert [r["id"] for r in listed["setup_requests"]] == [request["id"]] and secret not in json.dumps(listed)


async def test_a_secret_on_the_command_line_is_warned_about(cli: Cli) -> None:
    code, out, err = await cli("setup-requests", "create", "--prebuilt", "woocommerce",
                               "--field", "store_url=https://shop.example.com", "--field", "consumer_key=ck_1",
                               "--field", "consumer_secret=cs_1")
    assert code == 0, err
    assert "consumer_secret is a secret" in err and "--secret consumer_secret" in err and "cs_1" not in out


async def test_the_platform_team_works_the_queue_from_the_cli(cli: Cli) -> None:
    created = await cli.json("setup-requests", "create", "--prebuilt", "quickbooks_online",
                             "--field", "company_id=9130354", org="org_grower")
    request_id = created["setup_request"]["id"]
    queue = await cli.json("setup-requests", "list", "--all", "--status", "submitted", actor="op", org="org_platform")
    assert request_id in [r["id"] for r in queue["setup_requests"]]
    own = await cli.json("setup-requests", "list", org="org_platform", actor="op")
    assert own["setup_requests"] == []
    await cli.json("setup-requests", "start", request_id, actor="op", org="org_platform")
    done = await cli.json("setup-requests", "complete", request_id, "--note", "Connected through Intuit sign-in",
                          actor="op", org="org_platform")
    assert done["setup_request"]["status"] == "configured" and done["setup_request"]["handled_by"] == "op"
    assert [s["action"] for s in done["setup_request"]["history"]] == ["submitted", "started", "configured"]
    code, _, err = await cli("setup-requests", "decline", request_id, "--reason", "late", actor="op", org="org_platform")
    assert code == 1 and err.startswith("error: FAILED_PRECONDITION: ") and "configured" in err
    code, out, _ = await cli("setup-requests", "show", request_id, org="org_grower")
    assert code == 0 and "Configured" in out and "Connected through Intuit sign-in" in out


async def test_an_operator_prints_the_secrets_with_a_warning_and_the_read_is_in_the_history(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "shpat_" + "e" * 32
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    created = await cli.json("setup-requests", "create", "--prebuilt", "shopify", "--field",
                             "shop_domain=acme.myshopify.com", "--secret", "admin_api_access_token", org="org_grower")
    request_id = created["setup_request"]["id"]
    code, out, err = await cli("setup-requests", "secrets", request_id, actor="op", org="org_platform")
    assert code == 1 and "FAILED_PRECONDITION" in err and "start it first" in err and secret not in out
    await cli.json("setup-requests", "start", request_id, actor="op", org="org_platform")
    code, out, err = await cli("setup-requests", "secrets", request_id, "--reason", "custom app scopes",
                               actor="op", org="org_platform")
    assert code == 0, err
    assert "admin_api_access_token" in out and secret in out and secret not in err
    assert "configuring the connection" in err and "audit trail" in err
    shown = await cli.json("setup-requests", "secrets", request_id, actor="op_kim", org="org_platform")
    assert shown == {"setup_request_id": request_id, "secrets": {"admin_api_access_token": secret}}
    # The requester (who holds both permissions in the embedded default) may not read them.
    code, out, err = await cli("setup-requests", "secrets", request_id, org="org_grower")
    assert code == 1 and err.startswith("error: PERMISSION_DENIED: ") and "separation of duties" in err
    assert secret not in out + err
    code, out, err = await cli("setup-requests", "show", request_id, org="org_grower")
    assert code == 0 and "secrets_revealed" in out and "custom app scopes" in out and secret not in out + err
    done = await cli.json("setup-requests", "complete", request_id, actor="op", org="org_platform")
    assert done["setup_request"]["history"][-1]["action"] == "secrets_erased"
    code, out, err = await cli("setup-requests", "secrets", request_id, actor="op", org="org_platform")
    assert code == 1 and "erased" in err and secret not in out


async def test_bad_setup_request_input_is_one_error_line(cli: Cli) -> None:
    code, out, err = await cli("setup-requests", "create", "--prebuilt", "shopify", "--field", "shop_domain=acme.com")
    assert code == 1 and out == "" and err.startswith("error: INVALID_ARGUMENT: ") and "shop_domain" in err
    assert err.count("\n") == 1
    code, _, err = await cli("setup-requests", "create", "--prebuilt", "magento")
    assert code == 1 and "woocommerce" in err
    code, _, err = await cli("setup-requests", "list", "--status", "done")
    assert code == 1 and "in_progress" in err
    code, _, err = await cli("setup-requests", "show", "setup_nope", org="org_other")
    assert code == 1 and err.startswith("error: NOT_FOUND: ")
