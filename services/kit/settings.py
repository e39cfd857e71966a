"""Typed settings, read from `TRELLIS_*` environment variables, in one group per component.

`KitSettings` is what every process reads; `PartnerSettings`, `SealingSettings` and
`LimitSettings` are shared by the few that need them; each service has its own group, in its
`entrypoints/settings.py` once it is in the shape of docs/architecture.md (here until then). A process's settings class is the kit's group plus
its own (`compose`), built once at start (`load_settings`, which reads every group, so a bad
setting stops any process) and passed down from bootstrap; a service sees only what it uses.
`SETTINGS_GROUPS` names every group, for the checks at start, the docs' table and the tests.

In the embedded mode (`trellis up` on a laptop) the launcher generates real secrets into the
data directory; outside it, placeholder or missing secrets stop the process at start. Each value
is checked against its form as it is read (services.kit.settingcheck): a bad one stops the
process with one line naming the variable, what was given and the form expected.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar, get_args, get_origin

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.kit import settingcheck as check
from services.kit.settingcheck import SettingError

SERVICES = ("identity", "registry", "webhooks", "logs")
DEFAULT_PORTS = {"identity": 50051, "registry": 50052, "webhooks": 50053, "logs": 50054, "edge": 8080}
PLACEHOLDER = "change-me"
# A gRPC service's /metrics port is its gRPC port plus this, unless configured.
METRICS_PORT_OFFSET = 1000


class Mode(str, Enum):
    EMBEDDED = "embedded"
    PRODUCTION = "production"


class SettingsGroup(BaseSettings):
    """The settings of one component, read from `TRELLIS_<FIELD>` variables. A process's settings
    object is the kit's group plus its own (`compose`), so each field is declared once."""

    # Lists are decoded by `_decode_lists`, so a list in the wrong form is reported as such.
    model_config = SettingsConfigDict(env_prefix="TRELLIS_", extra="ignore", enable_decoding=False)

    # The form of settings whose type does not say it all (the others: services.kit.settingcheck).
    # Each group names its own; a composed class holds them all.
    SETTING_FORMS: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _refuse_shadowing(cls)
        forms: dict[str, str] = {}
        for base in reversed(cls.__mro__):
            forms.update(vars(base).get("SETTING_FORMS", {}))
        cls.SETTING_FORMS = forms

    @field_validator("*", mode="before")
    @classmethod
    def _decode_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """A list from the environment is JSON; empty text is the empty list."""
        field = cls.model_fields[info.field_name or ""]
        if not isinstance(value, str) or not _is_list(field.annotation):
            return value
        if not value.strip():
            return []
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, list):
            raise check.form_error(cls.SETTING_FORMS.get(info.field_name or "") or check.describe_form(field))
        return decoded


G = TypeVar("G", bound=SettingsGroup)


def _refuse_shadowing(cls: type[SettingsGroup]) -> None:
    """A class keeps one field and one check per name: two groups declaring a field, or naming a
    check, alike would silently lose one when composed. A subclass replacing its base's check
    (the CLI's) is meant."""
    decorators = cls.__pydantic_decorators__
    names = [("check", n) for n in (*decorators.field_validators, *decorators.model_validators)]
    names += [("setting", n) for n in cls.model_fields]
    for kind, name in names:
        owners = [c for c in cls.__mro__ if name in (vars(c) if kind == "check" else vars(c).get("__annotations__", {}))]
        for i, first in enumerate(owners):
            for other in owners[i + 1:]:
                if not issubclass(first, other):
                    raise TypeError(f"{first.__name__} and {other.__name__} both have a {kind} named {name}: "
                                    "each belongs to one group")


def compose(name: str, *groups: type[SettingsGroup]) -> type[SettingsGroup]:
    """One settings class holding `groups`' fields in the order given (the first group's first)."""
    # pydantic lists the fields of the last base first: the bases go in reversed.
    return type(name, tuple(reversed(groups)), {"__module__": __name__, "__doc__": f"The settings of {', '.join(g.__name__ for g in groups)}."})


