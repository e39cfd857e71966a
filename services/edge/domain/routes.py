"""The route table: which path prefix goes to which upstream (or built-in handler), and which
scope it needs. Loaded from a TOML file (settings.edge_routes_file):

    [[route]]
    prefix = "/v1/reports"              # matches /v1/reports and /v1/reports/...; longest prefix wins
    upstream = "http://127.0.0.1:8090"  # base URL; the full request path is appended
    scope = "reports"                   # GET/HEAD need reports:read, other methods reports:write
    methods = { POST = "reports:execute" }   # per-method overrides; "*" = every other method
    description = "Generate and download reports"

    [[route]]
    prefix = "/v1/whoami"
    builtin = "whoami"                  # answered by the edge itself; `scope` optional

    [[route]]
    prefix = "/v1/webhooks"
    builtin = "webhooks"
    scope = "webhooks"                  # the category the request log records
    methods = { "*" = "webhooks:manage" }    # one scope for every method

A table with a mistake is refused at start, with the entry and the reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

READ_METHODS = frozenset({"GET", "HEAD"})
_CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SCOPE = re.compile(r"[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}")
_METHOD = re.compile(r"[A-Z]{1,16}|\*")
ANY_METHOD = "*"
_PREFIX = re.compile(r"/|(/[A-Za-z0-9._~-]+)+")
_KNOWN_KEYS = frozenset({"prefix", "upstream", "builtin", "scope", "methods", "description", "strip_prefix"})


class RouteTableError(ValueError):
    """The route table file is unreadable or has an invalid entry."""


@dataclass(frozen=True)
class Route:
    prefix: str
    category: str | None
    upstream: str | None = None
    builtin: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    description: str = ""
    strip_prefix: bool = False

    def required_scope(self, method: str) -> str | None:
        """The scope a request with `method` needs here; None for a built-in without a category."""
        override = self.overrides.get(method, self.overrides.get(ANY_METHOD))
        if override is not None:
            return override
        if self.category is None:
            return None
        return f"{self.category}:{'read' if method in READ_METHODS else 'write'}"

    def matches(self, path: str) -> bool:
        return self.prefix == "/" or path == self.prefix or path.startswith(self.prefix + "/")

    def subpath(self, path: str) -> str:
        """What follows the prefix in a matching path: "" or "/..."."""
        return path if self.prefix == "/" else path[len(self.prefix):]

    def upstream_path(self, raw_path: str) -> str:
        """The path sent upstream: the request's, less the prefix when `strip_prefix`."""
        if self.strip_prefix and self.prefix != "/":
            rest = raw_path[len(self.prefix):]
            return rest if rest.startswith("/") else "/" + rest
        return raw_path


class RouteTable:
    """Routes ordered longest prefix first."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    @classmethod
    def load(cls, path: str | Path, *, builtins: Iterable[str] = ()) -> "RouteTable":
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RouteTableError(f"cannot read the route table {path}: {exc}") from exc
        return cls.from_dict(data, builtins=builtins, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, object], *, builtins: Iterable[str] = (), source: str = "routes") -> "RouteTable":
        unknown = set(data) - {"route"}
        if unknown:
            raise RouteTableError(f"{source}: unknown top-level keys {sorted(unknown)}; routes are [[route]] tables")
        entries = data.get("route", [])
        if not isinstance(entries, list):
            raise RouteTableError(f"{source}: `route` must be an array of tables ([[route]])")
        routes = [_route(entry, set(builtins), f"{source} route {i + 1}") for i, entry in enumerate(entries)]
        seen: set[str] = set()
        for route in routes:
            if route.prefix in seen:
                raise RouteTableError(f"{source}: prefix {route.prefix} appears twice")
            seen.add(route.prefix)
        return cls(routes)


def _route(entry: object, builtins: set[str], where: str) -> Route:
    if not isinstance(entry, dict):
        raise RouteTableError(f"{where}: must be a table")
    unknown = set(entry) - _KNOWN_KEYS
    if unknown:
        raise RouteTableError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_KNOWN_KEYS)})")
    prefix = entry.get("prefix")
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or any(s in (".", "..") for s in prefix.split("/")):
        raise RouteTableError(f"{where}: prefix must be a path like /v1/inventory (no trailing slash), got {prefix!r}")
    upstream, builtin = entry.get("upstream"), entry.get("builtin")
    if (upstream is None) == (builtin is None):
        raise RouteTableError(f"{where} ({prefix}): give exactly one of `upstream` and `builtin`")
    if upstream is not None:
        parts = urlsplit(upstream) if isinstance(upstream, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise RouteTableError(f"{where} ({prefix}): upstream must be an http(s) base URL, got {upstream!r}")
        upstream = upstream.rstrip("/")
    if builtin is not None and builtin not in builtins:
        raise RouteTableError(f"{where} ({prefix}): unknown builtin {builtin!r} (known: {sorted(builtins)})")
    category = entry.get("scope")
    if category is None and upstream is not None:
        raise RouteTableError(f"{where} ({prefix}): an upstream route needs a scope category")
    if category is not None and (not isinstance(category, str) or not _CATEGORY.fullmatch(category)):
        raise RouteTableError(f"{where} ({prefix}): scope must be a category like \"inventory\", got {category!r}")
    methods = entry.get("methods", {})
    if not isinstance(methods, dict) or not all(
        isinstance(m, str) and _METHOD.fullmatch(m) and isinstance(s, str) and _SCOPE.fullmatch(s) for m, s in methods.items()
    ):
        raise RouteTableError(f"{where} ({prefix}): methods must map methods (or \"*\" for every other method) to "
                              "scopes, like { POST = \"reports:execute\" }")
    description = entry.get("description", "")
    strip = entry.get("strip_prefix", False)
    if not isinstance(description, str) or not isinstance(strip, bool):
        raise RouteTableError(f"{where} ({prefix}): description must be a string and strip_prefix a boolean")
    return Route(prefix=prefix, category=category, upstream=upstream, builtin=builtin, overrides=dict(methods),
                 description=description, strip_prefix=strip)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unsafe_path(path: str, raw_path: bytes) -> str | None:
    """Why a path must not be routed (dot segments, encoded slashes, control characters), or None.

    The edge decides the route and the scope from the path; an upstream that normalised
    `/v1/orders/../admin` differently must not be reachable through a route it does not serve.
    """
    if not path.startswith("/"):
        return "the path must start with /"
    if "/." in path and any(segment in (".", "..") for segment in path.split("/")):
        return "the path must not contain . or .. segments"
    if b"\\" in raw_path or (b"%" in raw_path and (b"%2f" in raw_path.lower() or b"%5c" in raw_path.lower())):
        return "the path must not contain encoded slashes or backslashes"
    if _CONTROL.search(path):
        return "the path must not contain control characters"
    return None
