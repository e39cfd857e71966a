"""`trellis up` with the edge and the console on ports of their own (TRELLIS_EDGE_ADDR and
TRELLIS_CONSOLE_ADDR, not 8080 and 8081), run for real through the installed command: what
partners are told follows that address in every process (identity's tokens, the edge's
discovery document, the CLI's hand-off file); the console answers at the URL it prints and a
local sign-in there sees what the CLI created; a service killed
with SIGKILL is started again and serves; one that keeps dying makes `trellis up` give up,
stop the rest and exit 1. nats-server killed is started again in place. The last test ends the
run the others share."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from services.cli.launcher import RESTART_LIMIT, RESTART_WINDOW_SECONDS
from tests.e2e.console_visit import SIGN_IN_LINE, Visitor, console_url
from tests.e2e.terminal import RunningTrellis, Terminal, succeeded, suite_environment, wait_until
from tests.support.ports import free_port

CREATE = ('trellis --actor alice integrations create --vendor sap --name "Supervised" --description "restarts" '
          '--owner alice --scope inventory:read')
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Suite:
    terminal: Terminal
    trellis: RunningTrellis
    edge: str      # http://127.0.0.1:<port>
    console: str   # http://127.0.0.1:<port>
    integration_id: str
    handoff: dict[str, str]


def get_json(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with NO_PROXY.open(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def token(suite: Suite, token_url: str) -> tuple[int, dict[str, object]]:
    import base64

    basic = base64.b64encode(f"{suite.handoff['client_id']}:{suite.handoff['client_secret']}".encode()).decode()
    return get_json(token_url, {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
                    b"grant_type=client_credentials")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    workdir = tmp_path_factory.mktemp("supervised")
    port, console = free_port(), free_port()
    terminal = Terminal(workdir, suite_environment() | {"TRELLIS_EDGE_ADDR": f"127.0.0.1:{port}",
                                                        "TRELLIS_CONSOLE_ADDR": f"127.0.0.1:{console}"})
    trellis = terminal.up("--data-dir", str(workdir / ".trellis"), "--no-example-upstream")
    try:
        trellis.wait_ready()
        created = succeeded(terminal.sh(CREATE))
        integration = re.search(r"\bint_[0-9a-z]+", created.stdout).group(0)  # type: ignore[union-attr]
        succeeded(terminal.sh(f"trellis --actor bob integrations approve {integration}"))
        succeeded(terminal.sh(f"trellis --actor bob integrations activate {integration} --handoff handoff.json"))
        handoff = json.loads((workdir / "handoff.json").read_text())
        yield Suite(terminal, trellis, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{console}", integration, handoff)
    finally:
        trellis.kill_everything()


def test_what_partners_are_told_follows_the_edges_address_in_every_process(suite: Suite) -> None:
    status, config = get_json(f"{suite.edge}/.well-known/openid-configuration")
    assert status == 200
    assert (config["issuer"], config["token_endpoint"], config["jwks_uri"], config["service_documentation"]) == (
        suite.edge, f"{suite.edge}/oauth/token", f"{suite.edge}/.well-known/jwks.json", f"{suite.edge}/docs")
    # The CLI's hand-off (identity's issuer and token URL, the CLI's own docs URL) says the same.
    assert (suite.handoff["issuer"], suite.handoff["token_url"], suite.handoff["api_docs_url"]) == (
        config["issuer"], config["token_endpoint"], config["service_documentation"])
    # A token from there is signed with that issuer, and the edge accepts it.
    status, body = token(suite, suite.handoff["token_url"])
    assert status == 200, body
    status, body = get_json(f"{suite.edge}/v1/whoami", {"Authorization": f"Bearer {body['access_token']}",
                                                        "X-API-Key": suite.handoff["api_key"]})
    assert status == 200, body
    assert f"Partners call the edge at {suite.edge}" in suite.trellis.output()


def test_the_console_answers_where_trellis_up_says_and_alice_sees_what_the_cli_created(suite: Suite) -> None:
    output = suite.trellis.output()
    assert console_url(output) == suite.console
    assert suite.trellis.processes["console"] > 0, output
    sign_in = SIGN_IN_LINE.search(output)
    assert sign_in and sign_in.group(1) == f"{suite.console}/signin", output
    status, ready = get_json(f"{suite.console}/readyz")
    assert status == 200 and ready["checks"] == {"registry": True, "webhooks": True, "logs": True, "nats": True}, ready
    with Visitor(suite.console) as alice:
        listed = alice.sign_in("alice")  # signed actor tokens with the launcher's key, as the CLI does
        assert f'href="/integrations/{suite.integration_id}"' in listed, listed[:3000]
        assert "Supervised" in listed and "1 of 20 live integrations" in listed
        detail = alice.page(f"/integrations/{suite.integration_id}")
        assert suite.handoff["api_key"][:16] in detail and suite.handoff["api_key"] not in detail


def test_a_service_killed_with_sigkill_is_restarted_and_serves_again(suite: Suite) -> None:
    before = dict(suite.trellis.processes)
    os.kill(before["identity"], signal.SIGKILL)
    back = wait_until(lambda: re.search(r"^identity is back on \S+ \(pid (\d+)\)\.$", suite.trellis.output(), re.M),
                      timeout=60, what="identity to be restarted and serve")
    pid = int(back.group(1))
    assert pid != before["identity"]
    output = suite.trellis.output()
    assert re.search(rf"^warning: identity \(pid {before['identity']}\) was killed by SIGKILL; restarting it in 1s "
                     rf"\(exit 1 within {RESTART_WINDOW_SECONDS:g}s; at {RESTART_LIMIT} Trellis stops\)", output, re.M), output
    # It serves: a partner gets a token again (the edge asks identity), and nothing else was restarted.
    status, body = token(suite, suite.handoff["token_url"])
    assert status == 200, body
    assert suite.trellis.process.poll() is None
    others = {label: p for label, p in before.items() if label != "identity"}
    assert all(_alive(p) for p in others.values()), suite.trellis.output()
    suite.trellis.processes["identity"] = pid


def test_nats_server_killed_with_sigkill_is_restarted_in_place_and_the_services_reconnect(suite: Suite) -> None:
    before = dict(suite.trellis.processes)
    os.kill(before["nats"], signal.SIGKILL)
    back = wait_until(lambda: re.search(r"^nats-server is back on \S+ \(pid (\d+)\)\.$", suite.trellis.output(), re.M),
                      timeout=60, what="nats-server to be restarted")
    assert f"warning: nats-server (pid {before['nats']}) was killed by SIGKILL; restarting it in 1s" in suite.trellis.output()
    # Identity and the edge reconnect by themselves: tokens and calls work again.
    def served() -> bool:
        status, body = token(suite, suite.handoff["token_url"])
        if status != 200:
            return False
        status, _ = get_json(f"{suite.edge}/v1/whoami", {"Authorization": f"Bearer {body['access_token']}",
                                                         "X-API-Key": suite.handoff["api_key"]})
        return status == 200

    wait_until(served, timeout=30, what="a partner's call to work again", interval=0.5)
    assert all(_alive(p) for label, p in before.items() if label != "nats")
    suite.trellis.processes["nats"] = int(back.group(1))


def test_a_service_that_keeps_dying_makes_trellis_up_give_up_and_stop_the_rest(suite: Suite) -> None:
    """The edge is killed and its port taken, so each restart dies at once binding it."""
    host, port = suite.edge.removeprefix("http://").rsplit(":", 1)
    pids = dict(suite.trellis.processes)
    os.kill(pids["edge"], signal.SIGKILL)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_until(lambda: _bound(squatter, host, int(port)), timeout=10, what="the edge's port to be free")
        squatter.listen()
        code = wait_until(lambda: suite.trellis.process.poll(), timeout=150, what="`trellis up` to give up")
    output = suite.trellis.output()
    assert code == 1, output
    restarts = re.findall(r"^warning: edge \(pid \d+\) .*; restarting it in (\d+)s", output, re.M)
    assert restarts == ["1", "2", "4", "8"], output
    assert re.search(rf"^error: edge \(pid \d+\) exited with code \d+, its {RESTART_LIMIT}th unexpected exit within "
                     rf"{RESTART_WINDOW_SECONDS:g}s; stopping the rest\.$", output, re.M), output
    assert "Trellis stopped." in output
    assert [p for p in pids.values() if _alive(p)] == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _bound(sock: socket.socket, host: str, port: int) -> bool:
    try:
        sock.bind((host, port))
    except OSError:
        return False
    return True
