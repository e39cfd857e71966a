"""The ids of the rows written once per delivery and attempt (adapters/store.py row_id): shaped
like services.kit.ids.new_id, time-ordered, digit for digit what 26 divisions by 32 give."""

from __future__ import annotations

import random

from services.kit.ids import new_id
from services.webhooks.adapters import store

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _by_division(value: int) -> str:
    digits = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def test_row_ids_are_the_base32_digits_of_time_and_randomness(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    values = random.Random(7)
    for millis in (0, 1, 1_764_000_000_000, 2**48 - 1):
        bits = values.getrandbits(80)
        monkeypatch.setattr(store.time, "time", lambda millis=millis: millis / 1000)
        monkeypatch.setattr(store._row_random, "getrandbits", lambda n, bits=bits: bits)
        assert store.row_id("att") == f"att_{_by_division((millis << 80) | bits)}"


def test_row_ids_have_new_ids_shape_and_order_by_time(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ids = []
    for millis in (1_764_000_000_000, 1_764_000_000_001):
        monkeypatch.setattr(store.time, "time", lambda millis=millis: millis / 1000)
        ids.append(store.row_id("dlv"))
    assert len(ids[0]) == len(new_id("dlv")) and set(ids[0][4:]) <= set(ALPHABET)
    assert ids[0][:14] < ids[1][:14]
