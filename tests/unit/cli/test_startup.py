"""What one CLI command loads: only what it uses (docs/benchmarks.md, "CLI"). Each check runs a
real command in a new interpreter and reads its `sys.modules` afterwards."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.embedded import ensure_secrets
from services.cli.main import COMMANDS, build_parser, named_command, run
from tests.support.ports import free_port

# Run one command, then print the modules it imported as JSON on the last line of stderr.
_PROBE = """
import json, sys
from services.cli.main import run
code = run(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
# Heavy and unused by an administration command: the launcher and the database code.
NEVER_FOR_A_CLIENT_COMMAND = ("sqlalchemy", "alembic", "services.cli.launcher", "services.kit.db", "nats",
                              "services.kit.natsproc")


def loaded_by(*argv: str, data_dir: Path, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    done = subprocess.run([sys.executable, "-c", _PROBE, "--data-dir", str(data_dir), *argv],
                          capture_output=True, text=True, timeout=60, env=env)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def imported(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("startup")
    ensure_secrets(directory)
    return directory


def test_a_registry_command_loads_neither_the_launcher_nor_other_services_contracts(data_dir: Path) -> None:
    # Nothing listens there: the command signs its token, calls, and fails to connect.
    code, modules = loaded_by("--registry-addr", f"127.0.0.1:{free_port()}", "integrations", "list", data_dir=data_dir)
    assert code == 1
    assert "services.contracts.trellis.registry.v1.registry_pb2_grpc" in modules  # it did make the call
    for package in (*NEVER_FOR_A_CLIENT_COMMAND, "services.contracts.trellis.webhooks",
                    "services.contracts.trellis.logs", "google.protobuf.json_format",
                    # the CLI signs its token without PyJWT (services/cli/embedded.py)
                    "jwt",
                    # the registry's messages hold identity's Credentials, but no identity call is made
                    "services.contracts.trellis.identity.v1.identity_pb2_grpc"):
        assert not imported(modules, package), f"`trellis integrations list` imported {package}"
    # Only the integrations commands were built, not the other modules' parsers.
    assert not imported(modules, "services.cli.commands.webhooks")
    assert not imported(modules, "services.cli.commands.operations")


def test_a_logs_command_loads_the_logs_contract_only(data_dir: Path) -> None:
    code, modules = loaded_by("logs", "query", "--logs-addr", f"127.0.0.1:{free_port()}", data_dir=data_dir)
    assert code == 1
    assert "services.contracts.trellis.logs.v1.logs_pb2" in modules
    for package in (*NEVER_FOR_A_CLIENT_COMMAND, "services.contracts.trellis.webhooks"):
        assert not imported(modules, package), f"`trellis logs query` imported {package}"


def test_outside_the_embedded_mode_no_token_is_signed_so_no_jwt_library_loads(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update({"TRELLIS_MODE": "production", "TRELLIS_ACTOR_TOKEN": "token-from-the-identity-provider"})
    code, modules = loaded_by("--registry-addr", f"127.0.0.1:{free_port()}", "vendors", data_dir=data_dir, env=env)
    assert code == 1
    assert not imported(modules, "jwt") and not imported(modules, "services.cli.embedded")


def test_every_command_of_the_full_parser_is_in_the_commands_table() -> None:
    full = build_parser()
    choices = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(choices) == list(COMMANDS)


@pytest.mark.parametrize("argv", [
    ["--actor", "bob", "--json", "integrations", "approve", "int_1"],
    ["integrations", "approve", "int_1", "--actor", "bob", "--json"],
    ["--actor", "webhooks", "--org=org_x", "integrations", "list", "--status", "active"],
    ["--data-dir", "/tmp/t", "webhooks", "deliveries", "whk_1", "--failed"],
    ["review", "--format", "csv"],
    ["keys", "rotate"],
])
def test_a_command_line_parses_the_same_with_only_its_command_built(argv: list[str]) -> None:
    assert named_command(build_parser(), argv) is not None
    assert vars(build_parser(argv).parse_args(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [["--help"], ["-h", "vendors"], ["--act", "x", "vendors"], ["nope"], []])
def test_help_unknown_commands_and_abbreviated_options_build_every_command(argv: list[str]) -> None:
    assert named_command(build_parser(), argv) is None
    help_text = build_parser(argv).format_help()
    assert all(command in help_text for command in COMMANDS)


def test_the_console_script_collects_garbage_again_once_the_command_is_loaded(tmp_path: Path) -> None:
    # The GC is paused while a command loads and frozen what loaded; the command itself (a
    # long `trellis up`, say) runs with the collector on. The probe command reports the state.
    probe = """
import gc, sys
import services.cli.commands.catalog as catalog
catalog.vendors = lambda args, session: print(gc.isenabled(), gc.get_freeze_count() > 1000) or 0
sys.argv = ["trellis", "vendors"]
from services.cli.main import main
main()
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TRELLIS_DATA_DIR": str(tmp_path)})
    assert (done.returncode, done.stdout.split()) == (0, ["True", "True"]), done.stderr


def test_run_says_when_the_command_is_loaded_once_before_it_runs(data_dir: Path) -> None:
    calls: list[str] = []
    code = run(["--data-dir", str(data_dir), "--registry-addr", f"127.0.0.1:{free_port()}", "vendors"],
               loaded=lambda: calls.append("loaded"))
    assert code == 1 and calls == ["loaded"]  # loaded, then the call failed to connect
