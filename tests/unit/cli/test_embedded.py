import stat
from pathlib import Path

import pytest

from services.cli.client import CliError, actor_token
from services.cli.embedded import (
    CLI_TOKEN_TTL_SECONDS, EmbeddedSecretsMissing, ensure_secrets, load_secrets, mint_cli_token,
)
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, QA_PERMISSION, ActorVerifier
from services.kit.errors import Unauthenticated
from tests.support.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_run_creates_private_secrets(tmp_path: Path) -> None:
    local = ensure_secrets(tmp_path / "data")
    assert _mode(local.directory) == 0o700
    assert _mode(local.private_key_file) == 0o600
    assert _mode(local.directory / "kek") == 0o600
    assert b"PRIVATE KEY" in local.private_key_file.read_bytes()
    Settings(kek=local.kek).kek_keys()  # base64 of exactly 32 bytes, or this raises


def test_later_runs_reuse_the_secrets(tmp_path: Path) -> None:
    first = ensure_secrets(tmp_path)
    private_pem = first.private_key_file.read_bytes()
    second = ensure_secrets(tmp_path)
    assert second.private_key_file.read_bytes() == private_pem
    assert second.kek == first.kek
    assert load_secrets(tmp_path) == second


def test_a_lost_public_key_is_derived_again_from_the_private_key(tmp_path: Path) -> None:
    first = ensure_secrets(tmp_path)
    public_pem = first.public_key_file.read_bytes()
    first.public_key_file.unlink()
    assert ensure_secrets(tmp_path).public_key_file.read_bytes() == public_pem


def test_cli_token_verifies_with_the_local_public_key(tmp_path: Path) -> None:
    local = ensure_secrets(tmp_path)
    settings = Settings(data_dir=tmp_path, actor_issuer="iss-x", actor_audience="aud-x")
    token = mint_cli_token(settings, user_id="alice", org_id="org_cli")
    verifier = ActorVerifier(issuer="iss-x", audience="aud-x", public_key_pem=local.public_key_file.read_bytes())
    actor = verifier.verify(token)
    assert (actor.user_id, actor.org_id) == ("alice", "org_cli")
    assert actor.permissions == {ADMIN_PERMISSION, QA_PERMISSION, PLATFORM_PERMISSION}
    assert CLI_TOKEN_TTL_SECONDS <= 900


def test_cli_token_from_another_data_dir_is_refused(tmp_path: Path) -> None:
    ensure_secrets(tmp_path / "one")
    other = ensure_secrets(tmp_path / "two")
    token = mint_cli_token(Settings(data_dir=tmp_path / "one"), user_id="alice", org_id="o")
    verifier = ActorVerifier(issuer=Settings().actor_issuer, audience=Settings().actor_audience,
                             public_key_pem=other.public_key_file.read_bytes())
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def test_missing_secrets_tell_the_user_to_run_trellis_up(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedSecretsMissing, match="trellis up"):
        load_secrets(tmp_path)
    with pytest.raises(CliError, match="trellis up"):
        actor_token(Settings(data_dir=tmp_path), actor="alice", org="o")


def test_outside_embedded_mode_the_token_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cli.settings import CliSettings

    settings = CliSettings(mode="production", data_dir=tmp_path)
    monkeypatch.delenv("TRELLIS_ACTOR_TOKEN", raising=False)
    with pytest.raises(CliError, match="TRELLIS_ACTOR_TOKEN"):
        actor_token(settings, actor="alice", org="o")
    monkeypatch.setenv("TRELLIS_ACTOR_TOKEN", "tok.en.value")
    assert actor_token(settings, actor="alice", org="o") == "tok.en.value"


def test_cli_tokens_are_the_jwts_pyjwt_makes_and_verifies(tmp_path: Path) -> None:
    """The gate for the CLI's own ES256 signer (services/cli/embedded.py): PyJWT, which every
    service verifies actor tokens with, reads the same header and claims and the signature."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    from services.cli.embedded import es256_jwt

    local = ensure_secrets(tmp_path)
    settings = Settings(data_dir=tmp_path, actor_issuer="iss-x", actor_audience="aud-x")
    token = mint_cli_token(settings, user_id="alice", org_id="org_cli")
    public = serialization.load_pem_public_key(local.public_key_file.read_bytes())
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, key=public, algorithms=["ES256"], audience="aud-x", issuer="iss-x",
                        options={"require": ["exp", "iat", "iss", "aud", "sub"]})
    assert header == {"alg": "ES256", "typ": "JWT"}
    assert set(claims) == {"iss", "aud", "sub", "org", "permissions", "iat", "exp", "jti"}
    assert claims["exp"] - claims["iat"] == CLI_TOKEN_TTL_SECONDS and claims["org"] == "org_cli"
    # A token of the same claims from PyJWT differs only in its (randomised) signature.
    private = serialization.load_pem_private_key(local.private_key_pem(), password=None)
    from_pyjwt = jwt.encode(claims, private, algorithm="ES256")
    assert jwt.decode(from_pyjwt, key=public, algorithms=["ES256"], audience="aud-x") == claims
    assert from_pyjwt.rsplit(".", 1)[0].split(".")[1] == token.rsplit(".", 1)[0].split(".")[1]
    # Tampering with the claims breaks the signature.
    head, body, signature = token.split(".")
    forged = es256_jwt(local.private_key_pem(), {**claims, "org": "org_other"}).split(".")[1]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{forged}.{signature}", key=public, algorithms=["ES256"], audience="aud-x")


def test_a_key_that_is_not_p256_is_refused_by_the_cli_signer() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from services.cli.embedded import es256_jwt

    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError, match="P-256"):
        es256_jwt(other, {"sub": "x"})
