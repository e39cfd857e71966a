"""What an edge process reads: the kit's group, what partners are told (PartnerSettings: the
issuer, audience and URLs identity signs and every edge checks), the lifetime identity gives
its tokens (an edge refuses a token that claims a longer one), webhooks' delivery timeout (WebhookTimeoutSettings: a
test delivery through the edge waits for it), and the edge's own group below, named in
services.kit.settings.SETTINGS_GROUPS. The same `TRELLIS_*` variables as before."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from services.kit import settingcheck as check
from services.kit.settings import (
    TokenLifetimeSettings,
    KitSettings,
    PartnerSettings,
    SettingsGroup,
    WebhookTimeoutSettings,
    checked_metrics_address,
)


class EdgeSettings(SettingsGroup):
    """The HTTP edge's own settings (services/edge, docs/partners.md)."""

    # Where the edge serves Prometheus `GET /metrics`, as host:port. Empty: on the partner port
    # with the other public endpoints (the embedded mode); set it in production so the metrics
    # are not reachable through the Ingress (the partner port then has no /metrics).
    edge_metrics_addr: str = ""
    # The route table (TOML); empty means the bundled example table in embedded mode only.
    edge_routes_file: str = ""
    # Peers (CIDR) whose X-Forwarded-For is believed; empty: the TCP peer is the client.
    edge_trusted_proxies: list[str] = Field(default_factory=list)
    edge_upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    edge_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    edge_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # A request's head must arrive within this (from the connection, or from its first byte on a
    # kept-alive one), its body within this from the end of its head; then 408 and the connection
    # closes (services/edge/http/README.md).
    edge_header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    edge_body_read_timeout_seconds: float = Field(default=60.0, gt=0)
    # Open connections one client address may hold; past it, 429 and closed. Trusted proxies
    # (edge_trusted_proxies) carry many clients' connections and are not counted.
    edge_max_connections_per_address: int = Field(default=256, ge=1)
    # Safety bound on every cached key, token and integration; events invalidate them sooner.
    edge_cache_ttl_seconds: float = Field(default=30.0, gt=0)
    # An unknown `kid` refetches the JWKS at most this often (junk kids cannot hammer identity).
    edge_jwks_refetch_seconds: float = Field(default=5.0, ge=0)
    # Deadline of each gRPC call the edge makes to identity and registry.
    edge_peer_timeout_seconds: float = Field(default=5.0, gt=0)
    # When the shared rate-limit counters cannot be reached: allow (true) or refuse requests.
    edge_rate_limit_fail_open: bool = True

    SETTING_FORMS: ClassVar[dict[str, str]] = {"edge_trusted_proxies": check.NETWORKS_FORM}

    @field_validator("edge_metrics_addr")
    @classmethod
    def _edge_metrics_address(cls, value: str) -> str:
        return checked_metrics_address(value) or value

    @field_validator("edge_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return check.networks(value)


class EdgeProcessSettings(EdgeSettings, WebhookTimeoutSettings, TokenLifetimeSettings, PartnerSettings, KitSettings):
    """Everything an edge process uses (fields: the kit's, then the partners', identity's and
    webhooks' few the edge reads, then its own; pydantic lists the last base's first)."""
