from __future__ import annotations

from tests.support.console import new_org


async def test_smoke(browser) -> None:
    alice = browser()
    await alice.sign_in("alice", new_org())
    page = await alice.page("/integrations")
    assert "0 of 20 live" in page
    form = await alice.page("/integrations/new")
    assert "QuickBooks Online" in form
