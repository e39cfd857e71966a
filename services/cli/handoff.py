"""The partner hand-off file: what the spec's "What to Share" table lists, in one file that
only its owner can read.

The file is reserved (created empty, mode 0600, never over an existing file) before the
credentials are requested, so a bad path cannot cost the one showing of the credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The document itself is the kit's, so the console's download gives the same (re-exported here).
from services.kit.handoff import HANDLING, handoff_bytes, handoff_document

__all__ = ["HANDLING", "HandoffExists", "HandoffFile", "handoff_document"]


class HandoffExists(Exception):
    """The hand-off path already exists; it is never overwritten."""


class HandoffFile:
    """A new file with mode 0600, reserved now and written once the credentials exist."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def reserve(cls, path: str | Path) -> "HandoffFile":
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise HandoffExists(f"{path} already exists; a hand-off file is never overwritten, choose a new path") from None
        os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask; set it exactly
        return cls(path, fd)

    def write(self, document: dict[str, Any]) -> None:
        data = handoff_bytes(document)
        try:
            os.write(self._fd, data)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1

    def abandon(self) -> None:
        """Remove the reserved file: the call that would have filled it failed."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)
