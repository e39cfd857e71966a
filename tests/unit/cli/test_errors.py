from pathlib import Path

import pytest

from services.cli.embedded import ensure_secrets
from services.cli.main import run
from tests.support.ports import free_port


def test_unreachable_service_is_one_line_naming_the_address_and_trellis_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_secrets(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    code = run(["--data-dir", str(tmp_path), "--registry-addr", address, "vendors"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert address in err and "trellis up" in err
    assert "Traceback" not in err


def test_update_with_nothing_to_change_is_refused_before_any_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No service listens on this address: the refusal must come before any call is made.
    code = run(["--data-dir", str(tmp_path), "--registry-addr", f"127.0.0.1:{free_port()}", "integrations", "update", "int_1"])
    assert code == 1
    assert "nothing to update" in capsys.readouterr().err


def test_a_command_group_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["integrations"]) == 2
    assert "regenerate-key" in capsys.readouterr().out


def test_unknown_status_filter_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--data-dir", str(tmp_path), "integrations", "list", "--status", "paused"]) == 1
    assert "unknown status 'paused'" in capsys.readouterr().err


def test_existing_handoff_file_is_refused_before_activation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handoff = tmp_path / "handoff.json"
    handoff.write_text("earlier hand-off")
    code = run(["--data-dir", str(tmp_path), "--registry-addr", f"127.0.0.1:{free_port()}",
                "integrations", "activate", "int_1", "--handoff", str(handoff)])
    err = capsys.readouterr().err
    assert code == 1 and "already exists" in err and "cannot reach" not in err
    assert handoff.read_text() == "earlier hand-off"


def test_failed_activation_leaves_no_empty_handoff_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_secrets(tmp_path)
    handoff = tmp_path / "handoff.json"
    code = run(["--data-dir", str(tmp_path), "--registry-addr", f"127.0.0.1:{free_port()}",
                "integrations", "activate", "int_1", "--handoff", str(handoff)])
    assert code == 1 and "cannot reach" in capsys.readouterr().err
    assert not handoff.exists()
