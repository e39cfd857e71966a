"""The console's webhook pages show and set a subscription's filter: a Filter field (with a
help link) on the form, the filter on the detail, a refused filter beside its field with what
was typed kept, and the Filtered tab of the delivery log listing the events it did not pass."""

from __future__ import annotations

import html
import re

from tests.integration.console.test_webhook_pages import create_webhook, webhook_form
from tests.support.console import new_org
from tests.support.console_services import publish_activity
from tests.support.waiting import eventually


async def test_a_filter_is_set_shown_and_its_filtered_events_listed(browser, webhooks_service, start_receiver, mint) -> None:
    receiver = await start_receiver()
    alice = browser()
    org = new_org()
    await alice.sign_in("alice", org)
    form = await alice.page("/webhooks/new")
    assert 'name="filter"' in form and "https://jmespath.org/tutorial.html" in form

    refused = await alice.submit("/webhooks/new", "/webhooks", webhook_form(receiver.url(), filter="data.facility_id =="))
    assert refused.status_code == 422, refused.text[:2000]
    assert 'id="filter-error"' in refused.text and 'value="data.facility_id =="' in refused.text

    subscription_id, _ = await create_webhook(alice, receiver.url(), filter="data.facility_id == 'fac_north'")
    detail = f"/webhooks/{subscription_id}"
    page = html.unescape(await alice.page(detail))
    assert "data.facility_id == 'fac_north'" in page and "JMESPath help" in page

    await publish_activity(webhooks_service.port, mint("alice", org), data_json='{"facility_id": "fac_south"}')
    await publish_activity(webhooks_service.port, mint("alice", org), data_json='{"facility_id": "fac_north"}')
    await receiver.wait_for(1)
    filtered = await alice.page(f"{detail}?log=filtered")
    assert len(re.findall(r'data-testid="filtered-row"', filtered)) == 1 and "did not pass" in filtered

    async def attempts_logged() -> int:
        # The receiver has it before the attempt is recorded (the dispatcher records after the answer).
        return len(re.findall(r'data-testid="attempt-row"', await alice.page(f"{detail}?log=all")))

    assert await eventually(attempts_logged, timeout=10, what="the delivered event's attempt in the log") == 1

    edit = await alice.page(f"{detail}/edit")
    assert "fac_north" in html.unescape(edit)
    saved = await alice.submit(f"{detail}/edit", f"{detail}/edit", webhook_form(receiver.url(), filter=""))
    assert saved.status_code == 303, saved.text[:2000]
    assert 'data-testid="filter">—' in await alice.page(detail)
