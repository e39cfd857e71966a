"""The OpenAPI document and the reference page come from the route table and the error codes;
the page is self-contained and escapes what the route table says."""

from __future__ import annotations

import base64

import pytest

from services.edge.application.builtins import BUILTINS
from services.edge.domain.errors import CODES
from services.edge.entrypoints.oauth import OAuthError, _basic_credentials, _form
from services.edge.entrypoints.openapi import build_spec, render_html
from services.edge.domain.routes import RouteTable


def spec() -> dict[str, object]:
    routes = RouteTable.from_dict({"route": [
        {"prefix": "/v1/reports", "upstream": "http://up", "scope": "reports", "methods": {"POST": "reports:execute"},
         "description": "<script>alert(1)</script> reports"},
        {"prefix": "/v1/whoami", "builtin": "whoami"},
    ]}, builtins=BUILTINS)
    return build_spec(routes, server_url="https://api.example.com", token_url="https://api.example.com/oauth/token")


def test_every_route_method_names_its_scope() -> None:
    paths = spec()["paths"]  # type: ignore[index]
    assert paths["/v1/reports"]["post"]["x-required-scope"] == "reports:execute"  # type: ignore[index]
    assert paths["/v1/reports/{path}"]["delete"]["x-required-scope"] == "reports:write"  # type: ignore[index]
    assert paths["/v1/whoami"]["get"]["x-required-scope"] is None  # type: ignore[index]
    assert "post" not in paths["/v1/whoami"]  # type: ignore[operator]


def test_the_page_escapes_and_loads_nothing_from_elsewhere() -> None:
    page = render_html(spec()).decode()  # type: ignore[arg-type]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; reports" in page and "<script" not in page
    assert "https://api.example.com" in page and "<link" not in page
    assert all(f"<code>{code}</code>" in page for code in CODES)


def test_basic_credentials_are_form_decoded() -> None:
    header = b"Basic " + base64.b64encode(b"client%3Aone:s%2Bcret+x")
    assert _basic_credentials(header) == ("client:one", "s+cret x")
    for bad in (b"Basic !!!", b"Basic " + base64.b64encode(b"no-colon"), b"Basic"):
        with pytest.raises(OAuthError) as caught:
            _basic_credentials(bad)
        assert (caught.value.error, caught.value.status) == ("invalid_client", 401)


def test_repeated_form_parameters_are_refused() -> None:
    assert _form(b"grant_type=client_credentials&scope=a+b") == {"grant_type": "client_credentials", "scope": "a b"}
    with pytest.raises(OAuthError, match="repeated"):
        _form(b"scope=a&scope=b")
