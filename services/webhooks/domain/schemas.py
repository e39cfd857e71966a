"""Each activity type's `data` as a JSON Schema, and the check of an activity's `data` against it.

The fields are what docs/receivers.md shows for each type (its "Event types and their data"
section is generated from this module and checked by tests/unit/webhooks/test_schemas.py, so
the two cannot drift). Every field is optional and more may come: a producer may send a partial
record, and adding a field never breaks a receiver; what a schema refuses is a field of the
wrong type, and `data` that is not an object. A type outside the catalogue (a future one of the
same shape) has no schema and is taken as it is.

Validators are compiled once per type (jsonschema's Draft 2020-12 validator) on first use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from services.kit.errors import InvalidArgument

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer", "minimum": 0}
_BOOLEAN = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time"}
_IDS = {"type": "array", "items": {"type": "string"}}

# (field, schema, what it is) for the fields several types share.
_FACILITY = ("facility_id", _STRING, "the facility it happened at")
_LOT = ("lot_id", _STRING, "the lot")
_BATCH = ("batch_id", _STRING, "the batch")
_ROOM = ("room", _STRING, "the room or zone")
_QUANTITY = ("quantity", _NUMBER, "how much, in `unit`")
_UNIT = ("unit", _STRING, "the unit of `quantity` (`g`, `kg`, `units`, …)")

Field = tuple[str, Mapping[str, Any], str]

_NULLABLE_STRING = {"type": ["string", "null"]}
_ALERT: tuple[Field, ...] = (
    ("subscription_id", _STRING, "the subscription the alert is about"),
    ("integration_id", _NULLABLE_STRING, "its integration (null: an administrator's subscription)"),
    ("endpoint_url", _STRING, "its endpoint"),
    ("status", {"enum": ["failing", "active"]}, "its status now"),
    ("failing_since", {"type": ["string", "null"], "format": "date-time"}, "when it became Failing"),
)

# The catalogue's order (services.webhooks.domain.model.CATALOGUE: the spec's types, then the alerts).
DATA_FIELDS: dict[str, tuple[Field, ...]] = {
    "batch.created": (_BATCH, _FACILITY, ("strain", _STRING, "the strain grown"), _ROOM,
                      ("plant_count", _INTEGER, "plants in the batch"), ("started_at", _TIME, "when the batch started")),
    "harvest.recorded": (("harvest_id", _STRING, "the harvest"), _BATCH, _FACILITY, _ROOM,
                         ("wet_weight_g", _NUMBER, "wet weight harvested, grams"),
                         ("plant_count", _INTEGER, "plants harvested"), ("harvested_at", _TIME, "when it was harvested")),
    "drying.completed": (("harvest_id", _STRING, "the harvest dried"), _BATCH, _FACILITY, _ROOM,
                         ("dry_weight_g", _NUMBER, "weight after drying, grams"), ("completed_at", _TIME, "when drying ended")),
    "curing.completed": (("harvest_id", _STRING, "the harvest cured"), _BATCH, _FACILITY, _ROOM,
                         ("cured_weight_g", _NUMBER, "weight after curing, grams"), ("completed_at", _TIME, "when curing ended")),
    "lot.created": (_LOT, _FACILITY, _BATCH, ("product_name", _STRING, "what the lot holds"), _QUANTITY, _UNIT, _ROOM),
    "lot.transferred": (_LOT, _FACILITY, ("from_room", _STRING, "where it was"), ("to_room", _STRING, "where it went"),
                        ("to_facility_id", _STRING, "the facility it went to, when it left this one"), _QUANTITY, _UNIT),
    "weight.adjusted": (_LOT, _FACILITY, ("previous_quantity", _NUMBER, "the quantity before, in `unit`"),
                        _QUANTITY, _UNIT, ("reason", _STRING, "why it was adjusted")),
    "destruction.queued": (("destruction_id", _STRING, "the destruction"), _LOT, _FACILITY, _QUANTITY, _UNIT,
                           ("reason", _STRING, "why it is destroyed")),
    "destruction.completed": (("destruction_id", _STRING, "the destruction"), _LOT, _FACILITY, _QUANTITY, _UNIT,
                              ("method", _STRING, "how it was destroyed"), ("completed_at", _TIME, "when it was destroyed")),
    "order.created": (("order_id", _STRING, "the order"), _FACILITY, ("customer_id", _STRING, "who ordered"),
                      ("status", _STRING, "the order's status"), ("total", _NUMBER, "the order total"),
                      ("currency", _STRING, "ISO 4217 code of `total`")),
    "order.status_changed": (("order_id", _STRING, "the order"), _FACILITY,
                             ("previous_status", _STRING, "the status before"), ("status", _STRING, "the status now")),
    "shipment.shipped": (("shipment_id", _STRING, "the shipment"), ("order_id", _STRING, "the order it ships"), _FACILITY,
                         ("carrier", _STRING, "who carries it"), ("tracking_number", _STRING, "the carrier's tracking number"),
                         ("shipped_at", _TIME, "when it left")),
    "shipment.delivered": (("shipment_id", _STRING, "the shipment"), ("order_id", _STRING, "the order it shipped"),
                           _FACILITY, ("delivered_at", _TIME, "when it arrived")),
    "sample.created": (("sample_id", _STRING, "the sample"), _LOT, _FACILITY, ("lab", _STRING, "the lab it goes to"),
                       ("sample_type", _STRING, "what is tested (potency, microbial, …)")),
    "lab_results.received": (("sample_id", _STRING, "the sample tested"), _LOT, _FACILITY, ("lab", _STRING, "the lab"),
                             ("passed", _BOOLEAN, "whether the results pass"),
                             ("thc_percent", _NUMBER, "total THC, percent"), ("cbd_percent", _NUMBER, "total CBD, percent")),
    "capa.opened": (("capa_id", _STRING, "the corrective and preventive action"), _FACILITY,
                    ("title", _STRING, "what it is about"), ("severity", _STRING, "its severity"),
                    ("deviation_id", _STRING, "the deviation it answers, if any")),
    "deviation.recorded": (("deviation_id", _STRING, "the deviation"), _FACILITY, ("title", _STRING, "what happened"),
                           ("severity", _STRING, "its severity"), _LOT),
    "recall.initiated": (("recall_id", _STRING, "the recall"), _FACILITY, ("lot_ids", _IDS, "the lots recalled"),
                         ("reason", _STRING, "why"), ("classification", _STRING, "the recall's class")),
    "pesticide.applied": (("application_id", _STRING, "the application"), _FACILITY, _ROOM, _BATCH,
                          ("product", _STRING, "the product applied"), _QUANTITY, _UNIT,
                          ("applied_at", _TIME, "when it was applied")),
    "fertiliser.applied": (("application_id", _STRING, "the application"), _FACILITY, _ROOM, _BATCH,
                           ("product", _STRING, "the product applied"), _QUANTITY, _UNIT,
                           ("applied_at", _TIME, "when it was applied")),
    "cuttings.propagated": (_BATCH, _FACILITY, ("strain", _STRING, "the strain"),
                            ("mother_plant_id", _STRING, "the plant the cuttings came from"),
                            ("count", _INTEGER, "cuttings taken")),
    "seeds.germinated": (_BATCH, _FACILITY, ("strain", _STRING, "the strain"), ("count", _INTEGER, "seeds germinated")),
    "crude_extraction.recorded": (("extraction_id", _STRING, "the extraction"), _FACILITY,
                                  ("input_lot_id", _STRING, "the lot extracted"), ("output_lot_id", _STRING, "the lot made"),
                                  ("input_weight_g", _NUMBER, "grams in"), ("output_weight_g", _NUMBER, "grams out"),
                                  ("method", _STRING, "the extraction method")),
    "distillation.recorded": (("distillation_id", _STRING, "the distillation"), _FACILITY,
                              ("input_lot_id", _STRING, "the lot distilled"), ("output_lot_id", _STRING, "the lot made"),
                              ("input_weight_g", _NUMBER, "grams in"), ("output_weight_g", _NUMBER, "grams out")),
    "final_product_weights.recorded": (_LOT, _FACILITY, ("product_name", _STRING, "the product"),
                                       ("unit_count", _INTEGER, "units packed"),
                                       ("net_weight_g", _NUMBER, "net weight of each unit, grams")),
    # The alerts (model.ALERT_TYPES): what model.subscription_alert writes.
    "webhook.subscription_failing": _ALERT + (
        ("failed_event_id", _STRING, "the event whose last attempt failed"),
        ("failed_event_type", _STRING, "its activity type"),
        ("last_error", _STRING, "what the last attempt met")),
    "webhook.subscription_recovered": _ALERT + (
        ("recovered_at", _TIME, "when it was Active again"),
        ("queued_deliveries", _INTEGER, "deliveries held while it was Failing, now going out")),
}


def data_schema(activity_type: str) -> dict[str, Any] | None:
    """The JSON Schema of this type's `data`, or None for a type outside the catalogue."""
    fields = DATA_FIELDS.get(activity_type)
    if fields is None:
        return None
    return {
        "$schema": DIALECT,
        "$id": f"https://trellis.dev/schemas/activities/{activity_type}.json",
        "title": f"{activity_type} data",
        "type": "object",
        "properties": {name: {**schema, "description": text} for name, schema, text in fields},
        "additionalProperties": True,
    }


