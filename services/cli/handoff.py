"""The partner hand-off file: what the spec's "What to Share" table lists, in one file that
only its owner can read.

The file is reserved (created empty, mode 0600, never over an existing file) before the
credentials are requested, so a bad path cannot cost the one showing of the credentials.
Without a path it goes under the data directory, `<data dir>/handoffs/<integration id>.json`
(then `<integration id>-2.json`, …), out of the working tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The documents themselves are the kit's, so the console's download gives the same (re-exported here).
from services.kit.handoff import HANDLING, handoff_bytes, handoff_document, key_handoff_document

__all__ = ["HANDLING", "HandoffExists", "HandoffFile", "handoff_document", "key_handoff_document"]


HANDOFFS_DIR = "handoffs"
# Hand-offs one integration may have under the data directory (activation, reactivations and
# key regenerations); a bound, so that a reservation loop always ends.
MAX_HANDOFFS_PER_INTEGRATION = 1000


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

    @classmethod
    def reserve_default(cls, data_dir: Path, integration_id: str) -> "HandoffFile":
        """A new file `<data dir>/handoffs/<integration id>[-N].json`, the first N that is free;
        the directory is made 0700."""
        directory = Path(data_dir) / HANDOFFS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        stem = Path(integration_id).name  # an id is one path segment, whatever the server sent
        for n in range(1, MAX_HANDOFFS_PER_INTEGRATION + 1):
            try:
                return cls.reserve(directory / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json"))
            except HandoffExists:
                continue
        raise HandoffExists(f"{directory} already holds {MAX_HANDOFFS_PER_INTEGRATION} hand-offs of {integration_id}; "
                            f"remove the old ones or give --handoff FILE")

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
