"""Typed settings, read from `TRELLIS_*` environment variables, in one group per component.

`KitSettings` is what every process reads; `PartnerSettings`, `SealingSettings`,
`LimitSettings`, `WebhookTimeoutSettings` and `TokenLifetimeSettings` are shared by the few
that need them; a service's own group is in its `entrypoints/settings.py` (the kit imports no
service; SETTINGS_GROUPS names them). A process's settings class is the kit's group plus
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
# TRELLIS_OTEL_SAMPLE_RATIO's default, chosen from bench.edge's traced rows (docs/operators.md "Traces").
DEFAULT_SAMPLE_RATIO = 0.1
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
    # The share of new traces recorded and exported (services.kit.telemetry.sampler): a
    # request arriving with a sampled `traceparent` is always traced, an unsampled one never.
    otel_sample_ratio: float = Field(default=DEFAULT_SAMPLE_RATIO, ge=0.0, le=1.0)
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
        return checked_metrics_address(value)

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
    """The key-encryption keys identity, registry and webhooks seal values with (the others never hold them)."""

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
        that seal values (identity, registry, webhooks) ask for it, so only they need TRELLIS_KEK: the
        others, the internet-facing edge first, never hold it."""
        # KitSettings' mode, which every process's settings have; alone, this group asks for a real key.
        if getattr(self, "mode", None) is not Mode.EMBEDDED and self.kek.get_secret_value() in ("", PLACEHOLDER):
            raise SettingError("TRELLIS_KEK", "base64 of 32 random bytes outside the embedded mode (identity, "
                               "registry and webhooks seal values with it)")
        keys = {self.kek_version: _decode_kek(self.kek.get_secret_value())}
        for entry in self.kek_previous:
            version, _, value = entry.get_secret_value().partition(":")
            keys[int(version)] = _decode_kek(value)
        return keys


class LimitSettings(SettingsGroup):
    """The limits every organisation is held to: the registry enforces them, the console shows them."""

    max_live_integrations: int = Field(default=20, ge=1)


class WebhookTimeoutSettings(SettingsGroup):
    """The deadline of one webhook POST: webhooks holds its deliveries to it, the edge and the console wait a little longer for a test send."""

    webhooks_timeout_seconds: float = Field(default=30.0, gt=0)


class TokenLifetimeSettings(SettingsGroup):
    """How long the partner tokens identity issues live: identity signs with it and every edge
    refuses a token of ours that claims a longer lifetime."""

    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)


# --- every group, for the checks at start, the docs' table and the tests ----------------------

# Every component's group, as "module:class", in the order the docs' table lists them. Named,
# not imported: the kit imports no service.
SETTINGS_GROUPS: tuple[str, ...] = (
    f"{__name__}:KitSettings",
    f"{__name__}:PartnerSettings",
    f"{__name__}:SealingSettings",
    f"{__name__}:LimitSettings",
    f"{__name__}:WebhookTimeoutSettings",
    f"{__name__}:TokenLifetimeSettings",
    "services.edge.entrypoints.settings:EdgeSettings",
    "services.webhooks.entrypoints.settings:WebhooksSettings",
    "services.logs.entrypoints.settings:LogsSettings",
    "services.console.entrypoints.settings:ConsoleSettings",
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


def checked_metrics_address(value: str | None) -> str | None:
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
