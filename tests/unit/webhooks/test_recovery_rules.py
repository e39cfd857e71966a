"""The pure rules of issue 15's recovery, retention and alerts: the range a recovery takes, the
bounds of a retention override, and who an alert may reach."""

from __future__ import annotations

import datetime as dt

import pytest

from services.kit.errors import InvalidArgument
from services.webhooks.domain.model import (
    ALERT_TYPES, KNOWN_TYPES, SUBSCRIPTION_FAILING_TYPE, Recovery, check_activity_types, check_published_type,
    check_recovery_range, check_retention_days, subscription_alert,
)

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)


def test_a_recovery_range_defaults_until_to_now_and_allows_a_little_clock_skew() -> None:
    since = NOW - dt.timedelta(hours=2)
    assert check_recovery_range(since, None, NOW) == (since, NOW)
    assert check_recovery_range(since, NOW + dt.timedelta(seconds=30), NOW)[1] == NOW + dt.timedelta(seconds=30)


@pytest.mark.parametrize(("since", "until", "field"), [
    (None, None, "since"),
    (NOW + dt.timedelta(minutes=5), None, "since"),
    (NOW - dt.timedelta(hours=1), NOW + dt.timedelta(minutes=5), "until"),
    (NOW - dt.timedelta(hours=1), NOW - dt.timedelta(hours=1), "until"),
    (NOW - dt.timedelta(hours=1), NOW - dt.timedelta(hours=2), "until"),
])
def test_a_bad_recovery_range_names_its_field(since: dt.datetime | None, until: dt.datetime | None, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_recovery_range(since, until, NOW)
    assert refused.value.fields.get("field") == field and field in refused.value.message


def test_a_recovery_is_finished_when_every_queued_delivery_is_done() -> None:
    started = Recovery("rcv_1", "org_1", "whk_1", NOW, NOW, "u", NOW, queued=3, done=2, succeeded=1)
    assert (started.failed, started.finished) == (1, False)
    assert Recovery("rcv_2", "org_1", "whk_1", NOW, NOW, "u", NOW).finished  # nothing was queued


@pytest.mark.parametrize("days", [-1, 3651])
def test_retention_days_are_bounded(days: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_retention_days(days)
    assert refused.value.fields.get("field") == "days"


def test_alerts_can_be_chosen_but_not_published() -> None:
    assert {t.id for t in ALERT_TYPES} <= KNOWN_TYPES
    assert check_activity_types([SUBSCRIPTION_FAILING_TYPE]) == (SUBSCRIPTION_FAILING_TYPE,)
    with pytest.raises(InvalidArgument):
        check_published_type(SUBSCRIPTION_FAILING_TYPE)


def test_an_alert_never_reaches_its_own_subscription_nor_another_partners() -> None:
    alert = subscription_alert(SUBSCRIPTION_FAILING_TYPE, event_id="evt_1", org_id="org_1", subscription_id="whk_a",
                               integration_id="int_p", url="https://x.test/h", failing_since=NOW, now=NOW)
    assert not alert.reaches("whk_a", "int_p")
    assert alert.reaches("whk_b", "int_p") and alert.reaches("whk_admin", "")
    assert not alert.reaches("whk_c", "int_other")
    admins = subscription_alert(SUBSCRIPTION_FAILING_TYPE, event_id="evt_2", org_id="org_1", subscription_id="whk_z",
                                integration_id="", url="https://x.test/h", failing_since=NOW, now=NOW)
    assert admins.reaches("whk_admin", "") and not admins.reaches("whk_c", "int_other")
    assert alert.data["status"] == "failing" and alert.data["integration_id"] == "int_p"  # type: ignore[index]
