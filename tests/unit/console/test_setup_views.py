"""The setup request pages' presentation rules held to the registry's own: the platform team's
buttons in each state are exactly the registry's transitions, every state has its name and
filter, connection details show a secret only as given, a refusal reads with the field's label,
and the form never keeps a secret it was sent."""

from __future__ import annotations

from starlette.datastructures import FormData

from services.console.setup_requests import views
from services.console.setup_requests.forms import SetupForm
from services.console.setup_requests.routes import _beside, _scrubbed
from services.console.errors import Refusal
from services.contracts.trellis.registry.v1 import registry_pb2 as pb
from services.registry.domain.setup import (
    PREBUILT_INTEGRATIONS,
    SECRETS_ERASED,
    SECRETS_REVEALED,
    SETUP_TRANSITIONS,
    SetupAction,
    SetupStatus,
)

BUTTON_OF = {SetupAction.START: "start", SetupAction.COMPLETE: "complete", SetupAction.DECLINE: "decline"}


def proto_status(status: SetupStatus) -> pb.SetupRequestStatus.ValueType:
    return pb.SetupRequestStatus.Value(f"SETUP_REQUEST_STATUS_{status.name}")


def catalogue_entry(prebuilt_id: str) -> pb.PrebuiltIntegration:
    """The registry's catalogue entry as the registry sends it."""
    entry = next(p for p in PREBUILT_INTEGRATIONS if p.id == prebuilt_id)
    return pb.PrebuiltIntegration(id=entry.id, name=entry.name, description=entry.description, fields=[
        pb.ConnectionField(name=f.name, label=f.label, help=f.help, required=f.required, secret=f.secret,
                           max_length=f.max_length) for f in entry.fields])


def test_each_state_offers_exactly_the_steps_the_registry_allows_from_it() -> None:
    for status in SetupStatus:
        allowed = {BUTTON_OF[action] for action, (sources, _, _) in SETUP_TRANSITIONS.items() if status in sources}
        assert set(views.actions(proto_status(status))) == allowed, status
    assert views.actions(pb.SETUP_REQUEST_STATUS_UNSPECIFIED) == ()


def test_every_state_has_its_name_its_badge_and_a_filter() -> None:
    for status in SetupStatus:
        proto = proto_status(status)
        assert views.status_name(proto) == status.label
        assert views.STATUS_BY_SLUG[status.value] == proto
        assert views.status_slug(proto) == status.value.replace("_", "-")
    assert [views.status_name(proto_status(s)) for s in SetupStatus] == ["Submitted", "In progress", "Configured",
                                                                         "Declined"]
    assert set(views.HISTORY_ACTIONS) == {"submitted", SECRETS_REVEALED, SECRETS_ERASED} | {
        name for _, _, name in SETUP_TRANSITIONS.values()}


def test_the_reveal_is_offered_only_while_in_progress_with_secrets_and_lists_them_in_the_catalogues_order() -> None:
    given = ["consumer_key", "consumer_secret"]
    for status in SetupStatus:
        request = pb.SetupRequest(status=proto_status(status), secrets_given=given)
        assert views.offers_reveal(request) is (status is SetupStatus.IN_PROGRESS), status
    assert not views.offers_reveal(pb.SetupRequest(status=pb.SETUP_REQUEST_STATUS_IN_PROGRESS))
    shown = views.revealed(catalogue_entry("woocommerce"), {"consumer_secret": "cs", "zz_extra": "z", "consumer_key": "ck"})
    assert [(r.id, r.label, r.value) for r in shown] == [
        ("secret-consumer_key", "Consumer key", "ck"), ("secret-consumer_secret", "Consumer secret", "cs"),
        ("secret-zz_extra", "zz_extra", "z")]


