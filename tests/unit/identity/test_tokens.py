"""Access tokens: claims, scope narrowing, the JWKS shape, the verifier's refusals, and sealing
of private signing keys."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os

import jwt
import pytest

from services.identity.adapters import signing
from services.identity.domain.model import (
    CredentialStatus,
    OAuthClient,
    SigningKey,
    SigningKeyStatus,
    TokenSettings,
    access_token_claims,
    narrow_scopes,
    published_keys,
    rotation_plan,
    validate_scopes,
)
from services.identity.adapters.signing import open_private_key, seal_private_key
from services.kit import jwtverify
from services.kit.crypto import DecryptionError, Envelope
from services.kit.errors import InvalidArgument, Unauthenticated

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
SETTINGS = TokenSettings(issuer="https://issuer.test", audience="trellis-api", ttl_seconds=3600)
CLIENT = OAuthClient(client_id="trc_abc", org_id="org_a", integration_id="int_a", secret_hash="0" * 64,
                     scopes=("inventory:read", "orders:write"), status=CredentialStatus.ACTIVE,
                     created_at=NOW, scopes_updated_at=NOW)


@pytest.fixture(scope="module")
def rsa_key() -> signing.PrivateKey:
    return signing.generate_private_key("RS256")


def test_claims_name_the_client_integration_organisation_and_lifetime() -> None:
    claims = access_token_claims(CLIENT, ("inventory:read",), SETTINGS, now=NOW, jti="j1")
    assert claims["iss"] == "https://issuer.test" and claims["aud"] == "trellis-api"
    assert claims["sub"] == claims["client_id"] == "trc_abc"
    assert claims["integration_id"] == "int_a" and claims["org_id"] == "org_a"
    assert claims["scope"] == "inventory:read"
    assert claims["exp"] == claims["iat"] + 3600 == int(NOW.timestamp()) + 3600
    assert claims["nbf"] == claims["iat"] and claims["jti"] == "j1"


def test_signed_token_carries_kid_and_verifies_with_the_public_jwk(rsa_key: signing.PrivateKey) -> None:
    token = signing.sign(access_token_claims(CLIENT, CLIENT.scopes, SETTINGS, now=NOW, jti="j"), rsa_key, kid="sk_1")
    header = jwt.get_unverified_header(token)
    assert header["kid"] == "sk_1" and header["alg"] == "RS256"
    public = jwtverify.public_key_from_jwk(signing.public_jwk(rsa_key, "sk_1"))
    claims = jwtverify.verify(token, public, issuer=SETTINGS.issuer, audience=SETTINGS.audience)
    assert claims["scope"] == "inventory:read orders:write"


def test_es256_keys_sign_and_verify() -> None:
    key = signing.generate_private_key("ES256")
    token = signing.sign(access_token_claims(CLIENT, CLIENT.scopes, SETTINGS, now=NOW, jti="j"), key, kid="sk_ec")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    public = jwtverify.public_key_from_jwk(signing.public_jwk(key, "sk_ec"))
    assert jwtverify.verify(token, public, issuer=SETTINGS.issuer, audience=SETTINGS.audience)["sub"] == "trc_abc"


def test_no_scope_asked_means_every_granted_scope() -> None:
    assert narrow_scopes(("a:read", "b:write"), "") == ("a:read", "b:write")


def test_asking_for_a_subset_narrows_the_scopes() -> None:
    assert narrow_scopes(("a:read", "b:write"), "b:write") == ("b:write",)
    assert narrow_scopes(("a:read", "b:write"), " b:write  a:read b:write") == ("b:write", "a:read")


def test_asking_for_a_scope_not_granted_is_invalid_scope() -> None:
    with pytest.raises(InvalidArgument) as caught:
        narrow_scopes(("a:read",), "a:read a:write")
    assert caught.value.message.startswith("invalid_scope")
    assert "a:write" in caught.value.message


def test_jwks_lists_current_then_previous_with_public_parameters_only(rsa_key: signing.PrivateKey) -> None:
    ec_key = signing.generate_private_key("ES256")
    keys = [
        SigningKey("sk_old", "RS256", signing.public_jwk(rsa_key, "sk_old"), SigningKeyStatus.PREVIOUS, NOW),
        SigningKey("sk_new", "ES256", signing.public_jwk(ec_key, "sk_new"), SigningKeyStatus.CURRENT, NOW),
        SigningKey("sk_gone", "RS256", signing.public_jwk(rsa_key, "sk_gone"), SigningKeyStatus.RETIRED, NOW),
    ]
    document = json.loads(signing.jwks_json(published_keys(keys)))
    assert [k["kid"] for k in document["keys"]] == ["sk_new", "sk_old"]
    rsa_jwk, ec_jwk = document["keys"][1], document["keys"][0]
    assert rsa_jwk["kty"] == "RSA" and rsa_jwk["alg"] == "RS256" and rsa_jwk["use"] == "sig"
    assert {"n", "e"} <= rsa_jwk.keys()
    assert ec_jwk["kty"] == "EC" and ec_jwk["alg"] == "ES256" and ec_jwk["crv"] == "P-256" and {"x", "y"} <= ec_jwk.keys()
    for jwk in document["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & jwk.keys()


def test_rotation_demotes_current_to_previous_and_retires_previous() -> None:
    keys = [
        SigningKey("a", "RS256", {}, SigningKeyStatus.RETIRED, NOW),
        SigningKey("b", "RS256", {}, SigningKeyStatus.PREVIOUS, NOW),
        SigningKey("c", "RS256", {}, SigningKeyStatus.CURRENT, NOW),
    ]
    assert rotation_plan(keys) == {"b": SigningKeyStatus.RETIRED, "c": SigningKeyStatus.PREVIOUS}


@pytest.mark.parametrize("kid", ["../../x", "a/b", "", "x" * 200, "a b", "..", "sk_1\n", 7, None])
def test_unsafe_kids_are_refused(kid: object) -> None:
    assert not jwtverify.is_safe_kid(kid)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_none_is_refused(rsa_key: signing.PrivateKey) -> None:
    claims = access_token_claims(CLIENT, CLIENT.scopes, SETTINGS, now=NOW, jti="j")
    token = f"{_b64(json.dumps({'alg': 'none', 'kid': 'sk_1'}).encode())}.{_b64(json.dumps(claims).encode())}."
    with pytest.raises(Unauthenticated, match="^invalid_token"):
        jwtverify.verify(token, rsa_key.public_key(), issuer=SETTINGS.issuer, audience=SETTINGS.audience)


def test_a_token_signed_by_another_key_is_refused(rsa_key: signing.PrivateKey) -> None:
    other = signing.generate_private_key("RS256")
    token = signing.sign(access_token_claims(CLIENT, CLIENT.scopes, SETTINGS, now=NOW, jti="j"), other, kid="sk_1")
    with pytest.raises(Unauthenticated, match="^invalid_token"):
        jwtverify.verify(token, rsa_key.public_key(), issuer=SETTINGS.issuer, audience=SETTINGS.audience)


def test_expired_token_is_token_expired(rsa_key: signing.PrivateKey) -> None:
    claims = access_token_claims(CLIENT, CLIENT.scopes, SETTINGS, now=NOW - dt.timedelta(hours=2), jti="j")
    token = signing.sign(claims, rsa_key, kid="sk_1")
    with pytest.raises(Unauthenticated, match="^token_expired"):
        jwtverify.verify(token, rsa_key.public_key(), issuer=SETTINGS.issuer, audience=SETTINGS.audience)


def test_private_key_is_sealed_and_opens_only_in_its_own_row(rsa_key: signing.PrivateKey) -> None:
    envelope = Envelope({1: os.urandom(32)}, 1)
    sealed = seal_private_key(envelope, "sk_a", rsa_key)
    assert b"PRIVATE KEY" not in sealed
    opened = open_private_key(envelope, "sk_a", sealed)
    assert opened.private_numbers() == rsa_key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(DecryptionError):
        open_private_key(envelope, "sk_b", sealed)


def test_a_sealed_private_key_needs_the_kek_that_sealed_it(rsa_key: signing.PrivateKey) -> None:
    sealed = seal_private_key(Envelope({1: os.urandom(32)}, 1), "sk_a", rsa_key)
    with pytest.raises(DecryptionError):
        open_private_key(Envelope({1: os.urandom(32)}, 1), "sk_a", sealed)


@pytest.mark.parametrize("scope", ["inventory:read orders:read", "inventory:read\n", "", "x" * 101, "inv/../read"])
def test_granted_scopes_must_be_single_words(scope: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_scopes(["inventory:read", scope])


def test_granted_scopes_keep_their_order_without_duplicates() -> None:
    assert validate_scopes(["b:write", "a:read", "b:write"]) == ("b:write", "a:read")
