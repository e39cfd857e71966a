"""The "Event types and their data" section of docs/receivers.md, generated from the schemas
(services/webhooks/domain/schemas.py), between its two markers.

    .venv/bin/python -m tests.unit.webhooks.event_types_doc --write

rewrites the section in place; test_event_types_doc.py fails while the doc and the schemas differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from services.webhooks.domain.model import CATALOGUE
from services.webhooks.domain.schemas import data_schema

DOC = Path(__file__).resolve().parents[3] / "docs" / "receivers.md"
START = "<!-- event-types:start (generated: python -m tests.unit.webhooks.event_types_doc --write) -->"
END = "<!-- event-types:end -->"


def _type_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " or ".join(f"`{value}`" for value in schema["enum"])
    if schema.get("type") == "array":
        return f"array of {schema['items']['type']}"
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    text = " or ".join(str(kind) for kind in kinds)
    if schema.get("format") == "date-time":
        text += " (ISO 8601 date-time)"
    if schema.get("minimum") == 0:
        text += " ≥ 0"
    return text


def section() -> str:
    """The generated section, markers included."""
    lines = [START]
    category = ""
    for t in CATALOGUE:
        if t.category != category:
            category = t.category
            lines += ["", f"#### {category}", "", "| type | field | JSON type | what it is |", "|---|---|---|---|"]
        schema = data_schema(t.id)
        assert schema is not None
        for n, (name, field) in enumerate(schema["properties"].items()):
            first = f"`{t.id}` ({t.name})" if n == 0 else ""
            lines.append(f"| {first} | `{name}` | {_type_text(field)} | {field['description']} |")
    lines += ["", END]
    return "\n".join(lines)


def rewritten(text: str) -> str:
    """`text` with its section replaced by the generated one."""
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return before + section() + after


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        DOC.write_text(rewritten(DOC.read_text()))
    else:
        print(section())
