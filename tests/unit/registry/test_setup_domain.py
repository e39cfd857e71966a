"""Pre-built integrations and setup requests, the rules alone: the catalogue, connection
validation naming the field, the Submitted -> In progress -> Configured / Declined machine, reading
the secrets only while In progress, their erasure when final, and separation of duties."""

from __future__ import annotations

import datetime as dt

import pytest

from services.kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.registry.domain.model import VENDORS, vendor
from services.registry.domain.setup import (
    PREBUILT_INTEGRATIONS,
    SECRETS_ERASED,
    SECRETS_REVEALED,
    SetupRequest,
    SetupStatus,
    prebuilt,
    setup_snapshot_json,
    validate_connection,
    validate_contact_email,
)

T0 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc)
WOO = {"store_url": "https://shop.example.com", "consumer_key": "ck_abc", "consumer_secret": "cs_def"}


def submitted(prebuilt_id: str = "woocommerce", connection: dict[str, str] | None = None) -> SetupRequest:
    entry = prebuilt(prebuilt_id)
    return SetupRequest.submit(id="setup_1", org_id="org_a", prebuilt_id=prebuilt_id,
                               details=validate_connection(entry, WOO if connection is None else connection),
                               requested_by="rita", request_id="req_1", now=T0, contact_email="ops@example.com")


