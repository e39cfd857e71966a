import json
import os
import stat
from pathlib import Path

import pytest

from services.cli.handoff import HandoffExists, HandoffFile, handoff_document, key_handoff_document
from services.contracts.trellis.identity.v1 import identity_pb2
from services.contracts.trellis.registry.v1 import registry_pb2 as pb


@pytest.fixture
def permissive_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def _document() -> dict:
    integration = pb.Integration(id="int_h", name="SAP Sync", scopes=["inventory:read"])
    creds = identity_pb2.Credentials(api_key="grq_live_k", client_id="cid", client_secret="cs", issuer="http://iss",
                                     token_url="http://iss/oauth/token", scopes=["inventory:read"])
    return handoff_document(integration, creds, api_docs_url="http://docs")


def test_handoff_file_is_created_with_mode_0600_whatever_the_umask(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "handoff.json"
    HandoffFile.reserve(path).write(_document())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_handoff_holds_what_to_share_with_the_partner(tmp_path: Path) -> None:
    path = tmp_path / "handoff.json"
    HandoffFile.reserve(path).write(_document())
    data = json.loads(path.read_text())
    assert data["api_key"] == "grq_live_k"
    assert (data["client_id"], data["client_secret"]) == ("cid", "cs")
    assert (data["issuer"], data["token_url"], data["api_docs_url"]) == ("http://iss", "http://iss/oauth/token", "http://docs")
    assert data["scopes"] == ["inventory:read"]


def test_handoff_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "handoff.json"
    path.write_text("keep me")
    with pytest.raises(HandoffExists):
        HandoffFile.reserve(path)
    assert path.read_text() == "keep me"


def test_handoff_refuses_to_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(HandoffExists):
        HandoffFile.reserve(tmp_path / "link.json")
    assert not target.exists()


def test_abandoned_reservation_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "handoff.json"
    HandoffFile.reserve(path).abandon()
    assert not path.exists()


def test_without_a_path_handoffs_go_under_the_data_directory_numbered(tmp_path: Path, permissive_umask: None) -> None:
    paths = []
    for _ in range(3):
        reserved = HandoffFile.reserve_default(tmp_path / "data", "int_h")
        reserved.write(_document())
        paths.append(reserved.path)
    directory = tmp_path / "data" / "handoffs"
    assert paths == [directory / "int_h.json", directory / "int_h-2.json", directory / "int_h-3.json"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths)


def test_a_default_handoff_stays_in_the_handoffs_directory_whatever_the_id(tmp_path: Path) -> None:
    reserved = HandoffFile.reserve_default(tmp_path, "../../escape")
    assert reserved.path.parent == tmp_path / "handoffs"
    reserved.abandon()


def test_key_handoff_has_the_new_key_and_says_the_client_credentials_are_unchanged() -> None:
    integration = pb.Integration(id="int_h", name="SAP Sync", scopes=["inventory:read"], client_id="cid")
    data = key_handoff_document(integration, "grq_live_new", api_docs_url="http://docs")
    assert (data["api_key"], data["client_id"], data["scopes"]) == ("grq_live_new", "cid", ["inventory:read"])
    assert "client_secret" not in data and "unchanged" in data["note"] and "secrets manager" in data["handling"]
