"""People using the console in a real headless Chromium (Debian's, driven by Playwright; no
browser is downloaded). A test reads like their steps:

    alice = await people.person("alice")
    await alice.sign_in(org)
    await alice.click("Create Integration")
    await alice.expect_text("Requested")

Each person has a browser context of their own (cookies, storage). A failing test leaves a
screenshot of every person's page in .pytest_cache/browser-failures/.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Dialog, Page, expect
from playwright.async_api import Error as PlaywrightError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
FAILURES = REPO / ".pytest_cache" / "browser-failures"
# Set TRELLIS_DOC_SCREENSHOTS=1 to (re)write the screenshots docs/console.md shows.
DOC_SCREENSHOTS = REPO / "docs" / "console"
TIMEOUT_MS = 10_000


@dataclass
class Person:
    """One person at their browser."""

    name: str
    context: BrowserContext
    page: Page
    base_url: str
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser: Browser, name: str, base_url: str, *, javascript: bool = True) -> "Person":
        context = await browser.new_context(base_url=base_url, java_script_enabled=javascript, accept_downloads=True,
                                            viewport={"width": 1280, "height": 900})
        if javascript:
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        person = cls(name, context, page, base_url)
        person._watch(page)
        return person

    def _watch(self, page: Page) -> None:
        async def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        # Errors the page reports (a CSP refusal, a script error); an answer's status (a 403 that is
        # a refusal shown on the page) is not one.
        page.on("console", lambda message: self.console_errors.append(message.text)
                if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    # --- steps ------------------------------------------------------------------------------

    async def go(self, path: str) -> None:
        await self.page.goto(path)

    async def sign_in(self, org: str, *, role: str = "administrator") -> None:
        """The embedded mode's local sign-in page, as this person."""
        await self.go("/signin")
        await expect(self.page.get_by_role("heading", name="Local development sign-in")).to_be_visible()
        await self.fill("User name", self.name)
        await self.fill("Organisation", org)
        await self.page.get_by_label("Role").select_option(value=role)
        await self.click("Sign in")
        await expect(self.page.get_by_test_id("signed-in-user")).to_have_text(self.name)

    async def click(self, text: str) -> None:
        """Click the button, link or disclosure with this text."""
        target = self.page.get_by_role("button", name=text, exact=True).or_(
            self.page.get_by_role("link", name=text, exact=True)).or_(
            self.page.locator("summary").filter(has_text=re.compile(f"^{re.escape(text)}$")))
        await target.first.click()  # the first in reading order (the main navigation before a breadcrumb)

    async def fill(self, label: str, value: str) -> None:
        await self.page.get_by_label(label, exact=True).fill(value)

    async def choose(self, label: str, option: str) -> None:
        await self.page.get_by_label(label, exact=True).select_option(label=option)

    async def tick(self, scope: str) -> None:
        await self.page.locator(f'input[type="checkbox"][value="{scope}"]').check()

    async def expect_text(self, text: str) -> None:
        await expect(self.page.locator("main")).to_contain_text(text)

    async def expect_no_text(self, text: str) -> None:
        await expect(self.page.locator("body")).not_to_contain_text(text)

    async def expect_refusal(self, text: str) -> None:
        await expect(self.page.get_by_test_id("refusal")).to_contain_text(text)

    async def expect_status(self, status: str) -> None:
        await expect(self.page.get_by_test_id("status").first).to_have_text(status)

    async def value_of(self, test_id: str) -> str:
        return await self.page.get_by_test_id(test_id).input_value()

    async def html(self) -> str:
        """The page's HTML once it has settled (an error page may still be replacing it)."""
        for _ in range(50):
            await self.page.wait_for_load_state()
            try:
                return await self.page.content()
            except PlaywrightError as exc:
                if "navigating" not in str(exc):
                    raise
        raise AssertionError("the page never stopped navigating")

    async def download(self, button: str) -> Any:
        return json.loads((await self.download_file(button)).read_text())

    async def download_file(self, button: str) -> Path:
        """The file the button or link downloads, once it is whole (the browser's own copy)."""
        async with self.page.expect_download() as info:
            await self.click(button)
        download = await info.value
        assert await download.failure() is None, await download.failure()
        return Path(await download.path())

    async def new_tab(self) -> Page:
        page = await self.context.new_page()
        self._watch(page)
        return page

    async def snapshot(self, name: str) -> None:
        """A screenshot for docs/console.md, when TRELLIS_DOC_SCREENSHOTS=1."""
        if os.environ.get("TRELLIS_DOC_SCREENSHOTS") == "1":
            DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            # caret="initial": hiding the caret would inject a style the CSP refuses (a console error).
            await self.page.screenshot(path=str(DOC_SCREENSHOTS / f"{name}.png"), full_page=True, caret="initial")

    async def screenshot_failure(self, test: str) -> Path:
        FAILURES.mkdir(parents=True, exist_ok=True)
        path = FAILURES / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', test)}-{self.name}.png"
        await self.page.screenshot(path=str(path), full_page=True, caret="initial")
        return path
