"""API keys and client secrets: their format, hash-only storage, and the constant-time checks."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import string

import pytest

from services.identity.domain.model import (
    API_KEY_PREFIX_LENGTH,
    ApiKey,
    CredentialStatus,
    OAuthClient,
    client_secret_matches,
    generate_api_key,
    generate_client,
    looks_like_api_key,
    match_api_key,
)

URLSAFE = set(string.ascii_letters + string.digits + "-_")
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def stored(key_plaintext: str, *, status: CredentialStatus = CredentialStatus.ACTIVE, key_id: str = "key_1") -> ApiKey:
    new_hash = hashlib.sha256(key_plaintext.encode()).hexdigest()
    return ApiKey(id=key_id, org_id="org_a", integration_id="int_a", prefix=key_plaintext[:16], key_hash=new_hash,
                  status=status, created_at=NOW)


def test_api_key_is_prefix_plus_at_least_32_random_urlsafe_characters() -> None:
    key = generate_api_key("grq_live_")
    assert key.plaintext.startswith("grq_live_")
    random_part = key.plaintext[len("grq_live_"):]
    assert len(random_part) >= 32
    assert set(random_part) <= URLSAFE


def test_api_key_prefix_is_configurable() -> None:
    assert generate_api_key("grq_test_").plaintext.startswith("grq_test_")


def test_api_keys_do_not_repeat() -> None:
    keys = {generate_api_key("grq_live_").plaintext for _ in range(500)}
    assert len(keys) == 500


def test_only_the_hash_and_the_16_character_prefix_are_kept() -> None:
    key = generate_api_key("grq_live_")
    assert key.prefix == key.plaintext[:API_KEY_PREFIX_LENGTH] and len(key.prefix) == 16
    assert key.key_hash == hashlib.sha256(key.plaintext.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", key.key_hash)
    # Neither the repr nor any field other than plaintext holds the key.
    assert key.plaintext not in repr(key)
    assert key.plaintext not in (key.prefix, key.key_hash)


def test_client_secret_is_random_and_kept_only_as_its_hash() -> None:
    client = generate_client()
    assert client.client_id.startswith("trc_")
    assert len(client.secret) >= 32  # 32 random bytes in URL-safe base64
    assert client.secret_hash == hashlib.sha256(client.secret.encode()).hexdigest()
    assert client.secret not in repr(client)


def test_a_presented_key_matches_only_its_own_hash() -> None:
    key = generate_api_key("grq_live_")
    other = generate_api_key("grq_live_")
    assert match_api_key(key.plaintext, [stored(key.plaintext)]) is not None
    assert match_api_key(other.plaintext, [stored(key.plaintext)]) is None
    # One character off at the end still fails.
    tampered = key.plaintext[:-1] + ("A" if key.plaintext[-1] != "A" else "B")
    assert match_api_key(tampered, [stored(key.plaintext)]) is None


def test_key_verification_compares_every_candidate_without_stopping_early() -> None:
    key = generate_api_key("grq_live_")
    consumed: list[str] = []

    def candidates():
        for i, plaintext in enumerate([key.plaintext, generate_api_key("grq_live_").plaintext, generate_api_key("grq_live_").plaintext]):
            consumed.append(plaintext)
            yield stored(plaintext, key_id=f"key_{i}")

    found = match_api_key(key.plaintext, candidates())
    assert found is not None and found.id == "key_0"
    assert len(consumed) == 3  # the match came first, yet the rest were still compared


def test_shape_check_refuses_other_prefixes_and_odd_characters() -> None:
    key = generate_api_key("grq_live_").plaintext
    assert looks_like_api_key(key, "grq_live_")
    assert not looks_like_api_key("grq_test_" + key[9:], "grq_live_")
    assert not looks_like_api_key("grq_live_", "grq_live_")
    assert not looks_like_api_key(key + " ", "grq_live_")
    assert not looks_like_api_key(key + "/../", "grq_live_")


@pytest.mark.parametrize("status,expected", [(CredentialStatus.ACTIVE, True), (CredentialStatus.REVOKED, False)])
def test_client_secret_check_needs_a_live_client_and_the_right_secret(status: CredentialStatus, expected: bool) -> None:
    new = generate_client()
    client = OAuthClient(client_id=new.client_id, org_id="org_a", integration_id="int_a", secret_hash=new.secret_hash,
                         scopes=("inventory:read",), status=status, created_at=NOW, scopes_updated_at=NOW)
    assert client_secret_matches(client, new.secret) is expected
    assert client_secret_matches(client, generate_client().secret) is False
    assert client_secret_matches(None, new.secret) is False
