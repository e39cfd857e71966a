"""The README's five-minute tour, run for real through the installed `trellis` command:
`trellis up`, request as one admin, approve as another, activate with a hand-off file, then the
partner's part through the real edge (a token from /oauth/token, a call proxied to the example
upstream, a call refused for a missing scope); "the same in the console": the console at the
URL `trellis up` prints and the README names, signed in locally as alice and bob, the steps of
the tour in its pages; Ctrl-C; then a restart on the same data directory still has the
integration."""

from __future__ import annotations

import html
import json
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import urllib.request

import httpx2
import jwt
import pytest

from services.cli.launcher import EXAMPLE_UPSTREAM_LABEL
from tests.e2e.console_visit import SIGN_IN_LINE, Visitor, console_url
from tests.e2e.terminal import RunningTrellis, Terminal, succeeded, suite_environment
from tests.support.console import hidden_fields, integration_form

README = Path(__file__).resolve().parents[2] / "README.md"

# The tour's commands, exactly as README.md prints them (checked below).
VENDORS = "trellis vendors"
SCOPES = "trellis scopes"
CREATE = ('trellis --actor alice integrations create --vendor sap --name "SAP Procurement Sync" '
          '--description "Purchase orders from SAP into inventory" --owner alice '
          '--scope inventory:read,orders:write')
SELF_APPROVE = "trellis --actor alice integrations approve $ID"
APPROVE = "trellis --actor bob integrations approve $ID"
ACTIVATE = "trellis --actor bob integrations activate $ID --handoff"
SHOW = "trellis integrations show $ID"
LIST = "trellis integrations list"
HANDOFF = ".trellis/handoffs/{id}.json"  # where `--handoff` without a file writes, in the data directory
EDGE = "http://127.0.0.1:8080"
TOKEN_REQUEST = f'curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials {EDGE}/oauth/token'
BOTH_HEADERS = 'curl -s -i -H "Authorization: Bearer $ACCESS_TOKEN" -H "X-API-Key: $API_KEY"'
ALLOWED_CALL = f"{BOTH_HEADERS} {EDGE}/v1/inventory/lots"
REFUSED_CALL = f"{BOTH_HEADERS} {EDGE}/v1/orders"
CONSOLE = "http://127.0.0.1:8081"
CONSOLE_NAME = "SAP in the console"


def readme_text() -> str:
    """README.md with shell line continuations joined and runs of spaces collapsed."""
    return re.sub(r"[ \t]+", " ", README.read_text().replace("\\\n", " "))


def readme_partner_script() -> str:
    """The shell blocks of the partner's part of the tour, as README.md prints them: every
    block after the activation's and before "Stop Trellis", in order."""
    text = README.read_text()
    blocks = list(re.finditer(r"^```sh\n(.*?)^```$", text, re.S | re.M))
    activation = next(i for i, b in enumerate(blocks) if ACTIVATE in b.group(1))
    stop = text.index("Stop Trellis with Ctrl-C")
    script = "\n".join(b.group(1) for b in blocks[activation + 1:] if b.start() < stop)
    assert TOKEN_REQUEST in script, "README.md lost its get-a-token step"
    return script


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: dict[str, object]


def parse_curl_i(text: str) -> HttpAnswer:
    """One `curl -i` answer: status line, headers, a blank line, a JSON body."""
    # curl ends lines with CRLF; the captured output (text mode) may already have made them LF.
    head, body = re.split(r"\r?\n\r?\n", text, maxsplit=1)
    status_line, *header_lines = head.splitlines()
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return HttpAnswer(int(status_line.split()[1]), headers, json.loads(body))


@dataclass
class ConsoleTour:
    """What the README's "the same in the console" steps showed, page by page."""

    url: str                 # as `trellis up` printed it
    sign_in_line: str
    sign_in_page: str        # before signing in
    alices_list: str         # what the CLI made
    self_approval: httpx2.Response
    activation: httpx2.Response
    detail_after: str        # the same integration's page after the credentials were shown
    integration_id: str


def walk_the_console(url: str) -> tuple[str, str, httpx2.Response, httpx2.Response, str, str]:
    """The README's console steps over HTTP, as a browser without JavaScript: alice requests and
    may not approve; bob approves and activates (credentials shown once)."""
    with Visitor(url) as browser:
        sign_in_page = browser.page("/signin")
        alices_list = browser.sign_in("alice")
        created = browser.submit("/integrations/new", "/integrations",
                                 integration_form(name=CONSOLE_NAME, scopes=["inventory:read", "orders:write"]))
        assert created.status_code == 303, (created.status_code, created.text[:3000])
        detail = created.headers["location"].split("?")[0]
        self_approval = browser.submit(detail, f"{detail}/approve")
        browser.sign_out()
        browser.sign_in("bob")
        approved = browser.submit(detail, f"{detail}/approve")
        assert approved.status_code == 303, (approved.status_code, approved.text[:3000])
        activation = browser.submit(detail, f"{detail}/activate")
        detail_after = browser.page(detail)
    return sign_in_page, alices_list, self_approval, activation, detail_after, detail.rsplit("/", 1)[1]


