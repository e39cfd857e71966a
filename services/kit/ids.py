"""Identifiers: time-ordered, URL-safe, with a type prefix (`int_01J…`, `evt_01J…`)."""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case

# A request id a caller may give (and we forward as `x-request-id` metadata, which takes
# printable ASCII only): the edge's own ids and UUIDs fit.
MAX_REQUEST_ID_LENGTH = 128
REQUEST_ID_FORM = f"1 to {MAX_REQUEST_ID_LENGTH} letters, digits, '.', '_', ':' or '-'"
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def is_request_id(value: str) -> bool:
    """Whether `value` is a request id of the accepted form (and so can travel as metadata)."""
    return _REQUEST_ID.fullmatch(value) is not None


def new_id(prefix: str) -> str:
    """A new id sortable by creation time: 48 bits of milliseconds, 80 random bits."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return f"{prefix}_{''.join(reversed(chars))}"