class KitSettings(SettingsGroup):
    """What every process reads: its mode and data directory, where each service listens and
    keeps its database, NATS, actor tokens, service identity, telemetry, logging, metrics, grace."""

    mode: Mode = Mode.EMBEDDED
    data_dir: Path = Path(".trellis")
    bind_host: str = "127.0.0.1"

    # Where each service listens, and where its peers find it.
    identity_addr: str = f"127.0.0.1:{DEFAULT_PORTS['identity']}"
    registry_addr: str = f"127.0.0.1:{DEFAULT_PORTS['registry']}"
    webhooks_addr: str = f"127.0.0.1:{DEFAULT_PORTS['webhooks']}"
    logs_addr: str = f"127.0.0.1:{DEFAULT_PORTS['logs']}"

    # One database per service; empty means SQLite under the data directory (embedded only).
    # All four are here (not in each service's group): the launcher and `trellis migrate` hand
    # each service its own, and production refuses a placeholder in any of them.
    identity_database_url: str = ""
    registry_database_url: str = ""
    webhooks_database_url: str = ""
    logs_database_url: str = ""
    database_echo: bool = False

    nats_url: str = "nats://127.0.0.1:4222"
    # JetStream stream replicas: 1 on a laptop, 3 in a production cluster.
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)

    # Actor tokens on every gRPC call: a JWT from the platform's user identity provider.
    actor_issuer: str = "trellis-embedded"
    actor_audience: str = "trellis"
    actor_jwks_url: str = ""
    # PEM public key file, used instead of a JWKS URL (the embedded mode's local key).
    actor_public_key_file: str = ""

    # Service identity: how a service authenticates to its peers (services.kit.auth.ServiceTokenSource).
    # Embedded mode mints short-lived tokens with the local actor private key (empty: the
    # launcher's `<data dir>/secrets/actor_private.pem`); elsewhere a token file is read, and
    # re-read when it changes (a Kubernetes projected service-account token, say).
    actor_private_key_file: str = ""
    service_token_file: str = ""

    otel_service_namespace: str = "trellis"
    # Log lines: `json` (one object per line, services.kit.logcontext) or `text`; empty: text in
    # the embedded mode (a terminal), json otherwise.
    log_format: Literal["", "json", "text"] = ""
    # Where each gRPC service serves Prometheus `GET /metrics` (services.kit.metrics), as
    # host:port. Unset: the host of the service's gRPC address and its port + 1000 (identity
    # 51051, registry 51052, webhooks 51053, logs 51054; a gRPC port of 0 gives 0, any free
    # port). An empty host means `bind_host`; an empty value turns the endpoint off.
    identity_metrics_addr: str | None = None
    registry_metrics_addr: str | None = None
    webhooks_metrics_addr: str | None = None
    logs_metrics_addr: str | None = None
    grpc_grace_seconds: float = Field(default=5.0, ge=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        return check.host(value)

    @field_validator("identity_addr", "registry_addr", "webhooks_addr", "logs_addr")
    @classmethod
    def _peer_address(cls, value: str) -> str:
        return check.address(value)

    @field_validator("identity_metrics_addr", "registry_metrics_addr", "webhooks_metrics_addr", "logs_metrics_addr")
    @classmethod
    def _metrics_addresses(cls, value: str | None) -> str | None:
        return _metrics_address(value)

    @field_validator("actor_jwks_url")
    @classmethod
    def _actor_jwks_url(cls, value: str) -> str:
        return check.http_url(value) if value else value

    @field_validator("identity_database_url", "registry_database_url", "webhooks_database_url", "logs_database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return check.database_url(value)

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        return check.nats_url(value)

    @model_validator(mode="after")
    def _refuse_placeholders_outside_embedded(self) -> Self:
        if self.mode is Mode.EMBEDDED:
            return self
        problems = []
        if not (self.actor_jwks_url or self.actor_public_key_file):
            problems.append("TRELLIS_ACTOR_JWKS_URL (or TRELLIS_ACTOR_PUBLIC_KEY_FILE) must be set")
        for service in SERVICES:
            url = getattr(self, f"{service}_database_url")
            if PLACEHOLDER in url:
                problems.append(f"TRELLIS_{service.upper()}_DATABASE_URL holds a placeholder")
        if problems:
            raise ValueError("production settings refused: " + "; ".join(problems))
        return self

    def database_url(self, service: str) -> str:
        """The SQLAlchemy async URL of one service's database."""
        url: str = getattr(self, f"{service}_database_url")
        if url:
            return url
        if self.mode is not Mode.EMBEDDED:
            raise SettingError(f"TRELLIS_{service.upper()}_DATABASE_URL",
                               "its database's URL outside the embedded mode (postgresql+asyncpg://…)")
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def listen_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_addr").rsplit(":", 1)[1])

    def effective_log_format(self) -> str:
        return self.log_format or ("text" if self.mode is Mode.EMBEDDED else "json")

    def metrics_address(self, service: str, grpc_address: str) -> str | None:
        """host:port of the service's /metrics listener (see `<service>_metrics_addr`), or None."""
        configured = getattr(self, f"{service}_metrics_addr", None)
        if configured is None:
            host, _, port = grpc_address.rpartition(":")
            return f"{host}:{int(port) + METRICS_PORT_OFFSET if int(port) else 0}"
        if not configured.strip():
            return None
        host, _, port = configured.strip().rpartition(":")
        return f"{host or self.bind_host}:{int(port)}"


class PartnerSettings(SettingsGroup):
    """What partners are told, which identity signs and every edge checks, and the CLI hands
    off: one group, so that no two processes keep copies of it that could disagree."""

    # Partner credentials and tokens (identity).
    api_key_prefix: str = "grq_live_"
    # Empty (the default): derived from edge_public_url, as token_url and api_docs_url are, so
    # every process (identity signing, the edge verifying, the CLI's hand-off) agrees on them.
    token_issuer: str = ""
    token_audience: str = "trellis-api"
    token_algorithm: Literal["RS256", "ES256"] = "RS256"
    token_url: str = ""
    api_docs_url: str = ""

    # External issuer mode (an Auth0 tenant, say).
    external_issuer: str = ""
    external_jwks_url: str = ""
    external_audience: str = ""
    external_client_id_claim: str = "azp"

    # Where the edge listens for partners (services/edge, docs/partners.md).
    edge_addr: str = f"127.0.0.1:{DEFAULT_PORTS['edge']}"
    # The base URL partners reach the edge at (servers in /openapi.json, links in /docs, the
    # discovery document). Empty: http:// and edge_addr (a wildcard host there becomes loopback).
    edge_public_url: str = ""

    @field_validator("edge_addr")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        return check.address(value, host_required=False)

    @field_validator("edge_public_url", "token_issuer", "token_url", "api_docs_url", "external_jwks_url")
    @classmethod
    def _partner_urls(cls, value: str) -> str:
        return check.http_url(value) if value else value

    @model_validator(mode="after")
    def _derive_public_urls(self) -> Self:
        """What partners are told follows the edge's public address unless set explicitly."""
        base = (self.edge_public_url or public_url_of(self.edge_addr)).rstrip("/")
        derived = {"edge_public_url": self.edge_public_url or base, "token_issuer": self.token_issuer or base,
                   "token_url": self.token_url or f"{base}/oauth/token", "api_docs_url": self.api_docs_url or f"{base}/docs"}
        for name, value in derived.items():
            if not getattr(self, name):
                # Into __dict__ and out of model_fields_set: `issuer_is_derived()` tells a derived
                # value from one that was given.
                self.__dict__[name] = value
                self.__pydantic_fields_set__.discard(name)
        return self

    def issuer_is_derived(self) -> bool:
        """Whether the token issuer comes from TRELLIS_EDGE_ADDR (neither it nor the public URL set):
        then identity and every edge agree on it only if all are given the same edge address."""
        return not {"token_issuer", "edge_public_url"} & self.model_fields_set


class SealingSettings(SettingsGroup):
    """The key-encryption keys identity and webhooks seal values with (the others never hold them)."""

    # Key-encryption key for envelope encryption: base64 of 32 bytes, keyed by version.
    kek: SecretStr = SecretStr(PLACEHOLDER)
    kek_version: int = Field(default=1, ge=1)
    # Older KEKs still able to decrypt, as "version:base64" entries.
    kek_previous: list[SecretStr] = Field(default_factory=list)

    SETTING_FORMS: ClassVar[dict[str, str]] = {
        "kek_previous": 'a JSON list of "version:base64 of 32 bytes" entries, like ["1:<base64>"]',
    }

    @field_validator("kek")
    @classmethod
    def _kek(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() not in ("", PLACEHOLDER):
            check.base64_key(value.get_secret_value(), size=32, exact=True)
        return value

    @field_validator("kek_previous")
    @classmethod
    def _previous_keks(cls, value: list[SecretStr]) -> list[SecretStr]:
        for entry in value:
            version, colon, key = entry.get_secret_value().partition(":")
            if not colon or not version.isdigit():
                raise check.form_error(cls.SETTING_FORMS["kek_previous"])
            check.base64_key(key, size=32, exact=True)
        return value

    def kek_keys(self) -> dict[int, bytes]:
        """Every key-encryption key by version; the current one is `kek_version`. Only the services
        that seal values (identity, webhooks) ask for it, so only they need TRELLIS_KEK: the
        others, the internet-facing edge first, never hold it."""
        # KitSettings' mode, which every process's settings have; alone, this group asks for a real key.
        if getattr(self, "mode", None) is not Mode.EMBEDDED and self.kek.get_secret_value() in ("", PLACEHOLDER):
            raise SettingError("TRELLIS_KEK", "base64 of 32 random bytes outside the embedded mode (identity and "
                               "webhooks seal values with it)")
        keys = {self.kek_version: _decode_kek(self.kek.get_secret_value())}
        for entry in self.kek_previous:
            version, _, value = entry.get_secret_value().partition(":")
            keys[int(version)] = _decode_kek(value)
        return keys


class LimitSettings(SettingsGroup):
    """The limits every organisation is held to: the registry enforces them, the console shows them."""

    max_live_integrations: int = Field(default=20, ge=1)


# --- the groups of the services not yet in the shape of docs/architecture.md ------------------
# Each moves to services/<service>/entrypoints/settings.py when its service is converted (as
# registry's did), and its name in SETTINGS_GROUPS with it.


class IdentitySettings(SettingsGroup):
    """Identity's own settings."""

    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)


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
        return _metrics_address(value) or value

    @field_validator("edge_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return check.networks(value)


class WebhooksSettings(SettingsGroup):
    """The webhooks service's own settings: deliveries, receivers, its consumers."""

    # The retry schedule is the spec's: attempt 2 one minute after attempt 1, then 5 min,
    # 30 min, 2 h, each counted from the attempt before.
    webhooks_retry_schedule_seconds: list[float] = Field(default_factory=lambda: [60.0, 300.0, 1800.0, 7200.0])
    webhooks_timeout_seconds: float = Field(default=30.0, gt=0)
    webhooks_user_agent: str = "GrowerIQ-Webhook/1.0"
    # PEM bundle of CAs trusted for receivers' certificates besides the system's store, which
    # it extends (services.webhooks.sender.tls_context); empty: the system's store alone.
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


class Settings(ConsoleSettings, WebhooksSettings, EdgeSettings, IdentitySettings, LimitSettings,
               SealingSettings, PartnerSettings, KitSettings):
    """The groups the kit still holds, fields in SETTINGS_GROUPS' order (pydantic lists the last
    base's first): the settings of the processes not yet in the new shape, and of the CLI.
    `all_settings()` is every group."""


# --- every group, for the checks at start, the docs' table and the tests ----------------------

# Every component's group, as "module:class", in the order the docs' table lists them. Named,
# not imported: the kit imports no service.
SETTINGS_GROUPS: tuple[str, ...] = (
    f"{__name__}:KitSettings",
    f"{__name__}:PartnerSettings",
    f"{__name__}:SealingSettings",
    f"{__name__}:LimitSettings",
    f"{__name__}:IdentitySettings",
    f"{__name__}:EdgeSettings",
    f"{__name__}:WebhooksSettings",
    "services.logs.entrypoints.settings:LogsSettings",
    f"{__name__}:ConsoleSettings",
)


def settings_groups() -> tuple[type[SettingsGroup], ...]:
    """The classes SETTINGS_GROUPS names."""
    groups = []
    for entry in SETTINGS_GROUPS:
        module, _, name = entry.partition(":")
        group = getattr(importlib.import_module(module), name)
        if not (isinstance(group, type) and issubclass(group, SettingsGroup)):
            raise TypeError(f"{entry} is not a settings group")
        groups.append(group)
    return tuple(groups)


@functools.cache
def all_settings() -> type[SettingsGroup]:
    """One class with every group's fields: everything a Trellis process can be told."""
    return compose("AllSettings", *settings_groups())


def load_settings(model: type[G], *, labels: Mapping[str, str] | None = None, **values: Any) -> G:
    """A process's settings: `model` (the kit's group plus the process's own), after every other
    group was read too, so a bad `TRELLIS_*` setting stops any process, not only the one that
    uses it. InvalidSettings holds one line per bad setting: `model`'s first, then the other
    groups' in SETTINGS_GROUPS' order."""
    problems: list[str] = []
    settings: G | None = None
    try:
        settings = check.load(model, labels=labels, **values)
    except check.InvalidSettings as exc:
        problems += exc.problems
    # Each group on its own: cheaper than building one class of them all at every start.
    for group in settings_groups():
        if not issubclass(model, group):
            try:
                check.load(group, labels=labels, **{k: v for k, v in values.items() if k in group.model_fields})
            except check.InvalidSettings as exc:
                problems += exc.problems
    if problems or settings is None:
        raise check.InvalidSettings(problems)
    return settings


def _decode_kek(value: str) -> bytes:
    """A KEK's bytes (its form was checked when the settings were read)."""
    if value in ("", PLACEHOLDER):
        # Embedded mode without a generated key: a fixed development key, never for production.
        return b"\x00" * 32
    return base64.b64decode(value, validate=True)


def _metrics_address(value: str | None) -> str | None:
    if value is None or not value.strip():
        return value
    check.address(value.strip(), host_required=False)
    return value


def _is_list(annotation: Any) -> bool:
    """list[...], or list[...] | None."""
    return get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation))


def public_url_of(address: str) -> str:
    """http://host:port of a listening address; a wildcard or empty host is reached on loopback."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
