"""The webhook pages' presentation rules held to the webhooks service's own: the buttons a status
offers are exactly what its domain lets change (the console shows them; the service decides),
and the catalogue's categories are the spec's, in its order."""

from __future__ import annotations

import datetime as dt

import pytest

from services.console.webhooks import views
from services.contracts.trellis.webhooks.v1 import webhooks_pb2 as pb
from services.kit.errors import FailedPrecondition
from services.webhooks.domain.model import ACTIVITY_TYPES, Subscription, SubscriptionStatus
from services.webhooks.adapters.events import STATUS_TO_PROTO

NOW = dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)


def subscription(status: SubscriptionStatus) -> Subscription:
    return Subscription(id="whk_1", org_id="org_1", url="https://hooks.example.test/in", activity_types=("lot.created",),
                        created_by="alice", created_at=NOW, updated_at=NOW, secret_created_at=NOW, status=status)


def changes(status: SubscriptionStatus, act) -> bool:  # type: ignore[no-untyped-def]
    """Whether `act` is allowed from `status` and changes the subscription."""
    s = subscription(status)
    try:
        act(s)
    except FailedPrecondition:
        return False
    return s.version != 1


@pytest.mark.parametrize("status", list(SubscriptionStatus))
def test_each_status_offers_exactly_what_the_domain_allows(status: SubscriptionStatus) -> None:
    allowed = {
        "pause": changes(status, lambda s: s.pause(NOW)),
        "enable": changes(status, lambda s: s.resume(NOW)),
        "edit": changes(status, lambda s: s.update({"description": "x"}, NOW)),
        "regenerate-secret": changes(status, lambda s: s.secret_regenerated(NOW)),
        "test": status is not SubscriptionStatus.DISABLED,  # WebhookHandlers.send_test refuses only that
        "recover": status is not SubscriptionStatus.DISABLED,  # WebhookHandlers.start_recovery likewise
        "delete": True,
    }
    assert set(views.actions(STATUS_TO_PROTO[status])) == {name for name, ok in allowed.items() if ok}


def test_every_status_has_a_name_and_a_filter() -> None:
    for status in SubscriptionStatus:
        proto = STATUS_TO_PROTO[status]
        assert views.status_name(proto) == status.value.capitalize()
        assert views.STATUS_BY_SLUG[status.value] == proto


def test_types_are_grouped_by_the_spec_categories_in_order() -> None:
    catalogue = [pb.ActivityType(id=t.id, name=t.name, category=t.category) for t in ACTIVITY_TYPES]
    catalogue.append(pb.ActivityType(id="*", name="All", category=""))
    groups = views.type_groups(catalogue, ["harvest.recorded"])
    assert [g.category for g in groups] == ["Cultivation", "Inventory", "Orders & Shipments", "Quality & Compliance",
                                            "Plant Care", "Production"]
    assert sum(len(g.choices) for g in groups) == 25
    assert [c.id for g in groups for c in g.choices if c.checked] == ["harvest.recorded"]
    assert views.types_label(["*"], {}) == "All current and future types"
    assert views.types_label(["lot.created"], {"lot.created": "Lot created"}) == "Lot created"


def test_an_attempt_says_what_went_wrong() -> None:
    assert views.attempt_error(pb.Attempt(succeeded=True, status_code=200)) == ""
    assert "not retried" in views.attempt_error(pb.Attempt(status_code=404, error=pb.ATTEMPT_ERROR_HTTP_STATUS))
    assert views.attempt_error(pb.Attempt(error=pb.ATTEMPT_ERROR_TIMEOUT)) == "Timed out"
    assert views.attempt_error(pb.Attempt(error=pb.ATTEMPT_ERROR_CONNECTION_REFUSED,
                                          error_detail="connection refused")) == "connection refused"
    assert views.next_attempt(pb.Attempt()) is None


def test_the_overlap_form_value_is_one_of_the_offered_choices_or_none() -> None:
    from services.console.webhooks.views import OVERLAPS, overlap_seconds

    assert [overlap_seconds(value) for value, _ in OVERLAPS] == [0, 3600, 86400, 259200, 604800]
    for sent in ("", None, "abc", "-3600", "604801", "99999999999999999999", "3600.5"):
        assert overlap_seconds(sent) == 0, sent
