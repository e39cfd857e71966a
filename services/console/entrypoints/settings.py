"""What a console process reads: the kit's group, the partner-facing addresses it shows
(PartnerSettings: the API docs link beside new credentials), the organisation limits it shows
(LimitSettings), how long a receiver may take (WebhookTimeoutSettings: a test delivery waits a
little longer), and the console's own group below, named in services.kit.settings.SETTINGS_GROUPS."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from services.kit.settingcheck import SettingError
from services.kit.settings import (KitSettings, LimitSettings, Mode, PartnerSettings, SettingsGroup,
                                   WebhookTimeoutSettings)


class ConsoleSettings(SettingsGroup):
    """The web console's own settings (services/console, docs/console.md)."""

    # It serves HTML on console_addr and is reached by browsers at console_public_url (the OIDC
    # redirect URI is built from it).
    console_addr: str = "127.0.0.1:8081"
    console_public_url: str = "http://127.0.0.1:8081"
    # Where the console serves Prometheus `GET /metrics`; empty: on the console port (embedded).
    console_metrics_addr: str = ""
    # Sign-in outside the embedded mode: OpenID Connect against TRELLIS_ACTOR_ISSUER (its
    # discovery document unless this URL is set), as this client of the identity provider.
    console_oidc_client_id: str = ""
    console_oidc_client_secret: SecretStr = SecretStr("")
    console_oidc_discovery_url: str = ""
    console_oidc_scopes: str = "openid profile email offline_access"
    # Sent as the `audience` parameter of the authorization request when set (Auth0 needs it
    # for an access token whose audience is TRELLIS_ACTOR_AUDIENCE).
    console_oidc_audience: str = ""
    # A session lasts this long after sign-in (or its last token refresh), on every replica.
    console_session_ttl_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 86400)
    # Deadline of each gRPC call a page makes.
    console_peer_timeout_seconds: float = Field(default=10.0, gt=0)


class ConsoleProcessSettings(ConsoleSettings, WebhookTimeoutSettings, LimitSettings, PartnerSettings, KitSettings):
    """Everything a console process uses (fields: the kit's first; pydantic lists the last base's
    first)."""


def check_settings(settings: ConsoleProcessSettings) -> None:
    """What the console needs outside the embedded mode: an OIDC client and an HTTPS address."""
    if settings.mode is Mode.EMBEDDED:
        return
    if not settings.console_oidc_client_id:
        raise SettingError("TRELLIS_CONSOLE_OIDC_CLIENT_ID",
                           "the console's client id at the identity provider outside the embedded mode")
    if urlsplit(settings.console_public_url).scheme != "https":
        raise SettingError("TRELLIS_CONSOLE_PUBLIC_URL", "an https:// URL (session cookies are Secure)",
                           given=settings.console_public_url)
