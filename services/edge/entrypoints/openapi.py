"""The partner API described as OpenAPI 3.1 (GET /openapi.json), built from the route table,
the built-ins' operations (services.edge.entrypoints.partner_webhooks.OPERATIONS) and the error codes, and
the same description rendered as a self-contained HTML reference (GET /docs): no CDN, no
script, everything escaped."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from services.edge.domain.errors import CODES
from services.edge.domain.routes import Route, RouteTable
from services.edge.entrypoints.partner_webhooks import OPERATIONS, QUERY, SCHEMAS, Operation

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
OAUTH_ERRORS = ("invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope",
                "server_error", "temporarily_unavailable", "ip_not_allowed")
RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests allowed per minute for this integration.",
    "X-RateLimit-Remaining": "Requests left in the current window.",
    "X-RateLimit-Reset": "Unix timestamp (seconds) when the current window resets.",
}
PARTNER_ERRORS = ("400", "401", "403", "404", "405", "408", "409", "413", "429", "431", "502", "503", "504")


def _header(description: str, type_: str = "integer") -> dict[str, Any]:
    return {"description": description, "schema": {"type": type_}}


def _error_response(status: str) -> dict[str, Any]:
    codes = [c for c, info in CODES.items() if str(info.status) == status or (status == "504" and c == "upstream_unavailable")]
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if status not in ("400", "401", "408", "431"):
        headers.update({name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS})
    if status == "429":
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return {"description": "Refused: " + ", ".join(codes), "headers": headers,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(route: Route, method: str) -> dict[str, Any]:
    scope = route.required_scope(method)
    responses: dict[str, Any] = {"200": {
        "description": "Answered by the service behind this route" if route.upstream else "Answered by the edge",
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
                    **{name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS}},
    }}
    responses.update({status: {"$ref": f"#/components/responses/{status}"} for status in PARTNER_ERRORS})
    return {
        "summary": f"{method} {route.prefix}" + (f" (needs {scope})" if scope else ""),
        "description": (route.description + "\n\n" if route.description else "") +
                       (f"Requires the `{scope}` scope in both the token and the integration." if scope else "No scope required."),
        "security": [{"bearerAuth": [], "apiKeyAuth": []}],
        "x-required-scope": scope,
        "x-route-description": route.description,
        "responses": responses,
    }


def _builtin_operation(route: Route, op: Operation) -> dict[str, Any]:
    """A built-in's documented operation: its parameters, body and answer."""
    operation = _operation(route, op.method)
    operation["summary"] = op.summary + (f" (needs {operation['x-required-scope']})" if operation["x-required-scope"] else "")
    operation["x-operation"] = op.summary
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"\{(\w+)\}", op.path)]
    parameters += [{"name": name, "in": "query", "required": False, "schema": QUERY[name][0],
                    "description": QUERY[name][1]} for name in op.query]
    if parameters:
        operation["parameters"] = parameters
    if op.body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(op.body)}}}
    success = operation["responses"].pop("200")
    success["description"] = "Answered by the edge from the webhooks service" + (
        "; `Cache-Control: no-store` (it shows a secret)" if op.secret else "")
    success["content"] = {"application/json": {"schema": _schema(op.response)}}
    operation["responses"] = {str(op.status): success, **operation["responses"]}
    return operation


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _route_paths(route: Route) -> dict[str, Any]:
    if route.builtin in OPERATIONS:
        paths: dict[str, Any] = {}
        for op in OPERATIONS[route.builtin]:
            paths.setdefault(route.prefix + op.path, {})[op.method.lower()] = _builtin_operation(route, op)
        return paths
    methods = ("GET", "HEAD") if route.builtin else ("GET", "HEAD", *WRITE_METHODS)
    item = {m.lower(): _operation(route, m) for m in methods}
    paths = {route.prefix: item}
    if route.prefix != "/":
        sub = {m: {**op, "parameters": [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                                          "description": "Any further path under this prefix"}]} for m, op in item.items()}
        paths[route.prefix + "/{path}"] = sub
    return paths


