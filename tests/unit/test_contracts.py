"""The committed stubs are exactly what the generator writes from protos/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_the_stubs_changes_nothing():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_stubs_import_from_the_contracts_package_only():
    for path in (ROOT / "services" / "contracts").rglob("*.py"):
        text = path.read_text()
        assert "\nfrom trellis." not in text and "\nimport trellis" not in text, path
