"""The vendored htmx is the pinned release, with its licence beside it."""

from __future__ import annotations

import hashlib

from services.console.pages import STATIC

HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"  # htmx.org 2.0.11 dist/htmx.min.js


def test_htmx_is_the_pinned_release() -> None:
    assert hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert "Zero-Clause BSD" in (STATIC / "htmx.LICENSE").read_text()
    assert '"2.0.11"' in (STATIC / "htmx.min.js").read_text()