def build_spec(routes: RouteTable, *, server_url: str, token_url: str, version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document for the token endpoint and every route in `routes`."""
    paths: dict[str, Any] = {"/oauth/token": _token_path(token_url)}
    for route in sorted(routes.routes, key=lambda r: r.prefix):
        paths.update(_route_paths(route))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Trellis partner API", "version": version, "description": (
            "Every call needs two credentials: `Authorization: Bearer <access token>` (from the token "
            "endpoint, valid 1 hour) and `X-API-Key: <API key>` (identifies the integration). Every answer "
            "carries `X-Request-ID`; answers after the rate limit also carry the `X-RateLimit-*` headers.")},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": f"Access token from {token_url} (client credentials grant)."},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                               "description": "The integration's API key (grq_live_...)."},
                "clientBasic": {"type": "http", "scheme": "basic",
                                "description": "client_id:client_secret, for the token endpoint only."},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message", "request_id"], "properties": {
                    "error": {"type": "string", "enum": list(CODES), "description": "Stable error code."},
                    "message": {"type": "string", "description": "Why, and what to do."},
                    "request_id": {"type": "string", "description": "Same as the X-Request-ID header."}}},
                "OAuthError": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string", "enum": list(OAUTH_ERRORS)}, "error_description": {"type": "string"}}},
                "Token": {"type": "object", "required": ["access_token", "token_type", "expires_in"], "properties": {
                    "access_token": {"type": "string"}, "token_type": {"type": "string", "const": "Bearer"},
                    "expires_in": {"type": "integer", "example": 3600}, "scope": {"type": "string"}}},
                **SCHEMAS,
            },
            "headers": {
                **{name: _header(text) for name, text in RATE_HEADERS.items()},
                "Retry-After": _header("Seconds to wait before retrying."),
                "X-Request-ID": _header("This request's id (yours when you sent a sane one); quote it to support.", "string"),
            },
            "responses": {status: _error_response(status) for status in PARTNER_ERRORS},
        },
        "x-error-codes": {code: {"status": info.status, "meaning": info.meaning, "action": info.action}
                          for code, info in CODES.items()},
    }


def _token_path(token_url: str) -> dict[str, Any]:
    form = {"type": "object", "required": ["grant_type"], "properties": {
        "grant_type": {"type": "string", "const": "client_credentials"},
        "scope": {"type": "string", "description": "Optional, space separated: a subset of the granted scopes."},
        "client_id": {"type": "string", "description": "client_secret_post only."},
        "client_secret": {"type": "string", "description": "client_secret_post only."}}}
    oauth_error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}}
    return {"post": {
        "summary": "Get an access token (OAuth 2.0 client credentials)",
        "description": f"RFC 6749 section 4.4 at {token_url}. Authenticate the client with HTTP Basic "
                       "(client_secret_basic) or with client_id and client_secret in the body (client_secret_post).",
        "security": [{"clientBasic": []}, {}],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
        "responses": {
            "200": {"description": "The token (Cache-Control: no-store)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Token"}}}},
            "400": {"description": "invalid_request, unsupported_grant_type or invalid_scope", **oauth_error},
            "401": {"description": "invalid_client", **oauth_error},
            "403": {"description": "ip_not_allowed: the caller's address is outside the integration's IP allowlist",
                    **oauth_error},
            "503": {"description": "temporarily_unavailable", **oauth_error},
        },
    }}


def spec_json(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec, indent=1).encode()


_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#1d2327}
h1,h2{border-bottom:1px solid #ddd;padding-bottom:.2em}code{background:#f3f4f6;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f7f7f7}.m{font-family:monospace;font-weight:bold}"""


def _text(value: str) -> str:
    """Escaped text with `backticks` shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(value))


def render_html(spec: dict[str, Any]) -> bytes:
    """The reference page for `spec`: authentication, token endpoint, routes, errors, limits."""
    e = html.escape
    info, comps = spec["info"], spec["components"]
    server = spec["servers"][0]["url"]
    rows = []
    for path, item in spec["paths"].items():
        if path == "/oauth/token" or path.endswith("/{path}"):
            continue
        by_scope: dict[str, list[str]] = {}
        for method, op in item.items():
            by_scope.setdefault(op.get("x-required-scope") or "", []).append(method.upper())
        scopes = "<br>".join(f"{e(', '.join(methods))}: " + (f"<code>{e(scope)}</code>" if scope else "no scope")
                             for scope, methods in by_scope.items())
        what = _text(next(iter(item.values())).get("x-route-description", ""))
        if any("x-operation" in op for op in item.values()):  # a built-in's own operations, each described
            what = "<br>".join(f"{e(method.upper())}: {_text(op['x-operation'])}" for method, op in item.items())
        below = " and below" if f"{path}/{{path}}" in spec["paths"] else ""
        rows.append(f"<tr><td><code>{e(path)}</code>{below}</td><td>{scopes}</td><td>{what}</td></tr>")
    errors = "".join(
        f"<tr><td><code>{e(code)}</code></td><td>{detail['status']}{' / 504' if code == 'upstream_unavailable' else ''}</td>"
        f"<td>{_text(detail['meaning'])}</td><td>{_text(detail['action'])}</td></tr>"
        for code, detail in spec["x-error-codes"].items())
    limits = "".join(f"<tr><td><code>{e(n)}</code></td><td>{e(h['description'])}</td></tr>"
                     for n, h in comps["headers"].items())
    token = spec["paths"]["/oauth/token"]["post"]
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(info['title'])}</title>
<style>{_STYLE}</style></head><body>
<h1>{e(info['title'])}</h1><p>Base URL: <code>{e(server)}</code>. Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>
<p>{_text(info['description'])}</p>
<h2>1. Get an access token</h2><p>{e(token['description'])}</p>
<p><code>POST /oauth/token</code> with <code>grant_type=client_credentials</code> (form-encoded). The answer:
<code>{{"access_token": "...", "token_type": "Bearer", "expires_in": 3600, "scope": "..."}}</code>.</p>
<h2>2. Call the API with both credentials</h2>
<p><code>Authorization: Bearer &lt;access_token&gt;</code> and <code>X-API-Key: &lt;API key&gt;</code> on every request.
GET and HEAD need <code>&lt;category&gt;:read</code>, other methods <code>&lt;category&gt;:write</code>, unless the route says otherwise.</p>
<table><tr><th>Path</th><th>Scope needed, by method</th><th>What</th></tr>{''.join(rows)}</table>
<h2>3. Headers on every answer</h2><table><tr><th>Header</th><th>Meaning</th></tr>{limits}</table>
<h2>4. Errors</h2><p>Refusals are JSON: <code>{{"error": "&lt;code&gt;", "message": "...", "request_id": "..."}}</code>.</p>
<table><tr><th>Code</th><th>Status</th><th>Meaning</th><th>What to do</th></tr>{errors}</table>
</body></html>"""
    return page.encode()
