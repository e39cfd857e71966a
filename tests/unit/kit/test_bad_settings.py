"""A setting in the wrong form is one line: the variable, what was given, the form expected; a
secret's value never. The settings' derived public URLs follow the edge's address."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from services.kit.settingcheck import InvalidSettings, SettingError, load
from tests.support.settings import Settings

# (variable, value given, a part of the form the line must name): every kind of setting.
BAD = [
    # lists (JSON), of networks and of numbers
    ("TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS", "127.0.0.1/32", 'a JSON list of networks, like ["10.0.0.0/8"'),
    ("TRELLIS_EDGE_TRUSTED_PROXIES", '["10.0.0.1/8"]', '"10.0.0.1/8" has host bits set (the network is 10.0.0.0/8)'),
    ("TRELLIS_EDGE_TRUSTED_PROXIES", '["10.0.0.0/33"]', '"10.0.0.0/33" is not a network'),
    ("TRELLIS_EDGE_TRUSTED_PROXIES", '{"a": 1}', "a JSON list of networks"),
    ("TRELLIS_WEBHOOKS_RETRY_SCHEDULE_SECONDS", "60,300", "a JSON list of seconds, none negative"),
    ("TRELLIS_WEBHOOKS_RETRY_SCHEDULE_SECONDS", "[60, -5]", "a JSON list of seconds, none negative"),
    ("TRELLIS_WEBHOOKS_RETRY_SCHEDULE_SECONDS", '[60, "soon"]', "a JSON list of seconds, none negative"),
    # whole numbers with bounds
    ("TRELLIS_NATS_STREAM_REPLICAS", "9", "a whole number from 1 to 5"),
    ("TRELLIS_TOKEN_TTL_SECONDS", "an hour", "a whole number from 60 to 86400"),
    ("TRELLIS_MAX_LIVE_INTEGRATIONS", "0", "a whole number of at least 1"),
    ("TRELLIS_KEK_VERSION", "1.5", "a whole number of at least 1"),
    # numbers
    ("TRELLIS_EDGE_UPSTREAM_TIMEOUT_SECONDS", "0", "a number above 0"),
    ("TRELLIS_WEBHOOKS_TIMEOUT_SECONDS", "30s", "a number above 0"),
    ("TRELLIS_GRPC_GRACE_SECONDS", "-1", "a number of at least 0"),
    # literals and enums
    ("TRELLIS_TOKEN_ALGORITHM", "HS256", "one of RS256, ES256"),
    ("TRELLIS_LOG_FORMAT", "xml", "one of empty, json, text"),
    ("TRELLIS_MODE", "prod", "one of embedded, production"),
    # booleans
    ("TRELLIS_EDGE_RATE_LIMIT_FAIL_OPEN", "maybe", "true or false"),
    ("TRELLIS_DATABASE_ECHO", "2", "true or false"),
    # addresses host:port
    ("TRELLIS_IDENTITY_ADDR", "identity", "host:port, like 127.0.0.1:50051"),
    ("TRELLIS_REGISTRY_ADDR", ":50052", "host:port, like 127.0.0.1:50051"),
    ("TRELLIS_LOGS_ADDR", "::1:50054", "an IPv6 host in brackets"),
    ("TRELLIS_EDGE_ADDR", "0.0.0.0:80800", "host:port, like 0.0.0.0:8080"),
    ("TRELLIS_EDGE_METRICS_ADDR", "metrics", "host:port"),
    ("TRELLIS_WEBHOOKS_METRICS_ADDR", "0.0.0.0:x", "host:port"),
    # URLs
    ("TRELLIS_EDGE_PUBLIC_URL", "api.example.com", "an http:// or https:// URL"),
    ("TRELLIS_TOKEN_ISSUER", "https://", "an http:// or https:// URL"),
    ("TRELLIS_TOKEN_URL", "ftp://api.example.com/oauth/token", "an http:// or https:// URL"),
    ("TRELLIS_API_DOCS_URL", "https://api.example.com:port/docs", "an http:// or https:// URL"),
    ("TRELLIS_ACTOR_JWKS_URL", "/jwks.json", "an http:// or https:// URL"),
    ("TRELLIS_EXTERNAL_JWKS_URL", "tenant.auth0.com/.well-known/jwks.json", "an http:// or https:// URL"),
    ("TRELLIS_NATS_URL", "127.0.0.1:4222", "nats://host:port, or several separated by commas"),
    ("TRELLIS_NATS_URL", "nats://a:4222,b:4222", "nats://host:port, or several separated by commas"),
    ("TRELLIS_IDENTITY_DATABASE_URL", "identity.db", "a SQLAlchemy URL like postgresql+asyncpg://"),
    # names and header text
    ("TRELLIS_BIND_HOST", "::", "an IPv6 address in brackets"),
    ("TRELLIS_BIND_HOST", "0.0.0.0:50051", "a host name or IP address"),
    ("TRELLIS_WEBHOOKS_CONSUMER_NAME", "webhooks.prod", "a JetStream consumer name"),
    ("TRELLIS_WEBHOOKS_USER_AGENT", "Trellis-Webhook/1.0 (été)", "no line breaks (it is sent as an HTTP header)"),
    # a share
    ("TRELLIS_OTEL_SAMPLE_RATIO", "1.5", "a number from 0 to 1"),
    ("TRELLIS_OTEL_SAMPLE_RATIO", "10%", "a number from 0 to 1"),
]

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
# (variable, a value in the wrong form that is a secret, the form the line must name)
SECRETS = [
    ("TRELLIS_KEK", KEY[:-4], "base64 of 32 random bytes"),
    ("TRELLIS_KEK", base64.b64encode(secrets.token_bytes(31)).decode(), "base64 of 32 random bytes"),
    ("TRELLIS_KEK_PREVIOUS", f'["{KEY}"]', '"version:base64 of 32 bytes"'),
    ("TRELLIS_KEK_PREVIOUS", f'["1:{KEY[:20]}"]', "base64 of 32 random bytes"),
    ("TRELLIS_AUDIT_HMAC_KEY", KEY[:20], "base64 of at least 32 random bytes"),
]


def problems_with(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> list[str]:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings) as info:
        load(Settings)
    return info.value.problems


@pytest.mark.parametrize(("variable", "value", "form"), BAD, ids=[f"{v}={g}" for v, g, _ in BAD])
def test_a_bad_setting_is_one_line_naming_it_what_was_given_and_the_form(monkeypatch: pytest.MonkeyPatch,
                                                                        variable: str, value: str, form: str) -> None:
    (line,) = problems_with(monkeypatch, variable, value)
    assert line.startswith(f"{variable} is '{value}'; expected "), line
    assert form in line, line
    assert "\n" not in line


@pytest.mark.parametrize(("variable", "value", "form"), SECRETS, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(SECRETS)])
def test_a_bad_secret_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, form: str) -> None:
    (line,) = problems_with(monkeypatch, variable, value)
    assert line.startswith(f"{variable} is not valid (its value is a secret, not shown); expected "), line
    assert form in line
    assert KEY[:16] not in line and value not in line


def test_a_database_urls_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = problems_with(monkeypatch, "TRELLIS_LOGS_DATABASE_URL", "postgresql+asyncpg://trellis:hunter2@db/logs x")
    assert "hunter2" not in line and "trellis:***@db/logs" in line


def test_every_bad_setting_in_the_environment_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value, _ in (BAD[0], BAD[7], BAD[16]):
        monkeypatch.setenv(variable, value)
    lines = problems_with(monkeypatch, "TRELLIS_KEK", "short")
    assert sorted(line.split(" ", 1)[0] for line in lines) == sorted(
        ["TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS", "TRELLIS_NATS_STREAM_REPLICAS", "TRELLIS_MODE", "TRELLIS_KEK"])


def test_every_setting_that_can_be_wrong_says_its_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep over every field, those added later included: text that fits no form is either
    accepted (free text, paths) or one line naming the variable and a form more precise than `text`."""
    refused = 0
    for name in Settings.model_fields:
        variable = f"TRELLIS_{name.upper()}"
        with monkeypatch.context() as env:
            env.setenv(variable, "not one of the forms!")
            try:
                load(Settings)
            except InvalidSettings as exc:
                (line,) = exc.problems
                assert line.startswith(f"{variable} is "), line
                assert "; expected " in line and not line.endswith("expected text"), line
                refused += 1
    assert refused > 30


