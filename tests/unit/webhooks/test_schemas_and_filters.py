"""The rules of choosing what to receive, without a server: every catalogue type's schema is a
valid JSON Schema that names its fields; data is checked against it with the failing field
named; a filter is JMESPath, bounded in length and in how much it can build, with JMESPath's
truthiness."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from jsonschema import Draft202012Validator

from services.kit.errors import InvalidArgument
from services.webhooks.domain.filters import MAX_FILTER_LENGTH, check_filter, compiled, growth, is_true, verdict
from services.webhooks.domain.model import (
    ACTIVITY_TYPES, CATALOGUE, SUBSCRIPTION_FAILING_TYPE, SUBSCRIPTION_RECOVERED_TYPE, IncomingActivity, delivery_body,
    delivery_document, subscription_alert,
)
from services.webhooks.domain.schemas import DATA_FIELDS, _fits, check_data, data_problem, data_schema, schema_json


def test_every_catalogue_type_has_a_valid_schema_with_a_facility_and_nothing_else_has_one() -> None:
    assert list(DATA_FIELDS) == [t.id for t in CATALOGUE]
    for t in CATALOGUE:
        schema = data_schema(t.id)
        assert schema is not None
        Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and all(p["description"] for p in schema["properties"].values())
        # Every activity of the spec happened at a facility; an alert is about a subscription.
        assert ("facility_id" if t in ACTIVITY_TYPES else "subscription_id") in schema["properties"], t.id
    assert data_schema("lot.sampled") is None and schema_json("lot.sampled") == ""
    assert data_problem("lot.sampled", [1, 2]) is None  # a future type is taken as it is


@pytest.mark.parametrize(("activity_type", "data", "field"), [
    ("lot.created", {"lot_id": 5}, "data.lot_id"),
    ("lot.created", [1], "data"),
    ("recall.initiated", {"lot_ids": ["L-1", None]}, "data.lot_ids[1]"),
    ("batch.created", {"plant_count": -3}, "data.plant_count"),
    ("lab_results.received", {"passed": "yes"}, "data.passed"),
])
def test_data_that_does_not_fit_is_refused_naming_the_field(activity_type: str, data: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_data(activity_type, data)
    assert refused.value.fields == {"field": field} and field in refused.value.message


# Values of every JSON kind, and the edges the catalogue's subschemas draw (negative counts,
# the alerts' enum and nullable fields).
_VALUES: list[object] = ["L-1", "", 0, 3, -3, 2.5, 3.0, -1.0, float("nan"), True, False, None, [], ["a"], ["a", None], [1], {}, {"x": 1},
                         "failing", "active", "gone", "2026-12-03T10:00:00Z"]


def test_the_field_by_field_check_agrees_with_the_whole_schemas_validator() -> None:
    # What _fits relies on: objects of plain per-field subschemas, nothing required, more allowed.
    for t in CATALOGUE:
        schema = data_schema(t.id)
        assert schema is not None and schema["additionalProperties"] is True and "required" not in schema
        assert "$ref" not in json.dumps(schema)
        whole = Draft202012Validator(schema)
        fields = list(schema["properties"])
        for document in ([], "text", None, {}, {"future": [1]}):
            assert _fits(t.id, document) == whole.is_valid(document), (t.id, document)
        for name in fields:
            for value in _VALUES:
                for document in ({name: value}, {**{f: "x" for f in fields[:2] if f != name}, name: value, "extra": 1}):
                    assert _fits(t.id, document) == whole.is_valid(document), (t.id, document)
                    assert (data_problem(t.id, document) is None) == whole.is_valid(document), (t.id, document)


def test_partial_data_and_fields_beyond_the_schema_fit() -> None:
    assert check_data("lot.created", {}) == {}
    assert check_data("lot.created", {"lot_id": "L-1", "weight_kg": 12.5, "future": {"x": 1}})["lot_id"] == "L-1"


@pytest.mark.parametrize(("expression", "bound"), [
    ("data.facility_id == 'fac_1'", 1), ("type == 'lot.created' && data.quantity > `10`", 1),
    ("[data.a, data.b]", 2), ("data.lots[*].[id, name]", 2), ("map(&[a, b, c], data.lots)", 3),
    ("[@, @] | [@, @] | [@, @]", 8),
])
def test_growth_bounds_how_much_larger_than_the_event_a_filter_can_build(expression: str, bound: float) -> None:
    assert growth(compiled(expression).parsed) == bound


@pytest.mark.parametrize(("expression", "why"), [
    ("data.[", "not a valid JMESPath"),
    ("a" * (MAX_FILTER_LENGTH + 1), "longer than 1024"),
    ("[@, @] | [@, @] | [@, @] | [@, @] | [@, @]", "32 times"),
    ("{a: @, b: @, c: @, d: @} | {a: @, b: @, c: @, d: @} | [@, @]", "32 times"),
])
def test_a_filter_that_does_not_compile_or_is_out_of_bounds_is_refused_naming_filter(expression: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_filter(expression)
    assert refused.value.fields == {"field": "filter"} and why in refused.value.message


def test_no_filter_is_the_empty_string() -> None:
    assert check_filter("   ") == "" and check_filter(" data.x ") == "data.x"


@pytest.mark.parametrize(("value", "true"), [
    (None, False), (False, False), ("", False), ([], False), ({}, False),
    (0, True), (0.0, True), ("0", True), ([None], True), ({"a": None}, True), (True, True),
])
def test_truthiness_is_jmespaths(value: object, true: bool) -> None:
    assert is_true(value) is true


def test_a_filter_reads_the_document_as_delivered() -> None:
    import datetime as dt

    activity = IncomingActivity(event_id="evt_1", type="lot.created", org_id="org_1",
                                occurred_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), sender_type="user",
                                sender_id="u_1", data={"facility_id": "fac_1", "quantity": 0})
    document = delivery_document(activity)
    assert json.loads(delivery_body(activity)) == document
    assert verdict("data.facility_id == 'fac_1' && sender.type == 'user'", document) == (True, "")
    assert verdict("data.quantity", document) == (True, "")  # 0 is true in JMESPath
    assert verdict("data.missing", document)[0] is False
    passes, why = verdict("length(data.quantity)", document)  # length() of a number: an error, not a pass
    assert not passes and why.startswith("the filter failed on this event")


@pytest.mark.parametrize("detail", [
    {"failed_event_id": "evt_1", "failed_event_type": "lot.created", "last_error": "HTTP 503"},
    {"recovered_at": "2026-12-03T10:00:00Z", "queued_deliveries": 4},
])
def test_the_alerts_the_service_writes_fit_their_own_schemas(detail: dict[str, object]) -> None:
    type_ = SUBSCRIPTION_FAILING_TYPE if "last_error" in detail else SUBSCRIPTION_RECOVERED_TYPE
    now = dt.datetime(2026, 12, 3, 10, tzinfo=dt.UTC)
    for integration_id in ("int_1", ""):
        alert = subscription_alert(type_, event_id="evt_a", org_id="org_1", subscription_id="whs_1",
                                   integration_id=integration_id, url="https://example.com/hook", failing_since=now,
                                   now=now, **detail)
        assert data_problem(type_, alert.data) is None
    assert data_problem(type_, {**alert.data, "queued_deliveries": "four", "status": "gone"}) is not None