def schema_json(activity_type: str) -> str:
    """The schema as compact JSON ("" for a type outside the catalogue)."""
    schema = data_schema(activity_type)
    return json.dumps(schema, separators=(",", ":"), sort_keys=True) if schema is not None else ""


@functools.cache
def _validator(activity_type: str) -> Draft202012Validator | None:
    schema = data_schema(activity_type)
    return Draft202012Validator(schema) if schema is not None else None


# Keywords that only annotate: jsonschema asserts nothing for them (formats are not checked).
_ANNOTATIONS = frozenset({"$schema", "description", "format", "title"})


class _FieldCheck:
    """One field's subschema, compiled. When it asserts nothing but a `type` other than integer
    (where a float's answer depends on its value: 3.0 is one), jsonschema's verdict depends on
    the value's Python type alone, so its first verdict for each type is kept."""

    def __init__(self, subschema: Mapping[str, Any]) -> None:
        self._validator = Draft202012Validator({"$schema": DIALECT, **subschema})
        kinds = subschema.get("type")
        names = [kinds] if isinstance(kinds, str) else list(kinds or [])
        by_type = set(subschema) - _ANNOTATIONS == {"type"} and "integer" not in names
        self._verdicts: dict[type, bool] | None = {} if by_type else None

    def fits(self, value: object) -> bool:
        if self._verdicts is None:
            return bool(self._validator.is_valid(value))
        verdict = self._verdicts.get(type(value))
        if verdict is None:
            verdict = self._verdicts[type(value)] = bool(self._validator.is_valid(value))
        return verdict


