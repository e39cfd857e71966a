"""What a registry process reads: the kit's group, the key-encryption keys it seals the secret
connection details of pre-built integration setup requests with (SealingSettings), and the
organisation limits it enforces (services.kit.settings: LimitSettings is shared, as the console
shows the same limits). A setting only the registry reads would be declared here, in a
RegistrySettings group named in services.kit.settings.SETTINGS_GROUPS and put first among the
bases below."""

from __future__ import annotations

from services.kit.settings import KitSettings, LimitSettings, SealingSettings


class RegistryProcessSettings(LimitSettings, SealingSettings, KitSettings):
    """Everything a registry process uses (fields: the kit's, the keys, then the limits; pydantic
    lists the last base's first)."""
