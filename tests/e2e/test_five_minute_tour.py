"""The README's five-minute tour, run for real through the installed `trellis` command:
`trellis up`, request as one admin, approve as another, activate with a hand-off file, get a
token, Ctrl-C; then a restart on the same data directory still has the integration."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest

from services.contracts.trellis.identity.v1 import identity_pb2, identity_pb2_grpc
from tests.e2e.terminal import RunningTrellis, Terminal, succeeded, suite_environment

README = Path(__file__).resolve().parents[2] / "README.md"

# The tour's commands, exactly as README.md prints them (checked below).
VENDORS = "trellis vendors"
SCOPES = "trellis scopes"
CREATE = ('trellis --actor alice integrations create --vendor sap --name "SAP Procurement Sync" '
          '--description "Purchase orders from SAP into inventory" --owner alice '
          '--scope inventory:read,orders:write')
SELF_APPROVE = "trellis --actor alice integrations approve $ID"
APPROVE = "trellis --actor bob integrations approve $ID"
ACTIVATE = "trellis --actor bob integrations activate $ID --handoff sap-handoff.json"
SHOW = "trellis integrations show $ID"
LIST = "trellis integrations list"
HANDOFF = "sap-handoff.json"


def readme_text() -> str:
    """README.md with shell line continuations joined and runs of spaces collapsed."""
    return re.sub(r"[ \t]+", " ", README.read_text().replace("\\\n", " "))


def readme_token_script() -> str:
    match = re.search(r"python - <<'EOF'\n(.*?)\nEOF\n", README.read_text(), re.S)
    assert match, "README.md lost its get-a-token step"
    return match.group(1)


@dataclass
class Tour:
    terminal: Terminal
    first_run: RunningTrellis
    integration_id: str
    catalogues: str
    self_approval: subprocess.CompletedProcess[str]
    activation: subprocess.CompletedProcess[str]
    show: subprocess.CompletedProcess[str]
    token_output: str
    jwks_json: str
    exit_code: int


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    workdir = tmp_path_factory.mktemp("tour")
    terminal = Terminal(workdir, suite_environment())
    trellis = terminal.up("--data-dir", str(workdir / ".trellis"))
    try:
        trellis.wait_ready()
        catalogues = succeeded(terminal.sh(VENDORS)).stdout + succeeded(terminal.sh(SCOPES)).stdout
        created = succeeded(terminal.sh(CREATE))
        integration_id = re.search(r"\bint_[0-9a-z]+", created.stdout).group(0)  # type: ignore[union-attr]
        self_approval = terminal.sh(SELF_APPROVE, ID=integration_id)
        succeeded(terminal.sh(APPROVE, ID=integration_id))
        activation = succeeded(terminal.sh(ACTIVATE, ID=integration_id))
        show = succeeded(terminal.sh(SHOW, ID=integration_id))
        token = succeeded(terminal.sh(f"python - <<'EOF'\n{readme_token_script()}\nEOF\n"))
        with grpc.insecure_channel(terminal.env["TRELLIS_IDENTITY_ADDR"]) as channel:
            jwks = identity_pb2_grpc.IdentityStub(channel).GetJwks(identity_pb2.GetJwksRequest(), timeout=10).jwks_json
        exit_code = trellis.interrupt()
        yield Tour(terminal, trellis, integration_id, catalogues, self_approval, activation, show, token.stdout, jwks, exit_code)
    finally:
        trellis.kill_everything()


def test_readme_tour_commands_are_the_ones_this_test_runs() -> None:
    text = readme_text()
    for command in ("make run", "make test", VENDORS, SCOPES, CREATE, SELF_APPROVE, APPROVE, ACTIVATE, SHOW, LIST):
        assert command in text, f"README.md no longer shows: {command}"
    for doc in ("docs/architecture.md", "docs/benchmarks.md"):
        assert doc in text


def test_catalogues_name_the_vendors_and_scopes_to_choose_from(tour: Tour) -> None:
    assert "SAP" in tour.catalogues and "Microsoft Dynamics 365" in tour.catalogues
    assert "inventory:read inventory:write" in tour.catalogues and "Regulatory" in tour.catalogues


def test_second_admin_approves_and_activation_hands_off_credentials_once(tour: Tour) -> None:
    assert tour.self_approval.returncode == 1
    assert tour.self_approval.stderr.startswith("error: PERMISSION_DENIED: ")
    assert "Traceback" not in tour.self_approval.stderr

    handoff_file = tour.terminal.workdir / HANDOFF
    assert stat.S_IMODE(handoff_file.stat().st_mode) == 0o600
    handoff = json.loads(handoff_file.read_text())
    assert handoff["api_key"].startswith("grq_live_")
    assert handoff["scopes"] == ["inventory:read", "orders:write"]
    for key in ("client_id", "client_secret", "issuer", "token_url", "api_docs_url"):
        assert handoff[key], key
    shown = tour.activation.stdout
    assert handoff["api_key"] in shown and handoff["client_secret"] in shown
    assert "secrets manager" in shown
    # Shown once: the detail view afterwards has the prefix, never the key or the secret.
    detail = tour.show.stdout
    assert handoff["api_key"][:16] in detail and "Active" in detail
    assert handoff["api_key"] not in detail and handoff["client_secret"] not in detail


def test_partner_gets_a_token_signed_by_identity_for_its_client(tour: Tour) -> None:
    handoff = json.loads((tour.terminal.workdir / HANDOFF).read_text())
    first_line, access_token = tour.token_output.strip().splitlines()[-2:]
    assert first_line.startswith("Bearer 3600 ")
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = jwt.PyJWKSet.from_json(tour.jwks_json)[kid]
    claims = jwt.decode(access_token, key=key, algorithms=[key.algorithm_name],
                        audience=handoff["audience"], issuer=handoff["issuer"])
    assert claims["sub"] == handoff["client_id"]
    assert set(claims["scope"].split()) == {"inventory:read", "orders:write"}


def test_ctrl_c_stops_every_process_and_exits_zero(tour: Tour) -> None:
    assert tour.exit_code == 0, tour.first_run.output()
    assert tour.first_run.children_alive() == []
    assert "Trellis stopped." in tour.first_run.output()


def test_restart_keeps_the_integration_active(tour: Tour) -> None:
    trellis = tour.terminal.up("--data-dir", str(tour.terminal.workdir / ".trellis"))
    try:
        trellis.wait_ready()
        listed = succeeded(tour.terminal.sh(LIST))
        row = next(line for line in listed.stdout.splitlines() if line.startswith(tour.integration_id))
        assert "SAP Procurement Sync" in row and " Active " in f"{row} "
        assert trellis.interrupt() == 0
        assert trellis.children_alive() == []
    finally:
        trellis.kill_everything()


def test_no_key_or_secret_is_stored_or_logged_in_plain_text(tour: Tour) -> None:
    """Search every file the suite wrote (SQLite databases and their WAL, service and NATS logs,
    the JetStream store) for the API key and the client secret the activation showed."""
    handoff = json.loads((tour.terminal.workdir / HANDOFF).read_text())
    secrets = {name: handoff[name].encode() for name in ("api_key", "client_secret")}
    data_dir = tour.terminal.workdir / ".trellis"
    searched = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in searched) and any(p.suffix == ".log" for p in searched)
    for path in searched:
        content = path.read_bytes()
        for name, value in secrets.items():
            assert value not in content, f"{name} found in plain text in {path.relative_to(data_dir)}"
    assert handoff["api_key"] not in tour.first_run.output()
