"""The console's transport rules: return addresses stay on the site, the CSP, cookies."""

from __future__ import annotations

import pytest

from services.console.web import Cookies, content_security_policy, safe_return


@pytest.mark.parametrize("target", ["/integrations/int_1", "/integrations?status=active&page=x", "/"])
def test_a_path_on_this_site_is_kept(target: str) -> None:
    assert safe_return(target) == target


@pytest.mark.parametrize("target", ["", None, "https://evil.example/", "//evil.example", "/\\evil.example",
                                    "javascript:alert(1)", "evil.example", "/\nLocation: x", "/%0a" + "x" * 3000,
                                    "\\\\evil", "/ok\\..\\evil"])
def test_anything_else_goes_to_the_default(target: str | None) -> None:
    assert safe_return(target) == "/integrations"


def test_the_csp_allows_nothing_inline_and_no_framing() -> None:
    csp = content_security_policy(("https://idp.example",))
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self' https://idp.example" and directives["base-uri"] == "'none'"


def test_cookies_are_host_prefixed_and_secure_unless_served_over_plain_http_on_a_laptop() -> None:
    secure, local = Cookies(secure=True), Cookies(secure=False)
    assert secure.session == "__Host-trellis_session" and secure.attributes(60)["secure"] is True
    assert local.session == "trellis_session" and local.attributes(None)["secure"] is False
    for cookies in (secure, local):
        attributes = cookies.attributes(60)
        assert attributes["httponly"] is True and attributes["samesite"] == "lax" and attributes["path"] == "/"
