"""`trellis activities types --schema`, and `trellis webhooks create/update --filter`, against
the real webhooks service delivering to a real HTTPS receiver."""

from __future__ import annotations

import json

from tests.integration.webhooks.receiver import Receiver
from tests.integration.webhooks.test_cli import trellis  # noqa: F401 - the fixture

__all__ = ["trellis"]


async def test_activity_types_show_the_schema_of_each_types_data(trellis) -> None:  # noqa: F811
    code, out, _ = await trellis("activities", "types", "--schema", "--json")
    assert code == 0
    types = {t["id"]: t for t in json.loads(out)["types"]}
    assert len(types) == 27 and types["webhook.subscription_failing"]["schema"]["properties"]["subscription_id"] and types["lot.created"]["schema"]["properties"]["facility_id"]["type"] == "string"
    code, out, _ = await trellis("activities", "types", "--schema")
    assert code == 0 and '"lot_ids"' in out and "recall.initiated" in out
    code, out, err = await trellis("activities", "publish", "--type", "lot.created", "--data", '{"quantity": "lots"}')
    assert code == 1 and "data.quantity" in err, (out, err)


async def test_a_filter_is_set_shown_and_applied_from_the_cli(trellis, receiver: Receiver) -> None:  # noqa: F811
    code, out, err = await trellis("webhooks", "create", "--url", receiver.url(), "--type", "lot.created",
                                   "--filter", "data.facility_id == 'fac_north'", "--json")
    assert code == 0, err
    sub_id = json.loads(out)["subscription"]["id"]
    assert json.loads(out)["subscription"]["filter"] == "data.facility_id == 'fac_north'"
    code, out, _ = await trellis("activities", "publish", "--type", "lot.created", "--data", '{"facility_id": "fac_south"}')
    assert code == 0 and "0 deliveries scheduled; 1 filtered out" in out, out
    code, out, _ = await trellis("webhooks", "deliveries", sub_id, "--filtered")
    assert code == 0 and "Filtered" in out and "did not pass" in out
    code, out, _ = await trellis("webhooks", "show", sub_id)
    assert code == 0 and "data.facility_id == 'fac_north'" in out

    code, _, err = await trellis("webhooks", "update", sub_id, "--filter", "data.[")
    assert code == 1 and "filter" in err and "JMESPath" in err
    code, out, _ = await trellis("webhooks", "update", sub_id, "--filter", "", "--json")
    assert code == 0 and json.loads(out)["subscription"]["filter"] == ""
    code, out, _ = await trellis("activities", "publish", "--type", "lot.created", "--data", '{"facility_id": "fac_south"}')
    assert code == 0 and "1 delivery scheduled" in out, out
    await receiver.wait_for(1)
