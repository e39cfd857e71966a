"""The settings reference of docs/operators.md, generated from services/kit/settings.py.

    .venv/bin/python -m tests.deploy.settings_doc

prints the table with the meanings already written in the doc and `TODO` for new settings;
paste it over the table in docs/operators.md and write the missing meanings.
test_operators_doc.py fails while the doc's table and the settings disagree.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from services.kit.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
# Read by services.kit.service.configure_logging rather than Settings.
EXTRA = {"TRELLIS_LOG_LEVEL": "`INFO`"}
ROW = re.compile(r"^\| `(TRELLIS_\w+)` \| (.*?) \| (.*?) \|$")


def render_default(value: object) -> str:
    if isinstance(value, SecretStr):
        return "none (secret)"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def expected_defaults() -> dict[str, str]:
    defaults = {}
    for name, info in Settings.model_fields.items():
        value = info.get_default(call_default_factory=True)
        defaults[f"TRELLIS_{name.upper()}"] = render_default(value)
    return {**defaults, **EXTRA}


def documented_rows(text: str) -> dict[str, tuple[str, str]]:
    """variable -> (default cell, meaning cell) of every settings table row in the doc."""
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def table(text: str) -> str:
    documented = documented_rows(text)
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, default in expected_defaults().items():
        meaning = documented.get(variable, ("", "TODO"))[1]
        lines.append(f"| `{variable}` | {default} | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(DOC.read_text() if DOC.exists() else ""))
