import sqlite3
from pathlib import Path

import pytest

from services.cli.launcher import services_with_migrations
from services.cli.main import run


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("select name from sqlite_master where type='table'")}


def test_migrate_creates_every_services_tables_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--data-dir", str(tmp_path), "migrate"]) == 0
    assert run(["--data-dir", str(tmp_path), "migrate"]) == 0
    out = capsys.readouterr().out
    for service in services_with_migrations():
        tables = _tables(tmp_path / f"{service}.db")
        assert "alembic_version" in tables and "outbox" in tables, service
        assert f"{service}: migrated {tmp_path.resolve() / f'{service}.db'}" in out


def test_migrate_names_only_the_services_asked_for(tmp_path: Path) -> None:
    assert run(["--data-dir", str(tmp_path), "migrate", "registry"]) == 0
    assert (tmp_path / "registry.db").exists() and not (tmp_path / "identity.db").exists()


def test_migrate_refuses_an_unknown_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--data-dir", str(tmp_path), "migrate", "billing"]) == 1
    assert "no migrations for billing" in capsys.readouterr().err