def test_list_settings_read_json_and_empty_text_is_the_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_WEBHOOKS_ALLOWED_PRIVATE_NETWORKS", '["127.0.0.0/8", "::1"]')
    monkeypatch.setenv("TRELLIS_EDGE_TRUSTED_PROXIES", "")
    settings = load(Settings)
    assert settings.webhooks_allowed_private_networks == ["127.0.0.0/8", "::1"]
    assert settings.edge_trusted_proxies == []


def test_the_cli_options_that_override_a_setting_are_named_as_given() -> None:
    with pytest.raises(InvalidSettings) as info:
        load(Settings, labels={"registry_addr": "--registry-addr"}, registry_addr="registry")
    assert info.value.problems == ["--registry-addr is 'registry'; expected host:port, like 127.0.0.1:50051"]


def test_a_setting_found_unusable_later_is_one_line_too() -> None:
    settings = Settings(mode="production", actor_jwks_url="https://idp.example/jwks.json")
    with pytest.raises(SettingError) as info:
        settings.database_url("registry")
    assert str(info.value).startswith("TRELLIS_REGISTRY_DATABASE_URL is not set; expected ")


# --- what partners are told follows the edge's address ----------------------------------------

def test_public_urls_follow_the_edges_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_EDGE_ADDR", "127.0.0.1:9181")
    settings = load(Settings)
    assert (settings.edge_public_url, settings.token_issuer, settings.token_url, settings.api_docs_url) == (
        "http://127.0.0.1:9181", "http://127.0.0.1:9181", "http://127.0.0.1:9181/oauth/token", "http://127.0.0.1:9181/docs")


