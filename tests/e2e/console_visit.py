"""The console `trellis up` runs, visited as a browser without JavaScript would: a cookie jar,
the local sign-in form (its CSRF token read from the page), then pages. Synchronous, like the
rest of the end-to-end tests; tests/support/console.py is the asynchronous twin the console's
own tests use."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx2

from tests.support.console import hidden_fields

# What `trellis up` prints about the console (services.cli.launcher.Launcher.console_summary).
CONSOLE_LINE = re.compile(r"^Administrators use the console at (http://\S+?) ", re.M)
SIGN_IN_LINE = re.compile(r"^Sign in at (http://\S+/signin) \(local development sign-in\)", re.M)


def console_url(output: str) -> str:
    """The console's URL as `trellis up` printed it."""
    match = CONSOLE_LINE.search(output)
    assert match, f"`trellis up` did not say where the console is:\n{output}"
    return match.group(1)


@dataclass
class Visitor:
    """One person's browser on the console."""

    base_url: str
    client: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx2.Client(base_url=self.base_url, follow_redirects=False, timeout=20, trust_env=False)

    def __enter__(self) -> "Visitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def page(self, path: str) -> str:
        answer = self.client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:2000])
        return answer.text

    def submit(self, page_path: str, action: str, data: dict[str, object] | None = None) -> httpx2.Response:
        """Post the form `action` of the page at `page_path`, with its hidden fields and `data`."""
        fields = {**hidden_fields(self.page(page_path), action), **(data or {})}
        return self.client.post(action, data=fields)

    def sign_out(self) -> None:
        answer = self.submit("/integrations", "/signout")
        assert answer.status_code == 303, (answer.status_code, answer.text[:2000])

    def sign_in(self, user: str, org: str = "org_default") -> str:
        """The local development sign-in as `user`; the page it leads to."""
        form = self.page("/signin")
        assert "Local development sign-in" in form, form[:2000]
        answer = self.client.post("/signin/local", data={**hidden_fields(form, "/signin/local"), "user": user,
                                                         "org": org, "role": "administrator"})
        assert answer.status_code == 303, (answer.status_code, answer.text[:2000])
        return self.page(answer.headers["location"])
