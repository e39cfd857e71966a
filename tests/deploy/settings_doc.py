"""The settings reference of docs/operators.md, generated from every settings group
(services.kit.settings.SETTINGS_GROUPS): one table per group, in that order.

    .venv/bin/python -m tests.deploy.settings_doc

prints the tables with the meanings already written in the doc and `TODO` for new settings;
paste them over the tables in docs/operators.md and write the missing meanings.
test_operators_doc.py fails while the doc's tables and the settings disagree.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from services.kit.settings import SettingsGroup, settings_groups

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
# Read by services.kit.service.configure_logging rather than a settings group; listed with the kit's.
EXTRA = {"TRELLIS_LOG_LEVEL": "`INFO`"}
EXTRA_GROUP = "KitSettings"
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


def group_defaults(group: type[SettingsGroup]) -> dict[str, str]:
    """variable -> default cell of the fields `group` declares itself."""
    defaults = {}
    for name, info in group.model_fields.items():
        if any(name in base.model_fields for base in group.__bases__):
            continue
        defaults[f"TRELLIS_{name.upper()}"] = render_default(info.get_default(call_default_factory=True))
    return {**defaults, **EXTRA} if group.__name__ == EXTRA_GROUP else defaults


def expected_defaults() -> dict[str, str]:
    return {variable: default for group in settings_groups() for variable, default in group_defaults(group).items()}


def heading(group: type[SettingsGroup]) -> str:
    """The group's class and module, and what its docstring says it holds."""
    summary = " ".join((group.__doc__ or "").split())
    return f"`{group.__name__}` ({group.__module__.replace('.', '/')}.py): {summary}"


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
    sections = []
    for group in settings_groups():
        lines = [heading(group), "", "| variable | default | meaning |", "|---|---|---|"]
        for variable, default in group_defaults(group).items():
            meaning = documented.get(variable, ("", "TODO"))[1]
            lines.append(f"| `{variable}` | {default} | {meaning} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


if __name__ == "__main__":
    print(table(DOC.read_text() if DOC.exists() else ""))