@pytest.mark.parametrize(("address", "url"), [("0.0.0.0:8443", "http://127.0.0.1:8443"), (":8080", "http://127.0.0.1:8080"),
                                              ("[::]:8080", "http://[::1]:8080"), ("[fd00::5]:81", "http://[fd00::5]:81"),
                                              ("edge.internal:8080", "http://edge.internal:8080")])
def test_a_wildcard_listening_host_is_reached_on_loopback(address: str, url: str) -> None:
    assert Settings(edge_addr=address).edge_public_url == url


def test_a_public_url_set_explicitly_is_what_the_others_derive_from() -> None:
    settings = Settings(edge_addr="0.0.0.0:8080", edge_public_url="https://api.example.com/")
    assert (settings.token_issuer, settings.token_url, settings.api_docs_url) == (
        "https://api.example.com", "https://api.example.com/oauth/token", "https://api.example.com/docs")


def test_each_url_set_explicitly_is_kept() -> None:
    settings = Settings(edge_addr="127.0.0.1:9000", token_issuer="https://issuer.example", token_url="https://t.example/token",
                        api_docs_url="https://docs.example")
    assert (settings.edge_public_url, settings.token_issuer, settings.token_url, settings.api_docs_url) == (
        "http://127.0.0.1:9000", "https://issuer.example", "https://t.example/token", "https://docs.example")


def test_previous_keks_are_secrets_in_the_repr(tmp_path: Path) -> None:
    assert KEY not in repr(Settings(kek_previous=[f"1:{KEY}"]))


def test_an_issuer_is_derived_until_it_or_the_public_url_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(edge_addr="0.0.0.0:8443").issuer_is_derived()
    assert Settings(token_issuer="").issuer_is_derived()  # empty is not set
    assert not Settings(edge_public_url="https://api.example.com").issuer_is_derived()
    monkeypatch.setenv("TRELLIS_TOKEN_ISSUER", "https://id.example.com")
    assert not load(Settings).issuer_is_derived()
