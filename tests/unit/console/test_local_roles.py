"""The embedded mode's local sign-in roles: the administrator is the CLI's actor (a platform
operator too), and the two roles the setup queue needs to be tried from both sides on one
laptop are labelled for what they are."""

from __future__ import annotations

from services.cli.embedded import CLI_PERMISSIONS
from services.console.signin.local import ROLES
from services.kit.auth import ADMIN_PERMISSION, PLATFORM_PERMISSION, QA_PERMISSION


def test_the_administrator_is_the_clis_actor_and_a_platform_operator() -> None:
    label, permissions = ROLES["administrator"]
    assert set(permissions) == set(CLI_PERMISSIONS) and PLATFORM_PERMISSION in permissions
    assert "platform operations" in label


def test_an_organisation_administrator_is_not_a_platform_operator_and_an_operator_administers_nothing() -> None:
    label, permissions = ROLES["org_administrator"]
    assert set(permissions) == {ADMIN_PERMISSION, QA_PERMISSION} and "not a platform operator" in label
    label, permissions = ROLES["platform_operator"]
    assert permissions == (PLATFORM_PERMISSION,) and label.startswith("Platform operator only")
    assert [role for role, (_, p) in ROLES.items() if PLATFORM_PERMISSION in p] == ["administrator", "platform_operator"]
