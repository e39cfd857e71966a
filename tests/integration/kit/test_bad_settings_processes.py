"""Every process Trellis runs, given a bad setting: one line on stderr naming the variable, what
was given and the form expected, exit code 2, no traceback. Real processes: each service's
`python -m services.<name>`, `trellis up` and CLI commands; then settings only found unusable
at start (a missing file, a production refusal), with a real nats-server where start gets that far."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.kit.natsproc import NatsServer
from tests.support.ports import free_ports

ROOT = Path(__file__).resolve().parents[3]
TRELLIS = Path(sys.executable).parent / "trellis"
SERVICES = ("identity", "registry", "webhooks", "logs", "edge")
BAD_LIST = ("TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS", "127.0.0.1/32")
BAD_LIST_LINE = ("error: TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS is '127.0.0.1/32'; "
                 'expected a JSON list of networks, like ["10.0.0.0/8", "fd00::/8"]')
COMMANDS = {
    **{name: [sys.executable, "-m", f"services.{name}"] for name in SERVICES},
    "console": [sys.executable, "-m", "services.console"],
    "trellis up": [str(TRELLIS), "up", "--no-example-upstream"],
    "trellis integrations list": [str(TRELLIS), "integrations", "list"],
    "trellis vendors": [str(TRELLIS), "vendors"],
    "trellis migrate": [str(TRELLIS), "migrate"],
}


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without TRELLIS_* settings, on a data directory of this test and
    free ports (a process that got past its settings would not collide with anything)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    ports = free_ports(7)
    env.update({"TRELLIS_DATA_DIR": str(tmp_path / "data"), "TRELLIS_LOG_LEVEL": "WARNING",
                "TRELLIS_NATS_URL": f"nats://127.0.0.1:{ports[0]}", "TRELLIS_EDGE_ADDR": f"127.0.0.1:{ports[1]}",
                "TRELLIS_CONSOLE_ADDR": f"127.0.0.1:{ports[6]}",
                **{f"TRELLIS_{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in zip(SERVICES[:4], ports[2:])},
                **settings})
    return env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_list_setting_in_the_wrong_form_is_one_line_and_exit_code_2(command: str, tmp_path: Path) -> None:
    result = run(COMMANDS[command], environment(tmp_path, **dict([BAD_LIST])))
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (2, [BAD_LIST_LINE], ""), result.stderr


@pytest.mark.parametrize("command", ["identity", "registry", "edge", "console", "trellis up", "trellis vendors"])
def test_a_bad_organisation_limit_stops_every_process(command: str, tmp_path: Path) -> None:
    # TRELLIS_MAX_LIVE_INTEGRATIONS is a limit the registry enforces (services.kit.settings.LimitSettings).
    result = run(COMMANDS[command], environment(tmp_path, TRELLIS_MAX_LIVE_INTEGRATIONS="0"))
    assert (result.returncode, result.stderr.splitlines()) == (
        2, ["error: TRELLIS_MAX_LIVE_INTEGRATIONS is '0'; expected a whole number of at least 1"]), result.stderr
    assert not (tmp_path / "data").exists()


def test_trellis_up_with_a_bad_setting_starts_nothing(tmp_path: Path) -> None:
    result = run(COMMANDS["trellis up"], environment(tmp_path, TRELLIS_NATS_STREAM_REPLICAS="three"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: TRELLIS_NATS_STREAM_REPLICAS is 'three'; expected a whole number from 1 to 5"]
    assert not (tmp_path / "data").exists()


def test_a_bad_secret_is_named_but_not_shown_by_a_service(tmp_path: Path) -> None:
    kek = "c2VjcmV0LWJ1dC1ub3QtMzItYnl0ZXM="
    result = run(COMMANDS["identity"], environment(tmp_path, TRELLIS_KEK=kek))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: TRELLIS_KEK is not valid (its value is a secret, not shown); expected base64 of 32 random bytes (it decodes to 23)"]
    assert kek not in result.stderr


def test_several_bad_settings_are_a_line_each(tmp_path: Path) -> None:
    result = run(COMMANDS["registry"], environment(tmp_path, TRELLIS_MODE="prod", TRELLIS_TOKEN_TTL_SECONDS="0", **dict([BAD_LIST])))
    assert result.returncode == 2
    assert [line.split(" ", 2)[1] for line in result.stderr.splitlines()] == [
        "TRELLIS_MODE", "TRELLIS_TOKEN_TTL_SECONDS", "TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS"]


# --- settings found unusable at start ---------------------------------------------------------

@pytest.fixture
def production(tmp_path: Path, actor_keys: tuple[bytes, Path]) -> dict[str, str]:
    """Production settings that pass the settings' own checks (an actor key, database URLs)."""
    _, public_file = actor_keys
    return {"TRELLIS_MODE": "production", "TRELLIS_ACTOR_PUBLIC_KEY_FILE": str(public_file),
            **{f"TRELLIS_{name.upper()}_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / name}.db" for name in SERVICES[:4]}}


