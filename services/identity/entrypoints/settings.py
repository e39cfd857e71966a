"""What an identity process reads: the kit's group, what partners are told (PartnerSettings:
the API key prefix, the token issuer, audience, algorithm and URL, external issuer mode), the
key-encryption keys it seals signing keys with (SealingSettings) and the access-token lifetime
(services.kit.settings.TokenLifetimeSettings, shared: every edge checks our tokens
against the same lifetime). A setting only identity reads would be declared here, in a group
named in services.kit.settings.SETTINGS_GROUPS and put first among the bases below."""

from __future__ import annotations

from services.kit.settings import KitSettings, PartnerSettings, SealingSettings, TokenLifetimeSettings


class IdentityProcessSettings(TokenLifetimeSettings, SealingSettings, PartnerSettings, KitSettings):
    """Everything an identity process uses (fields: the kit's, then the partners', the sealing
    keys, the token lifetime; pydantic lists the last base's first)."""
