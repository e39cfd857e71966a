"""What the CLI reads: every component's settings, since `trellis up` starts them all and a
command may name any service's address. Each group is imported from the component that owns it
(a settings module imports pydantic and the kit, nothing of its service's rooms)."""

from __future__ import annotations

from pydantic import model_validator

from services.console.entrypoints.settings import ConsoleSettings
from services.edge.entrypoints.settings import EdgeSettings
from services.kit.settings import (KitSettings, LimitSettings, PartnerSettings, SealingSettings, TokenLifetimeSettings,
                                   WebhookTimeoutSettings)
from services.logs.entrypoints.settings import LogsSettings
from services.webhooks.entrypoints.settings import WebhooksSettings


class CliSettings(ConsoleSettings, LogsSettings, WebhooksSettings, EdgeSettings, TokenLifetimeSettings,
                  WebhookTimeoutSettings, LimitSettings, SealingSettings, PartnerSettings, KitSettings):
    """Settings as a client sees them: every group, in SETTINGS_GROUPS' order (pydantic lists the
    last base's first; tests/unit/cli checks it).

    A client needs addresses and the actor issuer, never the services' own secrets, so the
    services' refusal of placeholder secrets outside embedded mode does not apply here.
    """

    @model_validator(mode="after")
    def _refuse_placeholders_outside_embedded(self) -> "CliSettings":  # overrides the services' check
        return self
