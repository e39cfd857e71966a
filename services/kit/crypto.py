"""AES-256-GCM envelope encryption for secrets that must be recoverable (JWT private keys,
webhook signing secrets).

Each value gets its own random data key; the data key is wrapped by the key-encryption key
(KEK) named by version. Associated data binds a ciphertext to its row and column, so a blob
copied into another row or column fails to open.

Blob layout: b"TE1" | kek_version (4 bytes, big endian) | wrap nonce (12) | wrapped key (48)
| nonce (12) | ciphertext with tag.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.kit.errors import TrellisError

_MAGIC = b"TE1"
_HEADER = struct.Struct(">3sI")


class DecryptionError(TrellisError):
    """The blob was altered, moved to another row or column, or its KEK is unknown."""


def aad_for(table: str, column: str, row_id: str) -> bytes:
    return f"{table}.{column}:{row_id}".encode()


class Envelope:
    """Seals and opens values with the current KEK; older KEKs still open what they sealed."""

    def __init__(self, keys: dict[int, bytes], current: int) -> None:
        if current not in keys:
            raise ValueError("the current KEK version has no key")
        for version, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"KEK version {version} is not 32 bytes")
        self._keys = dict(keys)
        self.current = current

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, nonce = os.urandom(12), os.urandom(12)
        wrapped = AESGCM(self._keys[self.current]).encrypt(wrap_nonce, data_key, aad)
        sealed = AESGCM(data_key).encrypt(nonce, plaintext, aad)
        return _HEADER.pack(_MAGIC, self.current) + wrap_nonce + wrapped + nonce + sealed

    def open(self, blob: bytes, aad: bytes) -> bytes:
        try:
            magic, version = _HEADER.unpack_from(blob)
        except struct.error as exc:
            raise DecryptionError("ciphertext is truncated") from exc
        if magic != _MAGIC:
            raise DecryptionError("not an envelope ciphertext")
        key = self._keys.get(version)
        if key is None:
            raise DecryptionError(f"no key-encryption key of version {version}", kek_version=version)
        body = blob[_HEADER.size :]
        wrap_nonce, wrapped, nonce, sealed = body[:12], body[12:60], body[60:72], body[72:]
        try:
            data_key = AESGCM(key).decrypt(wrap_nonce, wrapped, aad)
            return AESGCM(data_key).decrypt(nonce, sealed, aad)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not open with this key and binding") from exc

    def version_of(self, blob: bytes) -> int:
        version: int = _HEADER.unpack_from(blob)[1]
        return version

    def rewrap(self, blob: bytes, aad: bytes) -> bytes:
        """The same plaintext sealed under the current KEK (for KEK rotation)."""
        return self.seal(self.open(blob, aad), aad)
