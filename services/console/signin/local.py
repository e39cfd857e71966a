"""The embedded mode's local sign-in: type a user name, pick an organisation, and the console
mints actor tokens with the launcher's key, as the CLI does (services/cli/embedded.py). It is
built only in the embedded mode; production has no such page (services.console.app)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jwt

from services.console.sessions import Session
from services.kit.auth import ADMIN_PERMISSION, EMBEDDED_PRIVATE_KEY, PLATFORM_PERMISSION, QA_PERMISSION, mint_actor_token
from services.kit.settings import Mode

if TYPE_CHECKING:
    from services.console.entrypoints.settings import ConsoleProcessSettings

# What the local sign-in lets a developer be: the CLI's administrator (who is also a platform
# operator, as the CLI's actor is), or less, to see the console as an organisation's
# administrator who is not on the platform team, the platform team alone (the setup queue), a
# QA user or a user without permissions sees it.
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "administrator": ("Administrator (integrations, logs, platform operations)",
                      (ADMIN_PERMISSION, QA_PERMISSION, PLATFORM_PERMISSION)),
    "org_administrator": ("Organisation administrator (integrations, logs; not a platform operator)",
                          (ADMIN_PERMISSION, QA_PERMISSION)),
    "platform_operator": ("Platform operator only (the setup queue of every organisation)", (PLATFORM_PERMISSION,)),
    "qa": ("QA (API logs only)", (QA_PERMISSION,)),
    "none": ("No permissions", ()),
}
DEFAULT_ORG = "org_default"  # the CLI's default organisation
TOKEN_TTL_SECONDS = 900
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class LocalSignInRefused(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class LocalSignIn:
    """Mints actor tokens for whoever signs in on this machine (embedded mode only)."""

    def __init__(self, settings: ConsoleProcessSettings) -> None:
        if settings.mode is not Mode.EMBEDDED:
            raise ValueError("the local sign-in exists only in the embedded mode")
        key_file = Path(settings.actor_private_key_file or Path(settings.data_dir) / EMBEDDED_PRIVATE_KEY)
        try:
            self._key = key_file.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the local actor private key {key_file} (TRELLIS_ACTOR_PRIVATE_KEY_FILE); "
                             f"start Trellis with `trellis up` first: {exc}") from exc
        self._issuer, self._audience = settings.actor_issuer, settings.actor_audience

    def sign_in(self, user: str, org: str, role: str) -> Session:
        user, org = user.strip(), org.strip()
        if not _NAME.fullmatch(user):
            raise LocalSignInRefused("user", "Type a user name: letters, digits and . _ @ - (up to 64), e.g. alice.")
        if not _NAME.fullmatch(org):
            raise LocalSignInRefused("org", "Pick an organisation id: letters, digits and . _ @ - (up to 64).")
        if role not in ROLES:
            raise LocalSignInRefused("role", "Pick one of the roles offered.")
        session = Session(user_id=user, org_id=org, permissions=list(ROLES[role][1]), access_token="", expires_at=0,
                          method="local", display_name=user)
        self.renew(session)
        return session

    def renew(self, session: Session) -> None:
        """A fresh token for the same user, organisation and permissions."""
        session.access_token = mint_actor_token(
            self._key, issuer=self._issuer, audience=self._audience, user_id=session.user_id, org_id=session.org_id,
            permissions=list(session.permissions), ttl_seconds=TOKEN_TTL_SECONDS)
        session.expires_at = float(jwt.decode(session.access_token, options={"verify_signature": False})["exp"])
        if session.expires_at <= time.time():  # a clock far off would make every page sign in again
            raise ValueError("a token minted now is already expired: check the system clock")