@dataclass
class Tour:
    terminal: Terminal
    first_run: RunningTrellis
    integration_id: str
    catalogues: str
    self_approval: subprocess.CompletedProcess[str]
    activation: subprocess.CompletedProcess[str]
    show: subprocess.CompletedProcess[str]
    partner: subprocess.CompletedProcess[str]
    jwks_json: str
    console_part: ConsoleTour | AssertionError
    console_cli_list: subprocess.CompletedProcess[str]
    exit_code: int

    @property
    def handoff_file(self) -> Path:
        return self.terminal.workdir / HANDOFF.format(id=self.integration_id)

    @property
    def console(self) -> ConsoleTour:
        if isinstance(self.console_part, AssertionError):
            raise self.console_part
        return self.console_part

    def partner_answers(self) -> tuple[dict[str, object], HttpAnswer, HttpAnswer]:
        """What the partner's commands printed: the token response, then the two calls."""
        token_response, *calls = re.split(r"(?=HTTP/1\.1 \d{3} )", self.partner.stdout)
        assert len(calls) == 2, self.partner.stdout + self.partner.stderr
        allowed, refused = (parse_curl_i(call) for call in calls)
        return json.loads(token_response), allowed, refused


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
        partner = succeeded(terminal.sh(readme_partner_script(), ID=integration_id))
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(f"{EDGE}/.well-known/jwks.json", timeout=10) as answer:
            jwks = answer.read().decode()
        try:  # the console's part fails its own tests only
            url = console_url(trellis.output())
            sign_in_line = SIGN_IN_LINE.search(trellis.output())
            console: ConsoleTour | AssertionError = ConsoleTour(url, sign_in_line.group(1) if sign_in_line else "",
                                                                *walk_the_console(url))
        except AssertionError as exc:
            console = exc
        console_cli_list = succeeded(terminal.sh(LIST))
        exit_code = trellis.interrupt()
        yield Tour(terminal, trellis, integration_id, catalogues, self_approval, activation, show, partner, jwks,
                   console, console_cli_list, exit_code)
    finally:
        trellis.kill_everything()


def test_readme_tour_commands_are_the_ones_this_test_runs() -> None:
    text = readme_text()
    for command in ("make run", "make test", VENDORS, SCOPES, CREATE, SELF_APPROVE, APPROVE, ACTIVATE, SHOW, LIST):
        assert command in text, f"README.md no longer shows: {command}"
    # The partner's part runs as README.md prints it (readme_partner_script); these are its calls.
    script = readme_partner_script()
    for command in (TOKEN_REQUEST, ALLOWED_CALL, REFUSED_CALL):
        assert command in script, f"README.md no longer shows: {command}"
    for doc in ("docs/architecture.md", "docs/partners.md", "docs/operators.md", "docs/benchmarks.md", "docs/console.md"):
        assert doc in text


def test_readme_tour_goes_through_the_console_at_the_url_trellis_up_prints() -> None:
    text = readme_text()
    console_part = re.sub(r"\s+", " ", text[text.index("### The same in the console"):text.index("Stop Trellis with Ctrl-C")])
    assert CONSOLE in console_part and "**alice**" in console_part and "**bob**" in console_part
    assert "local development sign-in" in console_part and "`org_default`" in console_part
    # The buttons the steps name are the console's (walk_the_console presses the first ones).
    for step in ("**Create Integration**", "**Submit**", "**Approve**", "**Sign out**", "**Activate**",
                 "**Download hand-off file**", "**Suspend**", "**Reactivate**", "**Regenerate API Key**", "**Revoke**"):
        assert step in console_part, step
    assert "You requested this integration, so you cannot approve it" in console_part


def test_the_console_answers_at_the_readmes_url_with_its_local_sign_in(tour: Tour) -> None:
    assert tour.console.url == CONSOLE, tour.first_run.output()
    assert tour.console.sign_in_line == f"{CONSOLE}/signin"
    assert "console" in tour.first_run.processes
    page = tour.console.sign_in_page
    assert "Local development sign-in" in page and "For local development only." in page
    assert 'action="/signin/local"' in page and "org_default" in page


def test_alice_in_the_console_sees_what_she_requested_in_the_cli(tour: Tour) -> None:
    listed = tour.console.alices_list
    assert f'href="/integrations/{tour.integration_id}"' in listed
    assert "SAP Procurement Sync" in listed and "Active" in listed and "1 of 20 live integrations" in listed


