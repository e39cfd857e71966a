from pathlib import Path

import pytest

from services.cli.commands import integrations, operations
from services.cli.main import build_parser, settings_from


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_global_options_work_before_and_after_the_command() -> None:
    before = parse("--actor", "alice", "--org", "org_a", "--json", "integrations", "approve", "int_1")
    after = parse("integrations", "approve", "int_1", "--actor", "alice", "--org", "org_a", "--json")
    for args in (before, after):
        assert (args.actor, args.org, args.json, args.id) == ("alice", "org_a", True, "int_1")
        assert args.handler is integrations.approve


def test_actor_and_org_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_ACTOR", "carol")
    monkeypatch.setenv("TRELLIS_ORG", "org_env")
    args = parse("vendors")
    assert (args.actor, args.org, args.json) == ("carol", "org_env", False)


def test_actor_and_org_have_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRELLIS_ACTOR", raising=False)
    monkeypatch.delenv("TRELLIS_ORG", raising=False)
    args = parse("scopes")
    assert (args.actor, args.org) == ("admin", "org_default")


def test_scopes_may_repeat_or_be_comma_separated_and_keep_their_order() -> None:
    args = parse("integrations", "create", "--vendor", "sap", "--name", "N", "--description", "D", "--owner", "o",
                 "--scope", "inventory:read,orders:write", "--scope", "crm:read", "inventory:read",
                 "--allow", "10.0.0.0/8", "--allow", "2001:db8::/32,192.168.1.1/32")
    assert args.scopes == ["inventory:read", "orders:write", "crm:read"]
    assert args.allow == ["10.0.0.0/8", "2001:db8::/32", "192.168.1.1/32"]
    assert (args.rate_limit, args.daily_quota) == (None, 0)  # no --rate-limit: the service's default


def test_an_explicit_zero_rate_limit_is_sent_for_the_registry_to_refuse() -> None:
    args = parse("integrations", "create", "--vendor", "sap", "--name", "N", "--description", "D", "--owner", "o",
                 "--scope", "inventory:read", "--rate-limit", "0")
    assert args.rate_limit == 0


def test_create_requires_the_fields_the_spec_requires(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("integrations", "create", "--vendor", "sap", "--name", "N")
    assert exit_info.value.code == 2
    assert "--description" in capsys.readouterr().err


def test_suspend_requires_a_reason() -> None:
    with pytest.raises(SystemExit):
        parse("integrations", "suspend", "int_1")
    assert parse("integrations", "suspend", "int_1", "--reason", "audit").reason == "audit"


def test_update_leaves_unmentioned_fields_unset() -> None:
    args = parse("integrations", "update", "int_1", "--add-scope", "crm:read")
    assert args.add_scopes == ["crm:read"] and args.remove_scopes == []
    assert args.scopes is None and args.allow is None and not args.clear_allowlist
    assert args.rate_limit is None and args.daily_quota is None and args.owner is None


def test_update_refuses_an_allowlist_and_clearing_it_together() -> None:
    with pytest.raises(SystemExit):
        parse("integrations", "update", "int_1", "--allow", "10.0.0.0/8", "--clear-allowlist")


def test_negative_limits_are_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        parse("integrations", "update", "int_1", "--rate-limit", "-5")


def test_activate_and_reactivate_take_a_handoff_file() -> None:
    assert parse("integrations", "activate", "int_1", "--handoff", "h.json").handoff == "h.json"
    args = parse("integrations", "reactivate", "int_1")
    assert args.handoff is None and args.handler is integrations.reactivate


def test_up_migrate_and_keys_rotate_are_commands() -> None:
    up = parse("up", "--data-dir", "/tmp/x", "--replicas", "2", "--nats-port", "4333")
    assert (up.handler, up.data_dir, up.replicas, up.nats_port) == (operations.up, Path("/tmp/x"), 2, 4333)
    assert parse("migrate", "identity").services == ["identity"]
    assert parse("keys", "rotate").handler is operations.rotate_keys


def test_command_line_overrides_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_REGISTRY_ADDR", "10.1.1.1:1")
    monkeypatch.setenv("TRELLIS_IDENTITY_ADDR", "10.1.1.1:2")
    settings = settings_from(parse("--registry-addr", "127.0.0.1:9999", "--data-dir", "/srv/t", "vendors"))
    assert settings.registry_addr == "127.0.0.1:9999"
    assert settings.identity_addr == "10.1.1.1:2"
    assert settings.data_dir == Path("/srv/t")


def test_cli_settings_do_not_need_the_services_secrets_outside_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_MODE", "production")
    monkeypatch.delenv("TRELLIS_KEK", raising=False)
    settings = settings_from(parse("vendors"))
    assert settings.mode.value == "production"


def test_the_standard_webhooks_scheme_is_named_as_the_api_names_it_and_standard_is_an_alias() -> None:
    base = ("webhooks", "create", "--url", "https://r.example.com/h", "--type", "lot.created")
    assert parse(*base, "--scheme", "standard_webhooks").scheme == "standard_webhooks"
    assert parse(*base, "--scheme", "standard").scheme == "standard_webhooks"
    assert parse(*base).scheme == "spec"
    assert parse("webhooks", "update", "whk_1", "--scheme", "standard").scheme == "standard_webhooks"
    with pytest.raises(SystemExit):
        parse(*base, "--scheme", "hmac")