def assert_fails_with(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [entry for entry in result.stderr.splitlines() if entry.startswith("error:")] == [line], result.stderr
    assert result.stderr.splitlines()[-1] == line


def test_a_production_edge_without_a_route_table(tmp_path: Path, production: dict[str, str]) -> None:
    result = run(COMMANDS["edge"], environment(tmp_path, **production))
    assert_fails_with(result, "error: TRELLIS_EDGE_ROUTES_FILE is not set; expected the route table's file (TOML) "
                              "outside the embedded mode")


def test_an_edge_route_table_that_does_not_load(tmp_path: Path, production: dict[str, str]) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text("[[route]]\nprefix = 'v1'\n")
    result = run(COMMANDS["edge"], environment(tmp_path, **production, TRELLIS_EDGE_ROUTES_FILE=str(routes)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: TRELLIS_EDGE_ROUTES_FILE is '{routes}'; expected a route table that loads (")


def test_a_production_console_without_an_oidc_client(tmp_path: Path, production: dict[str, str]) -> None:
    result = run(COMMANDS["console"], environment(tmp_path, **production))
    assert_fails_with(result, "error: TRELLIS_CONSOLE_OIDC_CLIENT_ID is not set; expected the console's client id at "
                              "the identity provider outside the embedded mode")


def test_a_production_console_on_plain_http(tmp_path: Path, production: dict[str, str]) -> None:
    result = run(COMMANDS["console"], environment(tmp_path, **production, TRELLIS_CONSOLE_OIDC_CLIENT_ID="trellis-console",
                                                  TRELLIS_CONSOLE_PUBLIC_URL="http://console.example"))
    assert_fails_with(result, "error: TRELLIS_CONSOLE_PUBLIC_URL is 'http://console.example'; expected an https:// URL "
                              "(session cookies are Secure)")


def test_a_production_logs_service_without_its_audit_key(tmp_path: Path, production: dict[str, str]) -> None:
    result = run(COMMANDS["logs"], environment(tmp_path, **production))
    assert_fails_with(result, "error: TRELLIS_AUDIT_HMAC_KEY is not set; expected base64 of at least 32 random bytes "
                              "outside the embedded mode")


@pytest.mark.parametrize("service", ["identity", "registry"])
def test_a_production_sealing_service_without_a_kek(tmp_path: Path, production: dict[str, str], nats_server: NatsServer,
                                                    service: str) -> None:
    result = run(COMMANDS[service], environment(tmp_path, **production, TRELLIS_NATS_URL=nats_server.url))
    assert_fails_with(result, "error: TRELLIS_KEK is not set; expected base64 of 32 random bytes outside the embedded "
                              "mode (identity, registry and webhooks seal values with it)")


def test_webhooks_with_a_ca_bundle_that_is_not_there(tmp_path: Path, nats_server: NatsServer) -> None:
    missing = tmp_path / "no-such-ca.pem"
    result = run(COMMANDS["webhooks"], environment(tmp_path, TRELLIS_NATS_URL=nats_server.url,
                                                   TRELLIS_WEBHOOKS_CA_BUNDLE=str(missing)))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: TRELLIS_WEBHOOKS_CA_BUNDLE is '{missing}'; expected a readable PEM file of CA certificates (")


def test_a_service_whose_actor_key_file_is_not_there(tmp_path: Path, nats_server: NatsServer) -> None:
    missing = tmp_path / "actor_public.pem"
    result = run(COMMANDS["registry"], environment(tmp_path, TRELLIS_NATS_URL=nats_server.url,
                                                   TRELLIS_ACTOR_PUBLIC_KEY_FILE=str(missing)))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: TRELLIS_ACTOR_PUBLIC_KEY_FILE is '{missing}'; expected a readable PEM public key file (")
