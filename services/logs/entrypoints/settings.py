"""What a logs process reads: the kit's group and the logs service's own (LogsSettings, named in
services.kit.settings.SETTINGS_GROUPS), from the same TRELLIS_* variables as ever."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from services.kit import settingcheck as check
from services.kit.settings import PLACEHOLDER, KitSettings, SettingsGroup


class LogsSettings(SettingsGroup):
    """The logs service's own settings (services/logs, docs/auditors.md)."""

    # The audit key chains an HMAC over every audit entry; it is never stored in the database.
    # Base64 of at least 32 random bytes; the logs service refuses the placeholder outside the
    # embedded mode.
    audit_hmac_key: SecretStr = SecretStr(PLACEHOLDER)
    # API request records older than this are deleted, a bounded batch per transaction.
    logs_retention_days: int = Field(default=365, ge=1)
    logs_retention_interval_seconds: float = Field(default=3600.0, gt=0)
    # The platform log (requests no organisation can be attributed) keeps at most this many
    # rows, whatever their age: a flood of junk credentials cannot grow it without bound.
    logs_platform_max_rows: int = Field(default=1_000_000, ge=1)

    @field_validator("audit_hmac_key")
    @classmethod
    def _audit_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() not in ("", PLACEHOLDER):
            check.base64_key(value.get_secret_value(), size=32, exact=False)
        return value


class LogsProcessSettings(LogsSettings, KitSettings):
    """Everything a logs process uses (fields: the kit's, then the logs service's; pydantic lists
    the last base's first)."""
