import secrets

import pytest

from services.kit.crypto import DecryptionError, Envelope, aad_for


@pytest.fixture
def envelope() -> Envelope:
    return Envelope({1: secrets.token_bytes(32)}, current=1)


def test_sealed_value_opens_with_the_same_binding(envelope):
    aad = aad_for("signing_keys", "private_key", "kid_1")
    blob = envelope.seal(b"private key pem", aad)
    assert b"private key pem" not in blob
    assert envelope.open(blob, aad) == b"private key pem"


def test_a_ciphertext_moved_to_another_row_does_not_open(envelope):
    blob = envelope.seal(b"secret", aad_for("subscriptions", "secret", "sub_a"))
    with pytest.raises(DecryptionError):
        envelope.open(blob, aad_for("subscriptions", "secret", "sub_b"))


def test_a_ciphertext_moved_to_another_column_does_not_open(envelope):
    blob = envelope.seal(b"secret", aad_for("t", "a", "row"))
    with pytest.raises(DecryptionError):
        envelope.open(blob, aad_for("t", "b", "row"))


def test_a_flipped_bit_is_detected(envelope):
    aad = aad_for("t", "c", "row")
    blob = bytearray(envelope.seal(b"secret", aad))
    blob[-1] ^= 0x01
    with pytest.raises(DecryptionError):
        envelope.open(bytes(blob), aad)


def test_two_seals_of_one_value_differ(envelope):
    aad = aad_for("t", "c", "row")
    assert envelope.seal(b"same", aad) != envelope.seal(b"same", aad)


def test_kek_rotation_keeps_old_values_readable_and_rewraps_them():
    old_key, new_key = secrets.token_bytes(32), secrets.token_bytes(32)
    aad = aad_for("t", "c", "row")
    blob = Envelope({1: old_key}, current=1).seal(b"value", aad)
    rotated = Envelope({1: old_key, 2: new_key}, current=2)
    assert rotated.open(blob, aad) == b"value"
    rewrapped = rotated.rewrap(blob, aad)
    assert rotated.version_of(rewrapped) == 2
    assert Envelope({2: new_key}, current=2).open(rewrapped, aad) == b"value"


def test_an_unknown_kek_version_is_named():
    blob = Envelope({7: secrets.token_bytes(32)}, current=7).seal(b"v", b"a")
    with pytest.raises(DecryptionError, match="version 7"):
        Envelope({1: secrets.token_bytes(32)}, current=1).open(blob, b"a")


def test_garbage_is_refused(envelope):
    with pytest.raises(DecryptionError):
        envelope.open(b"xx", b"a")