def test_the_tour_in_the_console_refuses_alices_approval_and_shows_bobs_credentials_once(tour: Tour) -> None:
    refused = tour.console.self_approval
    assert refused.status_code == 403, refused.text[:2000]
    assert "You requested this integration, so you cannot approve it" in html.unescape(refused.text)
    shown = tour.console.activation
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store", shown.text[:2000]
    assert "Save Your Credentials Immediately" in shown.text
    document = json.loads(hidden_fields(shown.text, f"/integrations/{tour.console.integration_id}/handoff")["document"])
    api_key = document["api_key"]
    assert api_key.startswith("grq_live_") and api_key in shown.text and document["client_secret"] in shown.text
    assert document["scopes"] == ["inventory:read", "orders:write"]
    after = tour.console.detail_after
    assert "Active" in after and api_key[:16] in after
    assert api_key not in after and document["client_secret"] not in after
    # One suite: the CLI lists what the console made.
    row = next(line for line in tour.console_cli_list.stdout.splitlines() if line.startswith(tour.console.integration_id))
    assert CONSOLE_NAME in row and " Active " in f"{row} "


def test_catalogues_name_the_vendors_and_scopes_to_choose_from(tour: Tour) -> None:
    assert "SAP" in tour.catalogues and "Microsoft Dynamics 365" in tour.catalogues
    assert "inventory:read inventory:write" in tour.catalogues and "Regulatory" in tour.catalogues


def test_second_admin_approves_and_activation_hands_off_credentials_once(tour: Tour) -> None:
    assert tour.self_approval.returncode == 1
    assert tour.self_approval.stderr.startswith("error: PERMISSION_DENIED: ")
    assert "Traceback" not in tour.self_approval.stderr

    handoff_file = tour.handoff_file
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


def test_the_tour_leaves_nothing_in_the_working_tree_but_the_data_directory(tour: Tour) -> None:
    # The data directory (.trellis/, which .gitignore lists) holds the hand-off; `git status`
    # in a checkout the tour ran in shows nothing new. up-N.out/err are this test's own logs.
    left = sorted(p.name for p in tour.terminal.workdir.iterdir() if p.name != ".trellis" and not p.name.startswith("up-"))
    assert left == []
    assert stat.S_IMODE(tour.handoff_file.parent.stat().st_mode) == 0o700


def test_partner_gets_a_token_from_the_edge_for_its_client(tour: Tour) -> None:
    handoff = json.loads(tour.handoff_file.read_text())
    token, _, _ = tour.partner_answers()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    assert token["scope"] == "inventory:read orders:write"
    access_token = str(token["access_token"])
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = jwt.PyJWKSet.from_json(tour.jwks_json)[kid]
    claims = jwt.decode(access_token, key=key, algorithms=[key.algorithm_name],
                        audience=handoff["audience"], issuer=handoff["issuer"])
    assert claims["sub"] == handoff["client_id"]
    assert claims["integration_id"] == tour.integration_id


def test_a_granted_call_reaches_the_example_upstream_with_rate_limit_headers(tour: Tour) -> None:
    _, allowed, _ = tour.partner_answers()
    assert allowed.status == 200, allowed
    limit, remaining = int(allowed.headers["x-ratelimit-limit"]), int(allowed.headers["x-ratelimit-remaining"])
    assert 0 <= remaining < limit and int(allowed.headers["x-ratelimit-reset"]) > 1_700_000_000
    request_id = allowed.headers["x-request-id"]
    # The example upstream answered, told by the edge who calls: this integration, this request.
    caller = allowed.body["caller"]
    assert isinstance(caller, dict) and caller["X-Trellis-Integration-Id"] == tour.integration_id
    assert caller["X-Request-ID"] == request_id and allowed.body["lots"]


def test_a_call_needing_a_scope_not_granted_is_refused_naming_it(tour: Tour) -> None:
    _, _, refused = tour.partner_answers()
    assert refused.status == 403, refused
    assert refused.body["error"] == "insufficient_scope"
    assert "orders:read" in str(refused.body["message"])
    assert refused.headers["x-request-id"] == refused.body["request_id"]


def test_ctrl_c_stops_every_process_and_exits_zero(tour: Tour) -> None:
    assert tour.exit_code == 0, tour.first_run.output()
    assert {"nats", "identity", "registry", "edge", "console", EXAMPLE_UPSTREAM_LABEL} <= tour.first_run.processes.keys()
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
    handoff = json.loads(tour.handoff_file.read_text())
    secrets = {name: handoff[name].encode() for name in ("api_key", "client_secret")}
    data_dir = tour.terminal.workdir / ".trellis"
    # The hand-off file holds them by design (mode 0600); nothing else may.
    searched = [p for p in data_dir.rglob("*") if p.is_file() and p != tour.handoff_file]
    assert any(p.suffix == ".db" for p in searched) and data_dir / "logs" / "edge.log" in searched
    for path in searched:
        content = path.read_bytes()
        for name, value in secrets.items():
            assert value not in content, f"{name} found in plain text in {path.relative_to(data_dir)}"
    assert handoff["api_key"] not in tour.first_run.output()
