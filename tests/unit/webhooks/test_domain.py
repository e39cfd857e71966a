"""Webhooks' rules without a server: catalogue, validation, states, signatures, body, retries."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from standardwebhooks import Webhook

from services.kit.errors import FailedPrecondition, InvalidArgument
from services.webhooks.domain.model import (
    ACTIVITY_TYPES, ALL_TYPES, AttemptError, DeliveryStatus, HttpResult, IncomingActivity, RetryPolicy,
    SignatureScheme, Subscription, SubscriptionStatus, check_activity_types, check_published_type, check_url,
    classify_status, delivery_body, delivery_headers, new_signing_secret, outcome_of, pending_delivery_text,
    spec_signature, standard_webhooks_signature,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)

SPEC_TYPES = [
    "batch.created", "harvest.recorded", "drying.completed", "curing.completed", "lot.created", "lot.transferred",
    "weight.adjusted", "destruction.queued", "destruction.completed", "order.created", "order.status_changed",
    "shipment.shipped", "shipment.delivered", "sample.created", "lab_results.received", "capa.opened",
    "deviation.recorded", "recall.initiated", "pesticide.applied", "fertiliser.applied", "cuttings.propagated",
    "seeds.germinated", "crude_extraction.recorded", "distillation.recorded", "final_product_weights.recorded",
]


def subscription(**overrides: object) -> Subscription:
    values: dict[str, object] = dict(id="whk_1", org_id="org_1", url="https://example.com/hook",
                                     activity_types=("lot.created",), created_by="alice", created_at=NOW,
                                     updated_at=NOW, secret_created_at=NOW)
    values.update(overrides)
    return Subscription(**values)  # type: ignore[arg-type]


def test_the_catalogue_is_the_specs_25_types_in_its_six_categories() -> None:
    assert [t.id for t in ACTIVITY_TYPES] == SPEC_TYPES
    assert {t.category for t in ACTIVITY_TYPES} == {
        "Cultivation", "Inventory", "Orders & Shipments", "Quality & Compliance", "Plant Care", "Production"}
    assert next(t for t in ACTIVITY_TYPES if t.id == "drying.completed").name == "Drying complete"


def test_unknown_types_are_refused_with_the_list_of_known_ones() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_activity_types(["lot.created", "lot.teleported"])
    assert "lot.teleported" in refused.value.message
    assert "final_product_weights.recorded" in refused.value.message and "*" in refused.value.message


def test_types_are_sorted_unique_and_star_stands_alone() -> None:
    assert check_activity_types(["order.created", "lot.created", "lot.created"]) == ("lot.created", "order.created")
    assert check_activity_types(["lot.created", ALL_TYPES]) == (ALL_TYPES,)
    with pytest.raises(InvalidArgument):
        check_activity_types([])


def test_star_matches_current_and_future_types() -> None:
    everything = subscription(activity_types=(ALL_TYPES,))
    assert everything.matches("lot.created") and everything.matches("plant.moved")
    assert not subscription().matches("order.created")


@pytest.mark.parametrize("url", [
    "http://example.com/hook", "ftp://example.com/", "example.com/hook", "https:///nohost",
    "https://user:pass@example.com/hook", "https://example.com/hook#frag", "", "https://example.com:99999/",
])
def test_only_https_urls_without_credentials_are_accepted(url: str) -> None:
    with pytest.raises(InvalidArgument):
        check_url(url)


def test_https_url_is_accepted() -> None:
    assert check_url(" https://erp.example.com:8443/hooks?x=1 ") == "https://erp.example.com:8443/hooks?x=1"


def test_published_types_must_have_the_catalogue_shape() -> None:
    assert check_published_type("plant.moved") == "plant.moved"
    for bad in ("*", "webhook.test", "Lot.Created", "lot", "lot..created", "lot.created!"):
        with pytest.raises(InvalidArgument):
            check_published_type(bad)


def test_pause_resume_and_failing_recovery_change_the_version() -> None:
    s = subscription()
    s.pause(NOW)
    assert s.status is SubscriptionStatus.PAUSED and s.version == 2
    s.pause(NOW)
    assert s.version == 2  # pausing a paused subscription changes nothing
    s.resume(NOW)
    assert s.status is SubscriptionStatus.ACTIVE
    assert s.mark_failing(NOW) and s.status is SubscriptionStatus.FAILING and s.failing_since == NOW
    assert not s.mark_failing(NOW)
    assert s.recover(NOW) and s.status is SubscriptionStatus.ACTIVE and s.failing_since is None
    assert not s.recover(NOW)


def test_revoked_integration_disables_for_good_and_suspension_holds() -> None:
    s = subscription(integration_id="int_1")
    assert s.integration_status_changed("suspended", NOW) == "integration_suspended"
    assert s.integration_suspended and s.status is SubscriptionStatus.ACTIVE
    assert s.integration_status_changed("active", NOW) == "integration_reactivated"
    assert s.integration_status_changed("revoked", NOW) == "disabled"
    assert s.status is SubscriptionStatus.DISABLED
    assert s.integration_status_changed("active", NOW) is None
    with pytest.raises(FailedPrecondition):
        s.resume(NOW)


def test_the_audit_view_never_holds_a_secret() -> None:
    assert "secret" not in json.dumps(subscription().audit_view())


def test_one_secret_signs_in_both_schemes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = b'{"id":"evt_1"}'
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert spec_signature(secret, 1700000000, body) == f"sha256={expected}"
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now),
               "webhook-signature": standard_webhooks_signature(secret, "evt_1", now, body)}
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1"}


def test_headers_of_each_scheme() -> None:
    secret = new_signing_secret()
    spec = delivery_headers(SignatureScheme.SPEC, secret, event_id="evt_1", event_type="lot.created", timestamp=17,
                            body=b"{}", user_agent="GrowerIQ-Webhook/1.0")
    assert spec == {
        "Content-Type": "application/json", "User-Agent": "GrowerIQ-Webhook/1.0", "X-Webhook-Event": "lot.created",
        "X-Webhook-Id": "evt_1", "X-Webhook-Timestamp": "17", "X-Webhook-Signature": spec_signature(secret, 17, b"{}"),
    }
    standard = delivery_headers(SignatureScheme.STANDARD_WEBHOOKS, secret, event_id="evt_1", event_type="lot.created",
                                timestamp=17, body=b"{}", user_agent="UA")
    assert standard["webhook-signature"].startswith("v1,") and "X-Webhook-Signature" not in standard
    assert not any(name.lower() == "authorization" for name in {**spec, **standard})


def test_the_body_carries_id_type_time_organisation_sender_and_data() -> None:
    activity = IncomingActivity(event_id="evt_1", type="lot.created", org_id="org_1", occurred_at=NOW,
                                sender_type="integration", sender_id="int_9", data={"lot_id": "L-1", "kg": 2.5})
    body = delivery_body(activity)
    assert json.loads(body) == {
        "id": "evt_1", "type": "lot.created", "created_at": "2026-01-01T12:00:00.000Z", "organisation_id": "org_1",
        "sender": {"type": "integration", "id": "int_9"}, "data": {"lot_id": "L-1", "kg": 2.5},
    }
    assert body == delivery_body(activity)  # the same bytes every time


def test_the_default_schedule_is_the_specs() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 5
    gaps = [policy.next_attempt_at(n, NOW) - NOW for n in range(1, 5)]
    assert gaps == [dt.timedelta(minutes=1), dt.timedelta(minutes=5), dt.timedelta(minutes=30), dt.timedelta(hours=2)]
    assert policy.next_attempt_at(5, NOW) is None


@pytest.mark.parametrize("result, status, retried", [
    (classify_status(200, "", 1), DeliveryStatus.SUCCEEDED, False),
    (classify_status(204, "", 1), DeliveryStatus.SUCCEEDED, False),
    (classify_status(500, "", 1), DeliveryStatus.PENDING, True),
    (classify_status(503, "", 1), DeliveryStatus.PENDING, True),
    (classify_status(404, "", 1), DeliveryStatus.FAILED, False),
    (classify_status(429, "", 1), DeliveryStatus.FAILED, False),
    (classify_status(302, "", 1), DeliveryStatus.FAILED, False),
    (HttpResult(error=AttemptError.TIMEOUT), DeliveryStatus.PENDING, True),
    (HttpResult(error=AttemptError.CONNECTION_REFUSED), DeliveryStatus.PENDING, True),
    (HttpResult(error=AttemptError.TLS), DeliveryStatus.PENDING, True),
    (HttpResult(error=AttemptError.DNS), DeliveryStatus.PENDING, True),
    (HttpResult(error=AttemptError.SSRF_REFUSED), DeliveryStatus.PENDING, True),
])
def test_5xx_and_transport_errors_are_retried_4xx_and_3xx_never(result: HttpResult, status: DeliveryStatus, retried: bool) -> None:
    outcome = outcome_of(result, 1, NOW, RetryPolicy())
    assert outcome.status is status
    assert (outcome.next_attempt_at == NOW + dt.timedelta(minutes=1)) is retried
    assert not outcome.exhausted


def test_the_fifth_failed_attempt_exhausts_the_schedule() -> None:
    outcome = outcome_of(classify_status(500, "", 1), 5, NOW, RetryPolicy())
    assert outcome.status is DeliveryStatus.FAILED and outcome.exhausted and outcome.next_attempt_at is None


def test_a_test_delivery_is_tried_once() -> None:
    outcome = outcome_of(classify_status(500, "", 1), 1, NOW, RetryPolicy(), test=True)
    assert outcome.status is DeliveryStatus.FAILED and not outcome.exhausted


def test_a_pending_delivery_says_when_it_goes_and_what_it_waits_for() -> None:
    later = NOW + dt.timedelta(minutes=5, seconds=0.4)
    assert pending_delivery_text(attempts=1, round_=1, next_attempt_at=later, subscription=subscription(), now=NOW) == (
        "attempt 2 is due at 2026-01-01T12:05:00Z")
    assert pending_delivery_text(attempts=0, round_=2, next_attempt_at=NOW, subscription=subscription(), now=NOW) == (
        "attempt 1 of round 2 is due now")
    held = {
        SubscriptionStatus.PAUSED: "the subscription is paused: it goes when the subscription is resumed",
        SubscriptionStatus.FAILING: "the subscription is failing: it goes once a test delivery succeeds",
    }
    for status, reason in held.items():
        text = pending_delivery_text(attempts=2, round_=1, next_attempt_at=later, subscription=subscription(status=status), now=NOW)
        assert text == f"attempt 3 is due at 2026-01-01T12:05:00Z, but {reason}"
    suspended = subscription(integration_id="int_1", integration_suspended=True)
    assert pending_delivery_text(attempts=1, round_=1, next_attempt_at=later, subscription=suspended, now=NOW).endswith(
        "but its integration is suspended: it goes when the integration is reactivated")


# --- what an attempt sent and what came back ------------------------------------------------------

def test_a_masker_hides_secrets_longest_first_and_custom_header_values_where_sent() -> None:
    from services.webhooks.domain.model import MASK, Masker
    secret = "whsec_" + "A" * 44
    masker = Masker.for_signing([secret], {"X-Api-Key": "key-123456"})
    assert masker.text(f"a {secret} b {'A' * 44} c key-123456") == f"a {MASK} b {MASK} c {MASK}"
    assert masker.header("x-api-key", "anything") == MASK
    assert masker.header("X-Other", "plain") == "plain"
    assert Masker(["abc"]).text("abc abc") == "abc abc"  # too short to search for in an answer


def test_an_exchange_is_bounded_masked_before_the_cut_and_round_trips() -> None:
    from services.webhooks.domain.model import EXCHANGE_BODY_LIMIT, MASK, AttemptExchange, Masker
    secret = "s3cret-value"
    body = ("x" * (EXCHANGE_BODY_LIMIT - 4) + secret).encode()  # the secret straddles the cut
    exchange = AttemptExchange.record([("A", "1")], [(f"H{i}", "v") for i in range(60)] + [("Big", "b" * 2000)],
                                      body, Masker([secret]))
    assert exchange.response_body == "x" * (EXCHANGE_BODY_LIMIT - 4) + MASK[:4]  # no part of the secret survives
    assert exchange.response_body_truncated and len(exchange.response_body.encode()) <= EXCHANGE_BODY_LIMIT
    assert len(exchange.response_headers) == 50 and exchange.headers_omitted == 11
    assert AttemptExchange.from_json(exchange.as_json()) == exchange


def test_a_rotation_overlap_is_bounded_and_only_for_standard_webhooks() -> None:
    import datetime as dt_

    import pytest as pytest_

    from services.kit.errors import FailedPrecondition, InvalidArgument
    from services.webhooks.domain.model import SignatureScheme, check_overlap, delivery_headers, new_signing_secret
    check_overlap(dt_.timedelta(days=7), SignatureScheme.STANDARD_WEBHOOKS)
    check_overlap(dt_.timedelta(0), SignatureScheme.SPEC)
    with pytest_.raises(InvalidArgument):
        check_overlap(dt_.timedelta(days=7, seconds=1), SignatureScheme.STANDARD_WEBHOOKS)
    with pytest_.raises(FailedPrecondition, match="room for one signature"):
        check_overlap(dt_.timedelta(hours=1), SignatureScheme.SPEC)
    new, old = new_signing_secret(), new_signing_secret()
    both = delivery_headers(SignatureScheme.STANDARD_WEBHOOKS, new, event_id="evt_1", event_type="lot.created",
                            timestamp=1, body=b"{}", user_agent="t", previous_secret=old)["webhook-signature"]
    alone = delivery_headers(SignatureScheme.STANDARD_WEBHOOKS, new, event_id="evt_1", event_type="lot.created",
                             timestamp=1, body=b"{}", user_agent="t")["webhook-signature"]
    assert both.startswith(alone + " v1,") and len(both.split(" ")) == 2
