"""What a service process carries in memory: modules it never uses cost RSS in every replica
(docs/benchmarks.md, "Memory (issue 16)"). Counted in a new interpreter that imports what
`python -m services.<name>` imports before it serves, and builds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("identity", "registry", "webhooks", "logs", "edge", "console")
# Alembic (with Mako and Pygments, which it imports): about 11 MB of RSS. Migrations are run by
# the launcher and `trellis migrate`, never by a running service.
MIGRATION_ONLY = ("alembic", "mako", "pygments")
# SQLAlchemy and the drivers: about 25 MB. The edge and the console have no database.
DATABASE = ("sqlalchemy", "aiosqlite", "asyncpg", "services.kit.db", "services.kit.outbox")


def loaded_by(module: str) -> set[str]:
    code = f"import importlib, json, sys\nimportlib.import_module({module!r})\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


def among(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_process_does_not_load_the_migration_tools(service: str) -> None:
    loaded = loaded_by(f"services.{service}.entrypoints.main")
    assert f"services.{service}.entrypoints.main" in loaded
    assert among(loaded, MIGRATION_ONLY) == []


@pytest.mark.parametrize("service", ("edge", "console"))
def test_the_services_without_a_database_do_not_load_sqlalchemy(service: str) -> None:
    assert among(loaded_by(f"services.{service}.entrypoints.main"), DATABASE) == []


def test_migrating_still_loads_alembic_when_it_is_asked_for(tmp_path: Path) -> None:
    code = ("import sys\nfrom services.kit.db import migrate\n"
            f"migrate('logs', 'sqlite+aiosqlite:///{tmp_path / 'logs.db'}')\nprint('alembic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "True"
    assert (tmp_path / "logs.db").stat().st_size > 0