def invalid(call: object, *args: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_the_catalogue_is_woocommerce_shopify_and_quickbooks_and_the_vendor_list_is_untouched() -> None:
    assert [p.id for p in PREBUILT_INTEGRATIONS] == ["woocommerce", "shopify", "quickbooks_online"]
    assert len(VENDORS) == 12 and {"shopify", "quickbooks_online"} <= {v.id for v in VENDORS}
    assert invalid(vendor, "woocommerce").fields["vendor_id"] == "woocommerce"


def test_every_field_has_a_label_help_and_a_max_length_and_quickbooks_asks_no_secret() -> None:
    for entry in PREBUILT_INTEGRATIONS:
        for f in entry.fields:
            assert f.label and f.help and f.max_length > 0, (entry.id, f.name)
    assert [f.name for f in prebuilt("woocommerce").fields if f.secret] == ["consumer_key", "consumer_secret"]
    assert [f.name for f in prebuilt("shopify").fields if f.secret] == ["admin_api_access_token"]
    assert not any(f.secret for f in prebuilt("quickbooks_online").fields)


def test_an_unknown_prebuilt_id_names_the_catalogue() -> None:
    error = invalid(prebuilt, "sap")
    assert error.fields["field"] == "prebuilt_id" and "woocommerce" in error.message


def test_secrets_are_split_from_the_plain_details() -> None:
    details = validate_connection(prebuilt("woocommerce"), {**WOO, "store_url": " https://shop.example.com/ "})
    assert details.plain == {"store_url": "https://shop.example.com/"}
    assert details.secrets == {"consumer_key": "ck_abc", "consumer_secret": "cs_def"}
    assert "cs_def" not in repr(details)


@pytest.mark.parametrize(("prebuilt_id", "connection", "field"), [
    ("woocommerce", {**WOO, "api_password": "x"}, "connection.api_password"),
    ("woocommerce", {k: v for k, v in WOO.items() if k != "consumer_secret"}, "connection.consumer_secret"),
    ("woocommerce", {**WOO, "consumer_key": "   "}, "connection.consumer_key"),
    ("woocommerce", {**WOO, "consumer_key": "k" * 201}, "connection.consumer_key"),
    ("woocommerce", {**WOO, "store_url": "http://shop.example.com"}, "connection.store_url"),
    ("woocommerce", {**WOO, "store_url": "https://user:pw@shop.example.com"}, "connection.store_url"),
    ("woocommerce", {**WOO, "store_url": "https://shop.example.com/?a=1"}, "connection.store_url"),
    ("woocommerce", {**WOO, "store_url": "https://localhost"}, "connection.store_url"),
    ("woocommerce", {**WOO, "store_url": "not a url"}, "connection.store_url"),
    ("woocommerce", {**WOO, "consumer_key": "ck_a\nb"}, "connection.consumer_key"),
    ("shopify", {"shop_domain": "acme.example.com", "admin_api_access_token": "shpat_x"}, "connection.shop_domain"),
    ("shopify", {"shop_domain": "acme.myshopify.com"}, "connection.admin_api_access_token"),
    ("quickbooks_online", {"company_id": "12ab"}, "connection.company_id"),
    ("quickbooks_online", {}, "connection.company_id"),
])
def test_bad_connection_details_are_refused_naming_the_field(prebuilt_id: str, connection: dict[str, str],
                                                            field: str) -> None:
    error = invalid(validate_connection, prebuilt(prebuilt_id), connection)
    assert error.fields["field"] == field
    assert field.removeprefix("connection.") in error.message


def test_a_shopify_domain_is_normalised() -> None:
    details = validate_connection(prebuilt("shopify"), {"shop_domain": "https://Acme-Store.myshopify.com/",
                                                       "admin_api_access_token": "shpat_x"})
    assert details.plain == {"shop_domain": "acme-store.myshopify.com"}


@pytest.mark.parametrize("email", ["nobody", "a@b", "a b@example.com", "x" * 250 + "@example.com"])
def test_a_bad_contact_email_is_refused(email: str) -> None:
    assert invalid(validate_contact_email, email).fields["field"] == "contact_email"


def test_a_new_request_is_submitted_with_one_step_and_only_the_names_of_its_secrets() -> None:
    r = submitted()
    assert r.status is SetupStatus.SUBMITTED and r.secrets_given == ["consumer_key", "consumer_secret"]
    assert [(s.action, s.from_status, s.to_status) for s in r.history] == [("submitted", None, SetupStatus.SUBMITTED)]
    snapshot = setup_snapshot_json(r)
    assert "ck_abc" not in snapshot and "cs_def" not in snapshot and "consumer_secret" in snapshot


def test_start_then_complete_configures_it_and_records_each_step() -> None:
    r = submitted()
    r.start("op_1", T0 + dt.timedelta(hours=1))
    r.complete("op_2", "Connected; first sync tonight", T0 + dt.timedelta(hours=5))
    assert r.status is SetupStatus.CONFIGURED and r.handled_by == "op_2" and r.version == 3
    assert r.configured_note == "Connected; first sync tonight"
    assert [s.action for s in r.history] == ["submitted", "started", "configured", SECRETS_ERASED]
    configured, erased = r.history[-2:]
    assert configured.from_status is SetupStatus.IN_PROGRESS and configured.note == r.configured_note
    assert (erased.actor_id, erased.from_status, erased.to_status) == ("op_2", SetupStatus.CONFIGURED,
                                                                       SetupStatus.CONFIGURED)
    assert r.secrets_erased and r.secrets_given == ["consumer_key", "consumer_secret"]


@pytest.mark.parametrize("started", [False, True])
def test_decline_needs_a_reason_and_is_allowed_while_submitted_or_in_progress(started: bool) -> None:
    r = submitted()
    if started:
        r.start("op_1", T0)
    assert invalid(r.decline, "op_1", "  ", T0).fields["field"] == "reason"
    r.decline("op_1", "The store URL does not answer", T0)
    assert r.status is SetupStatus.DECLINED and r.decline_reason == "The store URL does not answer"
    assert r.history[-1].action == SECRETS_ERASED and r.history[-2].action == "declined"


def test_illegal_transitions_are_failed_preconditions_naming_the_state() -> None:
    r = submitted()
    with pytest.raises(FailedPrecondition) as caught:
        r.complete("op", "", T0)
    assert caught.value.fields["state"] == "submitted" and "in progress" in caught.value.message
    r.start("op", T0)
    with pytest.raises(FailedPrecondition):
        r.start("op", T0)
    r.complete("op", "", T0)
    for move in (lambda: r.start("op", T0), lambda: r.decline("op", "late", T0), lambda: r.complete("op", "", T0)):
        with pytest.raises(FailedPrecondition) as caught:
            move()
        assert caught.value.fields["state"] == "configured" and "final" in caught.value.message
    assert r.version == 3 and len(r.history) == 4  # submitted, started, configured, secrets_erased


def test_a_request_without_secrets_records_no_erasure() -> None:
    r = submitted("quickbooks_online", {"company_id": "9130354"})
    r.start("op", T0)
    r.complete("op", "", T0)
    assert [s.action for s in r.history] == ["submitted", "started", "configured"] and not r.secrets_erased


def test_reading_the_secrets_is_a_history_step_while_in_progress_with_the_reason() -> None:
    r = submitted()
    r.start("op_1", T0)
    r.reveal_secrets("op_2", "  configuring the store's webhook  ", T0 + dt.timedelta(minutes=5))
    step = r.history[-1]
    assert (step.action, step.actor_id, step.from_status, step.to_status, step.note) == (
        SECRETS_REVEALED, "op_2", SetupStatus.IN_PROGRESS, SetupStatus.IN_PROGRESS, "configuring the store's webhook")
    assert r.status is SetupStatus.IN_PROGRESS and r.handled_by == "op_1" and r.version == 3
    r.reveal_secrets("op_1", "", T0)
    assert r.history[-1].note == "" and r.version == 4
    assert invalid(r.reveal_secrets, "op_1", "x" * 2001, T0).fields["field"] == "reason"


def test_the_secrets_are_not_readable_before_start_after_the_end_or_when_none_were_given() -> None:
    r = submitted()
    with pytest.raises(FailedPrecondition) as caught:
        r.reveal_secrets("op", "", T0)
    assert caught.value.fields["state"] == "submitted" and "start it first" in caught.value.message
    r.start("op", T0)
    r.decline("op", "Store unreachable", T0)
    with pytest.raises(FailedPrecondition) as caught:
        r.reveal_secrets("op", "", T0)
    assert caught.value.fields["state"] == "declined" and "erased" in caught.value.message
    qb = submitted("quickbooks_online", {"company_id": "1"})
    qb.start("op", T0)
    with pytest.raises(FailedPrecondition) as caught:
        qb.reveal_secrets("op", "", T0)
    assert "no secret" in caught.value.message
    assert len(r.history) == 4 and len(qb.history) == 2


def test_the_requester_cannot_handle_their_own_request_or_read_its_secrets() -> None:
    r = submitted()  # submitted by rita
    refusals = [lambda: r.start("rita", T0), lambda: r.decline("rita", "mine", T0)]
    for refuse in refusals:
        with pytest.raises(PermissionDenied) as caught:
            refuse()
        assert "separation of duties" in caught.value.message and "you submitted" in caught.value.message
        assert caught.value.fields == {"setup_request_id": "setup_1"}
    r.start("op", T0)
    for refuse, verb in ((lambda: r.complete("rita", "done", T0), "complete it"),
                         (lambda: r.reveal_secrets("rita", "", T0), "read its connection secrets")):
        with pytest.raises(PermissionDenied) as caught:
            refuse()
        assert f"cannot {verb}" in caught.value.message
    assert r.status is SetupStatus.IN_PROGRESS and r.configured_note == "" and len(r.history) == 2
