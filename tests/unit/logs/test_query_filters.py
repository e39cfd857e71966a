"""The request log's filters refuse what could never match a request, and write what could in
the form it is stored in: no "no requests match" for a typo."""

from __future__ import annotations

import pytest

from services.edge.domain.errors import CODES
from services.edge.entrypoints.openapi import OAUTH_ERRORS
from services.kit.errors import InvalidArgument
from services.logs.domain.model import ERROR_CODES, RequestFilter


def test_every_code_the_edge_can_record_is_a_code_the_filter_accepts() -> None:
    missing = (set(CODES) | set(OAUTH_ERRORS)) - ERROR_CODES
    assert not missing, f"add these to services/logs/domain/model.py ERROR_CODES: {sorted(missing)}"


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"ip": "999.1.1.1"}, "ip", "'999.1.1.1' is not an IP address"),
    ({"ip": "10.0.0.0/8"}, "ip", "is not an IP address"),
    ({"ip": "example.com"}, "ip", "is not an IP address"),
    ({"error_code": "nope"}, "error_code", "error code 'nope' is not one a request can carry; codes are: client_closed_request, conflict"),
    ({"integration_id": "sap"}, "integration_id", "'sap' is not an integration id"),
    ({"integration_id": "int_é"}, "integration_id", "is not an integration id"),
    ({"integration_id": "whk_01j9"}, "integration_id", "is not an integration id"),
    ({"endpoint": "/lots\x00"}, "endpoint", "endpoint must not contain a NUL character"),
])
def test_a_filter_that_could_never_match_is_refused_naming_it(fields: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        RequestFilter(**fields)  # type: ignore[arg-type]
    assert message in caught.value.message
    assert caught.value.fields["field"] == field


def test_filters_are_written_as_the_log_stores_them() -> None:
    f = RequestFilter(integration_id=" INT_01J9ABC ", ip=" 2001:DB8:0::7 ", error_code="Rate_Limit_Exceeded")
    assert (f.integration_id, f.ip, f.error_code) == ("int_01j9abc", "2001:db8::7", "rate_limit_exceeded")
    assert RequestFilter() == RequestFilter(integration_id="", ip="", error_code="")