@functools.cache
def _field_checks(activity_type: str) -> dict[str, _FieldCheck]:
    """A check per field of the type's schema, each compiled from that field's own subschema."""
    schema = data_schema(activity_type) or {}
    return {name: _FieldCheck(sub) for name, sub in schema.get("properties", {}).items()}


def _fits(activity_type: str, data: object) -> bool:
    """Whether `data` fits, as the whole schema's validator says, in a fraction of its time (on
    every activity's path): the schemas are an object whose `properties` each have a plain
    subschema (no `$ref`, no `required`, more fields allowed), so `data` fits exactly when it is
    an object and each field it has fits its own subschema; jsonschema checks every field. The
    whole schema's validator walks the same keywords but evolves a validator per field it
    descends into. tests/unit/webhooks/test_schemas_and_filters.py holds the two to agreeing."""
    if not isinstance(data, dict):
        return False
    checks = _field_checks(activity_type)
    return all(checks[name].fits(value) for name, value in data.items() if name in checks)


def _where(path: Sequence[object]) -> str:
    text = "data"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def data_problem(activity_type: str, data: object) -> tuple[str, str] | None:
    """(field, what is wrong) for the first place where `data` does not fit its type's schema; None if it fits."""
    validator = _validator(activity_type)
    if validator is None or _fits(activity_type, data):
        return None
    error: ValidationError | None = best_match(validator.iter_errors(data))
    if error is None:
        return None
    return _where(list(error.absolute_path)), error.message


def check_data(activity_type: str, data: object) -> object:
    """`data` unchanged when it fits its type's schema; InvalidArgument naming the field when not."""
    problem = data_problem(activity_type, data)
    if problem is not None:
        field, message = problem
        raise InvalidArgument(f"{field} does not fit the {activity_type} schema: {message} "
                              f"(see `trellis activities types --schema`)", field=field)
    return data
