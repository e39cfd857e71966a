"""The `WWW-Authenticate` challenge of each 401 code follows RFC 6750 section 3.1: error="invalid_token"
only when the access token itself is at fault, so that a client fetching a new token is right to."""

from __future__ import annotations

import pytest

from services.edge.domain.errors import CODES, EdgeError, unauthorized
from services.edge.domain.model import IntegrationSnapshot, check_active


def challenge(code: str, message: str = "why") -> str:
    [(name, value)] = unauthorized(code, message).headers
    assert name == b"www-authenticate"
    return value.decode()


@pytest.mark.parametrize("code", ["invalid_token", "token_expired"])
def test_a_token_at_fault_is_invalid_token_with_the_reason(code: str) -> None:
    assert challenge(code, "the token expired") == (
        'Bearer realm="trellis", error="invalid_token", error_description="the token expired"')


@pytest.mark.parametrize("code", ["integration_inactive", "credentials_mismatch", "invalid_api_key", "missing_credentials"])
def test_a_new_token_would_not_help_so_no_token_error_is_named(code: str) -> None:
    assert challenge(code) == 'Bearer realm="trellis"'
    assert CODES[code].status == 401


def test_a_suspended_integration_s_refusal_does_not_call_its_token_invalid() -> None:
    with pytest.raises(EdgeError) as refused:
        check_active(IntegrationSnapshot("int_1", "org_1", "suspended", frozenset(), 60, 0))
    assert refused.value.code == "integration_inactive" and "suspended" in refused.value.message
    assert refused.value.headers == ((b"www-authenticate", b'Bearer realm="trellis"'),)
