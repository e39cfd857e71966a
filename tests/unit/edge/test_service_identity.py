"""services.kit.auth.ServiceTokenSource: the edge's own identity towards identity and registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.kit.auth import EDGE_PERMISSION, ActorVerifier, ServiceTokenSource, generate_actor_key
from services.kit.settings import Mode
from tests.support.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_embedded_tokens_are_minted_with_the_edge_permission_and_renewed_before_expiry(tmp_path: Path) -> None:
    private_pem, public_pem = generate_actor_key()
    clock = Clock()
    source = ServiceTokenSource(private_key_pem=private_pem, issuer="iss", audience="aud", user_id="service:edge",
                                org_id="trellis", permissions=(EDGE_PERMISSION,), ttl_seconds=300, clock=clock)
    actor = ActorVerifier(issuer="iss", audience="aud", public_key_pem=public_pem).verify(source.token())
    assert (actor.user_id, actor.org_id, actor.permissions) == ("service:edge", "trellis", {EDGE_PERMISSION})
    first = source.token()
    clock.now += 150
    assert source.token() == first
    clock.now += 60  # past two thirds of its life
    assert source.token() != first
    assert source.metadata("req-1") == (("authorization", f"Bearer {source.token()}"), ("x-request-id", "req-1"))


def test_a_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    source = ServiceTokenSource(token_file=path)
    assert source.token() == "first-token"
    replacement = tmp_path / "token.new"
    replacement.write_text("second-token\n")
    os.replace(replacement, path)  # how a projected token is swapped
    assert source.token() == "second-token"


def test_from_settings_uses_the_launchers_key_in_embedded_mode_and_needs_a_file_otherwise(tmp_path: Path) -> None:
    private_pem, _ = generate_actor_key()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "actor_private.pem").write_bytes(private_pem)
    embedded = Settings(mode="embedded", data_dir=tmp_path)
    assert ServiceTokenSource.from_settings(embedded, user_id="service:edge").token().count(".") == 2
    with pytest.raises(ValueError, match="TRELLIS_ACTOR_PRIVATE_KEY_FILE"):
        ServiceTokenSource.from_settings(Settings(mode="embedded", data_dir=tmp_path / "nowhere"), user_id="service:edge")
    production = Settings.model_construct(mode=Mode.PRODUCTION, service_token_file="", data_dir=tmp_path)
    with pytest.raises(ValueError, match="TRELLIS_SERVICE_TOKEN_FILE"):
        ServiceTokenSource.from_settings(production, user_id="service:edge")
