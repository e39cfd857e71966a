"""Who may read what: the request log and the audit trail need the QA or administrator
permission and show the reader's own organisation only; the platform log (domain.model.PLATFORM_LOG)
is for platform operators. The permissions are the kit's (services.kit.auth), so these checks
live here rather than in the domain."""

from __future__ import annotations

from collections.abc import Iterable

from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, QA_PERMISSION
from services.kit.errors import PermissionDenied
from services.logs.domain.model import PLATFORM_LOG

READ_PERMISSIONS = frozenset({ADMIN_PERMISSION, QA_PERMISSION})


def require_reader(permissions: Iterable[str]) -> None:
    """API logs and the audit trail are readable by QA or administrator roles only."""
    if not READ_PERMISSIONS & set(permissions):
        raise PermissionDenied(
            f"reading API logs and the audit trail needs the {QA_PERMISSION} or {ADMIN_PERMISSION} permission",
            permission=QA_PERMISSION,
        )


def log_of(actor_org: str, permissions: Iterable[str], *, platform: bool) -> str:
    """Whose request log a reader reads: the platform log (platform operators only) or the
    reader's own organisation's (QA or administrator roles)."""
    if not platform:
        require_reader(permissions)
        return actor_org
    if PLATFORM_PERMISSION not in set(permissions):
        raise PermissionDenied(
            f"the platform log holds requests of no organisation: reading it needs the {PLATFORM_PERMISSION} "
            "permission of the platform's operators", permission=PLATFORM_PERMISSION,
        )
    return PLATFORM_LOG
