"""What a webhooks process reads: the kit's group, the key-encryption keys it seals signing
secrets with, the deadline of one POST (shared in the kit: the edge and the console wait on a
test send) and its own group below, named in services.kit.settings.SETTINGS_GROUPS."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from services.kit import settingcheck as check
from services.kit.settings import KitSettings, SealingSettings, SettingsGroup, WebhookTimeoutSettings


class WebhooksSettings(SettingsGroup):
    """The webhooks service's own settings: deliveries, receivers, its consumers."""

    # The retry schedule is the spec's: attempt 2 one minute after attempt 1, then 5 min,
    # 30 min, 2 h, each counted from the attempt before.
    webhooks_retry_schedule_seconds: list[float] = Field(default_factory=lambda: [60.0, 300.0, 1800.0, 7200.0])
    webhooks_user_agent: str = "GrowerIQ-Webhook/1.0"
    # PEM bundle of CAs trusted for receivers' certificates besides the system's store, which
    # it extends (adapters/sender.py tls_context); empty: the system's store alone.
    webhooks_ca_bundle: str = ""
    # CIDRs exempt from the SSRF refusal (say, 127.0.0.0/8 for a receiver on this machine).
    webhooks_allowed_private_networks: list[str] = Field(default_factory=list)
    webhooks_concurrency_per_subscription: int = Field(default=16, ge=1, le=1000)
    webhooks_concurrency_total: int = Field(default=256, ge=1, le=10000)
    # How long a replica's claim on a delivery lasts without renewal (renewed while it works).
    webhooks_lease_seconds: float = Field(default=30.0, gt=0)
    # Fallback look for due deliveries; new ones wake the dispatcher at once.
    webhooks_poll_seconds: float = Field(default=1.0, gt=0)
    # Durable JetStream consumer names (activity.> and trellis.integration.>) share this prefix.
    webhooks_consumer_name: str = "webhooks"
    # An activity fetched but not acked (the replica died) is redelivered after this long.
    webhooks_consumer_ack_wait_seconds: float = Field(default=30.0, gt=0)
    # Deliveries, attempts and activities older than this are deleted (an organisation may set
    # its own with SetRetention / `trellis webhooks retention set`); pending deliveries stay.
    webhooks_retention_days: int = Field(default=30, ge=1, le=3650)
    # How often a retention pass runs (each deletes in bounded batches).
    webhooks_retention_interval_seconds: float = Field(default=3600.0, gt=0)
    # Each attempt keeps the headers it sent and the answer's headers and first 4 KiB (secrets
    # masked; docs/receivers.md); off: only the status, error and first 2 KB, as before.
    webhooks_record_attempt_details: bool = True

    SETTING_FORMS: ClassVar[dict[str, str]] = {
        "webhooks_allowed_private_networks": check.NETWORKS_FORM,
        "webhooks_retry_schedule_seconds": "a JSON list of seconds, none negative, like [60, 300, 1800]",
    }

    @field_validator("webhooks_consumer_name")
    @classmethod
    def _consumer_name(cls, value: str) -> str:
        return check.name(value, "a JetStream consumer name")

    @field_validator("webhooks_user_agent")
    @classmethod
    def _user_agent(cls, value: str) -> str:
        return check.header_value(value)

    @field_validator("webhooks_allowed_private_networks")
    @classmethod
    def _allowed_private_networks(cls, value: list[str]) -> list[str]:
        return check.networks(value)

    @field_validator("webhooks_retry_schedule_seconds")
    @classmethod
    def _retry_schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise check.form_error(cls.SETTING_FORMS["webhooks_retry_schedule_seconds"])
        return value


class WebhooksProcessSettings(WebhooksSettings, WebhookTimeoutSettings, SealingSettings, KitSettings):
    """Everything a webhooks process uses (fields: the kit's, the keys, the deadline, then its
    own; pydantic lists the last base's first)."""
