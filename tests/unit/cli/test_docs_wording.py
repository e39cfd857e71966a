"""What the README and docs say about the CLI and the product: every command is listed, the
product is called Trellis, and GrowerIQ is named only where the wire formats are."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from services.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[3]
# The deliveries' User-Agent is a wire format: a receiver may match on it.
USER_AGENT = "GrowerIQ-Webhook/1.0"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_the_readme_lists_every_command_and_subcommand() -> None:
    readme = ROOT.joinpath("README.md").read_text().replace("\\|", "|")
    missing = []
    for name, group in _subcommands(build_parser()).items():
        line = next((ln for ln in readme.splitlines() if ln.startswith("|") and re.search(rf"\b{name}\b", ln)), "")
        missing += [name] if not line else [f"{name} {sub}" for sub in _subcommands(group) if not re.search(rf"\b{sub}\b", line)]
    assert not missing, f"README.md's command table lacks: {', '.join(missing)}"
    assert "docs/operators.md#settings-reference" in readme


def test_the_product_is_called_trellis_and_groweriq_only_where_the_wire_formats_are() -> None:
    offenders = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for paragraph in path.read_text().split("\n\n"):
            if "GrowerIQ" in paragraph.replace(USER_AGENT, "") and "wire format" not in paragraph:
                offenders.append(f"{path.relative_to(ROOT)}: {paragraph.strip()[:80]}")
    for path in sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "services").rglob("*.html")]):
        if "contracts" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "GrowerIQ" in line.replace(USER_AGENT, ""):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not offenders, "say Trellis (GrowerIQ only for the wire formats):\n" + "\n".join(offenders)
    readme = ROOT.joinpath("README.md").read_text()
    assert USER_AGENT in readme and "wire formats are exactly those of" in readme
