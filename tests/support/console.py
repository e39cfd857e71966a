"""The console under test, driven over HTTP the way a browser without JavaScript drives it: a
cookie jar, forms read from the page (their CSRF token and one-time ids), posts of those forms.

`ConsoleUser` is one person's browser; `sign_in()` uses the embedded mode's local sign-in.
"""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx2
from markupsafe import escape

_INPUT = re.compile(r'<input[^>]*\bname="(?P<name>[^"]+)"[^>]*\bvalue="(?P<value>[^"]*)"', re.S)
_FORM = re.compile(r'<form[^>]*\baction="(?P<action>[^"]+)"[^>]*>(?P<body>.*?)</form>', re.S)


def new_org() -> str:
    return f"org_{uuid.uuid4().hex[:12]}"


def hidden_fields(page: str, action: str) -> dict[str, str]:
    """The hidden inputs of the form posting to `action` on `page`."""
    for form in _FORM.finditer(page):
        if html.unescape(form.group("action")) == action:
            return {m.group("name"): html.unescape(m.group("value")) for m in _INPUT.finditer(form.group("body"))
                    if 'type="hidden"' in m.group(0)}
    raise AssertionError(f"no form posting to {action} on the page:\n{page[:3000]}")


@dataclass
class ConsoleUser:
    """One browser's view of the console (its own cookies)."""

    base_url: str
    client: httpx2.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx2.AsyncClient(base_url=self.base_url, follow_redirects=False, timeout=20, trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, path: str, **kw: Any) -> httpx2.Response:
        return await self.client.get(path, **kw)

    async def page(self, path: str) -> str:
        answer = await self.client.get(path)
        assert answer.status_code == 200, (answer.status_code, answer.text[:2000])
        return answer.text

    async def sign_in(self, user: str, org: str, role: str = "administrator") -> httpx2.Response:
        form = await self.client.get("/signin")
        assert form.status_code == 200, form.text[:500]
        fields = hidden_fields(form.text, "/signin/local")
        answer = await self.client.post("/signin/local", data={**fields, "user": user, "org": org, "role": role})
        assert answer.status_code == 303, (answer.status_code, answer.text[:2000])
        return answer

    async def submit(self, page_path: str, action: str, data: dict[str, Any] | None = None, *,
                     page: str | None = None, headers: dict[str, str] | None = None) -> httpx2.Response:
        """Post the form `action` found on `page_path` (or on `page`), with its hidden fields and `data`."""
        text = page if page is not None else await self.page(page_path)
        fields: dict[str, Any] = {**hidden_fields(text, action), **(data or {})}
        return await self.client.post(action, data=fields, headers=headers)


def integration_form(**overrides: Any) -> dict[str, Any]:
    """A valid create form; `overrides` replace fields."""
    return {"vendor_id": "sap", "name": "SAP Procurement Sync", "description": "Purchase orders into SAP",
            "owner": "alice", "scopes": ["inventory:read", "orders:read"], "rate_limit_per_minute": "60",
            "daily_quota": "", "ip_allowlist": "", **overrides}


async def create_integration(user: ConsoleUser, **overrides: Any) -> str:
    """Create an integration through the console's form; its id."""
    answer = await user.submit("/integrations/new", "/integrations", integration_form(**overrides))
    assert answer.status_code == 303, (answer.status_code, answer.text[:3000])
    location = answer.headers["location"]
    assert location.endswith("?done=created"), location
    return location.split("/integrations/")[1].split("?")[0]


def assert_review_matches(page: str, report: dict[str, Any]) -> None:
    """Every integration of `trellis review --json`'s report shown on the review page with the
    same figures (in use and last call, scopes granted and used, credential age, headroom,
    allowlist, owner, flags, and the audit trail's owner changes and credential issues)."""
    for line in report["integrations"]:
        card = re.search(rf'data-integration="{line["integration_id"]}">(.*?)</section>', page, re.S)
        assert card, line["integration_id"]
        shown = {k: re.sub(r"\s+", " ", v).strip() for k, v in
                 re.findall(r'data-field="([a-z_]+)"[^>]*>(.*?)</(?:span|dd|time)>', card.group(1), re.S)}
        assert shown["name"] == str(escape(line["name"] or line["integration_id"]))
        assert shown["status"] == line["status"].capitalize()
        assert shown["owner"] == (str(escape(line["owner"])) or "—")
        assert shown["requests"] == str(line["requests"])
        assert shown["granted_scopes"] == (", ".join(line["granted_scopes"]) or "none")
        assert shown["exercised_scopes"] == (", ".join(line["exercised_scopes"]) or "none")
        assert shown["unused_scopes"] == (", ".join(line["unused_scopes"]) or "none")
        assert shown["allowlist_set"] == ("set" if line["allowlist_set"] else "not set")
        assert shown["error_rate"] == f"{line['error_rate'] * 100:.1f}%"
        age = line["credential_age_days"]
        assert shown["credential_age_days"] == ("no credentials issued" if age < 0 else f"{age:,} day" + "s" * (age != 1))
        assert f'busiest minute {line["peak_requests_per_minute"]} of {line["rate_limit_per_minute"]}' in shown["headroom"]
        for flag in line["flags"]:
            assert f"<code>{flag}</code>" in card.group(1), (flag, line["flags"], re.findall(r"<code>(\w+)</code>", card.group(1)))
        changes = line.get("owner_changes", [])
        assert shown["owner_changes"].count(" → ") == len(changes) and (changes or shown["owner_changes"] == "none")
        for c in changes:
            assert (f'owner {escape(c.get("before", ""))} → {escape(c.get("after", ""))} by '
                    f'{escape(c.get("actor_id", ""))} on {c["occurred_at"][:19]}') in shown["owner_changes"]
        issued = line.get("credentials_issued", [])
        assert shown["credentials_issued"].count("issued to ") == len(issued)
        for c in issued:
            assert f'issued to {escape(c.get("actor_id", ""))} on {c["occurred_at"][:19]}' in shown["credentials_issued"]
        if line.get("last_request_at"):
            assert f'datetime="{line["last_request_at"][:19]}' in card.group(1)
        else:
            assert shown["last_request_at"] == "never called"

