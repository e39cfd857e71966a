"""Settings in one group per component: a process's class is the kit's group plus its own,
still read from the same TRELLIS_* variables; every process checks every group at start; a
field or a check two groups would both declare is refused when they are composed."""

from __future__ import annotations

import pytest
from pydantic import Field, field_validator, model_validator

from services.cli.settings import CliSettings
from services.kit.settingcheck import InvalidSettings
from services.kit.settings import (
    SETTINGS_GROUPS,
    KitSettings,
    PartnerSettings,
    SettingsGroup,
    all_settings,
    compose,
    load_settings,
    settings_groups,
)


class ExampleSettings(SettingsGroup):
    """A service's own group, as a service declares it."""

    example_batch: int = Field(default=10, ge=1)
    example_names: list[str] = Field(default_factory=list)

    SETTING_FORMS = {"example_names": "a JSON list of example names"}


ExampleProcess = compose("ExampleProcess", KitSettings, ExampleSettings)


def test_a_process_sees_the_kit_group_and_its_own_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_EXAMPLE_BATCH", "7")
    monkeypatch.setenv("TRELLIS_REGISTRY_ADDR", "10.0.0.1:6000")
    monkeypatch.setenv("TRELLIS_WEBHOOKS_TIMEOUT_SECONDS", "3")
    settings = ExampleProcess()
    assert (settings.example_batch, settings.registry_addr, settings.listen_port("registry")) == (7, "10.0.0.1:6000", 6000)
    assert not hasattr(settings, "webhooks_timeout_seconds")
    assert not hasattr(settings, "token_issuer")
    assert isinstance(settings, KitSettings) and isinstance(settings, ExampleSettings)


def test_composed_fields_keep_the_order_of_the_groups_given() -> None:
    fields = list(compose("Both", KitSettings, ExampleSettings).model_fields)
    assert fields[: len(KitSettings.model_fields)] == list(KitSettings.model_fields)
    assert fields[len(KitSettings.model_fields):] == ["example_batch", "example_names"]


def test_each_groups_forms_are_kept_when_composed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_EXAMPLE_NAMES", "a,b")
    monkeypatch.setenv("TRELLIS_EDGE_TRUSTED_PROXIES", "10.0.0.0/8")
    with pytest.raises(InvalidSettings) as info:
        load_settings(ExampleProcess)
    # The process's own groups first, then the others in SETTINGS_GROUPS' order.
    assert info.value.problems == [
        "TRELLIS_EXAMPLE_NAMES is 'a,b'; expected a JSON list of example names",
        "TRELLIS_EDGE_TRUSTED_PROXIES is '10.0.0.0/8'; expected a JSON list of networks, like [\"10.0.0.0/8\", \"fd00::/8\"]",
    ]


def test_a_process_refuses_a_bad_setting_of_another_group_and_gets_only_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_TOKEN_TTL_SECONDS", "0")  # identity's, not the example's
    with pytest.raises(InvalidSettings) as info:
        load_settings(ExampleProcess)
    assert info.value.problems == ["TRELLIS_TOKEN_TTL_SECONDS is '0'; expected a whole number from 60 to 86400"]
    monkeypatch.delenv("TRELLIS_TOKEN_TTL_SECONDS")
    settings = load_settings(ExampleProcess, registry_addr="10.0.0.2:1")
    assert type(settings) is ExampleProcess and settings.registry_addr == "10.0.0.2:1"


def test_the_lines_of_several_bad_settings_follow_the_order_of_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_EXAMPLE_BATCH", "0")
    monkeypatch.setenv("TRELLIS_LOGS_RETENTION_DAYS", "0")
    monkeypatch.setenv("TRELLIS_MODE", "prod")
    with pytest.raises(InvalidSettings) as info:
        load_settings(ExampleProcess)
    assert [line.split(" ", 1)[0] for line in info.value.problems] == [
        "TRELLIS_MODE", "TRELLIS_EXAMPLE_BATCH", "TRELLIS_LOGS_RETENTION_DAYS"]


def test_every_group_is_named_once_and_every_setting_belongs_to_one_group() -> None:
    groups = settings_groups()
    assert len(groups) == len(SETTINGS_GROUPS) == len(set(groups))
    declared = [name for g in groups for name in g.model_fields]
    assert len(declared) == len(set(declared))
    assert list(all_settings().model_fields) == declared
    assert list(CliSettings.model_fields) == declared  # the CLI reads every group, in their order


def test_two_groups_declaring_one_setting_cannot_be_composed() -> None:
    class Clash(SettingsGroup):
        token_issuer: str = "mine"

    with pytest.raises(TypeError, match="both have a setting named token_issuer"):
        compose("Clashing", PartnerSettings, Clash)


def test_two_groups_naming_a_check_alike_cannot_be_composed() -> None:
    class First(SettingsGroup):
        first: str = ""

        @field_validator("first")
        @classmethod
        def _check(cls, value: str) -> str:
            return value

    class Second(SettingsGroup):
        second: str = ""

        @field_validator("second")
        @classmethod
        def _check(cls, value: str) -> str:
            raise ValueError("never composed")

    with pytest.raises(TypeError, match="both have a check named _check"):
        compose("Checked", First, Second)


def test_a_subclass_may_replace_its_groups_check() -> None:
    class Lenient(KitSettings):
        @model_validator(mode="after")
        def _refuse_placeholders_outside_embedded(self) -> "Lenient":
            return self

    with pytest.raises(ValueError, match="production settings refused"):
        KitSettings(mode="production")
    assert load_settings(Lenient, mode="production").mode.value == "production"
