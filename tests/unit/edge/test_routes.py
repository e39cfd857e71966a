"""The route table: loading and refusing tables, longest-prefix matching, required scopes, and
paths that must never be routed."""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import unquote

import pytest

from services.edge.application.builtins import BUILTINS
from services.edge.domain.routes import Route, RouteTable, RouteTableError, unsafe_path

REPO = Path(__file__).resolve().parents[3]

TABLE = {"route": [
    {"prefix": "/v1", "upstream": "http://up:1/", "scope": "inventory"},
    {"prefix": "/v1/reports", "upstream": "http://up:2/base", "scope": "reports", "methods": {"POST": "reports:execute"}},
    {"prefix": "/v1/compliance", "upstream": "https://up:3", "scope": "compliance", "methods": {"POST": "compliance:submit"}},
    {"prefix": "/v1/whoami", "builtin": "whoami"},
]}


def table() -> RouteTable:
    return RouteTable.from_dict(TABLE, builtins=BUILTINS)


def test_longest_prefix_wins_on_whole_segments() -> None:
    routes = table()
    assert routes.match("/v1/reports/42").prefix == "/v1/reports"  # type: ignore[union-attr]
    assert routes.match("/v1/reports").prefix == "/v1/reports"  # type: ignore[union-attr]
    assert routes.match("/v1/reportsx").prefix == "/v1"  # type: ignore[union-attr]
    assert routes.match("/v2/anything") is None
    assert routes.match("/v1x") is None


def test_read_write_and_per_method_scopes() -> None:
    routes = table()
    reports, compliance, whoami = (routes.match(p) for p in ("/v1/reports", "/v1/compliance", "/v1/whoami"))
    assert [reports.required_scope(m) for m in ("GET", "HEAD", "POST", "PUT", "DELETE")] == [  # type: ignore[union-attr]
        "reports:read", "reports:read", "reports:execute", "reports:write", "reports:write"]
    assert compliance.required_scope("POST") == "compliance:submit"  # type: ignore[union-attr]
    assert whoami.required_scope("GET") is None  # type: ignore[union-attr]
    assert routes.match("/v1/reports").upstream == "http://up:2/base"  # type: ignore[union-attr]


def test_strip_prefix_rewrites_the_upstream_path() -> None:
    route = Route(prefix="/partner/erp", category="orders", upstream="http://erp", strip_prefix=True)
    assert route.upstream_path("/partner/erp/orders/1") == "/orders/1"
    assert route.upstream_path("/partner/erp") == "/"
    assert Route(prefix="/v1", category="orders", upstream="http://x").upstream_path("/v1/a") == "/v1/a"


@pytest.mark.parametrize(("entry", "complaint"), [
    ({"prefix": "v1", "upstream": "http://x", "scope": "orders"}, "prefix"),
    ({"prefix": "/v1/", "upstream": "http://x", "scope": "orders"}, "prefix"),
    ({"prefix": "/v1/../admin", "upstream": "http://x", "scope": "orders"}, "prefix"),
    ({"prefix": "/v1", "scope": "orders"}, "exactly one"),
    ({"prefix": "/v1", "upstream": "http://x", "builtin": "whoami", "scope": "orders"}, "exactly one"),
    ({"prefix": "/v1", "upstream": "ftp://x", "scope": "orders"}, "http(s)"),
    ({"prefix": "/v1", "upstream": "http://x"}, "needs a scope"),
    ({"prefix": "/v1", "upstream": "http://x", "scope": "Orders:read"}, "category"),
    ({"prefix": "/v1", "upstream": "http://x", "scope": "orders", "methods": {"POST": "execute"}}, "methods"),
    ({"prefix": "/v1", "builtin": "shell"}, "unknown builtin"),
    ({"prefix": "/v1", "upstream": "http://x", "scope": "orders", "timeout": 3}, "unknown keys"),
])
def test_a_table_with_a_mistake_is_refused_with_the_reason(entry: dict[str, object], complaint: str) -> None:
    with pytest.raises(RouteTableError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        RouteTable.from_dict({"route": [entry]}, builtins=BUILTINS)


def test_duplicate_prefixes_and_unknown_sections_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RouteTableError, match="twice"):
        RouteTable.from_dict({"route": [TABLE["route"][0], TABLE["route"][0]]}, builtins=BUILTINS)
    with pytest.raises(RouteTableError, match="top-level"):
        RouteTable.from_dict({"routes": []}, builtins=BUILTINS)
    bad = tmp_path / "routes.toml"
    bad.write_text("[[route]\n")
    with pytest.raises(RouteTableError, match="cannot read"):
        RouteTable.load(bad, builtins=BUILTINS)


def test_the_embedded_route_table_loads() -> None:
    routes = RouteTable.load(REPO / "examples" / "routes.toml", builtins=BUILTINS)
    assert {r.prefix for r in routes.routes} == {"/v1/inventory", "/v1/orders", "/v1/reports", "/v1/compliance", "/v1/whoami",
                                                "/v1/webhooks", "/v1/activities"}
    assert {routes.match("/v1/webhooks/x").required_scope(m) for m in ("GET", "POST", "PATCH", "DELETE")} == {  # type: ignore[union-attr]
        "webhooks:manage"}
    assert routes.match("/v1/reports/monthly").required_scope("POST") == "reports:execute"  # type: ignore[union-attr]


@pytest.mark.parametrize(("path", "raw"), [
    ("/v1/orders/../admin", b"/v1/orders/../admin"),
    ("/v1/orders/../admin", b"/v1/orders/%2e%2e/admin"),
    ("/v1/./orders", b"/v1/./orders"),
    ("/v1/orders/a/b", b"/v1/orders/a%2Fb"),
    ("/v1/orders\\a", b"/v1/orders\\a"),
    ("/v1/orders/\x00", b"/v1/orders/%00"),
])
def test_paths_that_upstreams_could_read_differently_are_refused(path: str, raw: bytes) -> None:
    assert unsafe_path(path, raw) is not None


def test_ordinary_paths_pass() -> None:
    assert unsafe_path("/v1/orders/ord 1", b"/v1/orders/ord%201") is None
    assert unsafe_path("/v1/lots/lot.v2", b"/v1/lots/lot.v2") is None


def _unsafe_path_before(path: str, raw_path: bytes) -> str | None:
    """unsafe_path as it was before its fast paths (c68a1c8): the reference it must agree with."""
    if not path.startswith("/"):
        return "the path must start with /"
    if any(segment in (".", "..") for segment in path.split("/")):
        return "the path must not contain . or .. segments"
    lowered = raw_path.lower()
    if b"%2f" in lowered or b"%5c" in lowered or b"\\" in raw_path:
        return "the path must not contain encoded slashes or backslashes"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "the path must not contain control characters"
    return None


_PIECES = ["/", "/", "/", ".", "..", "...", "a", "b.", ".c", "%2f", "%2F", "%5c", "%5C", "%2", "%5", "%", "%25",
           "%2e", "%2E", "\\", "%00", "%1f", "%1F", "%7f", "%7F", "%0a", "%0D", "%20", "%09", "%c3%a9", "%80", "?", ";",
           "\t", "\x7f", "\x00", "\x1f", "é", "\u2028"]


def test_unsafe_path_agrees_with_its_former_self_on_every_generated_path() -> None:
    rng = random.Random(20261122)
    for _ in range(50_000):
        raw = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 8)))
        path = unquote(raw) if "%" in raw else raw  # as uvicorn makes scope["path"] from the raw path
        raw_bytes = raw.encode()
        assert unsafe_path(path, raw_bytes) == _unsafe_path_before(path, raw_bytes), (raw, path)
