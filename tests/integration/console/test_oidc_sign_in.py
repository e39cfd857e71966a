"""Production sign-in: the real OpenID Connect flow (authorization code, PKCE, state, nonce)
against a provider the test runs (tests/support/oidc_provider.py), with the console in the
production mode, and the attacks on it: a missing, replayed or other browser's state, an ID
token for another nonce, from another issuer, expired or forged, an access token from
another issuer, and an open redirect. Identity and registry trust the same provider."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from services.console.entrypoints.main import RunningConsole, bootstrap
from services.kit.auth import ADMIN_PERMISSION
from tests.support.settings import Settings
from tests.support.console import new_org
from tests.support.oidc_provider import OidcProvider
from tests.support.services import start_service

PUBLIC_URL = "https://console.test"
CLIENT_ID, CLIENT_SECRET = "trellis-console", "console-client-secret-for-tests"


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    provider = await OidcProvider().start()
    provider.add_client(CLIENT_ID, CLIENT_SECRET, f"{PUBLIC_URL}/signin/callback")
    yield provider
    await provider.stop()


@pytest.fixture
async def trusting_services(make_settings: Callable[..., Settings], provider: OidcProvider) -> AsyncIterator[dict[str, int]]:
    """Identity and registry verifying actor tokens with the provider's JWKS."""
    trust = {"actor_issuer": provider.issuer, "actor_jwks_url": f"{provider.issuer}/jwks", "actor_public_key_file": ""}
    identity = await start_service("identity", make_settings(**trust))
    registry = await start_service("registry", make_settings(identity_addr=f"127.0.0.1:{identity.port}", **trust))
    yield {"identity": identity.port, "registry": registry.port}
    await registry.stop(0)
    await identity.stop(0)


@pytest.fixture
async def console(make_settings: Callable[..., Settings], provider: OidcProvider,
                  trusting_services: dict[str, int]) -> AsyncIterator[Callable[..., Awaitable[RunningConsole]]]:
    running: list[RunningConsole] = []

    async def _start(**overrides: Any) -> RunningConsole:
        settings = make_settings(**{
            "mode": "production", "actor_issuer": provider.issuer, "actor_jwks_url": f"{provider.issuer}/jwks",
            "actor_public_key_file": "", "console_public_url": PUBLIC_URL, "console_oidc_client_id": CLIENT_ID,
            "console_oidc_client_secret": CLIENT_SECRET, "registry_addr": f"127.0.0.1:{trusting_services['registry']}",
            "identity_addr": f"127.0.0.1:{trusting_services['identity']}", **overrides})
        started = await (await bootstrap(settings, address="127.0.0.1:0")).start()
        running.append(started)
        return started

    yield _start
    for started in running:
        await started.stop()