def test_a_secret_is_shown_only_as_given_and_plain_details_as_given() -> None:
    entry = catalogue_entry("woocommerce")
    request = pb.SetupRequest(prebuilt_id="woocommerce", connection={"store_url": "https://shop.example.com"},
                              secrets_given=["consumer_key"])
    details = {d.name: d for d in views.connection_details(entry, request)}
    assert [d.name for d in views.connection_details(entry, request)] == ["store_url", "consumer_key", "consumer_secret"]
    assert details["store_url"].value == "https://shop.example.com" and not details["store_url"].secret
    assert details["consumer_key"].secret and details["consumer_key"].given and details["consumer_key"].value == ""
    assert details["consumer_secret"].secret and not details["consumer_secret"].given
    # Without the catalogue (an id it no longer lists) the details still show, secrets still hidden.
    bare = views.connection_details(None, request)
    assert [(d.name, d.value, d.secret) for d in bare] == [("store_url", "https://shop.example.com", False),
                                                           ("consumer_key", "", True)]


def test_every_catalogue_entry_is_offered_by_name_with_its_fields() -> None:
    assert [p.name for p in PREBUILT_INTEGRATIONS] == ["WooCommerce", "Shopify", "QuickBooks Online"]
    entries = [catalogue_entry(p.id) for p in PREBUILT_INTEGRATIONS]
    assert views.prebuilt_name(entries, "shopify") == "Shopify"
    assert views.prebuilt_name(entries, "gone") == "gone"


def test_a_refusal_reads_with_the_fields_label_and_sits_beside_that_field() -> None:
    entry = catalogue_entry("woocommerce")
    assert views.in_words("Connection.store_url must be an https:// URL", entry) == "Store URL must be an https:// URL"
    assert views.in_words("Notes must be at most 2000 characters", entry) == "Notes must be at most 2000 characters"
    assert views.connection_field("connection.store_url") == "store_url" and views.connection_field("notes") == ""
    invalid = Refusal("invalid", "Please correct the form", "Store URL must be…", 422, "",
                      {"field": "connection.store_url"})
    assert _beside(invalid, entry) == {"connection.store_url": "Store URL must be…"}
    email = Refusal("invalid", "Please correct the form", "Contact_email must be…", 422, "", {"field": "contact_email"})
    assert _beside(email, entry) == {"contact_email": "Contact_email must be…"}
    # A field this entry does not have, or none: shown above the form instead.
    assert _beside(Refusal("invalid", "t", "m", 422, "", {"field": "connection.shop_domain"}), entry) == {}
    assert _beside(Refusal("permission", "t", "m", 403), entry) == {}


def test_the_form_reads_only_the_entrys_fields_and_keeps_no_secret() -> None:
    entry = catalogue_entry("woocommerce")
    raw = FormData([("connection.store_url", "https://shop.example.com"), ("connection.consumer_key", "ck_live_1"),
                    ("connection.consumer_secret", ""), ("connection.extra", "x"), ("contact_email", "ops@example.com"),
                    ("notes", "two stores"), ("intent", "abc-123"), ("prebuilt_id", "shopify")])
    form = SetupForm.read(raw, entry)
    assert form.prebuilt_id == "woocommerce"
    assert form.connection == {"store_url": "https://shop.example.com", "consumer_key": "ck_live_1",
                               "consumer_secret": ""}
    assert form.secrets_typed == ("consumer_key",)
    sent = form.create_request()
    assert dict(sent.connection) == form.connection and sent.request_id == "abc-123"
    assert sent.contact_email == "ops@example.com" and sent.notes == "two stores" and sent.prebuilt_id == "woocommerce"
    shown = form.without_secrets(entry)
    assert shown.connection == {"store_url": "https://shop.example.com", "consumer_key": "", "consumer_secret": ""}
    assert shown.secrets_typed == ("consumer_key",) and form.connection["consumer_key"] == "ck_live_1"


def test_a_refusal_never_repeats_a_secret_that_was_typed() -> None:
    entry = catalogue_entry("shopify")
    form = SetupForm.read(FormData([("connection.shop_domain", "acme"),
                                    ("connection.admin_api_access_token", "shpat_s3cr3t")]), entry)
    refusal = Refusal("invalid", "Please correct the form", "Connection.shop_domain is wrong near shpat_s3cr3t", 422,
                      "", {"field": "connection.shop_domain"})
    shown = _scrubbed(refusal, form, entry)
    assert "shpat_s3cr3t" not in shown.message and shown.message.startswith("Shop domain is wrong")
    assert shown.fields == refusal.fields and shown.status == 422
