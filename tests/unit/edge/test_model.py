"""The rules the edge applies to a caller: key and token of one integration, Active, inside the
allowlist, and a scope held by both the token and the integration."""

from __future__ import annotations

import ipaddress

import pytest

from services.edge.domain.errors import EdgeError
from services.edge.domain.model import (ApiKeyInfo, Caller, IntegrationSnapshot, TokenGrant, check_active, check_ip, check_pair,
                                 check_scope)

KEY = ApiKeyInfo("int_a", "org_a", frozenset({"cl_a", "auth0|a"}), "hash")


def token(**changes: object) -> TokenGrant:
    values: dict[str, object] = {"client_id": "cl_a", "integration_id": "int_a", "org_id": "org_a",
                                 "scopes": frozenset({"orders:read", "orders:write"}), "expires_at": 2e9, "issuer": "iss"}
    values.update(changes)
    return TokenGrant(**values)  # type: ignore[arg-type]


def integration(**changes: object) -> IntegrationSnapshot:
    values: dict[str, object] = {"id": "int_a", "org_id": "org_a", "status": "active",
                                 "scopes": frozenset({"orders:read"}), "rate_limit_per_minute": 60, "daily_quota": 0}
    values.update(changes)
    return IntegrationSnapshot(**values)  # type: ignore[arg-type]


def refusal(call: object) -> str:
    with pytest.raises(EdgeError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code


def test_key_and_token_must_be_of_the_same_integration() -> None:
    check_pair(KEY, token())
    assert refusal(lambda: check_pair(KEY, token(client_id="cl_b"))) == "credentials_mismatch"
    assert refusal(lambda: check_pair(KEY, token(integration_id="int_b"))) == "credentials_mismatch"
    assert refusal(lambda: check_pair(KEY, token(org_id="org_b"))) == "credentials_mismatch"
    check_pair(KEY, token(client_id="auth0|a", integration_id="", org_id="", external=True))
    assert refusal(lambda: check_pair(KEY, token(client_id="auth0|b", external=True))) == "credentials_mismatch"


def test_only_active_integrations_pass() -> None:
    check_active(integration())
    for status in ("requested", "approved", "suspended", "revoked"):
        assert refusal(lambda status=status: check_active(integration(status=status))) == "integration_inactive"


def test_allowlist() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("2001:db8::/32"))
    check_ip(integration(), "203.0.113.1")  # no allowlist: everyone
    check_ip(integration(allowlist=nets), "10.0.0.9")
    check_ip(integration(allowlist=nets), "2001:db8::5")
    check_ip(integration(allowlist=nets), "::ffff:10.0.0.9")
    for ip in ("10.0.1.1", "2001:db9::1", "", "garbage"):
        assert refusal(lambda ip=ip: check_ip(integration(allowlist=nets), ip)) == "ip_not_allowed"


def test_a_scope_must_be_in_the_token_and_still_granted() -> None:
    caller = Caller(KEY, token(), integration())
    assert caller.scopes == {"orders:read"}
    check_scope(caller, "orders:read")
    check_scope(caller, None)
    with pytest.raises(EdgeError) as removed:
        check_scope(caller, "orders:write")  # in the token, removed from the integration
    assert removed.value.code == "insufficient_scope" and "not been granted" in removed.value.message
    narrow = Caller(KEY, token(scopes=frozenset({"orders:read"})), integration(scopes=frozenset({"orders:read", "crm:read"})))
    with pytest.raises(EdgeError) as narrowed:
        check_scope(narrow, "crm:read")  # granted, but this token was issued without it
    assert "request a new token" in narrowed.value.message


def test_an_external_token_without_scopes_gets_the_integrations() -> None:
    caller = Caller(KEY, token(scopes=None, external=True), integration(scopes=frozenset({"orders:read", "crm:read"})))
    assert caller.scopes == {"orders:read", "crm:read"}
