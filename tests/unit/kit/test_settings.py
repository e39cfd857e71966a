import base64
import secrets

import pytest
from pydantic import ValidationError

from services.kit.settingcheck import InvalidSettings, load
from tests.support.settings import Settings

KEK = base64.b64encode(secrets.token_bytes(32)).decode()


def test_embedded_mode_defaults_to_sqlite_under_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url("registry") == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'registry.db'}"


def test_environment_prefix_is_trellis(monkeypatch, tmp_path):
    monkeypatch.setenv("TRELLIS_REGISTRY_ADDR", "10.0.0.1:6000")
    monkeypatch.setenv("TRELLIS_MAX_LIVE_INTEGRATIONS", "7")
    settings = Settings(data_dir=tmp_path)
    assert settings.registry_addr == "10.0.0.1:6000"
    assert settings.listen_port("registry") == 6000
    assert settings.max_live_integrations == 7


def test_production_refuses_placeholder_secrets():
    with pytest.raises(ValidationError) as info:
        Settings(mode="production")
    assert "TRELLIS_ACTOR_JWKS_URL" in str(info.value)


def test_only_the_services_that_seal_values_need_the_kek_in_production():
    settings = Settings(mode="production", actor_jwks_url="https://idp.example/jwks.json")  # registry, logs, edge
    with pytest.raises(ValueError, match="TRELLIS_KEK is not set"):
        settings.kek_keys()  # identity, registry and webhooks ask for it at start-up and stop here


def test_production_requires_a_database_url_per_service():
    settings = Settings(mode="production", kek=KEK, actor_jwks_url="https://idp.example/jwks.json")
    with pytest.raises(ValueError, match="TRELLIS_IDENTITY_DATABASE_URL"):
        settings.database_url("identity")


def test_production_accepts_real_secrets():
    settings = Settings(
        mode="production", kek=KEK, actor_jwks_url="https://idp.example/jwks.json",
        registry_database_url="postgresql+asyncpg://trellis@db/registry",
    )
    assert settings.database_url("registry").startswith("postgresql+asyncpg://")
    assert settings.kek_keys() == {1: base64.b64decode(KEK)}


@pytest.mark.parametrize("bad", ["not base64!!", base64.b64encode(b"short").decode()])
def test_a_malformed_kek_is_refused_when_read_without_showing_it(bad):
    with pytest.raises(InvalidSettings) as info:
        load(Settings, kek=bad)
    (line,) = info.value.problems
    assert line.startswith("TRELLIS_KEK is not valid") and "base64 of 32 random bytes" in line and bad not in line


def test_previous_keks_are_kept_by_version():
    old = base64.b64encode(secrets.token_bytes(32)).decode()
    settings = Settings(kek=KEK, kek_version=2, kek_previous=[f"1:{old}"])
    assert set(settings.kek_keys()) == {1, 2}


def test_the_kek_never_appears_in_the_settings_repr():
    assert KEK not in repr(Settings(kek=KEK))
