"""docs/receivers.md shows every activity type's data fields exactly as the schemas define
them (the section is generated: python -m tests.unit.webhooks.event_types_doc --write)."""

from __future__ import annotations

from services.webhooks.domain.model import ACTIVITY_TYPES
from tests.unit.webhooks import event_types_doc


def test_the_documented_event_types_are_the_schemas() -> None:
    text = event_types_doc.DOC.read_text()
    assert event_types_doc.START in text and event_types_doc.END in text
    assert event_types_doc.section() in text, "regenerate: python -m tests.unit.webhooks.event_types_doc --write"


def test_the_section_names_every_type_and_field() -> None:
    generated = event_types_doc.section()
    assert all(f"`{t.id}` ({t.name})" in generated for t in ACTIVITY_TYPES)
    assert "|  | `lot_ids` | array of string | the lots recalled |" in generated


def test_every_filter_the_doc_shows_is_saved_as_printed_and_does_what_it_says() -> None:
    import re

    from services.webhooks.domain.filters import check_filter, verdict

    text = event_types_doc.DOC.read_text()
    table = text.split("| filter | delivers |", 1)[1].split("\n\n", 1)[0]
    shown = [(m.group(1) or m.group(2)).strip() for m in re.finditer(r"^\| (?:``(.+?)``|`([^`]+)`) \|", table, re.M)]
    assert len(shown) == 6
    assert [check_filter(f) for f in shown] == shown
    north_lot = {"type": "lot.created", "sender": {"type": "integration"},
                 "data": {"facility_id": "fac_north", "quantity": 500, "room": "Vault"}}
    assert [verdict(f, north_lot)[0] for f in shown] == [True, True, True, True, True, False]
