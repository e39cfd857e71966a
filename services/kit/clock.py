"""The time, for code that must not import a database library to ask for it (domains and
application layers): services.kit.db.utcnow is this one."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, timezone-aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)