@dataclass
class Browser:
    """A browser on the console behind TLS (as in production, behind the Ingress): it keeps the
    console's Secure cookies itself, since the test reaches the console over loopback HTTP."""

    console: str
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=20, trust_env=False)

    def _keep(self, answer: httpx2.Response) -> None:
        for header in answer.headers.get_list("set-cookie"):
            self.set_cookies.append(header)
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value.strip('"'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def get(self, path: str, **kw: Any) -> httpx2.Response:
        answer = await self.http.get(self.console + path, headers=self._cookie_header(), **kw)
        self._keep(answer)
        return answer

    async def post(self, path: str, data: dict[str, Any]) -> httpx2.Response:
        answer = await self.http.post(self.console + path, data=data, headers=self._cookie_header())
        self._keep(answer)
        return answer

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def start_sign_in(self, next_page: str = "/integrations") -> str:
        """The provider's authorization URL the console sends this browser to."""
        answer = await self.get("/signin/oidc", params={"next": next_page})
        assert answer.status_code == 302, answer.text[:1000]
        return answer.headers["location"]

    async def log_in_at_provider(self, authorize_url: str, username: str) -> str:
        """Sign in on the provider's page; the callback URL it sends the browser back to."""
        page = await self.http.get(authorize_url)
        assert page.status_code == 200, page.text
        action = html.unescape(page.text.split('action="')[1].split('"')[0])
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
        answer = await self.http.post(origin + action, data={"username": username})
        assert answer.status_code == 302, answer.text
        callback = answer.headers["location"]
        assert callback.startswith(f"{PUBLIC_URL}/signin/callback?"), callback
        return callback.removeprefix(PUBLIC_URL)

    async def sign_in(self, username: str, next_page: str = "/integrations") -> httpx2.Response:
        callback = await self.log_in_at_provider(await self.start_sign_in(next_page), username)
        return await self.get(callback)

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def browser(console: Callable[..., Awaitable[RunningConsole]]) -> AsyncIterator[Callable[[], Browser]]:
    started = await console()
    made: list[Browser] = []

    def _new() -> Browser:
        made.append(Browser(f"http://127.0.0.1:{started.port}"))
        return made[-1]

    yield _new
    for one in made:
        await one.close()


async def test_an_administrator_signs_in_with_the_identity_provider(provider: OidcProvider, browser) -> None:
    org = new_org()
    provider.add_user("alice", org, [ADMIN_PERMISSION])
    alice = browser()
    authorize = await alice.start_sign_in("/integrations/new")
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(f"{provider.issuer}/authorize?")
    assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert len(query["state"][0]) >= 20 and len(query["nonce"][0]) >= 20
    assert query["redirect_uri"] == [f"{PUBLIC_URL}/signin/callback"]
    assert "openid" in query["scope"][0].split()
    binding = next(c for c in alice.set_cookies if c.startswith("__Host-trellis_signin="))
    assert "HttpOnly" in binding and "Secure" in binding and "Path=/" in binding and "Domain" not in binding

    answer = await alice.get(await alice.log_in_at_provider(authorize, "alice"))
    assert answer.status_code == 303 and answer.headers["location"] == "/integrations/new"
    session = next(c for c in alice.set_cookies if c.startswith("__Host-trellis_session="))
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert attribute.lower() in session.lower(), attribute
    assert "domain" not in session.lower()
    value = alice.cookies["__Host-trellis_session"]
    assert value not in (provider.refresh_tokens.keys() | {""}) and "eyJ" not in value  # an opaque id, no token

    page = await alice.get("/integrations")  # the registry accepted the provider's access token
    assert page.status_code == 200 and "0 of 20 live" in page.text and "Alice" in page.text


async def test_the_local_sign_in_does_not_exist_outside_the_embedded_mode(provider: OidcProvider, browser) -> None:
    visitor = browser()
    page = await visitor.get("/signin")
    assert page.status_code == 200
    assert "Local development" not in page.text and "/signin/local" not in page.text
    assert (await visitor.get("/signin/local")).status_code == 404
    assert (await visitor.post("/signin/local", {"user": "alice", "org": new_org(), "role": "administrator"})).status_code == 404
    assert not any("trellis_session" in c for c in visitor.set_cookies)


async def test_a_callback_without_or_with_a_used_state_is_refused(provider: OidcProvider, browser) -> None:
    provider.add_user("alice", new_org(), [ADMIN_PERMISSION])
    alice = browser()
    callback = await alice.log_in_at_provider(await alice.start_sign_in(), "alice")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    missing = await alice.get("/signin/callback", params={"code": code})
    assert missing.status_code == 400 and "cannot be completed" in missing.text
    assert "__Host-trellis_session" not in alice.cookies

    alice2 = browser()
    callback = await alice2.log_in_at_provider(await alice2.start_sign_in(), "alice")
    binding = alice2.cookies["__Host-trellis_signin"]
    assert (await alice2.get(callback)).status_code == 303
    replay = browser()
    replay.cookies["__Host-trellis_signin"] = binding
    again = await replay.get(callback)
    assert again.status_code == 400 and "already used" in again.text
    assert "__Host-trellis_session" not in replay.cookies


async def test_a_sign_in_started_in_another_browser_cannot_be_finished_here(provider: OidcProvider, browser) -> None:
    provider.add_user("mallory", new_org(), [ADMIN_PERMISSION])
    provider.add_user("alice", new_org(), [ADMIN_PERMISSION])
    mallory, alice = browser(), browser()
    # Mallory starts a sign-in as herself and lures Alice's browser to its callback (login CSRF).
    callback = await mallory.log_in_at_provider(await mallory.start_sign_in(), "mallory")
    await alice.start_sign_in()  # Alice's browser has a sign-in binding of its own
    lured = await alice.get(callback)
    assert lured.status_code == 400 and "another browser" in lured.text
    assert "__Host-trellis_session" not in alice.cookies
    # ... and it is not spent for the browser that started it.
    assert (await mallory.get(callback)).status_code == 303


@pytest.mark.parametrize("tamper, value", [
    ("id_token_nonce", "a-nonce-from-another-sign-in"),
    ("id_token_issuer", "https://evil-issuer.example"),
    ("id_token_expired", True),
    ("foreign_key", True),
    ("access_token_issuer", "https://evil-issuer.example"),
])
async def test_tokens_that_do_not_prove_this_sign_in_are_refused(provider: OidcProvider, browser, tamper: str,
                                                                value: object) -> None:
    provider.add_user("alice", new_org(), [ADMIN_PERMISSION])
    setattr(provider.tamper, tamper, value)
    alice = browser()
    answer = await alice.sign_in("alice")
    assert answer.status_code == 400, (tamper, answer.status_code, answer.text[:500])
    assert "Sign-in refused" in answer.text and "refused" in html.unescape(answer.text)
    assert "__Host-trellis_session" not in alice.cookies
    assert (await alice.get("/integrations")).status_code == 303


async def test_an_expired_access_token_is_refreshed_and_a_refused_refresh_signs_in_again(
        provider: OidcProvider, browser) -> None:
    provider.access_token_ttl = 30  # under the renewal margin: the first page renews it
    provider.add_user("alice", new_org(), [ADMIN_PERMISSION])
    alice = browser()
    assert (await alice.sign_in("alice")).status_code == 303
    first_refresh = next(iter(provider.refresh_tokens))
    assert provider.token_requests == 1
    assert (await alice.get("/integrations")).status_code == 200
    assert provider.token_requests == 2 and provider.refresh_tokens[first_refresh].revoked

    for token in provider.refresh_tokens.values():
        token.revoked = True  # the provider no longer accepts this user's refresh tokens
    answer = await alice.get("/integrations/new")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=/integrations/new"
    assert (await alice.get("/integrations")).status_code == 303  # the session is over


async def test_sign_out_ends_the_session_and_signs_out_at_the_provider(provider: OidcProvider, browser) -> None:
    provider.add_user("alice", new_org(), [ADMIN_PERMISSION])
    alice = browser()
    await alice.sign_in("alice")
    page = await alice.get("/integrations")
    token = html.unescape(page.text.split('name="csrf" value="')[1].split('"')[0])
    session = alice.cookies["__Host-trellis_session"]
    answer = await alice.post("/signout", {"csrf": token})
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(f"{provider.issuer}/logout?")
    assert parse_qs(urlsplit(location).query)["post_logout_redirect_uri"] == [f"{PUBLIC_URL}/signin?signed_out=1"]
    thief = browser()
    thief.cookies["__Host-trellis_session"] = session
    assert (await thief.get("/integrations")).status_code == 303


async def test_the_return_address_never_leads_to_another_site(provider: OidcProvider, browser) -> None:
    provider.add_user("alice", new_org(), [ADMIN_PERMISSION])
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        alice = browser()
        answer = await alice.sign_in("alice", next_page=target)
        assert answer.status_code == 303 and answer.headers["location"] == "/integrations", target


async def test_production_settings_need_an_oidc_client_and_https(console) -> None:
    with pytest.raises(ValueError, match="TRELLIS_CONSOLE_OIDC_CLIENT_ID"):
        await console(console_oidc_client_id="")
    with pytest.raises(ValueError, match="https://"):
        await console(console_public_url="http://console.test")


async def test_the_csp_lets_forms_reach_only_this_site_and_the_provider(provider: OidcProvider, browser) -> None:
    csp = (await browser().get("/signin")).headers["content-security-policy"]
    assert f"form-action 'self' {provider.issuer};" in csp
